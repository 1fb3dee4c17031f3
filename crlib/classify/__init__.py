"""Field type of an exposure (globular cluster, extragalactic, resolved galaxy) and how it was decided.

* :mod:`crlib.classify.metadata`: rules over MAST CAOM metadata (``target_classification``,
  ``target_name``, proposal title, pointing); used when observations are listed.
* :mod:`crlib.classify.image`: the pixels (CR-robust point-source density, extended light,
  saturated stars from :mod:`crlib.classify.features`); used after screening for exposures whose
  metadata label is ``unknown``. Its read step (the FLC chips) is :mod:`crlib.classify.files`.
* :mod:`crlib.classify.labels`: the :class:`FieldTypeLabel` both return (type, method, confidence,
  reasons) and :func:`choose_label` to combine them.
The confusion tables on simulated visits are :mod:`crlib.bench.classifier`.

No classifier guesses: missing, weak or contradictory evidence gives ``unknown``. See
``docs/field_types.md``. The package imports only the light modules (labels, metadata: pure
Python, used by :mod:`crlib.archive`); import :mod:`crlib.classify.image` for the pixels.
"""

from crlib.classify.labels import METHODS, UNKNOWN, FieldTypeLabel, choose_label, unknown_label
from crlib.classify.metadata import classify_caom_row, classify_metadata

__all__ = [
    "METHODS",
    "UNKNOWN",
    "FieldTypeLabel",
    "choose_label",
    "classify_caom_row",
    "classify_metadata",
    "unknown_label",
]
