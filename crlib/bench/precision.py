"""bf16 against fp32 on the same truth: the TPR shifts that decide whether bf16 may be the default.

``crlib bench accuracy --model global --model global_bf16`` scores every exposure twice with the
same deepCR weights, once with the engine in fp32 and once in bf16 (:class:`crlib.model.inference.
MaskEngine`), against the same drizzle truth. :func:`precision_shifts` reads, for every pooled group
(each field type's ``all`` row and each filter), the change in TPR at both FPR points, without and
with dilation, in percentage points; :func:`bf16_verdict` says whether every per-field-type shift
stays below :data:`BF16_MAX_TPR_SHIFT_POINTS` (issue #16: bf16 becomes the CPU default only then).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from crlib.bench.accuracy import ALL_FILTERS, deepcr_kind
from crlib.metrics.roc import FPR_POINTS

if TYPE_CHECKING:
    from crlib.bench.accuracy import AccuracyReport

#: Largest allowed |TPR(bf16) - TPR(fp32)| per field type, percentage points, at each FPR point.
BF16_MAX_TPR_SHIFT_POINTS = 0.2


@dataclass(frozen=True)
class PrecisionShift:
    """TPR of one deepCR model in fp32 and bf16 on one pooled group at one FPR point.

    Attributes
    ----------
    model
        ``global`` or ``per_filter``.
    field_type, filter
        The group (``filter`` is ``all`` for a whole field type).
    label
        ``plain`` or ``dilated`` (3x3 dilation of the predicted mask).
    fpr
        FPR point key (``"0.0005"``, ``"0.005"``).
    fp32, bf16
        TPR as fractions (NaN when the group has no CR or no non-CR pixel).
    """

    model: str
    field_type: str
    filter: str
    label: str
    fpr: str
    fp32: float
    bf16: float

    @property
    def shift_points(self) -> float:
        """``100 * (bf16 - fp32)``: percentage points (NaN when either is NaN)."""
        return 100.0 * (self.bf16 - self.fp32)


def precision_shifts(report: AccuracyReport) -> tuple[PrecisionShift, ...]:
    """Every (model, group, label, FPR point) scored both in fp32 and in bf16.

    Returns
    -------
    tuple of PrecisionShift
        Empty when the run compared no ``*_bf16`` kind with its fp32 twin.
    """
    kinds = report.settings["models"]
    twins = {kind: deepcr_kind(kind) for kind in kinds}
    pairs = [(base, kind) for kind, (base, mode) in twins.items() if mode == "bf16" and base in kinds]
    shifts = []
    for model, bf16_kind in pairs:
        for group in report.groups:
            for label in ("plain", "dilated"):
                for fpr in FPR_POINTS:
                    shifts.append(
                        PrecisionShift(
                            model=model,
                            field_type=group.field_type,
                            filter=group.filter,
                            label=label,
                            fpr=fpr,
                            fp32=group.tpr[model][label][fpr],
                            bf16=group.tpr[bf16_kind][label][fpr],
                        )
                    )
    return tuple(shifts)


def bf16_verdict(
    shifts: tuple[PrecisionShift, ...], *, limit_points: float = BF16_MAX_TPR_SHIFT_POINTS
) -> dict[str, Any]:
    """Whether every per-field-type shift (``all`` rows, both labels, both FPRs) is below the limit.

    Parameters
    ----------
    shifts
        From :func:`precision_shifts`.
    limit_points
        Largest allowed absolute shift, percentage points.

    Returns
    -------
    dict
        ``limit_points``, ``compared`` (finite per-field-type shifts), ``max_abs_shift_points``,
        ``worst`` (that shift as a dict, or ``None``) and ``pass`` (``None`` when nothing compared).
    """
    per_field_type = [s for s in shifts if s.filter == ALL_FILTERS and math.isfinite(s.shift_points)]
    worst = max(per_field_type, key=lambda s: abs(s.shift_points), default=None)
    largest = abs(worst.shift_points) if worst is not None else math.nan
    return {
        "limit_points": limit_points,
        "compared": len(per_field_type),
        "max_abs_shift_points": largest,
        "worst": None if worst is None else {**asdict(worst), "shift_points": worst.shift_points},
        "pass": None if worst is None else bool(largest < limit_points),
    }


def precision_comparison(report: AccuracyReport) -> dict[str, Any]:
    """JSON-friendly ``{"shifts": [...], "verdict": {...}}`` for the report (NaN kept as NaN)."""
    shifts = precision_shifts(report)
    return {
        "shifts": [{**asdict(s), "shift_points": s.shift_points} for s in shifts],
        "verdict": bf16_verdict(shifts),
    }
