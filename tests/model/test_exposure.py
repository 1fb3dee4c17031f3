from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from crlib.errors import InputDataError
from crlib.formats.flc import read_exposure
from crlib.formats.prediction import read_prediction
from crlib.model.exposure import predict_exposure, predict_exposures
from crlib.profiles import WFC3_UVIS


def test_prediction_file_holds_float16_probabilities_and_masks(flc_factory, tmp_path: Path) -> None:
    flc, truths = flc_factory("jabc01xyq", filter_name="F606W")
    result = predict_exposure(flc, out_dir=tmp_path / "pred", device="cpu")
    assert result.status == "ok"
    assert result.rootname == "jabc01xyq"
    assert result.model_name == "ACS-WFC-F606W"  # per-filter model chosen from FILTER2
    assert result.device == "cpu/fp32" and result.seconds > 0 and result.peak_memory_mb > 100
    assert Path(result.path) == tmp_path / "pred" / "jabc01xyq_crpred.fits"
    primary, chips = read_prediction(Path(result.path))
    assert primary["CRMODEL"] == "ACS-WFC-F606W"
    assert primary["CRMODVER"] == result.model_version
    assert primary["CRTHRESH"] == 0.5
    assert [c.extver for c in chips] == [1, 2]
    with fits.open(result.path) as hdul:
        assert hdul["CRPROB", 1].header["PROBTYPE"] == "FLOAT16"
        assert hdul["CRPROB", 1].data.dtype == np.uint16
        assert hdul["CRMASK", 2].data.dtype == np.uint8
        assert hdul["CRPROB", 2].header["CCDCHIP"] == 1
    for chip in chips:
        assert chip.probability.dtype == np.float16
        # the mask was thresholded before rounding: it matches the float16 values up to one ulp
        assert np.array_equal(chip.mask == 1, chip.probability > 0.5) or (
            np.count_nonzero((chip.mask == 1) != (chip.probability > 0.5)) <= 3
        )
        assert chip.mask[truths[chip.extver]].mean() > 0.5


def test_model_override_and_threshold(flc_factory, tmp_path: Path) -> None:
    flc, _ = flc_factory(filter_name="F606W")
    loose = predict_exposure(flc, out_dir=tmp_path / "a", model="ACS-WFC", threshold=0.1, device="cpu")
    strict = predict_exposure(flc, out_dir=tmp_path / "b", model="ACS-WFC", threshold=0.9, device="cpu")
    assert loose.model_name == strict.model_name == "ACS-WFC"
    n_loose = sum(int(c.mask.sum()) for c in read_prediction(Path(loose.path))[1])
    n_strict = sum(int(c.mask.sum()) for c in read_prediction(Path(strict.path))[1])
    assert n_loose > n_strict > 0


def test_one_bad_file_fails_alone(flc_factory, tmp_path: Path) -> None:
    good, _ = flc_factory("jgood01aq")
    corrupt = tmp_path / "jcorr01aq_flc.fits"
    corrupt.write_bytes(good.read_bytes()[:20000])
    wrong, _ = flc_factory("jwron01aq", instrume="WFC3", detector="IR")
    nan_chips, _ = flc_factory("jnann01aq")
    with fits.open(nan_chips, mode="update") as hdul:
        hdul["SCI", 2].data[:] = np.nan
    results = predict_exposures([good, corrupt, wrong, nan_chips], out_dir=tmp_path / "out", device="cpu")
    by_root = {r.rootname: r for r in results}
    assert by_root["jgood01aq"].status == "ok"
    assert by_root["jcorr01aq"].status == "failed" and "jcorr01aq_flc.fits" in str(
        by_root["jcorr01aq"].reason
    )
    assert "WFC3/IR" in str(by_root["jwron01aq"].reason)
    assert "SCI,2 has no finite pixels" in str(by_root["jnann01aq"].reason)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["jgood01aq_crpred.fits"]


def test_expected_instrument_is_enforced(flc_factory) -> None:
    flc, _ = flc_factory()
    with pytest.raises(InputDataError, match="expected WFC3/UVIS"):
        read_exposure(flc, expected_profile=WFC3_UVIS)


def test_rate_images_are_refused(flc_factory) -> None:
    flc, _ = flc_factory()
    with fits.open(flc, mode="update") as hdul:
        hdul["SCI", 1].header["BUNIT"] = "ELECTRONS/S"
    with pytest.raises(InputDataError, match="needs electrons"):
        read_exposure(flc)
