"""The promotion gate: a challenger replaces the champion only if it is measurably better.

Both versions are scored on the same fixed held-out test split (pooled per field type and filter,
TPR at FPR 0.05% and 0.5%, with and without dilation: 4 numbers per group). The challenger is
promoted only if

* no number is worse than the champion's by more than ``max_drop_points`` percentage points, and
* the mean difference over all numbers is above ``min_mean_gain_points``.

The decision and every number are written as model-version tags (``crlib.gate.*``), as a run in
the ``crlib-registry`` experiment, and handed to a recorder (the results database) when given.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from crlib.registry.versions import (
    CHALLENGER,
    CHAMPION,
    get_version,
    load_registered_model,
    set_alias,
    set_version_tags,
)
from crlib.training.evaluation import EvaluationReport, evaluate_network
from crlib.training.patches import PatchDataset

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GateThresholds:
    """Gate settings, in percentage points of TPR.

    Attributes
    ----------
    max_drop_points
        Largest allowed drop of any single number (group x FPR x dilation).
    min_mean_gain_points
        The mean difference must be strictly greater than this.
    """

    max_drop_points: float = 0.5
    min_mean_gain_points: float = 0.0


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

    @property
    def outcome(self) -> str:
        """``promoted``, ``refused``, ``would promote (dry run)`` or ``refused (dry run)``."""
        if self.dry_run:
            return "would promote (dry run)" if self.promoted else "refused (dry run)"
        return "promoted" if self.applied else "refused"

    def failed(self) -> list[GateComparison]:
        """Numbers that dropped by more than the allowed amount."""
        return [c for c in self.comparisons if c.failed]

    def to_json(self) -> dict[str, Any]:
        """JSON-friendly dict (for the database and MLflow)."""
        return asdict(self)


def compare_reports(
    champion: EvaluationReport, challenger: EvaluationReport, thresholds: GateThresholds
) -> tuple[bool, tuple[GateComparison, ...], float, tuple[str, ...]]:
    """Apply the gate to two reports on the same split.

    Groups that only one report has, or whose TPR is undefined (no CR pixels), are skipped.

    Returns
    -------
    (passed, comparisons, mean_delta_points, reasons)
    """
    comparisons = []
    champion_groups = {g.key: g for g in champion.groups}
    for group in challenger.groups:
        reference = champion_groups.get(group.key)
        if reference is None:
            continue
        for dilated, new_values, old_values in (
            (False, group.tpr, reference.tpr),
            (True, group.tpr_dilated, reference.tpr_dilated),
        ):
            for fpr, new in new_values.items():
                old = old_values.get(fpr, math.nan)
                if math.isnan(new) or math.isnan(old):
                    continue
                delta = 100.0 * (new - old)
                comparisons.append(
                    GateComparison(
                        group=group.key,
                        fpr=fpr,
                        dilated=dilated,
                        champion_percent=round(100.0 * old, 4),
                        challenger_percent=round(100.0 * new, 4),
                        delta_points=round(delta, 4),
                        failed=delta < -thresholds.max_drop_points,
                    )
                )
    reasons = []
    if not comparisons:
        return (
            False,
            (),
            math.nan,
            ("no comparable numbers: the test split has no CR pixels in a shared group",),
        )
    mean_delta = sum(c.delta_points for c in comparisons) / len(comparisons)
    for c in comparisons:
        if c.failed:
            reasons.append(
                f"{c.group} TPR@FPR={float(c.fpr) * 100:g}%{' dilated' if c.dilated else ''}: "
                f"{c.challenger_percent:.2f}% vs champion {c.champion_percent:.2f}% "
                f"({c.delta_points:+.2f} points < -{thresholds.max_drop_points:g})"
            )
    if not mean_delta > thresholds.min_mean_gain_points:
        reasons.append(
            f"mean difference {mean_delta:+.3f} points is not above "
            f"{thresholds.min_mean_gain_points:+g} points"
        )
    return not reasons, tuple(comparisons), mean_delta, tuple(reasons)


DecisionRecorder = Callable[[PromotionDecision], None]


def promote(
    tracking_uri: str,
    *,
    model_name: str,
    dataset: PatchDataset,
    challenger: str = CHALLENGER,
    thresholds: GateThresholds | None = None,
    dry_run: bool = False,
    device: str = "cpu",
    recorder: DecisionRecorder | None = None,
) -> PromotionDecision:
    """Score challenger and champion on the dataset's test split and move ``champion`` if it passes.

    Parameters
    ----------
    tracking_uri
        Tracking/registry URI.
    model_name
        Registered model, e.g. ``deepcr-acs-wfc``.
    dataset
        Patch dataset whose ``test`` split is the fixed held-out set.
    challenger
        Version number or alias of the candidate.
    thresholds
        Gate settings.
    dry_run
        Decide and report, but move no alias and write no MLflow tags.
    device
        Torch device for scoring.
    recorder
        Called with every decision, dry runs included (e.g. to store it in the results database).

    Returns
    -------
    PromotionDecision
    """
    thresholds = thresholds or GateThresholds()
    candidate = get_version(tracking_uri, model_name, challenger)
    incumbent = get_version(tracking_uri, model_name, CHAMPION)
    reports: dict[str, EvaluationReport] = {}
    comparisons: tuple[GateComparison, ...]
    reasons: tuple[str, ...]
    if candidate.version == incumbent.version:
        passed, comparisons, mean_delta, reasons = (
            False,
            (),
            math.nan,
            (f"version {candidate.version} is already the champion",),
        )
    else:
        for version in (incumbent, candidate):
            network, loaded = load_registered_model(version.uri, tracking_uri=tracking_uri, device=device)
            assert loaded.metadata is not None
            reports[version.version] = evaluate_network(
                network, loaded.metadata, dataset, split="test", model_label=version.label, device=device
            )
        passed, comparisons, mean_delta, reasons = compare_reports(
            reports[incumbent.version], reports[candidate.version], thresholds
        )
    decision = PromotionDecision(
        model_name=model_name,
        challenger_version=candidate.version,
        champion_version=incumbent.version,
        promoted=passed,
        applied=passed and not dry_run,
        mean_delta_points=round(mean_delta, 4) if not math.isnan(mean_delta) else mean_delta,
        comparisons=comparisons,
        reasons=reasons,
        thresholds=thresholds,
        dataset_id=dataset.dataset_id,
        dry_run=dry_run,
    )
    log.info(
        "%s v%s vs champion v%s: %s (mean %+.3f points)%s",
        model_name,
        candidate.version,
        incumbent.version,
        "passes" if passed else "refused",
        mean_delta,
        " [dry run]" if dry_run else "",
    )
    if dry_run:
        if recorder is not None:
            recorder(decision)
        return decision
    if decision.applied:
        set_alias(
            tracking_uri,
            model_name,
            CHAMPION,
            candidate.version,
            reason=f"promoted over v{incumbent.version}: mean {mean_delta:+.3f} points "
            f"on test set {dataset.dataset_id}",
        )
    _record_in_mlflow(tracking_uri, decision, reports)
    if recorder is not None:
        recorder(decision)
    return decision


def _record_in_mlflow(
    tracking_uri: str, decision: PromotionDecision, reports: dict[str, EvaluationReport]
) -> None:
    """Gate tags on the challenger version plus a run with the numbers."""
    import mlflow
    from crlib.registry.tracking import REGISTRY_EXPERIMENT, active_tracking, experiment_id, mlflow_client

    tags = {
        "crlib.gate.outcome": "promoted" if decision.applied else "refused",
        "crlib.gate.champion_version": decision.champion_version,
        "crlib.gate.mean_delta_points": f"{decision.mean_delta_points:.4f}",
        "crlib.gate.dataset_id": decision.dataset_id,
        "crlib.gate.decided_at_ms": str(decision.decided_at_ms),
        "crlib.gate.reasons": json.dumps(list(decision.reasons)),
        "crlib.gate.thresholds": json.dumps(asdict(decision.thresholds)),
    }
    set_version_tags(tracking_uri, decision.model_name, decision.challenger_version, tags)
    client = mlflow_client(tracking_uri)
    with (
        active_tracking(tracking_uri),
        mlflow.start_run(
            experiment_id=experiment_id(client, REGISTRY_EXPERIMENT),
            run_name=f"gate-{decision.model_name}-v{decision.challenger_version}",
            tags={"crlib.kind": "promotion-gate", "crlib.model_name": decision.model_name},
        ),
    ):
        mlflow.log_params(
            {
                "challenger_version": decision.challenger_version,
                "champion_version": decision.champion_version,
                "dataset_id": decision.dataset_id,
                "max_drop_points": decision.thresholds.max_drop_points,
                "min_mean_gain_points": decision.thresholds.min_mean_gain_points,
            }
        )
        if not math.isnan(decision.mean_delta_points):
            mlflow.log_metric("mean_delta_points", decision.mean_delta_points)
        mlflow.log_metric("promoted", float(decision.applied))
        mlflow.log_dict(decision.to_json(), "gate_decision.json")
        for version, report in reports.items():
            mlflow.log_dict(
                {"model": report.model_label, "rows": report.table()}, f"test_scores_v{version}.json"
            )
