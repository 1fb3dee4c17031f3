"""formats.flc's chip readers shared by the stages' read steps: SCI extensions, DQ, one chip's SCI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from crlib.formats.flc import chip_dq, read_chip_sci, sci_extensions


def _write(path: Path) -> Path:
    sci1 = np.arange(12, dtype=">f4").reshape(3, 4)
    sci2 = np.full((2, 5), 7.0, dtype=np.float64)
    hdus = [
        fits.PrimaryHDU(),
        fits.ImageHDU(sci2, name="SCI", ver=2),
        fits.ImageHDU(np.ones((2, 5), np.int16), name="DQ", ver=2),
        fits.ImageHDU(sci1, name="SCI", ver=1),  # no DQ,1
        fits.ImageHDU(name="DQ", ver=3),  # an extension without data
    ]
    fits.HDUList(hdus).writeto(path)
    return path


def test_sci_extensions_are_listed_in_file_order_without_reading_pixels(tmp_path: Path) -> None:
    path = _write(tmp_path / "j1_flc.fits")
    with fits.open(path, memmap=False) as hdul:
        found = [(extver, hdu.shape) for extver, hdu in sci_extensions(hdul)]
        assert found == [(2, (2, 5)), (1, (3, 4))]
        assert all(not hdu._data_loaded for _, hdu in sci_extensions(hdul))


def test_chip_dq_is_none_when_absent_or_empty(tmp_path: Path) -> None:
    path = _write(tmp_path / "j2_flc.fits")
    with fits.open(path, memmap=False) as hdul:
        dq = chip_dq(hdul, 2)
        assert dq is not None and dq.shape == (2, 5) and int(dq.sum()) == 10
        assert chip_dq(hdul, 1) is None and chip_dq(hdul, 3) is None


def test_read_chip_sci_gives_native_float32(tmp_path: Path) -> None:
    path = _write(tmp_path / "j3_flc.fits")
    sci = read_chip_sci(path, 1)
    assert sci.dtype == np.float32 and sci.dtype.isnative and sci.shape == (3, 4)
    assert float(sci[2, 3]) == 11.0
    assert read_chip_sci(path, 2).dtype == np.float32
    with pytest.raises(KeyError):
        read_chip_sci(path, 4)
