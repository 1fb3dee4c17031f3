"""Real ACS/WFC point-spread functions: the per-filter Tiny Tim models drizzlepac ships.

drizzlepac's ``pars/psfs/acs/wfc/acs_wfc_<filter>.fits`` are 122x122 (123x123 for ``clear``)
images sampled at the native 0.05" pixel, normalised to a total of 1, peaking on pixel (61, 61)
(0-based), computed for WFC at chip position (2048, 1024) with a 5000 K black body. Stars are
placed at sub-pixel positions by cubic-spline interpolation of that image (the coefficients are
computed once per filter), evaluated on the same stamps as the Moffat profile, with the PSF's
light centre (:func:`light_centre`, ~0.3 px from the peak pixel) on the star's position.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from crlib.errors import ConfigError
from crlib.simulate.geometry import FloatArray

log = logging.getLogger(__name__)

#: (upper flux limit in e-, stamp half-width in px) for real-PSF stars: the Tiny Tim wings carry
#: ~10 % of the light beyond 4 px, so the brightest stars get the whole 61-px half-width image.
PSF_STAMP_TIERS = ((2e3, 4), (1e5, 10), (2e6, 25), (np.inf, 60))

#: Half-width (px) of the box whose first moment is a PSF's centre (7x7: the core, as a centroid).
CENTRE_HALF_WIDTH = 3


def psf_directory() -> Path:
    """drizzlepac's ACS/WFC PSF directory in the installed package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("drizzlepac")
    if spec is None or spec.origin is None:
        raise ConfigError("drizzlepac is not installed: its ACS/WFC PSF models are needed for real_psf")
    return Path(spec.origin).parent / "pars" / "psfs" / "acs" / "wfc"


def psf_path(filter_name: str) -> Path:
    """The drizzlepac PSF file of ``filter_name`` (e.g. ``F606W``).

    Raises
    ------
    ConfigError
        When drizzlepac ships no PSF for the filter.
    """
    path = psf_directory() / f"acs_wfc_{filter_name.lower()}.fits"
    if not path.exists():
        raise ConfigError(f"drizzlepac ships no ACS/WFC PSF for {filter_name} (looked for {path})")
    return path


@functools.lru_cache(maxsize=16)
def psf_coefficients(filter_name: str) -> tuple[FloatArray, float, float]:
    """Cubic-spline coefficients of the filter's PSF and its centre pixel ``(cx, cy)``.

    Returns
    -------
    tuple
        ``(coefficients (ny, nx) float64, cx, cy)``; the PSF image is normalised to a sum of 1.
    """
    from astropy.io import fits
    from scipy.ndimage import spline_filter

    with fits.open(psf_path(filter_name), memmap=False) as hdul:
        image = np.asarray(hdul[0].data, dtype=np.float64)
    image = np.clip(image, 0.0, None)
    image /= image.sum()
    cx, cy = light_centre(image)
    log.debug(
        "loaded %s PSF %s, peak %.3f, light centre (%.3f, %.3f)",
        filter_name,
        image.shape,
        image.max(),
        cx,
        cy,
    )
    return spline_filter(image, order=3, mode="constant"), cx, cy


def light_centre(image: FloatArray, *, half_width: int = CENTRE_HALF_WIDTH) -> tuple[float, float]:
    """First moment ``(x, y)`` (0-based pixels) of ``image`` in a box around its brightest pixel.

    drizzlepac's PSF images peak on pixel (61, 61) but their light is centred ~0.3 px lower in x
    and y; a star is where a centroid puts it (the catalog's and Gaia's position), so stars are
    rendered with this centre on the star's position, not the peak pixel.
    """
    py, px = np.unravel_index(int(np.argmax(image)), image.shape)
    box = image[py - half_width : py + half_width + 1, px - half_width : px + half_width + 1]
    rows, cols = np.indices(box.shape)
    total = float(box.sum())
    return (
        float(px - half_width + (box * cols).sum() / total),
        float(py - half_width + (box * rows).sum() / total),
    )


def psf_values(filter_name: str, dx: FloatArray, dy: FloatArray) -> FloatArray:
    """PSF (fraction of the flux per pixel) at offsets ``dx, dy`` (pixels) from the star centre."""
    from scipy.ndimage import map_coordinates

    coefficients, cx, cy = psf_coefficients(filter_name)
    shape = np.broadcast_shapes(np.shape(dx), np.shape(dy))
    rows = np.broadcast_to(cy + dy, shape).ravel()
    cols = np.broadcast_to(cx + dx, shape).ravel()
    values = map_coordinates(coefficients, [rows, cols], order=3, mode="constant", prefilter=False)
    return np.clip(values, 0.0, None).reshape(shape)


def peak_fraction(filter_name: str) -> float:
    """Fraction of a centred star's light in its brightest pixel (the PSF image's maximum)."""
    return float(psf_values(filter_name, np.zeros(1), np.zeros(1))[0])
