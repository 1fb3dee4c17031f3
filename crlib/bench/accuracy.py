"""``crlib bench accuracy``: TPR at FPR 0.05% / 0.5% on simulated visits with drizzle truth.

For every field type x filter cell, ``visits_per_cell`` seeded visits are simulated
(:func:`crlib.simulate.simulate_visit`) and go through the truth stage
(:func:`crlib.truth.build_visit_truth`: relative alignment without catalog queries, AstroDrizzle
driz_cr, quality gates). Every exposure whose truth passed the gates (``ok``; ``suspect`` too when
asked) is predicted by

* ``global``: deepCR's global model ``ACS-WFC``;
* ``per_filter``: the per-filter model of the visit's filter (``ACS-WFC-F435W`` ...);
* ``lacosmic``: astroscrappy with the paper's ``objlim`` for the field type, its sigclip sweep
  written as a pseudo-probability (:func:`crlib.model.lacosmic_score.predict_exposure_lacosmic`);

and each prediction file is scored against the truth file by
:func:`crlib.metrics.scoring.score_prediction_file` under the profile's scoring rules
(:class:`crlib.profiles.ScoringRules`: the paper's 128-px border, DQ-flagged pixels of the FLC left
out), the same rules pipeline scoring applies. A group's ROC is the sum of its exposures'
histograms (:func:`crlib.metrics.scoring.pooled_histograms`), per (model, field type, filter) and per
(model, field type); the TPR at each FPR point is read off it by :func:`crlib.metrics.roc.tpr_at_fpr`.
A per-field-type group of ``per_filter`` pools three models' scores at common thresholds, so a
difference in their calibration lowers its ROC below each filter's own.

The visits are simulated and the truth is derived by drizzling, not the paper's real test sets
(Table 2, DESIGN.md section 6) and their masks: the numbers say how the shipped models do on our
simulator and our truth, next to the paper's Table 3 for orientation; differences are expected.
Where deepCR's own evaluation code counts differently,
:data:`crlib.bench.deepcr_reference.EVALUATION_NOTES` says how.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crlib.bench.deepcr_reference import EVALUATION_NOTES, PAPER_TABLE3
from crlib.errors import ConfigError
from crlib.jsonvalues import json_compatible
from crlib.metrics.roc import (
    FPR_POINTS,
    RocCurve,
    dilation_at_plain_fpr,
    roc_from_histograms,
    tpr_at_fpr_points,
)
from crlib.metrics.scoring import pooled_histograms, score_prediction_file
from crlib.model.lacosmic import SIGCLIP_SWEEP
from crlib.model.lacosmic_score import objlim_for, predict_exposure_lacosmic
from crlib.profiles import ACS_WFC, FIELD_TYPES, ScoringRules
from crlib.records import ExposureMetrics

if TYPE_CHECKING:
    from crlib.model.inference import Precision
    from crlib.simulate.effects import SimEffects

log = logging.getLogger(__name__)

#: The compared detectors, in table order (the default set).
MODEL_KINDS: tuple[str, ...] = ("global", "per_filter", "lacosmic")
#: The deepCR models again with the engine in bf16 (opt-in: only where the device runs bf16
#: natively); ``<kind>_bf16`` is scored on the same truth as ``<kind>`` (fp32).
BF16_KINDS: tuple[str, ...] = ("global_bf16", "per_filter_bf16")
#: Every kind ``models`` may name, in table order.
ALL_KINDS: tuple[str, ...] = (*MODEL_KINDS, *BF16_KINDS)
#: Filters with a shipped per-filter model (the paper's three test filters).
ACCURACY_FILTERS: tuple[str, ...] = ("F435W", "F606W", "F814W")
#: ``filter`` of a group pooled over every filter of a field type.
ALL_FILTERS = "all"
#: Truth statuses scored by default.
SCORED_STATUSES: tuple[str, ...] = ("ok",)

CAVEAT = (
    "Simulated ACS/WFC visits scored against drizzle-derived truth, not the paper's real test sets "
    "(Table 2) and masks: differences from the paper's Table 3 are expected."
)


@dataclass(frozen=True)
class ScoredExposure:
    """One exposure scored by every compared detector.

    Attributes
    ----------
    rootname, visit, field_type, filter
        Which exposure.
    truth_status
        Its truth product's status (``ok`` or ``suspect``).
    metrics
        ``{model kind: ExposureMetrics}`` (with histograms).
    seconds
        ``{model kind: prediction wall time}``, seconds.
    """

    rootname: str
    visit: str
    field_type: str
    filter: str
    truth_status: str
    metrics: dict[str, ExposureMetrics]
    seconds: dict[str, float]


@dataclass(frozen=True)
class VisitOutcome:
    """What the truth stage said about one simulated visit.

    Attributes
    ----------
    visit, field_type, filter
        Which visit.
    truth_status
        ``{rootname: ok|suspect|failed}``.
    reasons
        ``{rootname: gate reasons}`` for exposures that are not ``ok``.
    seconds
        Wall time per step (``simulate``, ``truth``, ``global``, ``per_filter``, ``lacosmic``, ``score``).
    """

    visit: str
    field_type: str
    filter: str
    truth_status: dict[str, str]
    reasons: dict[str, tuple[str, ...]]
    seconds: dict[str, float]


@dataclass(frozen=True)
class GroupAccuracy:
    """Pooled accuracy of every detector on one (field type, filter) group.

    Attributes
    ----------
    field_type, filter
        The group (``filter`` is :data:`ALL_FILTERS` for a whole field type).
    exposures
        Exposures scored.
    truth_status
        Truth statuses of every exposure of the group's visits (scored or not).
    n_cr, n_noncr
        Valid CR / non-CR truth pixels pooled.
    models
        ``{model kind: model name(s)}``.
    tpr
        ``{model kind: {"plain"|"dilated": {"0.0005": tpr, "0.005": tpr}}}`` as fractions (NaN when
        the group has no CR or no non-CR pixel).
    fpr_reach
        ``{model kind: {"plain"|"dilated": (lowest, highest)}}``: the FPR range the pooled ROC's own
        points span (between 0 and 1 exclusive). An FPR point outside it is interpolated towards
        (0, 0) or (1, 1) rather than between two measured points.
    paper
        The paper's Table 3 entry (global model) or ``None``.
    dilation
        ``{model kind: {fpr key: {"plain_tpr", "dilated_tpr", "plain_fpr", "dilated_fpr",
        "ring_cr_share"}}}``: what dilating the mask does at the threshold where the plain mask
        reaches that FPR (:func:`crlib.metrics.roc.dilation_at_plain_fpr`); ``ring_cr_share`` is the
        share of the added pixels that are truth CRs.
    """

    field_type: str
    filter: str
    exposures: int
    truth_status: dict[str, int]
    n_cr: int
    n_noncr: int
    models: dict[str, str]
    tpr: dict[str, dict[str, dict[str, float]]]
    fpr_reach: dict[str, dict[str, tuple[float, float]]]
    paper: dict[str, dict[str, float]] | None = None
    dilation: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def within_reach(self, kind: str, label: str, fpr_key: str) -> bool:
        """Whether the FPR point lies between two measured points of the pooled ROC."""
        lowest, highest = self.fpr_reach.get(kind, {}).get(label, (math.nan, math.nan))
        fpr = FPR_POINTS[fpr_key]
        return bool(lowest <= fpr <= highest)


@dataclass(frozen=True)
class AccuracyReport:
    """Everything one accuracy benchmark run measured.

    Attributes
    ----------
    settings
        The run's parameters.
    visits
        One outcome per simulated visit.
    exposures
        Every scored exposure.
    groups
        Pooled results: per field type, each filter then :data:`ALL_FILTERS`.
    seconds
        Wall time of the whole run.
    caveat, notes
        :data:`CAVEAT` and :data:`EVALUATION_NOTES`.
    """

    settings: dict[str, Any]
    visits: tuple[VisitOutcome, ...]
    exposures: tuple[ScoredExposure, ...]
    groups: tuple[GroupAccuracy, ...]
    seconds: float
    caveat: str = CAVEAT
    notes: tuple[str, ...] = EVALUATION_NOTES

    def truth_status_counts(self) -> dict[str, int]:
        """Truth statuses over every simulated exposure."""
        counts: Counter[str] = Counter()
        for visit in self.visits:
            counts.update(visit.truth_status.values())
        return dict(sorted(counts.items()))

    def group(self, field_type: str, filter_name: str) -> GroupAccuracy:
        """The group of a field type and filter (or :data:`ALL_FILTERS`); KeyError if absent."""
        for group in self.groups:
            if (group.field_type, group.filter) == (field_type, filter_name):
                return group
        raise KeyError((field_type, filter_name))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (no histograms; NaN as ``None``)."""
        exposures = []
        for exposure in self.exposures:
            row = {k: v for k, v in asdict(exposure).items() if k != "metrics"}
            row["metrics"] = {
                kind: {k: v for k, v in asdict(m).items() if not k.startswith("hist_")}
                for kind, m in exposure.metrics.items()
            }
            exposures.append(row)
        return json_compatible(
            {
                "caveat": self.caveat,
                "evaluation_notes": self.notes,
                "settings": self.settings,
                "seconds": self.seconds,
                "truth_status": self.truth_status_counts(),
                "groups": [asdict(group) for group in self.groups],
                "visits": [asdict(visit) for visit in self.visits],
                "exposures": exposures,
            },
            non_finite="null",
        )


