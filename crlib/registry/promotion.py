"""The promotion gate: a challenger replaces the champion only if it is measurably better.

Before anything is scored, the gate checks that the test split is really held out: no test visit,
and no other visit of a test field (proposal, target), may be in either model's training manifest
(:mod:`crlib.registry.provenance`, following the chain of models a version was fine-tuned from).
If one is, the gate *refuses to run*: the decision is recorded with the reason and no numbers
(``exclude_seen``, ``crlib promote --exclude-seen``, scores the remaining test fields instead and
lists the excluded ones in the notes).
deepCR's shipped weights were trained outside crlib: their manifest is ``external`` and every
decision says so in its notes rather than pretending to have checked it.

The test patches must have been cut under the model's instrument profile's scoring rules
(:class:`~crlib.profiles.ScoringRules`: border and DQ exclusion, the rules pipeline scoring and
training use); a dataset cut under other rules is refused the same way, and every decision records
the rules it was scored under.

Then both versions are scored on the same test split (pooled per field type and filter, TPR at
FPR 0.05% and 0.5%, with and without dilation: 4 numbers per group). The challenger is promoted
only if

* no number is worse than the champion's by more than ``max_drop_points`` percentage points,
* the mean difference over all numbers is above ``min_mean_gain_points``,
* the lower bound of the bootstrap confidence interval of that mean (resampling test *fields*
  with replacement, seeded: :func:`crlib.training.evaluation.bootstrap_mean_gain`) is at least
  ``min_ci_low_points`` (0: the interval must not include a loss), which needs at least
  ``min_test_fields`` test fields, and
* the challenger was not trained on simulator data (``crlib.truth_source`` ``simulator`` or
  ``mixed``), unless ``allow_simulated`` (``crlib promote --allow-simulated``).

The decision, its interval, reasons and notes are written as model-version tags
(``crlib.gate.*``), as a run in the ``crlib-registry`` experiment, and handed to a recorder (the
results database) when given.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from crlib.errors import ConfigError
from crlib.registry.provenance import (
    TrainingProvenance,
    dataset_test_fields,
    leakage_reasons,
    seen_test_fields,
    version_provenance,
)
from crlib.registry.versions import (
    CHALLENGER,
    CHAMPION,
    RegisteredVersion,
    get_version,
    instrument_of,
    load_registered_model,
    set_alias,
    set_version_tags,
)
from crlib.training.evaluation import EvaluationReport, GainInterval, bootstrap_mean_gain, evaluate_network
from crlib.training.patches import PatchDataset, dataset_rules

log = logging.getLogger(__name__)

SIMULATED_SOURCES = ("simulator", "mixed")


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
        Refusals are decisions with reasons, never exceptions.
    """
    from crlib.profiles import get_profile

    thresholds = thresholds or GateThresholds()
    rules = get_profile(instrument_of(model_name)).scoring
    candidate = get_version(tracking_uri, model_name, challenger)
    incumbent = get_version(tracking_uri, model_name, CHAMPION)
    test_fields = dataset_test_fields(dataset.manifest, dataset.index)
    cut_under = dataset_rules(dataset.manifest)
    reports: dict[str, EvaluationReport] = {}
    comparisons: tuple[GateComparison, ...] = ()
    mean_delta = math.nan
    interval: GainInterval | None = None
    notes: list[str] = []
    provenance: dict[str, Any] = {}
    reasons: list[str]
    if candidate.version == incumbent.version:
        reasons = [f"version {candidate.version} is already the champion"]
    else:
        held_by = {"champion": incumbent, "challenger": candidate}
        provenances = {role: version_provenance(tracking_uri, v) for role, v in held_by.items()}
        provenance = {role: p.to_json() for role, p in provenances.items()}
        notes = _provenance_notes(provenances)
        leaks = [r for role, p in provenances.items() for r in leakage_reasons(role, p, test_fields)]
        simulated = _truth_source_reasons(provenances["challenger"], model_name, thresholds, notes)
        if leaks and thresholds.exclude_seen and all(p.status != "unreadable" for p in provenances.values()):
            dataset, test_fields = _exclude_seen(dataset, test_fields, provenances, leaks, notes)
            provenance["excluded_test_visits"] = sorted(
                {str(r["visit"]) for r in dataset.index if r["split"] == EXCLUDED_SPLIT}
            )
            leaks = []
        if cut_under != rules:
            leaks.append(
                f"the test patches of dataset {dataset.dataset_id} were cut under {cut_under.describe()}, "
                f"but {model_name} is scored under its instrument profile's rules ({rules.describe()}), "
                "as pipeline scoring and training count pixels: rebuild the dataset under the profile's "
                "rules (crlib train without --border)"
            )
        if leaks:  # the test split is not held out or not scored as the profile says: score nothing
            log.warning(
                "%s: the gate refuses to score v%s: %s", model_name, candidate.version, "; ".join(leaks)
            )
            reasons = leaks + simulated
        else:
            for version in (incumbent, candidate):
                reports[version.version] = _score(tracking_uri, version, dataset, device=device)
            _, comparisons, mean_delta, number_reasons = compare_reports(
                reports[incumbent.version], reports[candidate.version], thresholds
            )
            interval = bootstrap_mean_gain(
                reports[incumbent.version],
                reports[candidate.version],
                [(c.group, c.fpr, c.dilated) for c in comparisons],
                unit_of=test_fields,
                resamples=thresholds.resamples,
                confidence=thresholds.confidence,
                seed=thresholds.seed,
            )
            reasons = [
                *number_reasons,
                *_interval_reasons(interval, mean_delta, test_fields, thresholds),
                *simulated,
            ]
    passed = not reasons
    decision = PromotionDecision(
        model_name=model_name,
        challenger_version=candidate.version,
        champion_version=incumbent.version,
        promoted=passed,
        applied=passed and not dry_run,
        mean_delta_points=round(mean_delta, 4) if not math.isnan(mean_delta) else mean_delta,
        comparisons=comparisons,
        reasons=tuple(reasons),
        thresholds=thresholds,
        dataset_id=dataset.dataset_id,
        dry_run=dry_run,
        ci_low_points=interval.low_points if interval else math.nan,
        ci_high_points=interval.high_points if interval else math.nan,
        test_fields=len(set(test_fields.values())),
        test_visits=len(test_fields),
        notes=tuple(notes),
        provenance=provenance,
        scoring={
            "border_px": cut_under.border_px,
            "dq_excluded": cut_under.exclude_dq,
            "label_dq_bits": cut_under.label_dq_bits,
        },
    )
    log.info(
        "%s v%s vs champion v%s: %s (%s)%s",
        model_name,
        candidate.version,
        incumbent.version,
        "passes" if passed else "refused",
        decision.interval_text(),
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
            reason=f"promoted over v{incumbent.version}: {decision.interval_text()} "
            f"on test set {dataset.dataset_id}",
        )
    _record_in_mlflow(tracking_uri, decision, reports)
    if recorder is not None:
        recorder(decision)
    return decision


