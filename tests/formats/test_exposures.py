"""formats.exposures' working copies: the stages modify copies, never the visit's files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

from crlib.formats.exposures import copy_to_work_dir, find_exposures, read_exposure_info

SUMS = ("CHECKSUM", "DATASUM")


def test_copies_drop_checksums_and_keep_every_pixel_and_other_card(small_archive, tmp_path: Path) -> None:
    originals = find_exposures(Path(small_archive.visits[0].directory))
    copies = copy_to_work_dir(originals, tmp_path / "work")
    assert [c.name for c in copies] == [o.name for o in originals]
    for original, copy in zip(originals, copies, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a checksum astropy cannot verify would warn
            with fits.open(original, checksum=True) as source, fits.open(copy, checksum=True) as made:
                assert len(source) == len(made)
                assert all(key in source[1].header for key in SUMS)
                for kept, stripped in zip(source, made, strict=True):
                    assert not any(key in stripped.header for key in SUMS)
                    assert [c.image for c in kept.header.cards if c.keyword not in SUMS] == [
                        c.image for c in stripped.header.cards
                    ]
                    if kept.data is not None:
                        assert np.array_equal(kept.data, stripped.data)
        assert read_exposure_info(copy).rootname == read_exposure_info(original).rootname


def test_a_copy_astropy_cannot_open_is_copied_as_it_is(tmp_path: Path) -> None:
    broken = tmp_path / "visit" / "jbroken1q_flc.fits"
    broken.parent.mkdir()
    broken.write_bytes(b"not a FITS file " * 200)
    (copy,) = copy_to_work_dir([broken], tmp_path / "work")
    assert copy.read_bytes() == broken.read_bytes()
