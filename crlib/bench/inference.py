"""``crlib bench infer``: deepCR's clean(), our engine (fp32, bf16), astroscrappy and ``crlib infer`` itself.

Every method runs in its own subprocess (``python -m crlib.bench.inference <method> <flc> <out>
<threads>``) so its peak RSS is honest (``ru_maxrss`` of that process only: Python, torch and the
method's arrays). Each child reads the exposure, loads its model, then times only the detection
over all chips, and saves its CR masks; the parent compares masks with deepCR's.

Beside those in-process figures, the whole-process cost a user waits for is measured: ``crlib
infer FILE`` run as a cold subprocess (interpreter start, imports, settings, model choice and
load, FITS read, inference, FITS write, interpreter exit), its wall time from the parent and its
peak RSS from ``wait4``. One more run of the same command under a tracer
(``python -m crlib.bench.inference trace-cli ...``: it hooks the import system and wraps the
command's stage functions, without changing what the command imports or when) says where the
time goes (:func:`trace_cli`). Methods and the command alternate over the repetitions (medians).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crlib.errors import CrlibError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

METHODS = ("deepcr", "engine-fp32", "engine-bf16", "astroscrappy")
#: ``crlib infer`` variants timed as whole processes: the weights and precision the engine-fp32 row
#: uses (no registry lookup), and the command exactly as a user types it (the model and precision
#: chosen by the settings: bf16 on a CPU with native bf16).
CLI_VARIANTS: dict[str, tuple[str, ...]] = {
    "cli-same-model": ("--model", "ACS-WFC", "--precision", "fp32"),
    "cli-default": (),
}
BENCH_MODEL = "ACS-WFC"
#: Target: whole-process ``crlib infer`` at most this many times the engine's in-process time.
CLI_OVER_ENGINE_TARGET = 1.3


# ----------------------------------------------------------------------------- child processes
def _run_method(method: str, flc: Path, out: Path, threads: int) -> dict[str, Any]:
    """Child-process body: detect CRs on every chip with one method, save masks, return timings."""
    import resource

    import numpy as np
    import torch

    from crlib.formats.flc import read_exposure

    torch.set_num_threads(threads)
    start = time.perf_counter()
    exposure = read_exposure(flc)
    read_seconds = time.perf_counter() - start
    masks: dict[str, np.ndarray] = {}
    path: dict[str, Any] | None = None
    if method == "deepcr":
        import warnings

        warnings.simplefilter("ignore")
        from deepCR import deepCR

        detector = deepCR(mask=BENCH_MODEL, device="CPU")
        start, cpu_start = time.perf_counter(), time.process_time()
        for extver, (sci, _) in exposure.chips.items():
            masks[str(extver)] = np.asarray(detector.clean(sci, inpaint=False), dtype=bool)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    elif method.startswith("engine-"):
        from crlib.model.inference import MaskEngine, Precision
        from crlib.model.weights import load_shipped_model

        precision: Precision = "bf16" if method == "engine-bf16" else "fp32"
        engine = MaskEngine(
            load_shipped_model(BENCH_MODEL), device="cpu", precision=precision, threads=threads
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        for extver, (sci, _) in exposure.chips.items():
            masks[str(extver)] = engine.predict_chip(sci).probability > 0.5
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        path = engine.execution_path()
    elif method == "astroscrappy":
        from crlib.model.lacosmic import chip_read_noise, lacosmic_mask

        start, cpu_start = time.perf_counter(), time.process_time()
        for extver, (sci, _) in exposure.chips.items():
            noise = chip_read_noise(exposure.primary, exposure.profile, extver, ccd=exposure.ccd(extver))
            masks[str(extver)] = lacosmic_mask(sci, read_noise=noise, objlim=2.6)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    else:
        raise ValueError(f"unknown benchmark method {method!r}")
    packed: dict[str, Any] = {key: np.packbits(value) for key, value in masks.items()}
    np.savez_compressed(out, **packed)
    shapes = {key: list(value.shape) for key, value in masks.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "method": method,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "read_seconds": read_seconds,
        "peak_rss_mb": peak,
        "shapes": shapes,
        **({"execution_path": path} if path is not None else {}),
    }


class _ImportClock:
    """Times imports by hooking ``importlib._bootstrap._find_and_load`` (what ``import`` calls).

    Like ``python -X importtime`` it keeps each module's self time (its own execution, without
    the modules it imports), summed per top-level package, and the outermost imports' total per
    stage of the command (:attr:`phase`), so stage times can be given without their imports.
    """

    def __init__(self) -> None:
        import threading

        self.phase = "startup"
        self.by_package: dict[str, float] = {}
        self.by_phase: dict[str, float] = {}
        self._stack: list[float] = []  # children's time of each open import
        self._main = threading.get_ident()
        self._installed: Any = None
        self.after_import: dict[str, Callable[[Any], None]] = {}

    def install(self) -> None:
        import importlib._bootstrap as bootstrap
        import threading

        original = vars(bootstrap)["_find_and_load"]
        self._installed = original
        clock = self

        def timed(name: str, import_: Any) -> Any:
            if threading.get_ident() != clock._main:
                return original(name, import_)
            clock._stack.append(0.0)
            start = time.monotonic()
            try:
                return original(name, import_)
            finally:
                elapsed = time.monotonic() - start
                children = clock._stack.pop()
                package = name.partition(".")[0]
                clock.by_package[package] = clock.by_package.get(package, 0.0) + elapsed - children
                if clock._stack:
                    clock._stack[-1] += elapsed
                else:
                    clock.by_phase[clock.phase] = clock.by_phase.get(clock.phase, 0.0) + elapsed
                hook = clock.after_import.pop(name, None)
                if hook is not None and name in sys.modules:
                    hook(sys.modules[name])

        vars(bootstrap)["_find_and_load"] = timed


def _package_group(package: str) -> str:
    groups = {
        "torch": ("torch", "torchgen", "functorch", "sympy", "mpmath", "networkx", "jinja2", "markupsafe"),
        "astropy": ("astropy", "erfa", "pyerfa", "astropy_iers_data", "yaml"),
        "numpy": ("numpy",),
        "typer/click/rich": ("typer", "click", "rich", "shellingham", "pygments", "markdown_it", "mdurl"),
        "pydantic": (
            "pydantic",
            "pydantic_core",
            "pydantic_settings",
            "annotated_types",
            "typing_inspection",
        ),
        "mlflow": ("mlflow",),
        "sqlalchemy": ("sqlalchemy", "psycopg2", "alembic"),
        "deepCR": ("deepCR", "learned_models", "matplotlib"),
        "crlib": ("crlib",),
    }
    for group, packages in groups.items():
        if package in packages:
            return group
    return "other (stdlib, small packages)"


def trace_cli(t0: float, out: Path, argv: Sequence[str]) -> None:
    """Child-process body: run ``crlib <argv>`` as the console script does, timing every stage.

    Writes a JSON object to ``out``: ``marks`` (``time.monotonic`` values: the parent's start
    ``t0`` is on the same clock), seconds per stage without its imports (``stages``), import
    seconds per stage and per package group, and the peak RSS. Stages are timed by wrapping
    ``load_settings``, ``resolve_model_reference`` (with ``exposure_filter_of``),
    ``load_inference_model`` and ``MaskEngine.__init__`` (model load), ``read_exposure``,
    ``MaskEngine.predict_chip`` (inference) and ``write_prediction`` when their modules are first
    imported, so the command imports what it always imports, in the same order.
    """
    import resource

    started = time.monotonic()
    clock = _ImportClock()
    stages: dict[str, float] = {}

    def wrap(owner: Any, attribute: str, stage: str) -> None:
        function = getattr(owner, attribute)

        def timed(*args: Any, **kwargs: Any) -> Any:
            outer, clock.phase = clock.phase, stage
            before = clock.by_phase.get(stage, 0.0)
            start = time.monotonic()
            try:
                return function(*args, **kwargs)
            finally:
                imports = clock.by_phase.get(stage, 0.0) - before
                stages[stage] = stages.get(stage, 0.0) + time.monotonic() - start - imports
                clock.phase = outer

        setattr(owner, attribute, timed)

    def config(module: Any) -> None:
        wrap(module, "load_settings", "settings")

    def serving(module: Any) -> None:
        wrap(module, "resolve_model_reference", "model choice (registry lookup)")
        wrap(module, "exposure_filter_of", "model choice (registry lookup)")
        wrap(module, "load_inference_model", "model load")

    def inference(module: Any) -> None:
        wrap(module.MaskEngine, "__init__", "model load")
        wrap(module.MaskEngine, "predict_chip", "inference")

    def exposure(module: Any) -> None:
        wrap(module, "read_exposure", "FITS read")
        wrap(module, "write_prediction", "FITS write")

    clock.after_import.update(
        {
            "crlib.config": config,
            "crlib.registry.serving": serving,
            "crlib.model.inference": inference,
            "crlib.model.exposure": exposure,
        }
    )
    clock.install()
    clock.phase = "command-line imports"
    main_start = time.monotonic()
    from crlib.cli import main
    from crlib.cli.app import register_commands

    register_commands()
    clock.phase = "command (other)"
    command_start = time.monotonic()
    code: int | str | None = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = exc.code
    ended = time.monotonic()
    payload = {
        "exit_code": code,
        "marks": {"t0": t0, "started": started, "main": main_start, "command": command_start, "ended": ended},
        "stages": stages,
        "imports_by_phase": clock.by_phase,
        "imports_by_group": _grouped(clock.by_package),
        "imports_by_package": dict(sorted(clock.by_package.items(), key=lambda item: -item[1])[:25]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    Path(out).write_text(json.dumps(payload))


def _grouped(by_package: dict[str, float]) -> dict[str, float]:
    groups: dict[str, float] = {}
    for package, seconds in by_package.items():
        group = _package_group(package)
        groups[group] = groups.get(group, 0.0) + seconds
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


# ----------------------------------------------------------------------------- parent side
def _load_masks(path: Path, shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    import numpy as np

    with np.load(path) as data:
        return {
            key: np.unpackbits(data[key], count=int(np.prod(shape))).reshape(shape).astype(bool)
            for key, shape in shapes.items()
        }


def bench_exposure(size: Literal["full", "small"], workdir: Path) -> Path:
    """Simulate one extragalactic ACS/WFC exposure of ``size`` and return its FLC path."""
    from crlib.simulate import simulate_archive

    archive = simulate_archive(
        workdir / "archive",
        visits=1,
        exposures=1,
        field_type="extragalactic",
        filters=("F606W",),
        size=size,
        seed=7,
    )
    return Path(archive.visits[0].exposures[0].path)


def crlib_command() -> list[str]:
    """The ``crlib`` console script of this interpreter (``python -m crlib`` where there is none)."""
    script = Path(sys.executable).with_name("crlib")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "crlib"]


def run_timed(command: Sequence[str], *, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Run ``command`` to completion; its wall time (s), peak RSS (MB, ``wait4``) and exit code.

    Raises
    ------
    CrlibError
        When the command fails (its stderr's end is in the message).
    """
    stdout_path, stderr_path = workdir / "stdout.txt", workdir / "stderr.txt"
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        start = time.monotonic()
        process = subprocess.Popen(list(command), stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = stderr_path.read_text(errors="replace").strip()[-800:]
        raise CrlibError(f"{' '.join(command[:3])} ... failed ({process.returncode}): {tail}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "start": start,
    }


def _cli_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["CRLIB_THREADS"] = str(threads)
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return env


def trace_breakdown(trace: dict[str, Any], wall_s: float, start: float) -> dict[str, float]:
    """Seconds per part of one traced ``crlib infer`` run; the parts sum to ``wall_s``.

    ``interpreter start`` runs from the parent's spawn to the tracer's first line; imports are
    given per package group (each module's own execution time); stages exclude the imports they
    trigger; ``interpreter exit`` is what follows the command until the parent sees the exit.
    """
    marks = trace["marks"]
    parts: dict[str, float] = {"interpreter start": marks["main"] - start}
    for group, seconds in trace["imports_by_group"].items():
        parts[f"imports: {group}"] = seconds
    imports_in_command = sum(trace["imports_by_phase"].values())
    for stage, seconds in trace["stages"].items():
        parts[stage] = seconds
    command = marks["ended"] - marks["main"]
    parts["command (other)"] = command - imports_in_command - sum(trace["stages"].values())
    parts["interpreter exit"] = wall_s - (marks["ended"] - start)
    return {key: round(value, 3) for key, value in parts.items()}


def run_inference_benchmark(
    *,
    size: Literal["full", "small"] = "full",
    threads: int | None = None,
    flc: Path | None = None,
    methods: tuple[str, ...] = METHODS,
    cli_variants: tuple[str, ...] = tuple(CLI_VARIANTS),
    repeats: int = 1,
    trace: bool = True,
) -> dict[str, Any]:
    """Run every method and ``crlib infer`` on one exposure, each in a subprocess; medians, RSS, ratios.

    Parameters
    ----------
    size
        Simulator size (``full``: 2 x 2048 x 4096 ACS/WFC; ``small`` for a quick check).
    threads
        Torch threads for deepCR, our engine and ``crlib infer`` (``CRLIB_THREADS``; default:
        every core).
    flc
        Use this exposure instead of simulating one.
    methods
        Subset of :data:`METHODS`; ``engine-bf16`` is skipped where bf16 is not native.
    cli_variants
        Subset of :data:`CLI_VARIANTS` timed as whole processes.
    repeats
        Runs of each method and variant, in rotating order (medians reported, every run kept).
    trace
        Also run ``crlib infer`` (the first variant) once under :func:`trace_cli` for the breakdown.

    Returns
    -------
    dict
        ``methods`` (median ``seconds`` of detection in process, ``read_seconds``, ``peak_rss_mb``,
        ``samples``, mask agreement with deepCR), ``cli`` (per variant: median ``wall_s``,
        ``peak_rss_mb``, ``samples``), ``cli_breakdown`` (seconds per part), ``ratios`` and
        ``load_average`` (1/5/15-minute, at start and end).
    """
    bad = [m for m in methods if m not in METHODS] + [v for v in cli_variants if v not in CLI_VARIANTS]
    if bad or repeats < 1:
        raise CrlibError(f"unknown benchmark methods {bad} or repeats {repeats} < 1")

    import numpy as np
    import torch

    from crlib.model.inference import bf16_supported, mask_agreement

    threads = threads or (os.cpu_count() or 1)

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="crlib-bench-") as tmp:
        workdir = Path(tmp)
        exposure = Path(flc) if flc is not None else bench_exposure(size, workdir)
        results: dict[str, Any] = {}
        masks: dict[str, dict[str, np.ndarray]] = {}
        runnable = []
        for method in methods:
            if method == "engine-bf16" and not bf16_supported(torch.device("cpu")):
                results[method] = {"skipped": "CPU has no AVX512-BF16/AMX"}
            else:
                runnable.append(method)
        jobs = runnable + list(cli_variants)
        samples: dict[str, list[dict[str, Any]]] = {job: [] for job in jobs}
        env = _cli_env(threads)
        for k in range(repeats):
            shift = k % len(jobs) if jobs else 0
            for job in jobs[shift:] + jobs[:shift]:
                log.info("bench: running %s (%d/%d)", job, k + 1, repeats)
                if job in CLI_VARIANTS:
                    out_dir = workdir / f"cli-{job}-{k}"
                    out_dir.mkdir()
                    command = [*crlib_command(), "-q", "infer", str(exposure), "--out", str(out_dir)]
                    samples[job].append(run_timed([*command, *CLI_VARIANTS[job]], env=env, workdir=workdir))
                    continue
                out = workdir / f"{job}.npz"
                command = [
                    sys.executable,
                    "-m",
                    "crlib.bench.inference",
                    job,
                    str(exposure),
                    str(out),
                    str(threads),
                ]
                completed = subprocess.run(command, capture_output=True, text=True, check=False)
                if completed.returncode != 0:
                    raise CrlibError(f"benchmark method {job} failed: {completed.stderr.strip()[-800:]}")
                record = json.loads(completed.stdout.strip().splitlines()[-1])
                masks[job] = _load_masks(out, record.pop("shapes"))
                samples[job].append(record)
        for method in runnable:
            runs = samples[method]
            results[method] = {
                "method": method,
                **_summarise_runs(runs, ("seconds", "cpu_seconds", "read_seconds")),
                **({"execution_path": runs[0]["execution_path"]} if "execution_path" in runs[0] else {}),
            }
        cli: dict[str, Any] = {}
        for variant in cli_variants:
            runs = samples[variant]
            cli[variant] = {
                "command": f"crlib -q infer FILE --out DIR {' '.join(CLI_VARIANTS[variant])}".strip(),
                **_summarise_runs(runs, ("wall_s", "cpu_s")),
            }
        breakdown: dict[str, float] = {}
        if trace and cli_variants:
            breakdown = _traced_run(exposure, CLI_VARIANTS[cli_variants[0]], env=env, workdir=workdir)
        report: dict[str, Any] = {
            "exposure": exposure.name,
            "size": size if flc is None else "given",
            "threads": threads,
            "model": BENCH_MODEL,
            "repeats": repeats,
            "methods": results,
            "cli": cli,
            "cli_breakdown": breakdown,
        }
        reference = masks.get("deepcr")
        if reference is not None:
            for method, chip_masks in masks.items():
                if method == "deepcr":
                    continue
                joined_ref = np.concatenate([reference[k].ravel() for k in sorted(reference)])
                joined = np.concatenate([chip_masks[k].ravel() for k in sorted(reference)])
                results[method]["agreement_with_deepcr"] = mask_agreement(joined_ref, joined)
    report["ratios"] = _ratios(results, cli)
    report["load_average"] = {"start": load_start, "end": os.getloadavg()}
    return report


