"""The truth stage's read of the exposures' chips for the valid mask: WCS and DQ per chip.

:func:`read_chip_frames` opens one (aligned) working copy and hands each chip's WCS, shape and DQ
flags to :func:`crlib.truth.validmask.chip_frame`; the coverage and valid-mask computation in
:mod:`crlib.truth.validmask` opens no file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from crlib.errors import InputDataError
from crlib.formats.flc import chip_dq, rootname_from_path, sci_extensions
from crlib.truth.validmask import ChipFrame, chip_frame

log = logging.getLogger(__name__)

__all__ = ["read_chip_frames"]


def read_chip_frames(path: Path) -> list[ChipFrame]:
    """Every chip of one exposure file as a :class:`~crlib.truth.validmask.ChipFrame`.

    The WCS is the chip's ``HSTWCS`` as currently in the file (after alignment); the shape comes
    from the ``SCI`` header, and only the ``DQ`` pixels are read.

    Parameters
    ----------
    path
        FLC/FLT file (the visit's working copy).

    Returns
    -------
    list of ChipFrame
        In file order of the ``SCI`` extensions.

    Raises
    ------
    InputDataError
        A chip has no ``DQ`` extension.
    """
    from astropy.io import fits
    from stwcs.wcsutil import HSTWCS

    frames = []
    rootname = rootname_from_path(Path(path))
    with fits.open(path, memmap=False) as hdul:
        for extver, hdu in sci_extensions(hdul):
            wcs = HSTWCS(hdul, ext=("SCI", extver))
            dq = chip_dq(hdul, extver)
            if dq is None:
                raise InputDataError(
                    path, f"missing DQ,{extver} extension", fix="pass a calibrated FLC/FLT file"
                )
            ny, nx = hdu.shape
            frames.append(chip_frame(rootname, extver, wcs, (int(ny), int(nx)), dq))
    return frames
