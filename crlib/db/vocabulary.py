"""Controlled vocabularies the results database enforces (filters, field types, statuses).

The database holds the same lists as lookup tables or CHECK constraints (created by the
migrations); :mod:`crlib.db.repo` checks values against these first so a bad value fails with a
message naming the field instead of a constraint name.
"""

from __future__ import annotations

from crlib.classify.labels import METHODS as _LABEL_METHODS
from crlib.profiles import FIELD_TYPES

#: ACS/WFC imaging, ramp, polariser and grism elements (both filter wheels).
ACS_WFC_FILTERS: tuple[str, ...] = (
    "CLEAR",
    "F435W",
    "F475W",
    "F502N",
    "F550M",
    "F555W",
    "F606W",
    "F625W",
    "F658N",
    "F660N",
    "F775W",
    "F814W",
    "F850LP",
    "F892N",
    "FR388N",
    "FR423N",
    "FR462N",
    "FR505N",
    "FR551N",
    "FR601N",
    "FR647M",
    "FR656N",
    "FR716N",
    "FR782N",
    "FR853N",
    "FR914M",
    "FR931N",
    "FR1016N",
    "G800L",
    "POL0UV",
    "POL60UV",
    "POL120UV",
    "POL0V",
    "POL60V",
    "POL120V",
)

#: WFC3/UVIS full-frame filters and grism.
WFC3_UVIS_FILTERS: tuple[str, ...] = (
    "F200LP",
    "F218W",
    "F225W",
    "F275W",
    "F280N",
    "F300X",
    "F336W",
    "F343N",
    "F350LP",
    "F373N",
    "F390M",
    "F390W",
    "F395N",
    "F410M",
    "F438W",
    "F467M",
    "F469N",
    "F475W",
    "F475X",
    "F487N",
    "F502N",
    "F547M",
    "F555W",
    "F600LP",
    "F606W",
    "F621M",
    "F625W",
    "F631N",
    "F645N",
    "F656N",
    "F657N",
    "F658N",
    "F665N",
    "F673N",
    "F680N",
    "F689M",
    "F763M",
    "F775W",
    "F814W",
    "F845M",
    "F850LP",
    "F953N",
    "G280",
)

#: Every filter name an exposure may carry (the ``filters`` lookup table).
KNOWN_FILTERS: frozenset[str] = frozenset(ACS_WFC_FILTERS) | frozenset(WFC3_UVIS_FILTERS)

KNOWN_FIELD_TYPES: tuple[str, ...] = FIELD_TYPES
#: How an exposure's field type was decided (``exposures.field_type_method``, see
#: :mod:`crlib.classify.labels`): ``unknown`` when no method could, with ``field_type`` NULL.
FIELD_TYPE_METHODS: tuple[str, ...] = _LABEL_METHODS
#: Methods that produce a field type (a stored ``field_type`` has one of them).
LABELLING_METHODS: tuple[str, ...] = tuple(m for m in _LABEL_METHODS if m != "unknown")
VERDICTS: tuple[str, ...] = ("accept", "reject")
SEVERITIES: tuple[str, ...] = ("reject", "warning", "info")
QUALITY_STATUSES: tuple[str, ...] = ("ok", "suspect", "failed")
TRUTH_METHODS: tuple[str, ...] = ("drizzle", "multiframe")
ALIGNMENT_STATUSES: tuple[str, ...] = ("aligned_absolute", "aligned_relative", "not_aligned", "failed")
PREDICTION_STATUSES: tuple[str, ...] = ("ok", "failed")
#: Run outcomes: ``partial`` finished with some exposures failed (counts in the summary);
#: ``abandoned`` was found still ``running`` after its process died or its heartbeat lapsed.
RUN_STATUSES: tuple[str, ...] = ("queued", "running", "success", "partial", "failed", "abandoned")
#: Statuses of a run that has not ended.
RUN_UNFINISHED: tuple[str, ...] = ("queued", "running")
MODEL_SOURCES: tuple[str, ...] = ("deepcr_package", "mlflow")
#: Splits a model version's training manifest assigns to a visit.
MANIFEST_SPLITS: tuple[str, ...] = ("train", "validation", "test")
#: Split of an exposure's visit for the model version that predicted it: a manifest split, or
#: ``unseen`` when the visit is not in the version's training manifest as crlib recorded it
#: (every visit, for weights crlib did not train: deepCR's shipped models).
SPLITS: tuple[str, ...] = (*MANIFEST_SPLITS, "unseen")
#: Splits the model never learnt from: what statistics report by default.
UNSEEN_SPLITS: tuple[str, ...] = ("test", "unseen")
#: Splits a model learnt from or was selected on (``--include-training`` adds them).
TRAINING_SPLITS: tuple[str, ...] = ("train", "validation")
#: Truth status a metrics row rests on: the truth's gate status, or ``unknown`` when no truth was
#: recorded for the exposure when it was scored (rows from before migration 0006, synthetic rows).
METRIC_TRUTH_STATUSES: tuple[str, ...] = ("ok", "suspect", "unknown")
#: Truth statuses statistics report by default (as training and ``crlib bench accuracy`` use).
TRUSTED_TRUTH_STATUSES: tuple[str, ...] = ("ok",)
#: ``model_versions.training_dataset`` of weights crlib did not train (every visit is unseen).
EXTERNAL_TRAINING = "external"


def normalise_filter(name: str) -> str:
    """Upper-case a filter name and drop ACS's second-wheel ``CLEAR*`` partner (``F606W;CLEAR2L``).

    Parameters
    ----------
    name
        Filter as an archive or header reports it.

    Returns
    -------
    str
        The single filter name, e.g. ``F606W``; ``CLEAR`` when both wheels are clear.
    """
    parts = [p.strip().upper() for p in name.replace(",", ";").split(";") if p.strip()]
    real = [p for p in parts if not p.startswith("CLEAR")]
    if not real:
        return "CLEAR" if parts else ""
    return ";".join(real)
