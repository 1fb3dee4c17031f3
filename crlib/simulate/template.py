"""The real ACS/WFC FLC template: its headers, distortion arrays, and WCS objects built from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from crlib.errors import InputDataError
from crlib.profiles import InstrumentProfile
from crlib.simulate.geometry import FloatArray, header_crval_cd, set_crval_cd

DISTORTION_EXTNAMES = ("D2IMARR", "WCSDVARR")


class Template:
    """Headers and distortion extensions of a real calibrated exposure, read once.

    Parameters
    ----------
    path
        Template FITS file (primary + SCI/ERR/DQ per chip + D2IMARR/WCSDVARR).
    profile
        Instrument profile (chip shape and layout).
    """

    def __init__(self, path: Path, profile: InstrumentProfile) -> None:
        self.path = path
        self.profile = profile
        try:
            with fits.open(path) as hdul:
                self.primary = hdul[0].header.copy()
                self.chip_headers = {
                    (name, chip.sci_extver): hdul[name, chip.sci_extver].header.copy()
                    for chip in profile.chips
                    for name in ("SCI", "ERR", "DQ")
                }
                self.distortion = [
                    fits.ImageHDU(data=np.asarray(hdu.data, dtype=np.float32), header=hdu.header.copy())
                    for hdu in hdul[1:]
                    if hdu.header.get("EXTNAME") in DISTORTION_EXTNAMES
                ]
        except (OSError, KeyError) as exc:
            raise InputDataError(
                path, f"cannot read the simulator template ({exc})", fix="reinstall crlib (package data)"
            ) from exc
        self._wcs_fobj = fits.HDUList([fits.PrimaryHDU(), *self.distortion])

    def sci_header(self, sci_extver: int) -> fits.Header:
        """A copy of the template SCI header of one chip (full-chip WCS)."""
        return self.chip_headers["SCI", sci_extver].copy()

    def crval_cd(self, sci_extver: int) -> tuple[tuple[float, float], FloatArray]:
        """Template tangent point and CD matrix of one chip."""
        return header_crval_cd(self.chip_headers["SCI", sci_extver])

    def chip_wcs(self, sci_extver: int, crval: tuple[float, float], cd: FloatArray) -> WCS:
        """Full-chip WCS (SIP + D2IM + NPOL) of one chip pointed at ``crval`` with ``cd``."""
        header = self.sci_header(sci_extver)
        set_crval_cd(header, crval, cd)
        ny, nx = self.profile.chip_shape
        header["NAXIS1"], header["NAXIS2"] = nx, ny
        return WCS(header, fobj=self._wcs_fobj)


_TEMPLATES: dict[str, Template] = {}


def load_template(profile: InstrumentProfile) -> Template:
    """The profile's packaged template, read once per process."""
    if profile.name not in _TEMPLATES:
        _TEMPLATES[profile.name] = Template(profile.template_path(), profile)
    return _TEMPLATES[profile.name]