def _summarise_runs(runs: Sequence[dict[str, Any]], timings: tuple[str, ...]) -> dict[str, Any]:
    """The repeated runs of one method or command summarised: median timings, peak memory, samples.

    Parameters
    ----------
    runs
        One record per run, each with the ``timings`` keys and ``peak_rss_mb``.
    timings
        Timing keys, seconds; the first is the one whose samples are listed.

    Returns
    -------
    dict
        The median of each timing, the largest ``peak_rss_mb`` and ``samples``: the first timing of
        every run, rounded to milliseconds.
    """
    import statistics

    summary: dict[str, Any] = {key: statistics.median(r[key] for r in runs) for key in timings}
    summary["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    summary["samples"] = [round(r[timings[0]], 3) for r in runs]
    return summary


def _traced_run(
    exposure: Path, extra: Sequence[str], *, env: dict[str, str], workdir: Path
) -> dict[str, float]:
    out_dir = workdir / "cli-traced"
    out_dir.mkdir()
    trace_file = workdir / "trace.json"
    start = time.monotonic()
    command = [
        sys.executable,
        "-m",
        "crlib.bench.inference",
        "trace-cli",
        str(trace_file),
        repr(start),
        "-q",
        "infer",
        str(exposure),
        "--out",
        str(out_dir),
        *extra,
    ]
    timed = run_timed(command, env=env, workdir=workdir)
    trace = json.loads(trace_file.read_text())
    if trace["exit_code"] not in (0, None):
        raise CrlibError(f"traced crlib infer exited with {trace['exit_code']}")
    parts = trace_breakdown(trace, timed["wall_s"], timed["start"])
    parts["total (traced run)"] = round(timed["wall_s"], 3)
    return parts


def _ratios(results: dict[str, Any], cli: dict[str, Any] | None = None) -> dict[str, float]:
    ratios: dict[str, float] = {}

    def seconds(name: str) -> float | None:
        value = results.get(name, {}).get("seconds")
        return float(value) if value else None

    for ours in ("engine-fp32", "engine-bf16"):
        mine = seconds(ours)
        if mine is None:
            continue
        for other in ("deepcr", "astroscrappy"):
            theirs = seconds(other)
            if theirs is not None:
                ratios[f"{other}_over_{ours}"] = round(theirs / mine, 2)
    engine = seconds("engine-fp32")
    engine_cpu = results.get("engine-fp32", {}).get("cpu_seconds")
    for variant, measured in (cli or {}).items():
        if engine:
            ratios[f"{variant}_over_engine-fp32"] = round(measured["wall_s"] / engine, 2)
        if engine_cpu and measured.get("cpu_s"):
            ratios[f"{variant}_over_engine-fp32 (CPU time)"] = round(measured["cpu_s"] / engine_cpu, 2)
    return ratios


if __name__ == "__main__":  # child process entry
    if sys.argv[1] == "trace-cli":
        trace_cli(float(sys.argv[3]), Path(sys.argv[2]), sys.argv[4:])
    else:
        _method, _flc, _out, _threads = sys.argv[1:5]
        print(json.dumps(_run_method(_method, Path(_flc), Path(_out), int(_threads))))