def _score(
    tracking_uri: str, version: RegisteredVersion, dataset: PatchDataset, *, device: str
) -> EvaluationReport:
    network, loaded = load_registered_model(version.uri, tracking_uri=tracking_uri, device=device)
    assert loaded.metadata is not None
    return evaluate_network(
        network, loaded.metadata, dataset, split="test", model_label=version.label, device=device
    )


#: Split name given to test patches of fields a model saw, when the gate is told to exclude them.
EXCLUDED_SPLIT = "test-excluded-seen"


def _exclude_seen(
    dataset: PatchDataset,
    test_fields: dict[str, str],
    provenances: dict[str, TrainingProvenance],
    leaks: list[str],
    notes: list[str],
) -> tuple[PatchDataset, dict[str, str]]:
    """The dataset without the test fields either model saw (``--exclude-seen``), noted in ``notes``."""
    from dataclasses import replace

    seen = set().union(*(seen_test_fields(p, test_fields) for p in provenances.values()))
    dropped = {v for v, f in test_fields.items() if f in seen}
    notes.append(
        f"--exclude-seen: {len(dropped)} test visit(s) of {len(seen)} field(s) a model trained on are "
        f"not scored ({', '.join(sorted(seen)[:8])}{' ...' if len(seen) > 8 else ''}): " + "; ".join(leaks)
    )
    index = [
        row | {"split": EXCLUDED_SPLIT} if row.get("split") == "test" and row["visit"] in dropped else row
        for row in dataset.index
    ]
    remaining = {v: f for v, f in test_fields.items() if v not in dropped}
    return replace(dataset, index=index), remaining


