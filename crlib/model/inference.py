"""deepCR mask inference: tiled with overlap, batched, on CPU or CUDA; per exposure and chip.

What is computed is exactly deepCR's model on the whole chip (``deepCR.clean(..., segment=False)``):

1. the chip (electrons) is cast to float32 and divided by the model's scale; models with
   ``normalise`` (``WFC3-UVIS``) then subtract the chip mean and divide by its standard deviation,
   as ``deepCR.model.deepCR.clean`` does;
2. non-finite pixels (NaN/inf) are replaced by the median of the finite pixels, so they cannot
   spread NaN through the network; their output probability is set to 0 and counted (``NNONFIN``);
3. the image is zero-padded at the top/left to a multiple of 4, as deepCR does;
4. the network runs on overlapping windows: each window's outer :data:`DEFAULT_MARGIN` pixels
   (larger than the network's receptive radius) are discarded except at the image edge, and
   windows start on even pixels so the 2x2 pooling grid is the whole image's. The result equals
   whole-image inference to float rounding: there are no seams (deepCR's ``clean()`` tiles without
   overlap, so its output differs from the whole-image result near its 1024-px tile borders).

DQ-flagged pixels are fed to the network unchanged, as deepCR and its papers do; they are counted
in the output header (``NDQFLAG``) and excluded from scores by the truth's valid-pixel mask.

CPU speed: BatchNorm and weight normalisation folded into the convolutions
(:meth:`~crlib.model.networks.UNet2.fused`), channels-last tensors (oneDNN's fast path),
``torch.inference_mode``, one 256x256 window at a time (activations stay in cache), optional
bfloat16 on CPUs with AVX512-BF16/AMX. On CUDA: 1024x1024 windows in batches, cuDNN autotuning.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from crlib.config import InferencePrecision
from crlib.errors import ConfigError
from crlib.model.networks import FusedUNet2, receptive_radius
from crlib.model.weights import LoadedModel

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16"]

#: Pixels discarded on each inner side of a window (>= the receptive radius, a multiple of 4).
DEFAULT_MARGIN = 12
#: Window side and batch size per device type (measured: see docs/inference.md).
DEFAULT_WINDOW = {"cpu": 256, "cuda": 1024}
DEFAULT_BATCH = {"cpu": 1, "cuda": 8}
#: bf16 is accepted only if, on simulated chips, its CR mask agrees with fp32 this well (Jaccard index).
BF16_MIN_MASK_JACCARD = 0.98


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cpu``; ``cuda`` (checked).

    Raises
    ------
    ConfigError
        Unknown name, or ``cuda`` without a usable CUDA device.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "device 'cuda' requested but torch sees no CUDA device (use --device cpu/auto, CRLIB_DEVICE)"
            )
        return torch.device("cuda")
    raise ConfigError(f"unknown device {device!r}: use auto, cpu or cuda (CRLIB_DEVICE)")


@lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def resolve_precision(requested: InferencePrecision | str, device: torch.device) -> Precision:
    """The precision an engine runs: ``auto`` -> bf16 on a CPU with native bf16, else fp32.

    Parameters
    ----------
    requested
        ``auto``, ``fp32`` or ``bf16`` (``CRLIB_INFERENCE_PRECISION``).
    device
        The resolved device. CUDA stays fp32 under ``auto`` until bf16 is measured there.

    Raises
    ------
    ConfigError
        For an unknown name.
    """
    if requested == "auto":
        return "bf16" if device.type == "cpu" and bf16_supported(device) else "fp32"
    if requested not in ("fp32", "bf16"):
        raise ConfigError(
            f"unknown precision {requested!r}: use auto, fp32 or bf16 (CRLIB_INFERENCE_PRECISION)"
        )
    return "bf16" if requested == "bf16" else "fp32"


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 runs natively: CPUs with AVX512-BF16 or AMX-BF16, or CUDA GPUs with bf16."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


@dataclass(frozen=True, slots=True)
class Window:
    """One inference window and the part of it that is kept (padded-image coordinates)."""

    y0: int
    x0: int
    core_y: tuple[int, int]
    core_x: tuple[int, int]


def _axis_windows(length: int, window: int, margin: int) -> list[tuple[int, int, int]]:
    """(window start, core start, core end) along one axis; every window has the same size."""
    if window >= length:
        return [(0, 0, length)]
    core = window - 2 * margin
    spans = []
    start = 0
    while start < length:
        end = min(start + core, length)
        origin = min(max(start - margin, 0), length - window)
        spans.append((origin, start, end))
        start = end
    return spans


def plan_windows(shape: tuple[int, int], *, window: int, margin: int = DEFAULT_MARGIN) -> list[Window]:
    """Overlapping windows covering a padded image.

    Parameters
    ----------
    shape
        Padded image shape ``(ny, nx)``, both multiples of 4.
    window
        Window side in pixels (multiple of 4, > 2 * margin unless one window holds the image).
    margin
        Pixels discarded at each inner window edge (multiple of 2, >= the receptive radius).

    Returns
    -------
    list of Window
        One window when the image fits in it (any size, e.g. a 12x12 test chip or a small
        subarray: there are no inner edges), else overlapping windows of side ``window``.
    """
    if margin < receptive_radius() or margin % 2:
        raise ValueError(f"margin must be even and >= {receptive_radius()} px, got {margin}")
    if shape[0] <= window and shape[1] <= window and window % 4 == 0:
        return [Window(0, 0, (0, shape[0]), (0, shape[1]))]
    if window % 4 or window <= 2 * margin:
        raise ValueError(f"window must be a multiple of 4 larger than 2 * margin, got {window}")
    ys = _axis_windows(shape[0], window, margin)
    xs = _axis_windows(shape[1], window, margin)
    return [Window(y0, x0, (cy0, cy1), (cx0, cx1)) for (y0, cy0, cy1) in ys for (x0, cx0, cx1) in xs]


@dataclass(frozen=True)
class ChipInference:
    """Result of :meth:`MaskEngine.predict_chip`.

    Attributes
    ----------
    probability
        ``(ny, nx)`` float32 CR probability, 0 at non-finite input pixels.
    nonfinite
        ``(ny, nx)`` bool, True where the input was NaN/inf.
    """

    probability: np.ndarray
    nonfinite: np.ndarray


class MaskEngine:
    """A loaded mask model bound to a device, precision and tiling.

    Parameters
    ----------
    model
        From :func:`crlib.model.weights.load_shipped_model` or the registry.
    device
        ``auto``, ``cpu`` or ``cuda``.
    precision
        ``fp32`` (default), ``bf16`` (only where :func:`bf16_supported`) or ``auto``
        (:func:`resolve_precision`: bf16 on a CPU with native bf16, else fp32).
    window, batch
        Window side and windows per forward pass; device defaults when ``None``.
    margin
        Overlap discarded at inner window edges.
    threads
        CPU cores to use (e.g. ``Settings.torch_threads()``; default every core): the CPU path runs
        that many single-threaded workers on separate windows.

    Raises
    ------
    ConfigError
        For an unavailable device or unsupported precision.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        device: str = "auto",
        precision: InferencePrecision = "fp32",
        window: int | None = None,
        batch: int | None = None,
        margin: int = DEFAULT_MARGIN,
        threads: int | None = None,
    ) -> None:
        self.model = model
        self.device = resolve_device(device)
        precision = resolve_precision(precision, self.device)
        if precision == "bf16" and not bf16_supported(self.device):
            raise ConfigError(
                f"bf16 requested but {self.device.type} has no native bfloat16 (needs AVX512-BF16/AMX or a "
                "bf16 GPU); use fp32"
            )
        self.precision: Precision = precision
        self.window = window or DEFAULT_WINDOW[self.device.type]
        self.batch = batch or DEFAULT_BATCH[self.device.type]
        self.margin = margin
        self.workers = max(1, threads if threads else (os.cpu_count() or 1))
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.network: FusedUNet2 = self._prepare_network()

    def _prepare_network(self) -> FusedUNet2:
        network = self.model.network.fused().eval().requires_grad_(False)
        if self.precision == "bf16":
            network.with_bfloat16_interior()
        network.to(device=self.device)
        return network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @property
    def description(self) -> str:
        """``cpu`` / ``cuda:<name>`` plus the precision, for records."""
        name = self.device.type
        if self.device.type == "cuda":
            name = f"cuda:{torch.cuda.get_device_name(self.device)}"
        return f"{name}/{self.precision}"

    def execution_path(self) -> dict[str, Any]:
        """How this engine computes, for benchmark reports and logs.

        Returns
        -------
        dict
            ``device`` (:attr:`description`), ``precision``, ``kernels`` (``onednn`` when torch's
            oneDNN convolutions are available and enabled, else ``native``), ``cpu_capability``
            (torch's SIMD dispatch level, e.g. ``AVX512``), ``bf16_native``, ``workers`` (parallel
            single-threaded window workers on CPU; 1 on CUDA), ``torch_threads_per_worker``,
            ``window``, ``batch``, ``margin`` (pixels) and ``memory_format``.
        """
        cpu_workers = self.device.type == "cpu" and self.workers > 1
        onednn = bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)
        return {
            "device": self.description,
            "precision": self.precision,
            "kernels": "onednn" if onednn else "native",
            "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
            "bf16_native": bf16_supported(self.device),
            "workers": self.workers if cpu_workers else 1,
            "torch_threads_per_worker": 1 if cpu_workers else torch.get_num_threads(),
            "window": self.window,
            "batch": self.batch,
            "margin": self.margin,
            "memory_format": "channels_last",
        }

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scaled (and for ``normalise`` models standardised) float32 image plus its non-finite mask.

        Parameters
        ----------
        image
            ``(ny, nx)`` chip in electrons.

        Raises
        ------
        ValueError
            If no pixel is finite (callers turn this into an error naming the file).
        """
        spec = self.model.spec
        scaled = np.asarray(image).astype(np.float32) / np.float32(spec.scale)
        nonfinite = ~np.isfinite(scaled)
        any_bad = bool(nonfinite.any())
        if any_bad:
            finite = scaled[~nonfinite]
            if finite.size == 0:
                raise ValueError("no finite pixels")
            scaled[nonfinite] = np.median(finite)
        if spec.normalise:
            mean = scaled.mean()
            std = scaled.std()
            if not np.isfinite(std) or std == 0:
                raise ValueError("constant image: cannot normalise (standard deviation 0)")
            scaled -= mean
            scaled /= std
        return scaled, nonfinite

    def predict_chip(self, image: np.ndarray) -> ChipInference:
        """CR probability of one chip.

        Parameters
        ----------
        image
            ``(ny, nx)`` array in electrons (any float dtype; NaN/inf allowed).

        Returns
        -------
        ChipInference
            Probabilities float32 ``(ny, nx)``.
        """
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D chip, got shape {image.shape}")
        scaled, nonfinite = self.preprocess(image)
        ny, nx = scaled.shape
        pad_y, pad_x = -ny % 4, -nx % 4
        if pad_y or pad_x:
            scaled = np.pad(scaled, ((pad_y, 0), (pad_x, 0)), mode="constant")
        probability = self._run_windows(scaled)[pad_y:, pad_x:]
        if nonfinite.any():
            probability[nonfinite] = 0.0
        return ChipInference(probability=np.ascontiguousarray(probability), nonfinite=nonfinite)

    def _batches(self, windows: list[Window]) -> Iterator[list[Window]]:
        for start in range(0, len(windows), self.batch):
            yield windows[start : start + self.batch]

    def _run_windows(self, padded: np.ndarray) -> np.ndarray:
        shape = (padded.shape[0], padded.shape[1])
        side = min(self.window, max(shape))
        side -= side % 4
        windows = plan_windows(shape, window=side, margin=self.margin)
        wy = min(side, shape[0])
        wx = min(side, shape[1])
        out = np.empty(shape, dtype=np.float32)
        pinned = self.device.type == "cuda"

        def run_group(group: list[Window]) -> None:
            with torch.inference_mode():  # thread-local: entered in every worker
                stack = np.stack([padded[w.y0 : w.y0 + wy, w.x0 : w.x0 + wx] for w in group])
                tensor = torch.from_numpy(stack).unsqueeze(1)
                if pinned:
                    tensor = tensor.pin_memory().to(self.device, non_blocking=True)
                tensor = tensor.contiguous(memory_format=torch.channels_last)
                values = self.network(tensor).squeeze(1).cpu().numpy()
            for window, value in zip(group, values, strict=True):
                (cy0, cy1), (cx0, cx1) = window.core_y, window.core_x
                out[cy0:cy1, cx0:cx1] = value[
                    cy0 - window.y0 : cy1 - window.y0, cx0 - window.x0 : cx1 - window.x0
                ]

        groups = list(self._batches(windows))
        if self.device.type != "cpu" or self.workers == 1:
            for group in groups:
                run_group(group)
            return out
        # CPU: one single-threaded worker per core, each on its own windows (cores write disjoint
        # parts of ``out``). No per-operator thread barriers: measured 4-5x faster than torch's
        # intra-op threads when other processes share the cores, and as fast on an idle machine.
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="crlib-infer") as pool:
                list(pool.map(run_group, groups))
        finally:
            torch.set_num_threads(previous)
        return out


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPUs, else the peak RSS (MiB)."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device)) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def mask_agreement(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """How well two binary CR masks agree.

    Returns
    -------
    dict
        ``jaccard`` (|A and B| / |A or B|, 1.0 when both are empty) and ``pixel_disagreement``
        (fraction of pixels that differ).
    """
    a = np.asarray(reference, dtype=bool)
    b = np.asarray(candidate, dtype=bool)
    union = int(np.count_nonzero(a | b))
    inter = int(np.count_nonzero(a & b))
    differ = int(np.count_nonzero(a ^ b))
    return {
        "jaccard": 1.0 if union == 0 else inter / union,
        "pixel_disagreement": differ / max(a.size, 1),
    }


def timed(engine: MaskEngine, image: np.ndarray) -> tuple[ChipInference, float]:
    """Run :meth:`MaskEngine.predict_chip` and return the result with its wall time in seconds."""
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    start = time.perf_counter()
    result = engine.predict_chip(image)
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    return result, time.perf_counter() - start
