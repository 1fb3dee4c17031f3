"""``crlib bench pipeline``: core-seconds per exposure through every stage, beside the reference tools.

For every field type one visit is simulated (``size="full"``: exposures of 2 x 4096x2048 chips,
realistic effects by default) into a local archive, and then, in one run:

1. **crlib**: every ingestion stage of :mod:`crlib.pipeline.stages` called in order in one freshly
   spawned Python process (imports and model loading count, as in a worker), in its own data root
   and a scratch results database; each stage's wall time and **core-seconds** (user + system CPU
   time of every thread, plus the child processes it waited for) are recorded
   (:func:`crlib.bench.pipeline.direct_stage_timings`). Per-visit stages are divided by the visit's
   exposures, so every figure is per exposure.
2. **bare AstroDrizzle** at its best for CR masks on the same files: drizzlepac's single-visit
   parameter set as the truth stage uses it, no final drizzle, ``num_cores`` = the CPU count, on
   copies in a fresh directory, as a whole process (imports included).
3. **deepCR** ``clean()`` (its own ACS-WFC model, CPU) on every exposure of the same visit, each
   as a whole process.

The references are timed the same way (wall seconds and core-seconds of the child process), so
the ratios compare like with like. The target (issue #16) is at most
:data:`TARGET_CORE_SECONDS_PER_EXPOSURE` core-seconds per exposure end to end on CPU.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from crlib.bench.pipeline import (
    STAGE_ORDER,
    direct_in_fresh_process,
    recorded_outcome,
    scratch_databases,
    secret_url,
)
from crlib.config import Settings
from crlib.errors import CrlibError
from crlib.profiles import FIELD_TYPES

log = logging.getLogger(__name__)

#: Issue #16's target: core-seconds per exposure, every stage, on CPU.
TARGET_CORE_SECONDS_PER_EXPOSURE = 15.0


@dataclass(frozen=True, slots=True)
class ProcessCost:
    """Wall and CPU time of one whole child process.

    Attributes
    ----------
    wall_s
        Seconds from start to exit.
    core_s
        User + system CPU seconds of the process and its children (core-seconds).
    """

    wall_s: float
    core_s: float


@dataclass(slots=True)
class FieldTypeCost:
    """One field type's visit: crlib per stage and the two references, per exposure.

    Attributes
    ----------
    field_type, visit, exposures
        Which visit, and how many exposures it has.
    stage_core_s, stage_wall_s
        ``{stage: core-seconds / seconds per exposure}`` of crlib's run, in
        :data:`~crlib.bench.pipeline.STAGE_ORDER`.
    process_wall_s
        crlib's whole spawned process (imports, model load, every stage), seconds.
    outcome
        What crlib's run recorded (visits, exposures, truth, predicted, scored ...).
    astrodrizzle
        Bare AstroDrizzle on the visit (whole process).
    deepcr
        deepCR ``clean()`` per exposure, summed over the visit (whole processes).
    """

    field_type: str
    visit: str
    exposures: int
    stage_core_s: dict[str, float] = field(default_factory=dict)
    stage_wall_s: dict[str, float] = field(default_factory=dict)
    process_wall_s: float = 0.0
    outcome: dict[str, Any] = field(default_factory=dict)
    astrodrizzle: ProcessCost | None = None
    deepcr: ProcessCost | None = None

    @property
    def core_s_per_exposure(self) -> float:
        """crlib's core-seconds per exposure, every stage."""
        return sum(self.stage_core_s.values())

    @property
    def wall_s_per_exposure(self) -> float:
        """crlib's seconds per exposure, every stage."""
        return sum(self.stage_wall_s.values())

    def reference_per_exposure(self) -> dict[str, dict[str, float]]:
        """``{"astrodrizzle"|"deepcr": {"wall_s", "core_s"}}`` per exposure."""
        per = {}
        for name, cost in (("astrodrizzle", self.astrodrizzle), ("deepcr", self.deepcr)):
            if cost is not None:
                per[name] = {"wall_s": cost.wall_s / self.exposures, "core_s": cost.core_s / self.exposures}
        return per


