"""The promotion gate's settings and its decision record.

:class:`GateThresholds` holds what :func:`crlib.registry.promotion.promote` requires of a
challenger, :class:`GateComparison` one compared number, and :class:`PromotionDecision` the outcome
it writes as model-version tags, as an MLflow run and (through a :data:`DecisionRecorder`) in the
results database (:mod:`crlib.registry.decisions`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from crlib.errors import ConfigError


@dataclass(frozen=True, slots=True)
class GateThresholds:
    """Gate settings; differences in percentage points of TPR.

    Attributes
    ----------
    max_drop_points
        Largest allowed drop of any single number (group x FPR x dilation).
    min_mean_gain_points
        The mean difference must be strictly greater than this.
    min_ci_low_points
        The lower bound of the mean difference's confidence interval must be at least this.
    confidence
        Two-sided coverage of the interval.
    resamples
        Bootstrap resamples.
    seed
        Seed of the resampling.
    min_test_fields
        Fewest test fields (proposal, target) an interval is computed from.
    allow_simulated
        Let a challenger trained on simulator data become champion.
    exclude_seen
        Instead of refusing to run when a model's training manifest holds test fields, score
        only the test fields neither model saw (the excluded visits are listed in the notes).
    """

    max_drop_points: float = 0.5
    min_mean_gain_points: float = 0.0
    min_ci_low_points: float = 0.0
    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0
    min_test_fields: int = 2
    allow_simulated: bool = False
    exclude_seen: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"gate confidence must be between 0 and 1, got {self.confidence}")
        if self.resamples < 1 or self.min_test_fields < 1:
            raise ConfigError(
                f"gate resamples ({self.resamples}) and min_test_fields ({self.min_test_fields}) must be >= 1"
            )


@dataclass(frozen=True, slots=True)
class GateComparison:
    """One compared number."""

    group: str
    fpr: str
    dilated: bool
    champion_percent: float
    challenger_percent: float
    delta_points: float
    failed: bool


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of the gate for one challenger.

    Attributes
    ----------
    model_name, challenger_version, champion_version
        What was compared.
    promoted
        Whether the gate passed.
    applied
        Whether the champion alias was moved (False for dry runs and refusals).
    mean_delta_points
        Mean challenger - champion difference over all numbers, percentage points.
    comparisons
        Every compared number.
    reasons
        Why it was refused (empty when promoted).
    thresholds
        Gate settings used.
    dataset_id
        Patch dataset whose test split was scored.
    dry_run
        Whether this was a dry run (nothing moved, no MLflow tags written).
    decided_at_ms
        Unix milliseconds.
    ci_low_points, ci_high_points
        Bootstrap confidence interval of ``mean_delta_points`` (NaN when not computed).
    test_fields, test_visits
        Fields (proposal, target) and visits in the test split.
    notes
        What the gate could not check or was told to allow (external or unknown training
        manifests, ``--allow-simulated``); not reasons to refuse.
    provenance
        ``{"champion": ..., "challenger": ...}``: :meth:`TrainingProvenance.to_json` of both.
    scoring
        The scoring rules the test patches were cut under (``border_px``, ``dq_excluded``,
        ``label_dq_bits``); the gate scores only under the instrument profile's rules.
    """

    model_name: str
    challenger_version: str
    champion_version: str
    promoted: bool
    applied: bool
    mean_delta_points: float
    comparisons: tuple[GateComparison, ...]
    reasons: tuple[str, ...]
    thresholds: GateThresholds
    dataset_id: str
    dry_run: bool = False
    decided_at_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    ci_low_points: float = math.nan
    ci_high_points: float = math.nan
    test_fields: int = 0
    test_visits: int = 0
    notes: tuple[str, ...] = ()
    provenance: dict[str, Any] = field(default_factory=dict)
    scoring: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        """``promoted``, ``refused``, ``would promote (dry run)`` or ``refused (dry run)``."""
        if self.dry_run:
            return "would promote (dry run)" if self.promoted else "refused (dry run)"
        return "promoted" if self.applied else "refused"

    def failed(self) -> list[GateComparison]:
        """Numbers that dropped by more than the allowed amount."""
        return [c for c in self.comparisons if c.failed]

    def interval_text(self) -> str:
        """``mean +0.123 points, 95% CI [-0.200, +0.450] over 5 test fields`` (or why there is none)."""
        mean = "n/a" if math.isnan(self.mean_delta_points) else f"{self.mean_delta_points:+.3f}"
        if math.isnan(self.ci_low_points):
            return f"mean {mean} points, no confidence interval ({self.test_fields} test field(s))"
        return (
            f"mean {mean} points, {self.thresholds.confidence:.0%} CI "
            f"[{self.ci_low_points:+.3f}, {self.ci_high_points:+.3f}] over {self.test_fields} test "
            f"field(s) ({self.thresholds.resamples} resamples, seed {self.thresholds.seed})"
        )

    def summary_entry(self) -> dict[str, Any]:
        """The gate-wide entry stored after the numbers in ``promotion_decisions.comparisons``.

        ``kind`` is ``gate_summary`` (the per-number entries have no ``kind``); ``failed`` is
        whether the interval check failed. Non-finite numbers are ``None``.
        """

        def finite(value: float) -> float | None:
            return round(value, 4) if math.isfinite(value) else None

        t = self.thresholds
        return {
            "kind": "gate_summary",
            "mean_delta_points": finite(self.mean_delta_points),
            "ci_low_points": finite(self.ci_low_points),
            "ci_high_points": finite(self.ci_high_points),
            "confidence": t.confidence,
            "resamples": t.resamples,
            "seed": t.seed,
            "resampled_unit": "test field (proposal, target)",
            "test_fields": self.test_fields,
            "test_visits": self.test_visits,
            "min_ci_low_points": t.min_ci_low_points,
            "min_test_fields": t.min_test_fields,
            "allow_simulated": t.allow_simulated,
            "exclude_seen": t.exclude_seen,
            "failed": not (math.isfinite(self.ci_low_points) and self.ci_low_points >= t.min_ci_low_points),
            "notes": list(self.notes),
            "provenance": self.provenance,
            "scoring": self.scoring,
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (for the database and MLflow)."""
        return asdict(self)


DecisionRecorder = Callable[[PromotionDecision], None]