def fpr_reach(curve: RocCurve) -> tuple[float, float]:
    """Lowest and highest FPR among the curve's own points strictly between 0 and 1 (NaN if none)."""
    inner = curve.fpr[1:-1]
    inner = inner[(inner > 0) & (inner < 1)]
    if inner.size == 0:
        return (math.nan, math.nan)
    return (float(inner.min()), float(inner.max()))


def pool_group(
    exposures: Sequence[ScoredExposure],
    *,
    field_type: str,
    filter_name: str,
    kinds: Sequence[str],
    truth_status: dict[str, int] | None = None,
) -> GroupAccuracy:
    """Pool the histograms of a group's exposures per detector and read off TPR at the FPR points.

    Parameters
    ----------
    exposures
        The group's scored exposures (any order).
    field_type, filter_name
        Labels of the group (:data:`ALL_FILTERS` for a whole field type).
    kinds
        Detectors to pool (each exposure must have been scored by all of them).
    truth_status
        Truth status counts of the group's visits, stored as given.
    """
    tpr: dict[str, dict[str, dict[str, float]]] = {}
    reach: dict[str, dict[str, tuple[float, float]]] = {}
    dilation: dict[str, dict[str, dict[str, float]]] = {}
    models: dict[str, str] = {}
    n_cr = n_noncr = 0
    for kind in kinds:
        records = [e.metrics[kind] for e in exposures]
        models[kind] = ", ".join(sorted({r.model_name for r in records}))
        tpr[kind], reach[kind] = {}, {}
        pooled = {}
        for label, dilated in (("plain", False), ("dilated", True)):
            pooled[label] = pooled_histograms(records, dilated=dilated)
            curve = roc_from_histograms(*pooled[label])
            tpr[kind][label] = tpr_at_fpr_points(curve)
            reach[kind][label] = fpr_reach(curve)
            if label == "plain":
                n_cr, n_noncr = curve.n_cr, curve.n_noncr
        dilation[kind] = {
            key: dilation_at_plain_fpr(pooled["plain"], pooled["dilated"], fpr).summary()
            for key, fpr in FPR_POINTS.items()
        }
    return GroupAccuracy(
        field_type=field_type,
        filter=filter_name,
        exposures=len(exposures),
        truth_status=dict(sorted((truth_status or {}).items())),
        n_cr=int(n_cr),
        n_noncr=int(n_noncr),
        models=models,
        tpr=tpr,
        fpr_reach=reach,
        paper=PAPER_TABLE3.get((field_type, filter_name)),
        dilation=dilation,
    )


