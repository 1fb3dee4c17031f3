"""Patch datasets from simulated visits: border, ignore mask, memory-mapped and cut once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crlib.errors import InputDataError
from crlib.training.patches import PatchParameters, build_patch_dataset, ignore_mask, patch_origins
from crlib.training.sources import exposures_from_local_archive


def test_ignore_mask_follows_the_paper() -> None:
    sci = np.full((40, 40), 100.0, np.float32)
    dq = np.zeros((40, 40), np.int16)
    dq[5, 5] = 4096  # a CR flagged by AstroDrizzle: a label, not a defect
    dq[6, 6] = 16  # hot pixel
    sci[20, 20] = 80000.0  # saturated
    valid = np.ones((40, 40), np.uint8)
    valid[30, 30] = 0
    ignored = ignore_mask(sci, dq, valid, params=PatchParameters())
    assert not ignored[5, 5] and ignored[6, 6] and ignored[30, 30]
    assert ignored[17:24, 17:24].all() and not ignored[16, 20] and not ignored[24, 20]  # 7x7 dilation
    assert ignored.sum() == 49 + 2


def test_border_is_discarded() -> None:
    origins = patch_origins((512, 1024), PatchParameters(patch=256, border=128))
    assert origins == [(128, 128), (128, 384), (128, 640)]


def test_dataset_from_simulated_archive_is_written_once(small_archive, tmp_path: Path) -> None:
    exposures = exposures_from_local_archive(small_archive.root)[:2]
    params = PatchParameters(patch=256, border=128)
    dataset = build_patch_dataset(exposures, tmp_path, params=params)
    assert dataset.images.shape == (12, 256, 256) and isinstance(dataset.images, np.memmap)
    assert dataset.images.dtype == np.float32 and dataset.masks.dtype == np.uint8
    first = dataset.index[0]
    from astropy.io import fits

    with fits.open(exposures[0].flc_path) as flc, fits.open(exposures[0].truth_path) as truth:
        window = np.s_[first["y0"] : first["y0"] + 256, first["x0"] : first["x0"] + 256]
        assert np.array_equal(dataset.images[0], flc["SCI", first["chip"]].data[window])
        assert np.array_equal(dataset.masks[0], truth["CRMASK", first["chip"]].data[window] > 0)
    assert sum(row["cr_pixels"] for row in dataset.index) > 0
    mtime = (dataset.directory / "images.npy").stat().st_mtime_ns
    again = build_patch_dataset(exposures, tmp_path, params=params)
    assert (
        again.directory == dataset.directory and (again.directory / "images.npy").stat().st_mtime_ns == mtime
    )


def test_short_exposures_are_not_used(small_archive) -> None:
    exposures = exposures_from_local_archive(small_archive.root, min_exptime_s=10_000)
    assert exposures == []


def _pair(directory: Path, rootname: str, shapes: dict[int, tuple[int, int]]):
    """A minimal FLC (SCI/DQ per chip, as the file holds them) and its truth product."""
    from astropy.io import fits

    from crlib.training.sources import TrainingExposure
    from crlib.truth.product import write_truth_product

    rng = np.random.default_rng(len(rootname))
    hdus: list = [fits.PrimaryHDU()]
    masks = {}
    for extver, shape in shapes.items():
        hdus.append(fits.ImageHDU(rng.normal(100, 5, shape).astype(np.float32), name="SCI", ver=extver))
        hdus.append(fits.ImageHDU(np.zeros(shape, np.int16), name="DQ", ver=extver))
        masks[extver] = ((rng.random(shape) < 0.01).astype(np.uint8), np.ones(shape, np.uint8))
    flc = directory / f"{rootname}_flc.fits"
    fits.HDUList(hdus).writeto(flc)
    truth = write_truth_product(
        directory / f"{rootname}_crtruth.fits", rootname=rootname, masks=masks, provenance={}
    )
    return TrainingExposure(rootname, rootname[:6], "extragalactic", "F606W", 500.0, str(flc), str(truth))


def test_chips_smaller_than_a_patch_plus_border_are_skipped_with_a_reason(tmp_path: Path) -> None:
    params = PatchParameters(patch=256, border=128)
    exposures = [
        _pair(tmp_path, "jsub01abq", {1: (513, 512)}),  # a UVIS2-C512C-SUB-sized chip: exactly one patch
        _pair(tmp_path, "jtin02abq", {1: (10, 10), 2: (10, 10)}),  # drizzlepac's 10x10 real test files
        _pair(tmp_path, "jtwo03abq", {1: (400, 900), 2: (520, 520)}),  # two-chip subarray, one chip too short
    ]
    dataset = build_patch_dataset(exposures, tmp_path / "datasets", params=params)
    assert [(row["rootname"], row["chip"]) for row in dataset.index] == [("jsub01abq", 1), ("jtwo03abq", 2)]
    skipped = {(row["rootname"], row["chip"]): row for row in dataset.skipped_chips}
    assert set(skipped) == {("jtin02abq", 1), ("jtin02abq", 2), ("jtwo03abq", 1)}
    assert skipped[("jtwo03abq", 1)]["shape"] == [400, 900]
    assert (
        "400x900 px chip is smaller than a 256 px patch plus a 128 px border"
        in skipped[("jtwo03abq", 1)]["reason"]
    )
    with pytest.raises(
        InputDataError, match=r"no 256x256 patch fits.*chips need 512x512 px; got jtin02abq SCI,1 10x10"
    ):
        build_patch_dataset(exposures[1:2], tmp_path / "tiny", params=params)


def test_patches_follow_the_instrument_profile_s_scoring_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Border and DQ rule come from the profile (as pipeline scoring's), not from constants."""
    import dataclasses

    from crlib.config import load_settings
    from crlib.pipeline.lifecycle import training_request
    from crlib.profiles import ACS_WFC, WFC3_UVIS, ScoringRules, get_profile

    for profile in (ACS_WFC, WFC3_UVIS):
        params = PatchParameters.for_profile(profile)
        assert params.scoring == profile.scoring and params.saturation_e == profile.saturation_e
    assert PatchParameters() == PatchParameters.for_profile(ACS_WFC)
    assert training_request(load_settings()).patches == PatchParameters.for_profile(ACS_WFC)

    # a profile scoring under other rules changes the training patches the same way
    other = dataclasses.replace(ACS_WFC, scoring=ScoringRules(border_px=64, exclude_dq=False))
    monkeypatch.setattr(
        "crlib.profiles.get_profile", lambda name: other if name == "acs_wfc" else get_profile(name)
    )
    patches = training_request(load_settings()).patches
    assert patches is not None and (patches.border, patches.exclude_dq) == (64, False)
    assert patch_origins((512, 512), patches) == [(64, 64)]
    sci = np.full((40, 40), 100.0, np.float32)
    dq = np.zeros((40, 40), np.int16)
    dq[6, 6] = 16  # hot pixel: kept when the profile does not exclude DQ-flagged pixels
    assert not ignore_mask(sci, dq, None, params=patches).any()
    assert ignore_mask(sci, dq, None, params=PatchParameters.for_profile(ACS_WFC))[6, 6]
    assert training_request(load_settings(), border=0).patches.border == 0  # type: ignore[union-attr]
