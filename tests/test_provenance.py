"""Code versions change with the code, and a prediction written by other code is not reused."""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np

from crlib.provenance import code_version, digest_sources, source_digest


def test_code_version_is_the_package_version_plus_the_source_digest() -> None:
    assert code_version() == f"{version('crlib')}+{source_digest()}"
    assert len(source_digest()) == 12 and int(source_digest(), 16) >= 0


def test_digest_changes_with_any_module_and_only_then(tmp_path: Path) -> None:
    package = Path(__file__).resolve().parents[1] / "crlib"
    copy = tmp_path / "crlib"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    before = digest_sources(copy)
    assert before == source_digest()
    (copy / "notes.txt").write_text("not code")
    assert digest_sources(copy) == before
    module = copy / "truth" / "quality.py"
    module.write_text(module.read_text() + "\n# tuned\n")
    assert digest_sources(copy) != before


def test_prediction_from_other_code_is_predicted_again(tmp_path: Path) -> None:
    from astropy.io import fits

    from crlib.registry.serving import ModelReference, reusable_prediction

    reference = ModelReference(source="deepcr_package", name="ACS-WFC", version="v1", uri="x")

    def write(crlibver: str) -> Path:
        primary = fits.PrimaryHDU()
        for key, value in {
            "ROOTNAME": "jabc01xyq",
            "CRMODEL": "ACS-WFC",
            "CRMODVER": "v1",
            "CRTHRESH": 0.5,
            "CRLIBVER": crlibver,
        }.items():
            primary.header[key] = value
        chips = [
            fits.ImageHDU(np.zeros((4, 4), np.float32), name="CRPROB"),
            fits.ImageHDU(np.zeros((4, 4), np.uint8), name="CRMASK"),
        ]
        path = tmp_path / f"{crlibver.replace('+', '_')}_crpred.fits"
        fits.HDUList([primary, *chips]).writeto(path)
        return path

    same = reusable_prediction(write(code_version()), reference=reference, threshold=0.5)
    assert same is not None and same.code_version == code_version()
    assert reusable_prediction(write("0.1.0+000000000000"), reference=reference, threshold=0.5) is None
