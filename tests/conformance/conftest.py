"""Real-structure files shipped by installed packages, and layouts derived from them.

drizzlepac installs a top-level ``tests/hap`` folder with two real WFC3/UVIS FLC files of visit
ib4606 (10x10 pixels per chip, SUBARRAY=F, real headers, headerlets and distortion extensions);
stsci.tools ships a real full-frame ACS/WFC header with zero pixels and only its two SCI
extensions; astropy ships ``j94f05bgq_flt.fits`` (ACS/WFC, 1x1 SCI, data-less ERR/DQ);
spherical_geometry ships ACS/WFC and WFC3/UVIS ``.fits.gz`` files (constant pixels) and an ACS/HRC
FLT. From these, the layouts no package ships are made the way the archive makes them: a one-chip
subarray keeps ``SCI/ERR/DQ,1`` and every other extension (headerlets included).
"""

from __future__ import annotations

import gzip
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

SITE = Path(sysconfig.get_paths()["purelib"])

#: Real files of installed packages, relative to site-packages.
REAL_FILES = {
    "hap_svm_flc": "tests/hap/sample_svm_flc.fits",
    "hap_ipppssoot_flc": "tests/hap/sample_ipppssoot_flc.fits",
    "hap_svm_flt_ir": "tests/hap/sample_svm_flt.fits",
    "stsci_acs_test": "stsci/tools/tests/data/acs_test.fits",
    "astropy_j94f05bgq_flt": "astropy/wcs/tests/data/j94f05bgq_flt.fits",
    "sphgeom_2chipA_acs_gz": "spherical_geometry/tests/data/2chipA.fits.gz",
    "sphgeom_2chipC_uvis_gz": "spherical_geometry/tests/data/2chipC.fits.gz",
    "sphgeom_j8bt06nyq_hrc_flt": "spherical_geometry/tests/data/j8bt06nyq_flt.fits",
}


def installed_file(key: str) -> Path:
    """A real file an installed package ships (fails, naming the package file, if it is gone)."""
    path = SITE / REAL_FILES[key]
    if not path.is_file():
        pytest.fail(f"{path} is missing: the conformance suite needs the packages' real test files")
    return path


def drop_chip(source: Path, target: Path, *, extver: int, primary: dict[str, object]) -> Path:
    """Copy ``source`` without ``SCI/ERR/DQ,extver``, with NEXTEND recounted and ``primary`` keywords set."""
    with fits.open(source, memmap=False, lazy_load_hdus=False) as hdul:
        kept = [hdu for hdu in hdul if not (hdu.name in ("SCI", "ERR", "DQ") and hdu.ver == extver)]
        out = fits.HDUList(kept)
        out[0].header["NEXTEND"] = len(out) - 1
        for key, value in primary.items():
            out[0].header[key] = value
        target.parent.mkdir(parents=True, exist_ok=True)
        out.writeto(target, overwrite=True)
    return target


def gzip_copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with source.open("rb") as raw, gzip.open(target, "wb") as packed:
        shutil.copyfileobj(raw, packed)
    return target


@pytest.fixture(scope="session")
def conformance_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every real file plus the layouts derived from drizzlepac's real WFC3/UVIS FLCs."""
    files = {key: installed_file(key) for key in REAL_FILES}
    root = tmp_path_factory.mktemp("conformance")
    svm = files["hap_svm_flc"]
    files["uvis_one_chip_subarray"] = drop_chip(
        svm,
        root / "sub" / "ib4606c6q_flc.fits",
        extver=2,
        primary={"SUBARRAY": True, "APERTURE": "UVIS2-C512C-SUB"},
    )
    files["uvis_full_frame_missing_chip"] = drop_chip(
        svm, root / "cut" / "ib4606c6q_flc.fits", extver=2, primary={}
    )
    files["hap_svm_flc_gz"] = gzip_copy(svm, root / "gz" / "ib4606c6q_flc.fits.gz")
    flt = root / "flt" / "ib4606c5q_flt.fits"  # an FLT without its FLC
    flt.parent.mkdir()
    shutil.copyfile(files["hap_ipppssoot_flc"], flt)
    files["hap_ipppssoot_as_flt"] = flt
    return files


def crop_one_chip(
    flc: Path, simtruth: Path, directory: Path, *, extver: int, renumber: bool, columns: slice, aperture: str
) -> tuple[Path, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """A one-chip ACS/WFC subarray made from a simulated two-chip exposure, and its truth masks.

    Keeps chip ``extver``'s SCI/ERR/DQ (cropped to ``columns``; LTV1/CRPIX1 follow the crop), drops the
    other chip's, renumbers the kept chip to EXTVER 1 when ``renumber`` (as real subarray files
    are), sets SUBARRAY=T and APERTURE. Returns the file and ``{extver: (crmask, valid)}`` with an
    8 px invalid border.
    """
    x0 = columns.start or 0
    with fits.open(flc, memmap=False) as hdul:
        out = []
        for hdu in hdul:
            if hdu.name in ("SCI", "ERR", "DQ"):
                if hdu.ver != extver:
                    continue
                header = hdu.header.copy()
                header["LTV1"] = float(header.get("LTV1", 0.0)) - x0
                if "CRPIX1" in header:
                    header["CRPIX1"] = float(header["CRPIX1"]) - x0
                if renumber:
                    header["EXTVER"] = 1
                hdu = fits.ImageHDU(np.ascontiguousarray(hdu.data[:, columns]), header=header)
            out.append(hdu)
        rootname = str(hdul[0].header["ROOTNAME"]).lower()
        primary = out[0].header
        primary["SUBARRAY"], primary["APERTURE"] = True, aperture
        primary["NEXTEND"] = len(out) - 1
        path = directory / f"{rootname}_flc.fits"
        fits.HDUList(out).writeto(path, overwrite=True)
    with fits.open(simtruth) as truth:
        crmask = (np.asarray(truth["CRMASK", extver].data)[:, columns] != 0).astype(np.uint8)
    valid = np.zeros(crmask.shape, np.uint8)
    valid[8:-8, 8:-8] = 1
    return path, {1 if renumber else extver: (crmask, valid)}