def pool_report_groups(
    exposures: Sequence[ScoredExposure],
    visits: Sequence[VisitOutcome],
    *,
    field_types: Sequence[str],
    filters: Sequence[str],
    kinds: Sequence[str],
) -> tuple[GroupAccuracy, ...]:
    """Groups per (field type, filter) and per field type, in table order (empty groups included)."""
    groups = []
    for field_type in field_types:
        for filter_name in (*filters, ALL_FILTERS):
            chosen = [
                e for e in exposures if e.field_type == field_type and filter_name in (ALL_FILTERS, e.filter)
            ]
            statuses: Counter[str] = Counter()
            for visit in visits:
                if visit.field_type == field_type and filter_name in (ALL_FILTERS, visit.filter):
                    statuses.update(visit.truth_status.values())
            groups.append(
                pool_group(
                    chosen, field_type=field_type, filter_name=filter_name, kinds=kinds, truth_status=statuses
                )
            )
    return tuple(groups)


def _validate(
    field_types: Sequence[str],
    filters: Sequence[str],
    size: str,
    visits_per_cell: int,
    exposures: int,
    kinds: Sequence[str],
    sigclips: Sequence[float],
) -> None:
    from crlib.simulate.programs import filter_spec

    unknown = [f for f in field_types if f not in FIELD_TYPES]
    if not field_types or unknown:
        raise ConfigError(f"field types must be among {', '.join(FIELD_TYPES)} (got {list(field_types)})")
    if not filters:
        raise ConfigError("give at least one filter")
    for name in filters:
        filter_spec(name)
    if size not in ("full", "small"):
        raise ConfigError(f"size must be 'full' or 'small' (got {size!r})")
    if visits_per_cell < 1:
        raise ConfigError(f"visits per cell must be at least 1 (got {visits_per_cell})")
    if not 3 <= exposures <= 8:
        raise ConfigError(f"exposures per visit must be 3-8 for drizzle truth (got {exposures})")
    bad = [k for k in kinds if k not in ALL_KINDS]
    if not kinds or bad:
        raise ConfigError(f"models must be among {', '.join(ALL_KINDS)} (got {list(kinds)})")
    if "lacosmic" in kinds and (not sigclips or min(sigclips) <= 0):
        raise ConfigError(f"the LACosmic sigclip sweep needs positive values (got {list(sigclips)})")


