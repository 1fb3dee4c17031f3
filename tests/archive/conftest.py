"""Fixtures for archive tests: small simulated archives (crlib.simulate) and hand-made extra visits.

``add_visit`` writes cases the simulator does not make (FLT-only products, WFC3/UVIS rows, a
later visit in seconds) into the same layout: observations.json rows plus copies of the real
ACS/WFC FLC header file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TEMPLATE = "acs_wfc_headers/jbt122x8q_sample_flc_header.fits"


def add_visit(
    root: Path,
    template: Path,
    *,
    visit: str,
    proposal_id: int,
    release_mjd: float,
    exposures: int = 2,
    filters: str = "F606W",
    instrument: str = "ACS/WFC",
    suffix: str = "FLC",
) -> list[str]:
    """Append one visit (``exposures`` files) to the archive at ``root``; return the rootnames."""
    from astropy.io import fits

    manifest_path = root / "observations.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
    else:
        manifest = {"schema": "crlib-local-archive/1", "observations": [], "products": []}
    rootnames = []
    for index in range(exposures):
        rootname = f"{visit}{'abcdefgh'[index]}{index % 10}q"
        obsid = str(2_000_000_000 + len(manifest["observations"]) + 1)
        name = f"{rootname}_{suffix.lower()}.fits"
        relative = f"{visit}/{name}"
        (root / visit).mkdir(parents=True, exist_ok=True)
        with fits.open(template) as hdus:
            hdus[0].header["ROOTNAME"] = rootname
            hdus[0].header["PROPOSID"] = proposal_id
            hdus[0].header["EXPTIME"] = 300.0 + 10 * index
            hdus.writeto(root / relative, overwrite=True)
        data = (root / relative).read_bytes()
        t_min = release_mjd - 400 + index * 0.01
        manifest["observations"].append(
            {
                "obs_id": rootname,
                "obsid": obsid,
                "proposal_id": str(proposal_id),
                "instrument_name": instrument,
                "filters": filters,
                "t_min": t_min,
                "t_max": t_min + 0.005,
                "t_exptime": 300.0 + 10 * index,
                "t_obs_release": release_mjd + index * 1e-4,
                "target_name": "NGC104",
                "s_ra": 6.02,
                "s_dec": -72.08,
                "obs_collection": "HST",
                "dataproduct_type": "image",
                "intentType": "science",
                "calib_level": 3,
                "dataURL": f"mast:HST/product/{name}",
                "crlib_visit": visit,
                "crlib_field_type": "globular_cluster",
            }
        )
        manifest["products"].append(
            {
                "obsID": obsid,
                "obs_id": rootname,
                "productFilename": name,
                "dataURI": f"mast:HST/product/{name}",
                "productSubGroupDescription": suffix,
                "productType": "SCIENCE",
                "calib_level": 2,
                "size": len(data),
                "md5": hashlib.md5(data).hexdigest(),
                "crlib_path": relative,
            }
        )
        # An uncalibrated sibling product that must never be selected.
        manifest["products"].append(
            {
                "obsID": obsid,
                "obs_id": rootname,
                "productFilename": f"{rootname}_raw.fits",
                "dataURI": f"mast:HST/product/{rootname}_raw.fits",
                "productSubGroupDescription": "RAW",
                "productType": "SCIENCE",
                "calib_level": 1,
                "size": 10,
                "md5": "0" * 32,
                "crlib_path": f"{visit}/{rootname}_raw.fits",
            }
        )
        rootnames.append(rootname)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return rootnames


@pytest.fixture
def template_flc(shared_data: Path) -> Path:
    """The real ACS/WFC FLC header file used as every product's content."""
    return shared_data / TEMPLATE


@pytest.fixture
def visit_adder(template_flc: Path) -> Callable[..., list[str]]:
    """``adder(root, visit=..., proposal_id=..., release_mjd=..., exposures=...)``."""

    def adder(root: Path, **kwargs: Any) -> list[str]:
        return add_visit(root, template_flc, **kwargs)

    return adder


@dataclass(frozen=True)
class ArchiveFacts:
    """What the session's simulated archive holds (to assert against)."""

    visits_a: tuple[str, ...]  # proposal 12546, released MJD 60000 and 60003
    visits_b: tuple[str, ...]  # proposal 10368, released MJD 60010
    rootnames: dict[str, tuple[str, ...]]
    filters: dict[str, str]

    @property
    def all_visits(self) -> list[str]:
        return sorted(self.visits_a + self.visits_b)


@pytest.fixture(scope="session")
def simulated_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ArchiveFacts]:
    """A small simulated archive (crlib.simulate): 3 visits x 2 exposures in two proposals."""
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("simulated-archive")
    first = simulate_archive(
        root,
        visits=2,
        exposures=2,
        filters=("F606W", "F814W"),
        size="small",
        seed=21,
        proposal_id=12546,
        first_release_mjd=60000.0,
    )
    second = simulate_archive(
        root, visits=1, exposures=2, size="small", seed=22, proposal_id=10368, first_release_mjd=60010.0
    )
    visits_a = tuple(v.visit for v in first.visits)
    visits_b = tuple(v.visit for v in second.visits if v.visit not in visits_a)
    rootnames = {v.visit: tuple(e.rootname for e in v.exposures) for v in second.visits}
    filters = {v.visit: v.filter for v in second.visits}
    return root, ArchiveFacts(visits_a, visits_b, rootnames, filters)


@pytest.fixture
def facts(simulated_source: tuple[Path, ArchiveFacts]) -> ArchiveFacts:
    """Facts about :func:`local_archive_dir`."""
    return simulated_source[1]


@pytest.fixture
def local_archive_dir(tmp_path: Path, simulated_source: tuple[Path, ArchiveFacts]) -> Path:
    """A private copy of the simulated archive (files hard-linked: never modify them in place)."""
    root = tmp_path / "archive"
    shutil.copytree(simulated_source[0], root, copy_function=os.link)
    (root / "observations.json").unlink()
    shutil.copyfile(simulated_source[0] / "observations.json", root / "observations.json")
    return root
