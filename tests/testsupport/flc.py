"""Synthetic chips (sky + noise + stars + CR tracks, with truth) and FLC files on the real template header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits

from crlib.profiles import ACS_WFC


def synthetic_chip(
    shape: tuple[int, int], *, seed: int, n_stars: int = 40, n_crs: int = 80, sky: float = 80.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(image in electrons, truth CR mask)`` of one chip: Poisson sky, read noise, PSF stars, CR tracks."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    model = np.full(shape, sky, dtype=np.float64)
    yy, xx = np.mgrid[:ny, :nx]
    for _ in range(n_stars):
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        flux = 10 ** rng.uniform(3, 5.5)
        sigma = rng.uniform(0.9, 1.6)
        box = (slice(max(int(cy) - 8, 0), int(cy) + 9), slice(max(int(cx) - 8, 0), int(cx) + 9))
        r2 = (yy[box] - cy) ** 2 + (xx[box] - cx) ** 2
        model[box] += flux / (2 * np.pi * sigma**2) * np.exp(-r2 / (2 * sigma**2))
    image = rng.poisson(model).astype(np.float64) + rng.normal(0, 4.5, shape)
    truth = np.zeros(shape, dtype=bool)
    for _ in range(n_crs):
        length = int(rng.integers(1, 14))
        angle = rng.uniform(0, np.pi)
        y0, x0 = rng.uniform(5, ny - 5), rng.uniform(5, nx - 5)
        charge = 10 ** rng.uniform(2.0, 3.6)
        for step in range(length):
            y = round(float(y0 + step * np.sin(angle)))
            x = round(float(x0 + step * np.cos(angle)))
            if 0 <= y < ny and 0 <= x < nx:
                image[y, x] += charge * rng.uniform(0.5, 1.0)
                truth[y, x] = True
    return image.astype(np.float32), truth


TEMPLATE = Path(__file__).resolve().parents[2] / "crlib" / "data" / "jbt122x8q_sample_flc_header.fits"


def write_flc(
    path: Path,
    chips: dict[int, np.ndarray],
    *,
    rootname: str = "jtest01aq",
    filter_name: str = "F814W",
    instrume: str = "ACS",
    detector: str = "WFC",
    dq: dict[int, np.ndarray] | None = None,
    ccdchip: dict[int, int] | None = None,
    primary: dict[str, object] | None = None,
) -> Path:
    """An FLC file on the real ACS/WFC template header with the given SCI arrays (electrons).

    ``chips`` maps SCI EXTVER to its image: any EXTVERs, any shapes (a one-chip subarray is
    ``{1: image}``). ``ccdchip`` overrides the CCDCHIP of an EXTVER (a WFC1 subarray's ``SCI,1``
    is CCDCHIP 1); each chip's SCI header is the template's header of that CCD. ``primary`` sets
    extra primary keywords (``SUBARRAY``, ``APERTURE``, ``NEXTEND``...; a value of ``None``
    removes the keyword). ``NEXTEND`` is set to the extensions written unless given.
    """
    with fits.open(TEMPLATE) as template:
        head = fits.PrimaryHDU(header=template[0].header.copy())
        head.header["ROOTNAME"] = rootname
        head.header["FILTER1"] = "CLEAR1L"
        head.header["FILTER2"] = filter_name
        head.header["INSTRUME"] = instrume
        head.header["DETECTOR"] = detector
        hdus: list = [head]
        for extver in sorted(chips):
            data = chips[extver]
            ccd = (ccdchip or {}).get(extver, ACS_WFC.chip(extver).ccdchip if extver <= 2 else 1)
            template_extver = (
                next(c.sci_extver for c in ACS_WFC.chips if c.ccdchip == ccd) if ccd in (1, 2) else 1
            )
            header = template["SCI", template_extver].header.copy()
            header["EXTVER"] = extver
            header["CCDCHIP"] = ccd
            sci = fits.ImageHDU(data.astype(np.float32), header=header)
            err = fits.ImageHDU(np.sqrt(np.abs(data)).astype(np.float32), name="ERR", ver=extver)
            flags = (dq or {}).get(extver, np.zeros(data.shape, dtype=np.int16))
            hdus += [sci, err, fits.ImageHDU(flags.astype(np.int16), name="DQ", ver=extver)]
        head.header["NEXTEND"] = len(hdus) - 1
        for key, value in (primary or {}).items():
            if value is None:
                head.header.remove(key, ignore_missing=True)
            else:
                head.header[key] = value
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path
