"""GPU benchmark (issue #16 item 5): inference and training speed on the device, masks checked on CPU.

One report (:func:`run_gpu_benchmark`, ``crlib bench gpu``, ``make bench-gpu``):

* inference with :class:`~crlib.model.inference.MaskEngine` (shipped ``ACS-WFC`` weights) on one
  exposure read once with :func:`~crlib.formats.flc.read_exposure`, per precision (fp32, bf16,
  fp16 where the engine and the device support them): warm-up once, then the median of
  ``repeats`` timed runs of :meth:`~crlib.model.inference.MaskEngine.predict_chip` over every chip
  (file I/O excluded, CUDA synchronised before the clock stops), peak memory, and the network's
  own time on windows already on the device (what the host-side work adds is the difference);
* the masks of every precision against the CPU fp32 path on the same pixels, computed once;
* training steps (forward, :func:`~crlib.training.trainer.masked_bce`, backward, Adam) on
  256x256 patches already on the device: patches per second and peak memory;
* the environment (device, torch, CUDA, cuDNN, threads) and the issue's targets with pass flags.

Without a CUDA device (``device="auto"``) everything runs on the CPU and the report says it is
a plumbing check only.
"""

from __future__ import annotations

import copy
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast, get_args

import numpy as np
import torch

from crlib.bench.gpu_inputs import (
    FULL_CHIP_SHAPE,
    BenchExposure,
    SizeName,
    environment_report,
    load_bench_exposure,
)
from crlib.model.inference import (
    DEFAULT_MARGIN,
    MaskEngine,
    Precision,
    bf16_supported,
    mask_agreement,
    peak_memory_mb,
    plan_windows,
    resolve_device,
)
from crlib.model.weights import LoadedModel, load_shipped_model

log = logging.getLogger(__name__)

#: Issue #16 targets: inference of one full ACS/WFC exposure (2 x 2048x4096) excluding file I/O.
TARGET_INFERENCE_MS = 10.0
#: Issue #16 targets: training throughput on 256x256 patches.
TARGET_TRAINING_PATCHES_PER_S = 2000.0
#: Precisions the benchmark asks for, in report order.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
#: The model benchmarked (deepCR's global ACS/WFC mask model).
BENCH_MODEL = "ACS-WFC"
#: Training patch side (the target is stated for 256x256 patches).
TRAIN_PATCH = 256
#: Training patch side of ``size="small"`` (a plumbing check: the target is not judged on it).
SMALL_TRAIN_PATCH = 64


