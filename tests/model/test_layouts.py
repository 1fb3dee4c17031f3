"""Every real file layout goes through inference; a damaged layout is refused naming its actual problem."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from testsupport.flc import synthetic_chip, write_flc

from crlib.errors import InputDataError
from crlib.formats.flc import read_exposure
from crlib.formats.prediction import read_prediction
from crlib.model.exposure import predict_exposure, predict_exposures
from crlib.model.inference import MaskEngine
from crlib.model.lacosmic import chip_read_noise
from crlib.model.weights import load_shipped_model
from crlib.profiles import ACS_WFC


@pytest.fixture(scope="module")
def engine() -> MaskEngine:
    return MaskEngine(load_shipped_model("ACS-WFC"), device="cpu", threads=1)


def _image(shape: tuple[int, int], seed: int) -> np.ndarray:
    return synthetic_chip(shape, seed=seed, n_stars=6, n_crs=12)[0]


@pytest.mark.parametrize(
    ("chips", "ccdchip", "primary", "expected_ccd"),
    [
        # WFC1-1K style: one chip, on WFC1, so SCI,1 is CCDCHIP 1 (not the full frame's WFC2)
        ({1: (96, 104)}, {1: 1}, {"SUBARRAY": True, "APERTURE": "WFC1-1K"}, {1: 1}),
        # a one-chip subarray on WFC2 (as a UVIS2-C512C-SUB file is on UVIS2)
        ({1: (64, 72)}, {1: 2}, {"SUBARRAY": True, "APERTURE": "WFC2-2K"}, {1: 2}),
        # a two-chip subarray
        ({1: (40, 52), 2: (40, 52)}, None, {"SUBARRAY": True, "APERTURE": "WFC-SIM-CROP"}, {1: 2, 2: 1}),
        # full frame (small arrays, as drizzlepac's real 10x10 test files are), chips of any size
        ({1: (10, 10), 2: (10, 10)}, None, {"SUBARRAY": False, "APERTURE": "WFC"}, {1: 2, 2: 1}),
    ],
    ids=["wfc1-subarray", "wfc2-subarray", "two-chip-subarray", "tiny-full-frame"],
)
def test_every_layout_is_predicted_chip_by_chip(
    tmp_path: Path, engine: MaskEngine, chips, ccdchip, primary, expected_ccd
) -> None:
    images = {extver: _image(shape, seed=extver) for extver, shape in chips.items()}
    flc = write_flc(
        tmp_path / "jlay01abq_flc.fits", images, rootname="jlay01abq", ccdchip=ccdchip, primary=primary
    )
    result = predict_exposure(flc, out_dir=tmp_path / "pred", engine=engine)
    assert result.status == "ok"
    header, predicted = read_prediction(Path(result.path))
    assert header["SUBARRAY"] == primary["SUBARRAY"] and header["APERTURE"] == primary["APERTURE"]
    assert [c.extver for c in predicted] == sorted(chips)
    for chip in predicted:
        assert chip.probability.shape == chip.mask.shape == chips[chip.extver]
        assert chip.header["CCDCHIP"] == expected_ccd[chip.extver]
        assert chip.header["NCRPIX"] == int(chip.mask.sum())
        expected = engine.predict_chip(images[chip.extver]).probability
        assert np.abs(chip.probability.astype(np.float32) - expected).max() < 1e-3  # float16 rounding


def test_compressed_flt_gives_the_same_prediction_as_the_flc(tmp_path: Path, engine: MaskEngine) -> None:
    flc = write_flc(
        tmp_path / "jgzp01abq_flc.fits",
        {1: _image((48, 60), seed=4)},
        rootname="jgzp01abq",
        ccdchip={1: 1},
        primary={"SUBARRAY": True, "APERTURE": "WFC1-512"},
    )
    flt_gz = tmp_path / "gz" / "jgzp01abq_flt.fits.gz"
    flt_gz.parent.mkdir()
    with flc.open("rb") as source, gzip.open(flt_gz, "wb") as target:
        shutil.copyfileobj(source, target)
    plain = read_prediction(Path(predict_exposure(flc, out_dir=tmp_path / "a", engine=engine).path))[1]
    packed = read_prediction(Path(predict_exposure(flt_gz, out_dir=tmp_path / "b", engine=engine).path))[1]
    assert len(plain) == len(packed) == 1
    assert np.array_equal(plain[0].probability, packed[0].probability)


def _one_chip(tmp_path: Path, name: str, **kwargs) -> Path:
    return write_flc(tmp_path / f"{name}_flc.fits", {1: _image((32, 40), seed=1)}, rootname=name, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        # a full-frame file that lacks a chip is incomplete: that, and only that, sends to a download
        (
            {"primary": {"SUBARRAY": False}},
            r"full-frame exposure \(SUBARRAY=F\) lacks SCI,2: a full-frame ACS/WFC file holds 2 chips",
        ),
        ({"primary": {"SUBARRAY": None}}, r"full-frame exposure \(no SUBARRAY keyword\) lacks SCI,2"),
        (
            {"primary": {"SUBARRAY": False, "NEXTEND": 6}},
            r"lacks SCI,2.*ends after 3 extension\(s\) but NEXTEND=6: it is truncated",
        ),
        ({"ccdchip": {1: 7}, "primary": {"SUBARRAY": True}}, r"SCI,1 has CCDCHIP=7, not a CCD of ACS/WFC"),
    ],
    ids=["full-frame-missing-chip", "no-subarray-keyword", "truncated", "unknown-ccd"],
)
def test_damaged_layouts_name_the_problem(tmp_path: Path, kwargs, problem: str) -> None:
    flc = _one_chip(tmp_path, "jbad01abq", **kwargs)
    with pytest.raises(InputDataError, match=problem) as caught:
        read_exposure(flc)
    damaged = "lacks" in problem
    assert ("re-download" in str(caught.value)) == damaged


def test_a_subarray_is_not_reported_as_a_truncated_file(tmp_path: Path) -> None:
    flc = _one_chip(tmp_path, "jsub01abq", ccdchip={1: 1}, primary={"SUBARRAY": True, "APERTURE": "WFC1-512"})
    exposure = read_exposure(flc)
    assert list(exposure.chips) == [1] and exposure.ccd(1).name == "WFC1"
    assert exposure.layout is not None and exposure.layout.subarray and exposure.layout.aperture == "WFC1-512"


def test_impossible_chip_sets_are_refused(tmp_path: Path) -> None:
    same_ccd = write_flc(
        tmp_path / "jtwo01abq_flc.fits",
        {1: _image((20, 20), 1), 2: _image((20, 20), 2)},
        ccdchip={1: 1, 2: 1},
        primary={"SUBARRAY": True},
    )
    with pytest.raises(InputDataError, match=r"SCI,1 and SCI,2 both say CCDCHIP=1 \(WFC1\)"):
        read_exposure(same_ccd)
    three = write_flc(
        tmp_path / "jthr01abq_flc.fits",
        {1: _image((20, 20), 1), 2: _image((20, 20), 2), 3: _image((20, 20), 3)},
        ccdchip={3: 1},
    )
    with pytest.raises(InputDataError, match="SCI,3"):
        read_exposure(three)


def test_constant_and_empty_chips_are_refused_not_crashed(tmp_path: Path) -> None:
    constant = _one_chip(tmp_path, "jcon01abq", primary={"SUBARRAY": True})
    with fits.open(constant, mode="update") as hdul:
        hdul["SCI", 1].data[:] = 0.0
    empty = _one_chip(tmp_path, "jemp01abq", primary={"SUBARRAY": True})
    with fits.open(empty) as hdul:  # SCI,1 without pixels (NAXIS=0), as a header-only file has
        hdul["SCI", 1] = fits.ImageHDU(header=hdul["SCI", 1].header.copy(), name="SCI", ver=1)
        hdul.writeto(empty, overwrite=True)
    # WFC3-UVIS standardises each chip: a constant chip used to escape as a bare ValueError
    uvis = _one_chip(tmp_path, "jwuv01abq", instrume="WFC3", detector="UVIS", primary={"SUBARRAY": True})
    with fits.open(uvis, mode="update") as hdul:
        hdul["SCI", 1].data[:] = 1.0
    results = predict_exposures([constant, empty, uvis], out_dir=tmp_path / "out", device="cpu", threads=1)
    reasons = {r.rootname: str(r.reason) for r in results}
    assert all(r.status == "failed" for r in results)
    assert "SCI,1 is constant (every pixel 0, 32x40 px)" in reasons["jcon01abq"]
    assert "SCI,1 holds no 2-D image (no data (NAXIS=0))" in reasons["jemp01abq"]
    assert "SCI,1 is constant (every pixel 1" in reasons["jwuv01abq"]


def test_lacosmic_read_noise_follows_the_subarray_ccd_and_amplifier() -> None:
    primary = {"READNSEA": 5.0, "READNSEB": 3.0, "READNSEC": 9.0, "READNSED": 9.0}
    wfc1 = next(c for c in ACS_WFC.chips if c.ccdchip == 1)
    # full frame: SCI,1 is WFC2 (amplifiers C, D)
    assert chip_read_noise(primary, ACS_WFC, 1) == 9.0
    # a WFC1 subarray's SCI,1 is WFC1 (A, B) ...
    assert chip_read_noise(primary, ACS_WFC, 1, ccd=wfc1) == 4.0
    # ... read through amplifier A only
    assert chip_read_noise({**primary, "CCDAMP": "A"}, ACS_WFC, 1, ccd=wfc1) == 5.0