@dataclass(slots=True)
class PipelineCostReport:
    """Result of :func:`run_pipeline_cost_benchmark`.

    Attributes
    ----------
    size, cpu_count, threads, precision
        The run's settings (``threads``: torch threads; ``precision``: CRLIB_INFERENCE_PRECISION).
    field_types
        One entry per field type.
    seconds
        Wall time of the whole benchmark.
    """

    size: str
    cpu_count: int
    threads: int
    precision: str
    field_types: list[FieldTypeCost] = field(default_factory=list)
    seconds: float = 0.0

    def core_s_per_exposure(self) -> float:
        """crlib's core-seconds per exposure over every field type's exposures."""
        exposures = sum(f.exposures for f in self.field_types)
        total = sum(f.core_s_per_exposure * f.exposures for f in self.field_types)
        return total / exposures if exposures else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form with per-exposure totals, the reference ratios and the target verdict."""
        rows = []
        for entry in self.field_types:
            row = asdict(entry)
            references = entry.reference_per_exposure()
            row["per_exposure"] = {
                "crlib": {"core_s": entry.core_s_per_exposure, "wall_s": entry.wall_s_per_exposure},
                **references,
            }
            # core-seconds of the stage over the tool that does the same job on the same files
            row["ratios"] = {
                f"crlib_{stage}_over_{tool}": entry.stage_core_s[stage] / references[tool]["core_s"]
                for stage, tool in (("truth", "astrodrizzle"), ("infer", "deepcr"))
                if tool in references and references[tool]["core_s"] > 0
            }
            rows.append(row)
        overall = self.core_s_per_exposure()
        return {
            "benchmark": "pipeline",
            "size": self.size,
            "cpu_count": self.cpu_count,
            "threads": self.threads,
            "inference_precision": self.precision,
            "seconds": self.seconds,
            "field_types": rows,
            "core_s_per_exposure": overall,
            "target": {
                "core_s_per_exposure": TARGET_CORE_SECONDS_PER_EXPOSURE,
                "comparison": "<=",
                "pass": bool(overall <= TARGET_CORE_SECONDS_PER_EXPOSURE),
            },
        }


def process_cost(command: Sequence[str], *, workdir: Path) -> ProcessCost:
    """Run ``command`` to its end (:func:`crlib.bench.inference.run_timed`); its wall and CPU cost.

    ``workdir`` receives its ``stdout.txt`` and ``stderr.txt``.

    Raises
    ------
    CrlibError
        When the command exits non-zero (its stderr's tail in the message).
    """
    from crlib.bench.inference import run_timed

    workdir.mkdir(parents=True, exist_ok=True)
    timed = run_timed(command, env=dict(os.environ), workdir=workdir)
    return ProcessCost(wall_s=timed["wall_s"], core_s=timed["cpu_s"])


def _reference_costs(visit_dir: Path, scratch: Path, *, threads: int) -> tuple[ProcessCost, ProcessCost]:
    """Bare AstroDrizzle on the visit and deepCR clean() on each exposure, as whole processes."""
    from crlib.bench.truth_process import tool_command
    from crlib.formats.exposures import find_exposures

    work = scratch / "astrodrizzle"
    cores = os.cpu_count() or 1
    child = tool_command("bare", visit_dir, work, output_name="bare", num_cores=cores)
    drizzle = process_cost(child, workdir=scratch / "logs")
    shutil.rmtree(work, ignore_errors=True)
    wall = core = 0.0
    for flc in find_exposures(visit_dir):
        out = scratch / f"{flc.stem}_deepcr.npz"
        deepcr = [sys.executable, "-m", "crlib.bench.inference", "deepcr", str(flc), str(out), str(threads)]
        cost = process_cost(deepcr, workdir=scratch / "logs")
        wall, core = wall + cost.wall_s, core + cost.core_s
    return drizzle, ProcessCost(wall_s=wall, core_s=core)


def resolved_precision(settings: Settings) -> str:
    """The inference precision the run's engine uses (``CRLIB_INFERENCE_PRECISION`` resolved)."""
    from crlib.model.inference import resolve_device, resolve_precision

    requested = settings.inference_precision
    resolved = resolve_precision(requested, resolve_device(settings.device))
    return f"{resolved} (auto)" if requested == "auto" else resolved


def run_pipeline_cost_benchmark(
    settings: Settings,
    *,
    field_types: Sequence[str] = FIELD_TYPES,
    size: Literal["full", "small"] = "full",
    exposures: int = 3,
    seed: int = 2026,
    effects: str = "realistic",
    references: bool = True,
    work_dir: Path | None = None,
    keep: bool = False,
) -> PipelineCostReport:
    """One simulated visit per field type through every stage, beside AstroDrizzle and deepCR.

    Parameters
    ----------
    settings
        Settings naming the PostgreSQL server (a scratch database per field type is created on it
        and dropped), device, threads and inference precision; runs get their own data roots.
    field_types
        Field types to simulate (one visit each).
    size
        ``full`` (2 x 4096x2048 chips per exposure) or ``small`` (2 x 1024x512, for tests).
    exposures
        Exposures per visit (3-8: drizzle truth needs three for ``ok``).
    seed
        Simulation seed.
    effects
        Simulator effects preset, ``realistic`` or ``basic``.
    references
        Also time bare AstroDrizzle and deepCR ``clean()`` on the same files.
    work_dir
        Where archives and data roots go (default: a temporary directory under
        ``<data_root>/bench``, removed afterwards unless ``keep``).
    keep
        Keep ``work_dir``.

    Returns
    -------
    PipelineCostReport

    Raises
    ------
    CrlibError
        For bad parameters, or when a run or reference tool fails.
    """
    from crlib.bench.truth import simulate_field_archive
    from crlib.simulate.effects import parse_effects

    if not 3 <= exposures <= 8:
        raise CrlibError(f"exposures must be 3-8 (drizzle truth needs three), got {exposures}")
    unknown = sorted(set(field_types) - set(FIELD_TYPES))
    if unknown or not field_types:
        raise CrlibError(f"field types must be among {', '.join(FIELD_TYPES)} (got {list(field_types)})")
    parent = settings.data_root / "bench"
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="pipeline-", dir=parent))
    root.mkdir(parents=True, exist_ok=True)
    report = PipelineCostReport(
        size=size,
        cpu_count=os.cpu_count() or 0,
        threads=settings.torch_threads(),
        precision=resolved_precision(settings),
    )
    start = time.perf_counter()
    try:
        for index, field_type in enumerate(field_types):
            archive = simulate_field_archive(
                root / "archives",
                field_type,
                index=index,
                size=size,
                exposures=exposures,
                seed=seed,
                effects=parse_effects(effects),
            )
            visit = archive.visits[0]
            entry = FieldTypeCost(field_type=field_type, visit=visit.visit, exposures=len(visit.exposures))
            with scratch_databases(settings, (field_type,)) as urls:
                run_settings = settings.model_copy(
                    update={
                        "archive": f"local:{archive.root}",
                        "mlflow_tracking_uri": None,
                        "data_root": root / field_type / "data",
                        "database_url": secret_url(urls[field_type]),
                    }
                )
                run_settings.data_root.mkdir(parents=True, exist_ok=True)
                log.info("%s: crlib, every stage, %d %s exposures", field_type, entry.exposures, size)
                direct, entry.process_wall_s = direct_in_fresh_process(
                    run_settings,
                    run_id=f"bench__pipeline_{uuid.uuid4().hex[:6]}",
                    proposal_id=visit.proposal_id,
                    dag_id="crlib_reprocess_proposal",
                )
            entry.outcome = recorded_outcome(direct["summary"])
            for stage in STAGE_ORDER:
                entry.stage_core_s[stage] = float(direct["cpu_seconds"][stage]) / entry.exposures
                entry.stage_wall_s[stage] = float(direct["seconds"][stage]) / entry.exposures
            if references:
                log.info("%s: bare AstroDrizzle and deepCR clean() on the same files", field_type)
                entry.astrodrizzle, entry.deepcr = _reference_costs(
                    visit.directory, root / field_type / "references", threads=report.threads
                )
            report.field_types.append(entry)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    report.seconds = time.perf_counter() - start
    return report
