"""``crlib bench infer``: deepCR's clean(), our engine (fp32, bf16), astroscrappy on one exposure.

Every method runs in its own subprocess (``python -m crlib.model.benchmark <method> <flc> <out>``)
so its peak RSS is honest (``ru_maxrss`` of that process only: Python, torch and the method's
arrays). Each child reads the exposure, loads its model, then times only the detection over all
chips, and saves its CR masks; the parent compares masks with deepCR's.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from crlib.errors import CrlibError

log = logging.getLogger(__name__)

METHODS = ("deepcr", "engine-fp32", "engine-bf16", "astroscrappy")
BENCH_MODEL = "ACS-WFC"


def _run_method(method: str, flc: Path, out: Path, threads: int) -> dict[str, Any]:
    """Child-process body: detect CRs on every chip with one method, save masks, return timings."""
    import torch

    from crlib.model.exposure import read_exposure

    torch.set_num_threads(threads)
    exposure = read_exposure(flc)
    masks: dict[str, np.ndarray] = {}
    if method == "deepcr":
        import warnings

        warnings.simplefilter("ignore")
        from deepCR import deepCR

        detector = deepCR(mask=BENCH_MODEL, device="CPU")
        start = time.perf_counter()
        for extver, (sci, _) in exposure.chips.items():
            masks[str(extver)] = np.asarray(detector.clean(sci, inpaint=False), dtype=bool)
        seconds = time.perf_counter() - start
    elif method.startswith("engine-"):
        from crlib.model.inference import MaskEngine, Precision
        from crlib.model.weights import load_shipped_model

        precision: Precision = "bf16" if method == "engine-bf16" else "fp32"
        engine = MaskEngine(
            load_shipped_model(BENCH_MODEL), device="cpu", precision=precision, threads=threads
        )
        start = time.perf_counter()
        for extver, (sci, _) in exposure.chips.items():
            masks[str(extver)] = engine.predict_chip(sci).probability > 0.5
        seconds = time.perf_counter() - start
    elif method == "astroscrappy":
        from crlib.model.lacosmic import chip_read_noise, lacosmic_mask

        start = time.perf_counter()
        for extver, (sci, _) in exposure.chips.items():
            noise = chip_read_noise(exposure.primary, exposure.profile, extver, ccd=exposure.ccd(extver))
            masks[str(extver)] = lacosmic_mask(sci, read_noise=noise, objlim=2.6)
        seconds = time.perf_counter() - start
    else:
        raise ValueError(f"unknown benchmark method {method!r}")
    packed: dict[str, Any] = {key: np.packbits(value) for key, value in masks.items()}
    np.savez_compressed(out, **packed)
    shapes = {key: list(value.shape) for key, value in masks.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"method": method, "seconds": seconds, "peak_rss_mb": peak, "shapes": shapes}


def _load_masks(path: Path, shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
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


def run_inference_benchmark(
    *,
    size: Literal["full", "small"] = "full",
    threads: int | None = None,
    flc: Path | None = None,
    methods: tuple[str, ...] = METHODS,
) -> dict[str, Any]:
    """Run every method on one exposure, each in a subprocess; return timings, RSS, agreement, ratios.

    Parameters
    ----------
    size
        Simulator size (``full``: 2 x 2048 x 4096 ACS/WFC; ``small`` for a quick check).
    threads
        Torch threads for deepCR and our engine (default: every core).
    flc
        Use this exposure instead of simulating one.
    methods
        Subset of :data:`METHODS`; ``engine-bf16`` is skipped where bf16 is not native.
    """
    from crlib.model.inference import bf16_supported, mask_agreement

    threads = threads or (os.cpu_count() or 1)
    import torch

    with tempfile.TemporaryDirectory(prefix="crlib-bench-") as tmp:
        workdir = Path(tmp)
        exposure = Path(flc) if flc is not None else bench_exposure(size, workdir)
        results: dict[str, Any] = {}
        masks: dict[str, dict[str, np.ndarray]] = {}
        for method in methods:
            if method == "engine-bf16" and not bf16_supported(torch.device("cpu")):
                results[method] = {"skipped": "CPU has no AVX512-BF16/AMX"}
                continue
            out = workdir / f"{method}.npz"
            command = [
                sys.executable,
                "-m",
                "crlib.model.benchmark",
                method,
                str(exposure),
                str(out),
                str(threads),
            ]
            log.info("bench: running %s", method)
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                raise CrlibError(f"benchmark method {method} failed: {completed.stderr.strip()[-800:]}")
            record = json.loads(completed.stdout.strip().splitlines()[-1])
            masks[method] = _load_masks(out, record.pop("shapes"))
            results[method] = record
        report: dict[str, Any] = {
            "exposure": exposure.name,
            "size": size if flc is None else "given",
            "threads": threads,
            "model": BENCH_MODEL,
            "methods": results,
        }
        reference = masks.get("deepcr")
        if reference is not None:
            for method, chip_masks in masks.items():
                if method == "deepcr":
                    continue
                joined_ref = np.concatenate([reference[k].ravel() for k in sorted(reference)])
                joined = np.concatenate([chip_masks[k].ravel() for k in sorted(reference)])
                results[method]["agreement_with_deepcr"] = mask_agreement(joined_ref, joined)
    report["ratios"] = _ratios(results)
    return report


def _ratios(results: dict[str, Any]) -> dict[str, float]:
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
    return ratios


if __name__ == "__main__":  # child process entry
    _method, _flc, _out, _threads = sys.argv[1:5]
    print(json.dumps(_run_method(_method, Path(_flc), Path(_out), int(_threads))))