def precision_unsupported(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` cannot run on ``device`` with :class:`MaskEngine`, or ``None`` when it can."""
    if precision not in get_args(Precision):
        return (
            f"MaskEngine accepts {', '.join(get_args(Precision))} only "
            f"(crlib.model.inference.Precision); {precision} is not implemented in the engine"
        )
    if precision == "bf16" and not bf16_supported(device):
        return f"no native bfloat16 on this {device.type} (needs AVX512-BF16/AMX or a bf16 GPU)"
    return None


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


def _window_shapes(engine: MaskEngine, shape: tuple[int, int]) -> tuple[int, int, int]:
    """(windows, window rows, window columns) the engine runs on a chip of ``shape`` (its own rule)."""
    padded = (shape[0] + (-shape[0] % 4), shape[1] + (-shape[1] % 4))
    side = min(engine.window, max(padded))
    side -= side % 4
    windows = plan_windows(padded, window=side, margin=engine.margin)
    return len(windows), min(side, padded[0]), min(side, padded[1])


def time_exposure(
    engine: MaskEngine, chips: dict[int, np.ndarray], *, repeats: int
) -> tuple[list[float], dict[int, np.ndarray]]:
    """Wall seconds of predicting every chip, after one untimed warm-up run.

    Parameters
    ----------
    engine
        The engine (device, precision, window and batch fixed).
    chips
        ``{extver: (ny, nx) electrons}``, already in memory.
    repeats
        Timed runs.

    Returns
    -------
    tuple
        Seconds of each timed run (CUDA synchronised before each clock read) and the probabilities
        of the last run per chip.
    """
    probabilities = {extver: engine.predict_chip(sci).probability for extver, sci in chips.items()}
    samples = []
    for _ in range(repeats):
        _synchronize(engine.device)
        started = time.perf_counter()
        probabilities = {extver: engine.predict_chip(sci).probability for extver, sci in chips.items()}
        _synchronize(engine.device)
        samples.append(time.perf_counter() - started)
    return samples, probabilities


def time_network_only(engine: MaskEngine, chips: dict[int, np.ndarray], *, repeats: int) -> float:
    """Median seconds of the network alone over an exposure's windows, inputs already on the device.

    The same window side, batch size and number of forward passes as :meth:`MaskEngine.predict_chip`
    but without preprocessing, host-device copies or assembly: the device-bound part of the time.
    """
    passes: list[torch.Tensor] = []
    generator = torch.Generator().manual_seed(0)
    for sci in chips.values():
        count, wy, wx = _window_shapes(engine, (sci.shape[0], sci.shape[1]))
        full, rest = divmod(count, engine.batch)
        sizes = [engine.batch] * full + ([rest] if rest else [])
        data = torch.randn((engine.batch, 1, wy, wx), generator=generator).to(engine.device)
        data = data.contiguous(memory_format=torch.channels_last)
        passes += [data[:n] for n in sizes]

    def run() -> float:
        _synchronize(engine.device)
        started = time.perf_counter()
        with torch.inference_mode():
            for tensor in passes:
                engine.network(tensor)
        _synchronize(engine.device)
        return time.perf_counter() - started

    run()
    return statistics.median(run() for _ in range(repeats))


def compare_with_reference(
    reference: dict[int, np.ndarray], candidate: dict[int, np.ndarray], *, threshold: float
) -> dict[str, float | int]:
    """Binary-mask agreement and the largest probability difference over all chips.

    Parameters
    ----------
    reference, candidate
        ``{extver: (ny, nx) float32 probability}`` on the same pixels.
    threshold
        Mask threshold (CR where ``p > threshold``).

    Returns
    -------
    dict
        ``mask_agreement`` (fraction of pixels whose mask bit is equal), ``jaccard``,
        ``max_abs_dprob``, ``cr_pixels`` and ``reference_cr_pixels``.
    """
    ref = np.concatenate([reference[k].ravel() for k in sorted(reference)])
    got = np.concatenate([candidate[k].ravel() for k in sorted(reference)])
    agreement = mask_agreement(ref > threshold, got > threshold)
    return {
        "mask_agreement": 1.0 - agreement["pixel_disagreement"],
        "jaccard": agreement["jaccard"],
        "max_abs_dprob": float(np.max(np.abs(ref - got))) if ref.size else 0.0,
        "cr_pixels": int(np.count_nonzero(got > threshold)),
        "reference_cr_pixels": int(np.count_nonzero(ref > threshold)),
    }


def cpu_reference(
    model: LoadedModel, chips: dict[int, np.ndarray], *, threads: int
) -> tuple[dict[int, np.ndarray], float]:
    """CPU fp32 probabilities of every chip (engine defaults for the CPU) and the seconds they took."""
    engine = MaskEngine(model, device="cpu", precision="fp32", threads=threads)
    started = time.perf_counter()
    probabilities = {extver: engine.predict_chip(sci).probability for extver, sci in chips.items()}
    return probabilities, time.perf_counter() - started


def bench_inference(
    exposure: BenchExposure,
    device: torch.device,
    *,
    repeats: int,
    threads: int,
    window: int | None = None,
    batch: int | None = None,
) -> dict[str, Any]:
    """Time every precision on ``device`` and check its masks against the CPU fp32 path.

    Parameters
    ----------
    exposure
        Read once; only prediction is timed.
    device
        CPU or CUDA.
    repeats
        Timed runs per precision (median reported; one warm-up before).
    threads
        CPU workers for the CPU engines.
    window, batch
        Engine tiling; the device's defaults when ``None``.

    Returns
    -------
    dict
        ``model``, ``threshold``, ``repeats``, ``reference`` and ``precisions`` (one entry per
        :data:`PRECISIONS`: measurements, or ``{"unsupported": reason}``).
    """
    model = load_shipped_model(BENCH_MODEL)
    chips = exposure.chips
    threshold = float(exposure.image.profile.threshold)
    reference: dict[int, np.ndarray] | None = None
    reference_info: dict[str, Any] = {"device": "cpu", "precision": "fp32"}
    if device.type != "cpu":
        log.info("CPU fp32 reference on %.1f Mpix (%d threads)", exposure.megapixels, threads)
        reference, seconds = cpu_reference(model, chips, threads=threads)
        reference_info.update(seconds=seconds, threads=threads, run="separate CPU fp32 engine, once")
    else:
        reference_info.update(run="the measured CPU fp32 run itself")
    results: dict[str, Any] = {}
    for name in PRECISIONS:
        reason = precision_unsupported(name, device)
        if reason is not None:
            results[name] = {"unsupported": reason}
            log.info("%s: unsupported (%s)", name, reason)
            continue
        _reset_peak(device)
        engine = MaskEngine(
            model,
            device=device.type,
            precision=cast(Precision, name),
            window=window,
            batch=batch,
            threads=threads,
        )
        samples, probabilities = time_exposure(engine, chips, repeats=repeats)
        network_s = time_network_only(engine, chips, repeats=repeats)
        peak = peak_memory_mb(device)
        if reference is None and name == "fp32":
            reference = probabilities
        windows = sum(_window_shapes(engine, (s.shape[0], s.shape[1]))[0] for s in chips.values())
        median_ms = statistics.median(samples) * 1e3
        results[name] = {
            "window": engine.window,
            "batch": engine.batch,
            "margin": engine.margin,
            "windows_per_exposure": windows,
            "ms_per_exposure": median_ms,
            "ms_min": min(samples) * 1e3,
            "ms_samples": [s * 1e3 for s in samples],
            "network_only_ms": network_s * 1e3,
            "megapixels_per_s": exposure.megapixels / (median_ms / 1e3),
            "peak_memory_mb": peak,
            "peak_memory_kind": "cuda_max_memory_allocated" if device.type == "cuda" else "process_peak_rss",
            "agreement": compare_with_reference(reference, probabilities, threshold=threshold)
            if reference is not None
            else None,
        }
        log.info("%s: %.2f ms per exposure (network alone %.2f ms)", name, median_ms, network_s * 1e3)
        del engine
    return {
        "model": BENCH_MODEL,
        "threshold": threshold,
        "repeats": repeats,
        "warmup_runs": 1,
        "margin_default": DEFAULT_MARGIN,
        "reference": reference_info,
        "precisions": results,
    }


def bench_training(
    device: torch.device, *, steps: int, batch_sizes: tuple[int, ...], patch: int = TRAIN_PATCH, seed: int = 0
) -> dict[str, Any]:
    """Training steps of the ``ACS-WFC`` network on patches already on the device.

    Each step is what :func:`~crlib.training.trainer.train_network` does per batch: zero the
    gradients, :func:`~crlib.training.trainer.prepare_input`, forward, :func:`masked_bce`,
    backward, Adam step (fp32, BatchNorm in training mode). Patch augmentation and data loading
    (host work) are not part of it. Two untimed warm-up steps per batch size.

    Parameters
    ----------
    device
        CPU or CUDA.
    steps
        Timed steps per batch size.
    batch_sizes
        Patches per step; one measurement each.
    patch
        Patch side, pixels.
    seed
        Seeds the synthetic patches.

    Returns
    -------
    dict
        ``patch``, ``precision``, ``scope`` and ``runs`` (per batch size: ``batch``, ``steps``,
        ``seconds``, ``patches_per_second``, ``ms_per_step``, ``peak_memory_mb``, ``loss_first``,
        ``loss_last``), plus ``best_patches_per_second``.
    """
    from crlib.bench.training import synthetic_patches
    from crlib.model.package import ModelMetadata
    from crlib.training.trainer import TrainingConfig, masked_bce, prepare_input

    model = load_shipped_model(BENCH_MODEL)
    metadata = ModelMetadata(
        architecture=model.spec.architecture,
        hidden=model.spec.hidden,
        scale=model.spec.scale,
        normalise=model.spec.normalise,
    )
    arrays = synthetic_patches(max(batch_sizes), patch, seed=seed)
    images, masks, ignore = (torch.from_numpy(a.astype(np.float32))[:, None].to(device) for a in arrays)
    runs = []
    for batch in batch_sizes:
        network = copy.deepcopy(model.network).to(device).train().requires_grad_(True)
        optimizer = torch.optim.Adam(network.parameters(), lr=TrainingConfig().lr)

        def step(batch: int = batch, network: torch.nn.Module = network, optimizer: Any = optimizer) -> Any:
            optimizer.zero_grad(set_to_none=True)
            output = network(prepare_input(images[:batch], metadata))
            loss = masked_bce(output, masks[:batch], ignore[:batch])
            loss.backward()
            optimizer.step()
            return loss.detach()

        _reset_peak(device)
        first = float(step())
        loss = step()
        _synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            loss = step()
        _synchronize(device)
        seconds = time.perf_counter() - started
        last = float(loss)
        runs.append(
            {
                "batch": batch,
                "steps": steps,
                "seconds": seconds,
                "patches_per_second": batch * steps / seconds if seconds > 0 else 0.0,
                "ms_per_step": seconds / max(steps, 1) * 1e3,
                "peak_memory_mb": peak_memory_mb(device),
                "peak_memory_kind": "cuda_max_memory_allocated"
                if device.type == "cuda"
                else "process_peak_rss",
                "loss_first": first,
                "loss_last": last,
            }
        )
        log.info("training batch %d: %.1f patches/s", batch, runs[-1]["patches_per_second"])
        del network, optimizer
    return {
        "model": BENCH_MODEL,
        "patch": patch,
        "precision": "fp32",
        "scope": "per step: prepare_input, forward, masked_bce, backward, Adam step on device-resident "
        "patches; no augmentation or data loading; 2 warm-up steps",
        "runs": runs,
        "best_patches_per_second": max(r["patches_per_second"] for r in runs),
    }


def default_train_batches(device: torch.device, size: SizeName) -> tuple[int, ...]:
    """Batch sizes measured by default: the trainer's default (16) and 64 on CUDA; 4 (2 small) on CPU."""
    from crlib.training.trainer import TrainingConfig

    if device.type == "cuda":
        return (TrainingConfig().batch_size, 64)
    return (2,) if size == "small" else (4,)


def targets_report(
    inference: dict[str, Any], training: dict[str, Any], *, device: torch.device, full_exposure: bool
) -> dict[str, Any]:
    """The issue's targets beside the best measurement, each with ``pass`` and ``applicable``.

    ``applicable`` is true only on CUDA and only for what the targets are stated for: a full
    ACS/WFC exposure (2 x 2048x4096) and 256x256 training patches.
    """
    timed = {
        name: entry["ms_per_exposure"]
        for name, entry in inference["precisions"].items()
        if "ms_per_exposure" in entry
    }
    best = min(timed, key=lambda name: timed[name])
    patches = float(training["best_patches_per_second"])
    return {
        "inference_ms_per_exposure": {
            "target": TARGET_INFERENCE_MS,
            "comparison": "<=",
            "measured": timed[best],
            "precision": best,
            "per_precision_pass": {name: ms <= TARGET_INFERENCE_MS for name, ms in timed.items()},
            "pass": timed[best] <= TARGET_INFERENCE_MS,
            "applicable": device.type == "cuda" and full_exposure,
        },
        "training_patches_per_second": {
            "target": TARGET_TRAINING_PATCHES_PER_S,
            "comparison": ">=",
            "measured": patches,
            "patch": training["patch"],
            "pass": patches >= TARGET_TRAINING_PATCHES_PER_S,
            "applicable": device.type == "cuda" and training["patch"] == TRAIN_PATCH,
        },
    }


def run_gpu_benchmark(
    *,
    device: str = "auto",
    size: SizeName = "full",
    flc: Path | None = None,
    repeats: int | None = None,
    train_steps: int = 20,
    train_batches: tuple[int, ...] | None = None,
    window: int | None = None,
    batch: int | None = None,
    threads: int | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run the whole GPU benchmark and return its report (see docs/inference.md, "GPU benchmark").

    Parameters
    ----------
    device
        ``auto`` (CUDA when available, else CPU with a note), ``cuda`` or ``cpu``.
    size
        ``full`` (2 x 2048x4096, simulated; 256x256 training patches) or ``small`` (2 x 128x256
        chips and 64x64 patches: a plumbing check for tests).
    flc
        Benchmark this exposure instead.
    repeats
        Timed inference runs per precision (default 5 on CUDA, 1 on the CPU).
    train_steps
        Timed training steps per batch size.
    train_batches
        Training batch sizes (default :func:`default_train_batches`).
    window, batch
        Inference tiling (engine defaults for the device when ``None``).
    threads
        CPU workers (default: every core).
    workdir
        Where a generated exposure goes (a temporary directory when ``None``).

    Raises
    ------
    ConfigError
        ``cuda`` without a CUDA device, or an unknown device name.
    """
    started = time.perf_counter()
    chosen = resolve_device(device)
    workers = threads or (os.cpu_count() or 1)
    if repeats is None:
        repeats = 5 if chosen.type == "cuda" else 1
    report: dict[str, Any] = {"benchmark": "gpu", "device": chosen.type}
    if chosen.type == "cpu":
        report["note"] = (
            "no CUDA device: plumbing check only"
            if device == "auto"
            else "CPU requested: plumbing check only"
        )
        if torch.version.cuda is None:
            report["note"] += f" (torch {torch.__version__} is a CPU-only build)"
    report["size"] = "given" if flc is not None else size
    report["environment"] = environment_report(chosen)
    report["environment"]["engine_cpu_workers"] = workers
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="crlib-bench-gpu-") as tmp:
        exposure = load_bench_exposure(size, workdir or Path(tmp), flc=flc)
        report["exposure"] = {
            "source": exposure.source,
            "rootname": exposure.image.rootname,
            "chips": {str(k): list(v.shape) for k, v in exposure.chips.items()},
            "megapixels": exposure.megapixels,
            "read_s": exposure.read_s,
        }
        report["inference"] = bench_inference(
            exposure, chosen, repeats=repeats, threads=workers, window=window, batch=batch
        )
    report["training"] = bench_training(
        chosen,
        steps=train_steps,
        batch_sizes=train_batches or default_train_batches(chosen, size),
        patch=SMALL_TRAIN_PATCH if size == "small" else TRAIN_PATCH,
    )
    if chosen.type == "cuda":
        report["environment"]["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    full_exposure = sorted(report["exposure"]["chips"].values()) == [list(FULL_CHIP_SHAPE)] * 2
    report["targets"] = targets_report(
        report["inference"], report["training"], device=chosen, full_exposure=full_exposure
    )
    report["load_average"] = {"start": list(load_start), "end": list(os.getloadavg())}
    report["elapsed_s"] = time.perf_counter() - started
    return report
