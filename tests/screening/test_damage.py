"""Damaged files are rejected with one-line reasons naming the file, the problem and the fix.

Damage is made on copies of a simulated (real-structure) FLC; real-structure files from installed
packages check the chip-count logic on layouts the simulator does not write.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from crlib.records import ScreeningReason
from crlib.screening import (
    DAMAGE_RULE_PREFIXES,
    DUPLICATE_RULE,
    group_verdicts,
    is_damage,
    is_damaged,
    screen_file,
    screen_files,
)

FIX = "download it again"


def _rejects(verdict: Any) -> dict[str, ScreeningReason]:
    return {r.rule: r for r in verdict.reasons if r.severity == "reject"}


def _damage(path: Path, edit: Callable[[fits.HDUList], Any]) -> Path:
    with fits.open(path, mode="update") as hdus:
        edit(hdus)
    return path


def _set_sci(extver: int, make: Callable[[np.ndarray], np.ndarray]) -> Callable[[fits.HDUList], None]:
    def edit(hdus: fits.HDUList) -> None:
        hdus["SCI", extver].data = make(hdus["SCI", extver].data.copy()).astype(np.float32)

    return edit


def _rewrite_without(path: Path, *extensions: tuple[str, int], source: Path | None = None) -> Path:
    """Write ``source`` (default: ``path``) to ``path`` without some extensions, NEXTEND kept true."""
    with fits.open(source or path) as hdus:
        for index in reversed(range(1, len(hdus))):
            if (hdus[index].name, hdus[index].ver) in extensions:
                del hdus[index]
        hdus[0].header["NEXTEND"] = len(hdus) - 1
        hdus.writeto(path, overwrite=True)
    return path


def _gzip(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    with path.open("rb") as source, gzip.open(target, "wb", compresslevel=1) as sink:
        shutil.copyfileobj(source, sink)
    return target


def _half_nan(data: np.ndarray) -> np.ndarray:
    data[: data.shape[0] // 2] = np.nan
    return data


def _real_blemishes(data: np.ndarray) -> np.ndarray:
    """What real FLCs have and must keep: zero columns, negative pixels, a few NaN/Inf pixels."""
    data[:, 100:104] = 0.0
    data[:, 300] = -25.0
    rng = np.random.default_rng(1)
    flat = data.reshape(-1)
    flat[rng.choice(flat.size, size=flat.size // 500, replace=False)] = np.nan  # 0.2%
    flat[rng.choice(flat.size, size=20, replace=False)] = np.inf
    return data


def test_simulated_flcs_are_accepted_with_the_data_check(simulated_flcs: tuple[Path, Path]) -> None:
    verdicts = screen_files(simulated_flcs)
    assert [v.verdict for v in verdicts] == ["accept", "accept"]
    assert not any(is_damaged(v) for v in verdicts)
    assert all(v.header_summary["n_sci"] == 2 for v in verdicts)


def test_real_blemishes_and_dq_flags_are_not_rejected(copy_flc: Callable[..., Path]) -> None:
    def blemish(hdus: fits.HDUList) -> None:
        for extver in (1, 2):
            hdus["SCI", extver].data = _real_blemishes(hdus["SCI", extver].data.copy())
            hdus["DQ", extver].data[:, 100:104] = 4  # bad column
            hdus["DQ", extver].data[10:20, 10:20] = 256  # saturated

    verdict = screen_file(_damage(copy_flc(), blemish))
    assert verdict.verdict == "accept", [r.message for r in verdict.reasons]


@pytest.mark.parametrize(
    ("edit", "rule", "keyword", "text"),
    [
        (
            _set_sci(1, lambda d: np.full_like(d, np.nan)),
            "data.all_nan",
            "SCI,1",
            "SCI,1 is entirely NaN/Inf",
        ),
        (_set_sci(2, _half_nan), "data.nonfinite", "SCI,2", "SCI,2 has 50.0% NaN/Inf pixels (more than 1%"),
        (_set_sci(1, lambda d: np.where(d > 60, np.inf, d)), "data.nonfinite", "SCI,1", "NaN/Inf pixels"),
        (_set_sci(2, np.zeros_like), "data.constant", "SCI,2", "SCI,2 is constant (every pixel 0)"),
        (_set_sci(1, lambda d: np.full_like(d, 7.5)), "data.constant", "SCI,1", "(every pixel 7.5)"),
    ],
    ids=["all-nan", "half-nan", "mostly-inf", "zero-chip", "constant-chip"],
)
def test_damaged_pixels_are_rejected_naming_file_chip_and_fix(
    copy_flc: Callable[..., Path], edit: Callable[[fits.HDUList], None], rule: str, keyword: str, text: str
) -> None:
    path = _damage(copy_flc(), edit)
    verdict = screen_file(path)
    assert verdict.verdict == "reject" and not verdict.usable_for_training
    reason = _rejects(verdict)[rule]
    assert reason.keyword == keyword
    assert reason.message.startswith(f"{path}: ") and text in reason.message
    assert reason.message.endswith(FIX) and "\n" not in reason.message
    assert is_damage(reason) and is_damaged(verdict)
    assert [r.rule for r in verdict.reasons if r.rule.startswith("data.")] == [rule]  # only that chip


def test_nonfinite_fraction_is_recorded_as_the_value(copy_flc: Callable[..., Path]) -> None:
    verdict = screen_file(_damage(copy_flc(), _set_sci(2, _half_nan)))
    assert _rejects(verdict)["data.nonfinite"].value == pytest.approx(0.5, abs=0.01)


def test_data_check_can_be_turned_off(copy_flc: Callable[..., Path]) -> None:
    path = _damage(copy_flc(), _set_sci(1, lambda d: np.full_like(d, np.nan)))
    assert screen_file(path).verdict == "reject"
    assert screen_file(path, data_check=False).verdict == "accept"
    assert screen_files([path], data_check=False)[0].verdict == "accept"


def test_compressed_files_get_the_data_check(copy_flc: Callable[..., Path]) -> None:
    good = _gzip(copy_flc())
    assert screen_file(good).verdict == "accept"
    bad = _gzip(_damage(copy_flc("j9c7a399q_flc.fits"), _set_sci(2, np.zeros_like)))
    verdict = screen_file(bad)
    assert verdict.verdict == "reject" and "data.constant" in _rejects(verdict)


@pytest.mark.parametrize("fraction", [0.5, 0.95, 0.9999])
def test_truncated_gzip_is_rejected_not_raised(copy_flc: Callable[..., Path], fraction: float) -> None:
    whole = _gzip(copy_flc())
    cut = whole.with_name("cut_flc.fits.gz")
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * fraction)])
    for data_check in (True, False):
        verdict = screen_file(cut, data_check=data_check)
        assert verdict.verdict == "reject" and is_damaged(verdict)
        reason = _rejects(verdict)["file.truncated"]
        assert reason.message == f"{cut}: truncated: the gzip stream ends early: {FIX}"


def test_file_cut_at_an_extension_boundary_is_truncated(copy_flc: Callable[..., Path]) -> None:
    """A download that stopped after DQ,1: whole FITS blocks, every header consistent, but
    NEXTEND says more extensions follow. A subarray with one chip would otherwise pass."""
    path = copy_flc()
    with fits.open(path) as hdus:
        nextend = hdus[0].header["NEXTEND"]
        end = hdus[3].fileinfo()["datLoc"] + hdus[3].fileinfo()["datSpan"]
    path.write_bytes(path.read_bytes()[:end])
    reason = _rejects(screen_file(path))["file.truncated"]
    assert reason.keyword == "NEXTEND" and reason.value == 3
    assert reason.message == (
        f"{path}: truncated: the file ends after 3 extension(s), the primary header lists "
        f"NEXTEND={nextend}: {FIX}"
    )


@pytest.mark.parametrize(
    ("removed", "named"),
    [
        ((("DQ", 1),), "DQ,1"),
        ((("ERR", 2),), "ERR,2"),
        ((("ERR", 1), ("DQ", 2)), "ERR,1, DQ,2"),
    ],
)
def test_every_chip_needs_its_err_and_dq(
    copy_flc: Callable[..., Path], removed: tuple[tuple[str, int], ...], named: str
) -> None:
    path = _rewrite_without(copy_flc(), *removed)
    verdict = screen_file(path)
    assert verdict.verdict == "reject"
    reason = _rejects(verdict)["file.missing_extension"]
    assert reason.message == (
        f"{path}: missing extension(s) {named} (every SCI chip needs its ERR and DQ): {FIX}"
    )
    assert reason.keyword == named.replace(", ", " ")


def test_full_frame_file_missing_a_chip_names_it(copy_flc: Callable[..., Path]) -> None:
    path = copy_flc()
    _damage(path, lambda hdus: hdus[0].header.set("SUBARRAY", False))
    _rewrite_without(path, ("SCI", 2), ("ERR", 2), ("DQ", 2))
    reason = _rejects(screen_file(path))["file.missing_extension"]
    assert reason.message == (
        f"{path}: full-frame exposure has 1 SCI extension(s), expected 2 (missing SCI,2): {FIX}"
    )
    # the same single chip in a subarray exposure is a valid one-chip file
    _damage(path, lambda hdus: hdus[0].header.set("SUBARRAY", True))
    verdict = screen_file(path)
    assert verdict.verdict == "accept" and verdict.header_summary["n_sci"] == 1


def test_a_chip_with_err_and_dq_but_no_sci_is_named(copy_flc: Callable[..., Path]) -> None:
    path = _rewrite_without(copy_flc(), ("SCI", 2))
    reason = _rejects(screen_file(path))["file.missing_extension"]
    assert "missing extension(s) SCI,2 " in reason.message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"Hello, this is plain text\n" * 50, "not a FITS file (no SIMPLE card at the start)"),
        (b"<!DOCTYPE html><html><body>503 Service Unavailable</body></html>", "not a FITS file"),
        (b"", "empty file (0 bytes)"),
        (gzip.compress(b"not FITS inside a gzip stream"), "not a FITS file (no SIMPLE card at the start)"),
        (b"\x1f\x8b\x08\x00broken", "damaged gzip stream"),
    ],
    ids=["text", "html-error-page", "empty", "gzip-of-text", "broken-gzip"],
)
def test_non_fits_files_say_download_it_again(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "j8xi01aaq_flc.fits"
    path.write_bytes(content)
    verdict = screen_file(path)
    assert verdict.verdict == "reject" and [r.rule for r in verdict.reasons] == ["file.unreadable"]
    message = verdict.reasons[0].message
    assert message.startswith(f"{path}: {problem}") and message.endswith(f": {FIX}")
    assert "ignore_missing_simple" not in message and "\n" not in message
    assert verdict.rootname == "j8xi01aaq"


def test_text_file_message_in_full(tmp_path: Path) -> None:
    path = tmp_path / "j8xi01aaq_flc.fits"
    path.write_text("SIMPLY NOT FITS\n")
    assert screen_file(path).reasons[0].message == (
        f"{path}: not a FITS file (no SIMPLE card at the start): download it again"
    )


@pytest.mark.parametrize(
    ("extension", "cards", "rule", "message"),
    [
        (0, {"EXPTIME": 0.0}, "svm.exptime", "EXPTIME=0.0: zero exposure time"),
        (1, {"BUNIT": "COUNTS/S"}, "calib.bunit", "BUNIT=COUNTS/S: science array is not in electrons"),
        (1, {"BUNIT": None}, "calib.bunit", "keyword BUNIT missing from the SCI header"),
    ],
)
def test_zero_exptime_and_wrong_or_missing_bunit_are_science_rejections(
    copy_flc: Callable[..., Path], extension: int, cards: dict[str, Any], rule: str, message: str
) -> None:
    def edit(hdus: fits.HDUList) -> None:
        for keyword, value in cards.items():
            if value is None:
                del hdus[extension].header[keyword]
            else:
                hdus[extension].header[keyword] = value

    verdict = screen_file(_damage(copy_flc(), edit))
    assert verdict.verdict == "reject"
    reason = _rejects(verdict)[rule]
    assert message in reason.message
    assert not is_damage(reason) and not is_damaged(verdict)  # not a damaged file: final


# ----------------------------------------------------------------------------- duplicates
def _kept_and_rejected(verdicts: list[Any]) -> tuple[list[str], list[str]]:
    kept = [Path(v.file).name for v in verdicts if DUPLICATE_RULE not in _rejects(v)]
    dropped = [Path(v.file).name for v in verdicts if DUPLICATE_RULE in _rejects(v)]
    return kept, dropped


def test_duplicate_rootnames_keep_flc_over_flt_whatever_the_order(copy_flc: Callable[..., Path]) -> None:
    flc = copy_flc("j8xi01aaq_flc.fits")
    flt = copy_flc("j8xi01aaq_flt.fits")
    other = copy_flc(which=1)
    for order in ([flt, flc, other], [flc, other, flt], [other, flt, flc]):
        verdicts = screen_files(order)
        assert [v.file for v in verdicts] == [str(p) for p in order]  # one verdict per file, in order
        kept, dropped = _kept_and_rejected(verdicts)
        assert sorted(kept) == sorted([flc.name, other.name]) and dropped == [flt.name]
    duplicate = next(v for v in verdicts if v.file == str(flt))
    assert duplicate.verdict == "reject" and not duplicate.usable_for_training
    reason = duplicate.reasons[0]
    assert reason.rule == DUPLICATE_RULE and reason.value == duplicate.rootname
    assert reason.message == (
        f"{flt}: same exposure (rootname {duplicate.rootname}) as {flc.name}, which is screened "
        "instead: remove one of the two copies"
    )
    assert not is_damage(reason) and not is_damaged(duplicate)
    accepted = [v.rootname for v in verdicts if v.verdict == "accept"]
    assert len(accepted) == len(set(accepted)) == 2  # downstream keys by rootname


def test_duplicates_prefer_uncompressed_then_name(copy_flc: Callable[..., Path], tmp_path: Path) -> None:
    plain = copy_flc("j8xi01aaq_flc.fits")
    packed = _gzip(plain)
    kept, dropped = _kept_and_rejected(screen_files([packed, plain]))
    assert kept == [plain.name] and dropped == [packed.name]
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    first = shutil.copyfile(plain, tmp_path / "b" / "j8xi01aaq_flc.fits")
    second = shutil.copyfile(plain, tmp_path / "a" / "j8xi01aaq_flc.fits")
    verdicts = screen_files([first, second])
    assert [DUPLICATE_RULE in _rejects(v) for v in verdicts] == [True, False]  # path order: a/ before b/
    assert f"as {second}, which" in verdicts[0].reasons[0].message  # other folder: full path


def test_a_damaged_copy_never_displaces_a_good_one(copy_flc: Callable[..., Path]) -> None:
    damaged_flc = _damage(copy_flc("j8xi01aaq_flc.fits"), _set_sci(1, lambda d: np.full_like(d, np.nan)))
    good_flt = copy_flc("j8xi01aaq_flt.fits")
    verdicts = screen_files([damaged_flc, good_flt])
    assert [v.verdict for v in verdicts] == ["reject", "accept"]
    assert {r.rule for r in verdicts[0].reasons} >= {DUPLICATE_RULE, "data.all_nan"}
    assert is_damaged(verdicts[0])


def test_groups_count_a_duplicated_exposure_once(copy_flc: Callable[..., Path]) -> None:
    files = [copy_flc(which=0), copy_flc(which=1), _gzip(copy_flc(which=1))]
    verdicts = screen_files(files)
    (group,) = group_verdicts(verdicts)
    assert len(group.accepted) == 2 and group.rejected == () and group.gets_truth


# ----------------------------------------------------------------------------- is_damage
def test_is_damage_separates_damage_from_science_rejections() -> None:
    assert DAMAGE_RULE_PREFIXES == ("file.", "data.")
    for rule in (
        "file.unreadable",
        "file.truncated",
        "file.missing_extension",
        "data.all_nan",
        "data.constant",
    ):
        assert is_damage(rule)
        assert is_damage(ScreeningReason(rule, "", None, "m", "reject"))
    for rule in ("svm.exptime", "calib.bunit", "profile.instrument", "train.exptime", DUPLICATE_RULE):
        assert not is_damage(rule)
    assert not is_damage(ScreeningReason("data.constant", "SCI,1", None, "m", "warning"))


# ----------------------------------------------------------------------------- real structures
def test_real_wfc3_uvis_flc_with_headerlets_is_accepted(svm_flc: Path) -> None:
    verdict = screen_file(svm_flc, profile="wfc3_uvis")
    assert verdict.verdict == "accept" and verdict.header_summary["n_sci"] == 2
    assert not any(r.rule.startswith(("file.", "data.")) for r in verdict.reasons)


def test_real_one_chip_subarray_structure(svm_flc: Path, tmp_path: Path) -> None:
    """SCI/ERR/DQ,1 plus the real distortion and headerlet extensions: a one-chip UVIS subarray."""
    path = _rewrite_without(
        tmp_path / "ib4606c6q_flc.fits", ("SCI", 2), ("ERR", 2), ("DQ", 2), source=svm_flc
    )
    assert screen_file(path, profile="wfc3_uvis").verdict == "reject"  # SUBARRAY=F: SCI,2 missing
    _damage(path, lambda hdus: hdus[0].header.set("SUBARRAY", True))
    verdict = screen_file(path, profile="wfc3_uvis")
    assert verdict.verdict == "accept" and verdict.header_summary["n_sci"] == 1
    assert not any(r.rule.startswith(("file.", "data.")) for r in verdict.reasons)
    without_dq = _rewrite_without(tmp_path / "ib4606c7q_flc.fits", ("DQ", 1), source=path)
    reason = _rejects(screen_file(without_dq, profile="wfc3_uvis"))["file.missing_extension"]
    assert "missing extension(s) DQ,1 " in reason.message and reason.message.endswith(FIX)


def test_real_acs_header_with_zero_pixels_is_rejected_as_constant(acs_test_fits: Path) -> None:
    """Cut from a real file (NEXTEND=8, 2 extensions left), no ERR/DQ, SCI arrays of zeros:
    a header carrier, not an exposure; constant is the true answer for its pixels."""
    verdict = screen_file(acs_test_fits)
    rejects = [r for r in verdict.reasons if r.severity == "reject" and is_damage(r)]
    assert [(r.rule, r.keyword) for r in rejects] == [
        ("file.truncated", "NEXTEND"),
        ("file.missing_extension", "ERR,1 DQ,1 ERR,2 DQ,2"),
        ("data.constant", "SCI,1"),
        ("data.constant", "SCI,2"),
    ]
    assert "SCI,1 is constant (every pixel 0)" in rejects[2].message