def _clear_visit_files(archive_visit: Path, extra_dirs: Sequence[Path]) -> None:
    """Delete a visit's pixel files (keep ``truth/visit.json`` so later visit ids stay the same)."""
    for pattern in ("*_flc.fits", "truth/*_simtruth.fits"):
        for path in archive_visit.glob(pattern):
            path.unlink()
    for directory in extra_dirs:
        shutil.rmtree(directory, ignore_errors=True)


def deepcr_kind(kind: str) -> tuple[str, Precision]:
    """``global_bf16`` -> ``("global", "bf16")``; ``per_filter`` -> ``("per_filter", "fp32")``."""
    base = kind.removesuffix("_bf16")
    return (base, "bf16") if base != kind else (kind, "fp32")


def run_accuracy_benchmark(
    workdir: Path,
    *,
    field_types: Sequence[str] = FIELD_TYPES,
    filters: Sequence[str] = ACCURACY_FILTERS,
    size: Literal["full", "small"] = "small",
    visits_per_cell: int = 1,
    exposures: int = 3,
    seed: int = 0,
    models: Sequence[str] = MODEL_KINDS,
    sigclips: Sequence[float] = SIGCLIP_SWEEP,
    include_suspect: bool = False,
    device: str = "auto",
    threads: int | None = None,
    keep_files: bool = False,
    rules: ScoringRules | None = None,
    min_peak_snr: float | None = None,
    effects: SimEffects | None = None,
) -> AccuracyReport:
    """Simulate, build truth, predict and score every field type x filter cell; pool the results.

    Parameters
    ----------
    workdir
        Scratch directory; its ``crlib-accuracy/`` subdirectory is replaced by this run.
    field_types, filters
        The grid (filters must be simulator filters; the per-filter model falls back to the global
        one where none is shipped).
    size
        ``small`` (2 x 1024x512 crops) or ``full`` (2 x 4096x2048) exposures.
    visits_per_cell
        Visits simulated per (field type, filter).
    exposures
        Exposures per visit, 3-8.
    seed
        Simulator seed: the same seed and grid give the same visits and numbers.
    models
        Detectors to compare, a subset of :data:`ALL_KINDS` (``*_bf16``: the same deepCR model with
        the engine in bf16, scored on the same truth; see :mod:`crlib.bench.precision`).
    sigclips
        LACosmic's sigclip sweep (more values: a finer ROC, linearly more time).
    include_suspect
        Also score exposures whose truth is ``suspect`` (``failed`` never is).
    device, threads
        For the deepCR models (see :class:`crlib.model.inference.MaskEngine`).
    keep_files
        Keep FLC, truth and prediction files (default: deleted visit by visit to bound disk use).
    rules
        Which pixels count (default: the ACS/WFC profile's, as pipeline scoring uses).
    min_peak_snr
        Truth stage: driz_cr components whose peak is below this many sigma are pruned from the
        truth (default: the truth stage's, 5; 0 keeps every driz_cr component).
    effects
        Simulator archive effects (:class:`crlib.simulate.effects.SimEffects`; ``None``: the
        simulator's default). ``crlib bench accuracy`` passes ``SimEffects.realistic()`` unless told
        ``--effects basic``.

    Returns
    -------
    AccuracyReport

    Raises
    ------
    ConfigError
        For bad parameters or an unavailable device.
    """
    from crlib.align import AlignOptions
    from crlib.model.exposure import predict_exposure
    from crlib.model.inference import MaskEngine, bf16_supported, resolve_device
    from crlib.model.weights import choose_model_name, load_shipped_model
    from crlib.simulate import simulate_visit
    from crlib.truth import TruthOptions, build_visit_truth

    _validate(field_types, filters, size, visits_per_cell, exposures, tuple(models), sigclips)
    kinds = tuple(k for k in ALL_KINDS if k in models)
    if any(deepcr_kind(k)[1] == "bf16" for k in kinds) and not bf16_supported(resolve_device(device)):
        raise ConfigError(
            f"models {', '.join(k for k in kinds if k.endswith('_bf16'))} need native bf16, which device "
            f"{device!r} lacks (AVX512-BF16/AMX or a bf16 GPU): leave the *_bf16 models out"
        )
    accepted = SCORED_STATUSES + (("suspect",) if include_suspect else ())
    run_dir = Path(workdir) / "crlib-accuracy"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    archive = run_dir / "archive"
    rules = ACS_WFC.scoring if rules is None else rules
    truth_options = TruthOptions(align_options=AlignOptions(query_catalogs=False))
    if min_peak_snr is not None:
        truth_options = replace(truth_options, min_peak_snr=float(min_peak_snr))
    engines: dict[tuple[str, Precision], MaskEngine] = {}

    def engine_for(name: str, precision: Precision) -> MaskEngine:
        if (name, precision) not in engines:
            engines[name, precision] = MaskEngine(
                load_shipped_model(name), device=device, precision=precision, threads=threads
            )
        return engines[name, precision]

    cells = [(ft, fl) for ft in field_types for fl in filters]
    total_visits = len(cells) * visits_per_cell
    start = time.perf_counter()
    outcomes: list[VisitOutcome] = []
    scored: list[ScoredExposure] = []
    for cell_index, (field_type, filter_name) in enumerate(cells):
        for repeat in range(visits_per_cell):
            visit_index = cell_index * visits_per_cell + repeat
            seconds: dict[str, float] = dict.fromkeys(("simulate", "truth", *kinds, "score"), 0.0)
            t0 = time.perf_counter()
            visit = simulate_visit(
                archive,
                field_type=field_type,
                filter_name=filter_name,
                exposures=exposures,
                size=size,
                seed=seed,
                visit_index=visit_index,
                effects=effects,
            )
            seconds["simulate"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            work_dir = run_dir / "work" / visit.visit
            truth_dir = run_dir / "truth" / visit.visit
            try:
                truth = build_visit_truth(
                    visit.directory, work_dir=work_dir, out_dir=truth_dir, options=truth_options
                )
                results = {r.rootname: r for r in truth.exposures}
                statuses: dict[str, str] = {root: str(r.status) for root, r in results.items()}
                reasons = {root: r.reasons for root, r in results.items() if r.status != "ok"}
            except Exception as exc:  # a truth-stage crash on one visit is an outcome, not the run's end
                log.exception("truth stage raised on visit %s", visit.visit)
                results = {}
                statuses = {e.rootname: "failed" for e in visit.exposures}
                reason = (f"truth stage raised {type(exc).__name__}: {exc}",)
                reasons = dict.fromkeys(statuses, reason)
            seconds["truth"] = time.perf_counter() - t0
            pred_dirs = [run_dir / "pred" / kind / visit.visit for kind in kinds]
            for rootname, result in sorted(results.items()):
                if result.status not in accepted or result.path is None:
                    continue
                flc = visit.directory / f"{rootname}_flc.fits"
                metrics: dict[str, ExposureMetrics] = {}
                exposure_seconds: dict[str, float] = {}
                for kind, pred_dir in zip(kinds, pred_dirs, strict=True):
                    t0 = time.perf_counter()
                    if kind == "lacosmic":
                        prediction = predict_exposure_lacosmic(
                            flc, out_dir=pred_dir, objlim=objlim_for(field_type), sigclips=sigclips
                        )
                    else:
                        base, precision = deepcr_kind(kind)
                        name = choose_model_name(ACS_WFC, filter_name if base == "per_filter" else None)
                        engine = engine_for(name, precision)
                        prediction = predict_exposure(flc, out_dir=pred_dir, engine=engine)
                    exposure_seconds[kind] = time.perf_counter() - t0
                    seconds[kind] += exposure_seconds[kind]
                    t0 = time.perf_counter()
                    metrics[kind], _ = score_prediction_file(
                        Path(prediction.path), Path(result.path), field_type=field_type, rules=rules, flc=flc
                    )
                    seconds["score"] += time.perf_counter() - t0
                scored.append(
                    ScoredExposure(
                        rootname=rootname,
                        visit=visit.visit,
                        field_type=field_type,
                        filter=filter_name,
                        truth_status=result.status,
                        metrics=metrics,
                        seconds=exposure_seconds,
                    )
                )
            if not keep_files:
                _clear_visit_files(visit.directory, [work_dir, truth_dir, *pred_dirs])
            outcomes.append(VisitOutcome(visit.visit, field_type, filter_name, statuses, reasons, seconds))
            done = len(outcomes)
            elapsed = time.perf_counter() - start
            counts = Counter(statuses.values())
            log.info(
                "[%d/%d] %s %s %s: truth %s; %s; elapsed %.0f s, about %.0f s left",
                done,
                total_visits,
                visit.visit,
                field_type,
                filter_name,
                ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
                ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()),
                elapsed,
                elapsed / done * (total_visits - done),
            )
    groups = pool_report_groups(scored, outcomes, field_types=field_types, filters=filters, kinds=kinds)
    device_names = sorted({engine.description for engine in engines.values()})
    settings: dict[str, Any] = {
        "field_types": list(field_types),
        "filters": list(filters),
        "size": size,
        "visits_per_cell": visits_per_cell,
        "exposures_per_visit": exposures,
        "seed": seed,
        "effects": None if effects is None else effects.as_dict(),
        "models": list(kinds),
        "lacosmic_sigclips": sorted(float(s) for s in sigclips) if "lacosmic" in kinds else [],
        "lacosmic_objlim": {ft: objlim_for(ft) for ft in field_types} if "lacosmic" in kinds else {},
        "scored_truth_statuses": list(accepted),
        "truth": "drizzle (AstroDrizzle driz_cr), relative alignment, no catalog queries",
        "truth_min_peak_snr": truth_options.min_peak_snr,
        "scoring": {"border_px": rules.border_px, "exclude_dq": rules.exclude_dq},
        "device": ", ".join(device_names) or device,
        "threads": threads,
        "fpr_points": dict(FPR_POINTS),
        "workdir": str(run_dir),
        "files_kept": keep_files,
    }
    return AccuracyReport(
        settings=settings,
        visits=tuple(outcomes),
        exposures=tuple(scored),
        groups=groups,
        seconds=time.perf_counter() - start,
    )
