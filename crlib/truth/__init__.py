"""Ground-truth cosmic-ray masks: AstroDrizzle driz_cr (with alignment, valid-pixel masks and quality
gates) and the multi-frame (numina crmasks) method.

Public API: :func:`build_visit_truth`, :class:`TruthOptions`, :class:`VisitTruth`; products are read
back with :func:`read_truth_product`.
"""

from crlib.truth.options import TruthOptions, VisitTruth
from crlib.truth.product import read_truth_product, write_truth_product
from crlib.truth.visit import build_visit_truth

__all__ = ["TruthOptions", "VisitTruth", "build_visit_truth", "read_truth_product", "write_truth_product"]
