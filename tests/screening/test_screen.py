"""Header screening on the real ACS/WFC headers and on edited copies exercising each rule.

These files carry real headers but no real pixels (empty or constant SCI arrays), so the header
rules are tested with ``data_check=False``; pixel damage is tested in ``test_damage.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from astropy.io import fits

from crlib.screening import group_verdicts, screen_file, screen_files

HEADERS = "acs_wfc_headers"


@pytest.fixture
def flc(shared_data: Path, tmp_path: Path) -> Path:
    """A writable copy of the real FLC header file (jbt122x8q, F814W, 450 s, -FIT WCS)."""
    target = tmp_path / "jbt122x8q_flc.fits"
    shutil.copyfile(shared_data / HEADERS / "jbt122x8q_sample_flc_header.fits", target)
    return target


def _edit(path: Path, extension: int, **cards: Any) -> Path:
    with fits.open(path, mode="update") as hdus:
        for keyword, value in cards.items():
            keyword = keyword.replace("_", "-") if keyword == "DATE_OBS" else keyword
            if value is None:
                del hdus[extension].header[keyword]
            else:
                hdus[extension].header[keyword] = value
    return path


def _rules(verdict: Any) -> dict[str, str]:
    return {reason.rule: reason.severity for reason in verdict.reasons}


def test_real_flc_header_is_accepted_with_a_posteriori_wcs(flc: Path) -> None:
    verdict = screen_file(flc, data_check=False)
    assert verdict.verdict == "accept" and verdict.usable_for_training
    assert _rules(verdict) == {"align.wcs_a_posteriori": "info"}
    summary = verdict.header_summary
    assert verdict.rootname == "jbt122x8q"
    assert (summary["instrument"], summary["detector"], summary["filter"]) == ("ACS", "WFC", "F814W")
    assert summary["exptime"] == 450.0 and summary["proposid"] == 12546
    assert summary["date_obs"] == "2012-07-04" and summary["expstart"] == pytest.approx(56112.82084112)
    assert summary["wcsname"] == "IDC_4bb1536cj-FIT_IMG_GAIAeDR3" and summary["targname"] == "PGC2807133"


def test_real_flt_and_two_chip_headers(shared_data: Path) -> None:
    files = [
        shared_data / HEADERS / name
        for name in ("j94f05bgq_flt_header_1x1.fits", "2chipA.fits.gz", "2chipB.fits.gz", "2chipC.fits.gz")
    ]
    flt, chip_a, chip_b, chip_c = (screen_file(path, data_check=False) for path in files)
    for verdict in (flt, chip_a, chip_b):  # ACS/WFC FLTs without Gaia alignment: accepted with a warning
        assert verdict.verdict == "accept" and verdict.usable_for_training
        assert _rules(verdict) == {"align.wcs_unaligned": "warning"}
    assert flt.header_summary["filter"] == "F606W" and flt.header_summary["filters"] == "F606W_CLEAR2L"
    assert chip_c.verdict == "reject"  # WFC3/UVIS under the ACS/WFC profile
    assert "WFC3/UVIS does not match the ACS/WFC profile" in chip_c.reasons[0].message
    uvis = screen_file(files[3], profile="wfc3_uvis", data_check=False)
    assert uvis.verdict == "accept" and not uvis.usable_for_training  # 40 s < 100 s training rule
    assert _rules(uvis) == {
        "calib.drizcorr": "warning",
        "align.wcs_unaligned": "warning",
        "train.exptime": "info",
    }


@pytest.mark.parametrize(
    ("extension", "cards", "rule", "verdict", "training"),
    [
        (0, {"OBSTYPE": "SPECTROSCOPIC"}, "svm.obstype", "reject", False),
        (0, {"MTFLAG": "T"}, "svm.mtflag", "reject", False),
        (0, {"FILTER1": "BLOCK1"}, "svm.filter_block", "reject", False),
        (0, {"EXPTIME": 0.0}, "svm.exptime", "reject", False),
        (0, {"TARGNAME": "DARK"}, "svm.targname", "reject", False),
        (0, {"TARGNAME": "TUNGSTEN"}, "svm.targname", "reject", False),
        (0, {"TARGNAME": "EARTH-CALIB"}, "svm.targname", "reject", False),
        (0, {"TARGNAME": "DEUTERIUM"}, "svm.targname", "reject", False),
        (0, {"DRIZCORR": "OMIT"}, "svm.drizcorr", "reject", False),
        (0, {"FGSLOCK": "COARSE"}, "svm.fgslock", "warning", True),
        (0, {"FGSLOCK": "GYROS"}, "svm.fgslock", "warning", True),
        (0, {"FLATCORR": "PERFORM"}, "calib.flatcorr", "reject", False),
        (0, {"DRIZCORR": "PERFORM"}, "calib.drizcorr", "warning", True),
        (1, {"BUNIT": "ELECTRONS/S"}, "calib.bunit", "reject", False),
        (1, {"WCSNAME": "IDC_4bb1536cj-HSC30"}, "align.wcs_a_priori", "info", True),
        (1, {"WCSNAME": "IDC_4bb1536cj-GSC240"}, "align.wcs_a_priori", "info", True),
        (1, {"WCSNAME": "OPUS"}, "align.wcs_unaligned", "warning", True),
        (0, {"EXPTIME": 60.0}, "train.exptime", "info", False),
        (0, {"INSTRUME": "WFC3", "DETECTOR": "UVIS"}, "profile.instrument", "reject", False),
        (0, {"EXPTIME": None}, "svm.exptime", "reject", False),
        (0, {"EXPTIME": "long"}, "svm.exptime", "reject", False),
    ],
)
def test_each_rule_fires_on_an_edited_copy(
    flc: Path, extension: int, cards: dict[str, Any], rule: str, verdict: str, training: bool
) -> None:
    result = screen_file(_edit(flc, extension, **cards), data_check=False)
    severities = _rules(result)
    assert rule in severities
    expected_verdict = "reject" if verdict == "reject" else "accept"
    assert result.verdict == expected_verdict
    assert severities[rule] == ("reject" if verdict == "reject" else verdict)
    assert result.usable_for_training is training
    fired = next(r for r in result.reasons if r.rule == rule)
    if cards.get("EXPTIME", 1) is None:
        assert str(flc) in fired.message and "EXPTIME missing" in fired.message


def test_wfc3_only_rules_apply_to_the_uvis_profile(shared_data: Path, tmp_path: Path) -> None:
    path = tmp_path / "ibc301qrq_flt.fits.gz"
    shutil.copyfile(shared_data / HEADERS / "2chipC.fits.gz", path)
    _edit(path, 0, CHINJECT="LINE10", SCAN_TYP="C")
    verdict = screen_file(path, profile="wfc3_uvis", data_check=False)
    assert verdict.verdict == "reject"
    assert {"svm.chinject", "svm.scan_typ"} <= set(_rules(verdict))
    assert "svm.chinject" not in _rules(screen_file(path, profile="acs_wfc", data_check=False))


def test_broken_files_are_rejected_with_reasons_not_exceptions(flc: Path, tmp_path: Path) -> None:
    data = flc.read_bytes()
    truncated = tmp_path / "cut_flc.fits"
    truncated.write_bytes(data[:100_000])
    garbage = tmp_path / "garbage_flc.fits"
    garbage.write_bytes(b"this is not FITS" * 100)
    one_chip = tmp_path / "onechip_flc.fits"
    with fits.open(flc) as hdus:
        primary = hdus[0].copy()
        primary.header["NEXTEND"] = 3  # a consistent file that simply has one chip
        fits.HDUList([primary, hdus[1].copy(), hdus[2].copy(), hdus[3].copy()]).writeto(one_chip)
    missing = tmp_path / "missing_flc.fits"
    # one by one: in one batch, the copies of jbt122x8q would also be rejected as duplicates
    verdicts = [screen_file(p, data_check=False) for p in (truncated, garbage, one_chip, missing, flc)]
    assert [v.verdict for v in verdicts] == ["reject", "reject", "reject", "reject", "accept"]
    cut, junk, single, absent, _ = verdicts
    assert _rules(cut)["file.truncated"] == "reject" and str(truncated) in cut.reasons[0].message
    assert cut.reasons[0].message.endswith(": download it again")
    assert junk.reasons[0].rule == "file.unreadable"
    assert (
        junk.reasons[0].message
        == f"{garbage}: not a FITS file (no SIMPLE card at the start): download it again"
    )
    assert single.reasons[0].rule == "file.missing_extension"
    assert single.reasons[0].message == (
        f"{one_chip}: full-frame exposure has 1 SCI extension(s), expected 2 (missing SCI,2): "
        "download it again"
    )
    assert absent.reasons[0].rule == "file.unreadable" and "does not exist" in absent.reasons[0].message


def test_header_only_files_fail_the_data_check(flc: Path, shared_data: Path) -> None:
    """A header sample is not an exposure: with the (default) data check it is rejected as damaged."""
    empty = screen_file(flc)
    assert empty.verdict == "reject"
    assert [(r.rule, r.keyword) for r in empty.reasons if r.severity == "reject"] == [
        ("data.empty", "SCI,1"),
        ("data.empty", "SCI,2"),
    ]
    assert empty.reasons[0].message == f"{flc}: SCI,1 has no pixels (1x0): download it again"
    ones = screen_file(shared_data / HEADERS / "2chipA.fits.gz")
    assert _rules(ones)["data.constant"] == "reject"
    assert "SCI,1 is constant (every pixel 1)" in ones.reasons[0].message


def test_sets_need_two_accepted_exposures_for_truth(flc: Path, tmp_path: Path) -> None:
    paths = []
    for rootname, exptime, filt in [
        ("jbt122aaq", 450.0, "F814W"),
        ("jbt122abq", 450.0, "F814W"),
        ("jbt122acq", 0.0, "F606W"),
        ("jbt122adq", 300.0, "F606W"),
    ]:
        path = tmp_path / f"{rootname}_flc.fits"
        shutil.copyfile(flc, path)
        paths.append(_edit(path, 0, ROOTNAME=rootname, EXPTIME=exptime, FILTER2=filt))
    sets = group_verdicts(screen_files(paths, data_check=False))
    by_filter = {s.filter: s for s in sets}
    assert by_filter["F814W"].gets_truth and by_filter["F814W"].accepted == ("jbt122aaq", "jbt122abq")
    assert not by_filter["F606W"].gets_truth
    assert by_filter["F606W"].accepted == ("jbt122adq",) and by_filter["F606W"].rejected == ("jbt122acq",)
    assert "model inference only" in (by_filter["F606W"].note or "")
    assert {s.visit for s in sets} == {"jbt122"} and {s.detector for s in sets} == {"ACS/WFC"}
