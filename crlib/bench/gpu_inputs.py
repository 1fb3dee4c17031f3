"""Inputs of ``crlib bench gpu``: the exposure it times (simulated, tiny or given) and the machine."""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from crlib.formats.flc import ExposureImage, read_exposure
from crlib.model.inference import (
    bf16_supported,
)

log = logging.getLogger(__name__)

#: ``--size``: a full-size simulated exposure or tiny chips (the CPU plumbing check).
SizeName = Literal["full", "small"]


#: A full ACS/WFC chip (the inference target is stated for two of them).
FULL_CHIP_SHAPE = (2048, 4096)


#: Chip shape of ``size="small"`` (a two-chip subarray written here: fast, for tests).
SMALL_CHIP_SHAPE = (128, 256)


@dataclass(frozen=True)
class BenchExposure:
    """The exposure benchmarked, read once.

    Attributes
    ----------
    source
        ``simulated-full``, ``synthetic-small`` or the FLC path given.
    image
        The exposure as :func:`~crlib.formats.flc.read_exposure` returns it.
    read_s
        Seconds the read took (reported, never part of a timing).
    """

    source: str
    image: ExposureImage
    read_s: float

    @property
    def chips(self) -> dict[int, np.ndarray]:
        """``{sci_extver: (ny, nx) float32 electrons}``."""
        return {extver: sci for extver, (sci, _) in self.image.chips.items()}

    @property
    def megapixels(self) -> float:
        """Pixels over all chips / 1e6."""
        return sum(sci.size for sci in self.chips.values()) / 1e6


def environment_report(device: torch.device) -> dict[str, Any]:
    """Device, library versions and thread counts of this run.

    Parameters
    ----------
    device
        The device the measurements run on.

    Returns
    -------
    dict
        ``device_name``, ``torch``, ``cuda`` (torch's CUDA version, ``None`` on CPU builds),
        ``cudnn`` (``None`` without cuDNN), ``torch_threads``, ``cpu_count``, ``python``,
        ``bf16_native``; on CUDA also ``capability``, ``total_memory_mb``, ``tf32_conv``,
        ``tf32_matmul``, ``cudnn_benchmark``.
    """
    cudnn_version = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    report: dict[str, Any] = {
        "device_name": _cpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn_version,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count() or 1,
        "python": platform.python_version(),
        "bf16_native": bf16_supported(device),
    }
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        report.update(
            device_name=torch.cuda.get_device_name(device),
            capability=f"{props.major}.{props.minor}",
            total_memory_mb=props.total_memory / 2**20,
            tf32_conv=bool(torch.backends.cudnn.allow_tf32),
            tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
            cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        )
    return report


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def write_small_exposure(path: Path, *, shape: tuple[int, int] = SMALL_CHIP_SHAPE, seed: int = 7) -> Path:
    """Write a tiny two-chip ACS/WFC subarray FLC (sky, noise, stars, CR streaks) on the real template header.

    Parameters
    ----------
    path
        File to write.
    shape
        ``(ny, nx)`` of each chip, pixels.
    seed
        Random seed.

    Returns
    -------
    Path
        ``path``.
    """
    from astropy.io import fits

    from crlib.profiles import ACS_WFC

    rng = np.random.default_rng(seed)
    with fits.open(ACS_WFC.template_path()) as template:
        primary = fits.PrimaryHDU(header=template[0].header.copy())
        primary.header["ROOTNAME"] = "jgpubnchq"
        primary.header["SUBARRAY"] = True
        hdus: list[Any] = [primary]
        for layout in ACS_WFC.chips:
            image = _synthetic_chip(rng, shape)
            header = template["SCI", layout.sci_extver].header.copy()
            header["EXTVER"] = layout.sci_extver
            header["CCDCHIP"] = layout.ccdchip
            err = np.sqrt(np.abs(image)).astype(np.float32)
            hdus += [
                fits.ImageHDU(image, header=header),
                fits.ImageHDU(err, name="ERR", ver=layout.sci_extver),
                fits.ImageHDU(np.zeros(shape, np.int16), name="DQ", ver=layout.sci_extver),
            ]
        primary.header["NEXTEND"] = len(hdus) - 1
        fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def _synthetic_chip(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Sky (80 e-) with Poisson and read noise, a few Gaussian stars and short CR streaks (float32 e-)."""
    ny, nx = shape
    model = np.full(shape, 80.0)
    yy, xx = np.mgrid[:ny, :nx]
    for _ in range(max(1, ny * nx // 4000)):
        cy, cx, flux = rng.uniform(0, ny), rng.uniform(0, nx), 10 ** rng.uniform(3, 5)
        model += flux / (2 * np.pi * 1.4) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 1.4)
    image = rng.poisson(model).astype(np.float64) + rng.normal(0.0, 4.5, shape)
    for _ in range(max(1, ny * nx // 2000)):
        y, x = int(rng.integers(0, ny)), int(rng.integers(0, nx - 8))
        image[y, x : x + int(rng.integers(1, 8))] += rng.uniform(200, 3000)
    return image.astype(np.float32)


def load_bench_exposure(size: SizeName, workdir: Path, *, flc: Path | None = None) -> BenchExposure:
    """The exposure to benchmark: ``flc`` if given, else a simulated full one or a tiny synthetic one.

    Parameters
    ----------
    size
        ``full``: one simulated extragalactic F606W exposure (2 x 2048x4096, crlib's simulator);
        ``small``: :func:`write_small_exposure` (2 x 128x256, under a second).
    workdir
        Where a generated file is written.
    flc
        An FLC/FLT to read instead.

    Raises
    ------
    InputDataError
        When the file cannot be used (see :func:`~crlib.formats.flc.read_exposure`).
    """
    if flc is not None:
        path, source = flc, str(flc)
    elif size == "full":
        from crlib.bench.inference import bench_exposure

        started = time.perf_counter()
        path, source = bench_exposure("full", workdir), "simulated-full"
        log.info("simulated a full exposure in %.1f s: %s", time.perf_counter() - started, path)
    else:
        path, source = write_small_exposure(workdir / "jgpubnchq_flc.fits"), "synthetic-small"
    started = time.perf_counter()
    image = read_exposure(path)
    return BenchExposure(source=source, image=image, read_s=time.perf_counter() - started)
