"""Screening fixtures: a small simulated visit (real-looking FLCs) and ways to damage copies."""

from __future__ import annotations

import shutil
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


@pytest.fixture(scope="session")
def simulated_flcs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two simulated ACS/WFC FLCs of one visit (2 x 512x1024 chips, SUBARRAY=T): never edit them."""
    from crlib.simulate import simulate_visit

    root = tmp_path_factory.mktemp("screen-sim")
    visit = simulate_visit(root, field_type="extragalactic", exposures=2, size="small", seed=3)
    first, second = (exposure.path for exposure in visit.exposures)
    return first, second


CopyFlc = Callable[..., Path]


@pytest.fixture
def copy_flc(simulated_flcs: tuple[Path, Path], tmp_path: Path) -> CopyFlc:
    """``copy_flc(name=None, which=0) -> Path``: a writable copy of a simulated FLC in ``tmp_path``."""

    def copy(name: str | None = None, which: int = 0) -> Path:
        source = simulated_flcs[which]
        target = tmp_path / (name or source.name)
        shutil.copyfile(source, target)
        return target

    return copy


def _installed(relative: str) -> Path:
    path = SITE_PACKAGES / relative
    if not path.is_file():
        pytest.skip(f"{relative} is not installed in this environment")
    return path


@pytest.fixture
def svm_flc() -> Path:
    """drizzlepac's real WFC3/UVIS FLC ib4606c6q (two 10x10 chips, headerlets, SUBARRAY=F)."""
    return _installed("tests/hap/sample_svm_flc.fits")


@pytest.fixture
def acs_test_fits() -> Path:
    """stsci.tools' real full-frame ACS/WFC header j94f05bgq: SCI,1 and SCI,2 of zeros, no ERR/DQ."""
    return _installed("stsci/tools/tests/data/acs_test.fits")