def _provenance_notes(provenances: dict[str, TrainingProvenance]) -> list[str]:
    """Say plainly which training the test split could not be checked against."""
    notes = []
    for role, p in provenances.items():
        if p.status in ("external", "unknown"):
            checked = (
                f"the test visits were checked against its {len(p.manifests)} recorded training "
                "manifest(s) only"
                if p.manifests
                else "the test visits could not be checked against its training"
            )
            notes.append(f"{role} {p.label}: {'; '.join(p.notes)}; {checked}")
        if p.truth_source == "unknown" and role == "challenger":
            notes.append(f"{role} {p.label}: truth source not recorded (tag crlib.truth_source absent)")
    return notes


def _truth_source_reasons(
    challenger: TrainingProvenance, model_name: str, thresholds: GateThresholds, notes: list[str]
) -> list[str]:
    """Refuse a challenger trained on simulator data unless allowed (then say so in ``notes``)."""
    if challenger.truth_source not in SIMULATED_SOURCES:
        return []
    what = (
        f"challenger {challenger.label} was trained on simulator data "
        f"(crlib.truth_source={challenger.truth_source})"
    )
    if thresholds.allow_simulated:
        notes.append(f"{what}; allowed by --allow-simulated")
        return []
    return [
        f"{what}: it cannot become champion of the real-data model {model_name} "
        "without an explicit override (crlib promote --allow-simulated)"
    ]


def _interval_reasons(
    interval: GainInterval, mean_delta: float, test_fields: dict[str, str], thresholds: GateThresholds
) -> list[str]:
    fields = sorted(set(test_fields.values()))
    if len(fields) < thresholds.min_test_fields:
        return [
            f"only {len(fields)} test field(s) ({', '.join(fields) or 'none'}): the mean gain's "
            f"confidence interval needs at least {thresholds.min_test_fields} independent test fields "
            "(proposal, target)"
        ]
    if math.isnan(mean_delta):
        return []  # compare_reports already said why nothing was compared
    mean_delta = round(mean_delta, 4)  # as the decision stores it
    if math.isnan(interval.low_points):
        return ["the mean gain's confidence interval could not be computed (no per-visit scores)"]
    if interval.low_points < thresholds.min_ci_low_points:
        return [
            f"mean gain {mean_delta:+.3f} points, but its {thresholds.confidence:.0%} confidence interval "
            f"[{interval.low_points:+.3f}, {interval.high_points:+.3f}] (bootstrap over {interval.units} "
            f"test fields, {interval.resamples} resamples, seed {interval.seed}) includes a loss: its "
            f"lower bound is below {thresholds.min_ci_low_points:+g} points"
        ]
    return []


def _record_in_mlflow(
    tracking_uri: str, decision: PromotionDecision, reports: dict[str, EvaluationReport]
) -> None:
    """Gate tags on the challenger version plus a run with the numbers."""
    import mlflow
    from crlib.registry.tracking import REGISTRY_EXPERIMENT, active_tracking, experiment_id, mlflow_client

    def number(value: float) -> str:
        return f"{value:.4f}" if math.isfinite(value) else "nan"

    tags = {
        "crlib.gate.outcome": "promoted" if decision.applied else "refused",
        "crlib.gate.champion_version": decision.champion_version,
        "crlib.gate.mean_delta_points": number(decision.mean_delta_points),
        "crlib.gate.ci_low_points": number(decision.ci_low_points),
        "crlib.gate.ci_high_points": number(decision.ci_high_points),
        "crlib.gate.test_fields": str(decision.test_fields),
        "crlib.gate.dataset_id": decision.dataset_id,
        "crlib.gate.decided_at_ms": str(decision.decided_at_ms),
        "crlib.gate.reasons": json.dumps(list(decision.reasons)),
        "crlib.gate.notes": json.dumps(list(decision.notes)),
        "crlib.gate.thresholds": json.dumps(asdict(decision.thresholds)),
        "crlib.gate.scoring": json.dumps(decision.scoring),
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
            }
            | {k: v for k, v in asdict(decision.thresholds).items()}
        )
        for key in ("mean_delta_points", "ci_low_points", "ci_high_points"):
            value = getattr(decision, key)
            if math.isfinite(value):
                mlflow.log_metric(key, value)
        mlflow.log_metric("promoted", float(decision.applied))
        mlflow.log_dict(decision.to_json(), "gate_decision.json")
        for version, report in reports.items():
            mlflow.log_dict(
                {"model": report.model_label, "rows": report.table()}, f"test_scores_v{version}.json"
            )
