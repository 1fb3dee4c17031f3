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

The gate's settings and decision record are in :mod:`crlib.registry.gate_decision`, the checks
before scoring (held-out test split, scoring rules, simulator training) in :mod:`crlib.registry.heldout`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from crlib.profiles import ScoringRules
from crlib.registry.gate_decision import DecisionRecorder, GateComparison, GateThresholds, PromotionDecision
from crlib.registry.heldout import check_held_out
from crlib.registry.provenance import dataset_test_fields
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


@dataclass
class _GateScores:
    """The gate's numbers: both reports, every compared number, the mean and its interval."""

    reports: dict[str, EvaluationReport] = field(default_factory=dict)
    comparisons: tuple[GateComparison, ...] = ()
    mean_delta: float = math.nan
    interval: GainInterval | None = None
    reasons: list[str] = field(default_factory=list)


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
    scores = _GateScores()
    notes: list[str] = []
    provenance: dict[str, Any] = {}
    if candidate.version == incumbent.version:
        scores.reasons = [f"version {candidate.version} is already the champion"]
    else:
        check = check_held_out(
            tracking_uri,
            model_name=model_name,
            champion=incumbent,
            challenger=candidate,
            dataset=dataset,
            test_fields=test_fields,
            cut_under=cut_under,
            rules=rules,
            allow_simulated=thresholds.allow_simulated,
            exclude_seen=thresholds.exclude_seen,
        )
        dataset, test_fields = check.dataset, check.test_fields
        notes, provenance = check.notes, check.provenance
        if check.refusals:  # the test split is not held out or not scored as the profile says: score nothing
            log.warning(
                "%s: the gate refuses to score v%s: %s",
                model_name,
                candidate.version,
                "; ".join(check.refusals),
            )
            scores.reasons = check.refusals + check.simulated
        else:
            scores = _score_and_compare(
                tracking_uri,
                incumbent,
                candidate,
                dataset,
                test_fields=test_fields,
                thresholds=thresholds,
                device=device,
            )
            scores.reasons += check.simulated
    decision = _decide(
        model_name,
        candidate=candidate,
        incumbent=incumbent,
        scores=scores,
        thresholds=thresholds,
        dataset_id=dataset.dataset_id,
        dry_run=dry_run,
        test_fields=test_fields,
        notes=notes,
        provenance=provenance,
        cut_under=cut_under,
    )
    _apply_decision(tracking_uri, decision, scores.reports, recorder=recorder)
    return decision


def _score_and_compare(
    tracking_uri: str,
    incumbent: RegisteredVersion,
    candidate: RegisteredVersion,
    dataset: PatchDataset,
    *,
    test_fields: dict[str, str],
    thresholds: GateThresholds,
    device: str,
) -> _GateScores:
    """Score both versions on the test split; compare the numbers and bootstrap their mean gain."""
    reports = {
        version.version: _score(tracking_uri, version, dataset, device=device)
        for version in (incumbent, candidate)
    }
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
    reasons = [*number_reasons, *_interval_reasons(interval, mean_delta, test_fields, thresholds)]
    return _GateScores(reports, comparisons, mean_delta, interval, reasons)


def _decide(
    model_name: str,
    *,
    candidate: RegisteredVersion,
    incumbent: RegisteredVersion,
    scores: _GateScores,
    thresholds: GateThresholds,
    dataset_id: str,
    dry_run: bool,
    test_fields: dict[str, str],
    notes: list[str],
    provenance: dict[str, Any],
    cut_under: ScoringRules,
) -> PromotionDecision:
    """The decision: promoted when nothing refused it; applied unless a dry run."""
    passed = not scores.reasons
    mean_delta, interval = scores.mean_delta, scores.interval
    return PromotionDecision(
        model_name=model_name,
        challenger_version=candidate.version,
        champion_version=incumbent.version,
        promoted=passed,
        applied=passed and not dry_run,
        mean_delta_points=round(mean_delta, 4) if not math.isnan(mean_delta) else mean_delta,
        comparisons=scores.comparisons,
        reasons=tuple(scores.reasons),
        thresholds=thresholds,
        dataset_id=dataset_id,
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


def _apply_decision(
    tracking_uri: str,
    decision: PromotionDecision,
    reports: dict[str, EvaluationReport],
    *,
    recorder: DecisionRecorder | None,
) -> None:
    """Log the decision; unless a dry run, move ``champion`` (if promoted) and record it in MLflow.

    ``recorder`` gets every decision, dry runs included.
    """
    log.info(
        "%s v%s vs champion v%s: %s (%s)%s",
        decision.model_name,
        decision.challenger_version,
        decision.champion_version,
        "passes" if decision.promoted else "refused",
        decision.interval_text(),
        " [dry run]" if decision.dry_run else "",
    )
    if not decision.dry_run:
        if decision.applied:
            set_alias(
                tracking_uri,
                decision.model_name,
                CHAMPION,
                decision.challenger_version,
                reason=f"promoted over v{decision.champion_version}: {decision.interval_text()} "
                f"on test set {decision.dataset_id}",
            )
        _record_in_mlflow(tracking_uri, decision, reports)
    if recorder is not None:
        recorder(decision)


def _score(
    tracking_uri: str, version: RegisteredVersion, dataset: PatchDataset, *, device: str
) -> EvaluationReport:
    network, loaded = load_registered_model(version.uri, tracking_uri=tracking_uri, device=device)
    assert loaded.metadata is not None
    return evaluate_network(
        network, loaded.metadata, dataset, split="test", model_label=version.label, device=device
    )


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
