"""Real-structure files through screening and deepCR inference, each with its expected outcome.

Accepted files must be predicted on every chip they hold (shape, CCD and model from the file);
rejected files must get a one-line reason from screening and an :class:`InputDataError` naming
the actual problem from inference (never a crash, never "re-download" for a legitimate layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from crlib.errors import InputDataError
from crlib.formats.prediction import read_prediction
from crlib.model.exposure import predict_exposure, predict_exposures
from crlib.screening import screen_file

pytestmark = pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")


@dataclass(frozen=True)
class Expected:
    """What must happen to one file."""

    profile: str
    verdict: str
    #: accepted: CCDCHIP per SCI EXTVER of the prediction; rejected: None
    ccds: dict[int, int] | None = None
    shape: tuple[int, int] | None = None
    model: str | None = None
    subarray: bool = False
    #: rejected: screening rules that must fire, and the inference error (regex)
    rules: tuple[str, ...] = ()
    error: str | None = None
    #: whether the inference error tells the operator to download the file again (damaged files:
    #: a chip missing from a full-frame file, pixels that are no image; not another instrument)
    redownload: bool = False


UVIS = {"profile": "wfc3_uvis", "shape": (10, 10), "model": "WFC3-UVIS"}

CASES: dict[str, Expected] = {
    # accepted: real WFC3/UVIS two-chip FLCs (SUBARRAY=F, 10x10 per chip)
    "hap_svm_flc": Expected(verdict="accept", ccds={1: 2, 2: 1}, **UVIS),
    "hap_ipppssoot_flc": Expected(verdict="accept", ccds={1: 2, 2: 1}, **UVIS),
    "hap_ipppssoot_as_flt": Expected(verdict="accept", ccds={1: 2, 2: 1}, **UVIS),
    "hap_svm_flc_gz": Expected(verdict="accept", ccds={1: 2, 2: 1}, **UVIS),
    # a one-chip subarray (UVIS2-C512C-SUB layout: SCI/ERR/DQ,1 on UVIS2 plus headerlets)
    "uvis_one_chip_subarray": Expected(verdict="accept", ccds={1: 2}, subarray=True, **UVIS),
    # the same file claiming to be full frame is incomplete: that is a download problem
    "uvis_full_frame_missing_chip": Expected(
        profile="wfc3_uvis",
        verdict="reject",
        rules=("file.missing_extension",),
        error=r"full-frame exposure \(SUBARRAY=F\) lacks SCI,2",
        redownload=True,
    ),
    # real full-frame ACS/WFC header, zero pixels, only the two SCI extensions (NEXTEND=8)
    "stsci_acs_test": Expected(
        profile="acs_wfc",
        verdict="reject",
        rules=("file.truncated", "file.missing_extension", "data.constant"),
        error=r"SCI,1 is constant \(every pixel 0, 2048x4096 px\)",
        redownload=True,
    ),
    "astropy_j94f05bgq_flt": Expected(
        profile="acs_wfc",
        verdict="reject",
        rules=("data.constant",),
        error=r"SCI,1 is constant \(every pixel 0, 1x1",
        redownload=True,
    ),
    "sphgeom_2chipA_acs_gz": Expected(
        profile="acs_wfc",
        verdict="reject",
        rules=("data.constant",),
        error=r"SCI,1 is constant \(every pixel 1, 10x10",
        redownload=True,
    ),
    "sphgeom_2chipC_uvis_gz": Expected(
        profile="wfc3_uvis",
        verdict="reject",
        rules=("data.constant",),
        error=r"SCI,1 is constant \(every pixel 1",
        redownload=True,
    ),
    "sphgeom_j8bt06nyq_hrc_flt": Expected(
        profile="acs_wfc",
        verdict="reject",
        rules=("profile.instrument",),
        error="ACS/HRC has no deepCR profile",
    ),
    "hap_svm_flt_ir": Expected(
        profile="wfc3_uvis",
        verdict="reject",
        rules=("profile.instrument",),
        error="WFC3/IR has no deepCR profile",
    ),
}


@pytest.mark.parametrize("key", sorted(CASES))
def test_screen_then_infer(key: str, conformance_files: dict[str, Path], tmp_path: Path) -> None:
    expected = CASES[key]
    path = conformance_files[key]
    verdict = screen_file(path, profile=expected.profile)
    rejects = {r.rule for r in verdict.reasons if r.severity == "reject"}
    assert verdict.verdict == expected.verdict, verdict.reasons
    assert set(expected.rules) <= rejects, rejects
    if expected.error is not None:
        with pytest.raises(InputDataError, match=expected.error) as caught:
            predict_exposure(path, out_dir=tmp_path, device="cpu", threads=1)
        assert str(path) in str(caught.value)
        assert ("re-download" in str(caught.value)) == expected.redownload
        assert not list(tmp_path.iterdir())
        return
    assert not rejects
    result = predict_exposure(path, out_dir=tmp_path, device="cpu", threads=1)
    assert result.status == "ok" and result.model_name == expected.model
    primary, chips = read_prediction(Path(result.path))
    assert primary["SUBARRAY"] == expected.subarray
    assert {c.extver: c.header["CCDCHIP"] for c in chips} == expected.ccds
    for chip in chips:
        assert chip.probability.shape == chip.mask.shape == expected.shape
        assert np.isfinite(chip.probability).all()


def test_derived_subarray_keeps_the_real_headerlets(conformance_files: dict[str, Path]) -> None:
    def names(path: Path) -> list[tuple[str, int]]:
        with fits.open(path) as hdul:
            return [(h.name, h.ver) for h in hdul[1:]]

    original = names(conformance_files["hap_svm_flc"])
    subarray = names(conformance_files["uvis_one_chip_subarray"])
    assert [n for n in original if n[0] not in ("SCI", "ERR", "DQ") or n[1] == 1] == subarray
    assert sum(1 for name, _ in subarray if name == "HDRLET") == 10


def test_compressed_and_plain_copies_predict_alike(
    conformance_files: dict[str, Path], tmp_path: Path
) -> None:
    plain = predict_exposure(
        conformance_files["hap_svm_flc"], out_dir=tmp_path / "a", device="cpu", threads=1
    )
    packed = predict_exposure(
        conformance_files["hap_svm_flc_gz"], out_dir=tmp_path / "b", device="cpu", threads=1
    )
    for a, b in zip(read_prediction(Path(plain.path))[1], read_prediction(Path(packed.path))[1], strict=True):
        assert np.array_equal(a.probability, b.probability)


def test_one_batch_of_every_file_fails_only_the_bad_ones(
    conformance_files: dict[str, Path], tmp_path: Path
) -> None:
    uvis = [key for key, case in CASES.items() if case.profile == "wfc3_uvis"]
    results = predict_exposures(
        [conformance_files[key] for key in uvis], out_dir=tmp_path, device="cpu", threads=1
    )
    assert len(results) == len(uvis)
    for key, result in zip(uvis, results, strict=True):
        assert result.status == ("ok" if CASES[key].verdict == "accept" else "failed"), (key, result.reason)
