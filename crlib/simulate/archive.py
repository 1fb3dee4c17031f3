"""Simulate visits into a local archive directory (layout: see :mod:`crlib.simulate`).

Each visit directory holds its FLC files and ``truth/`` (per-exposure truth FITS and
``visit.json``). ``observations.json`` at the archive root is rebuilt from every visit's
``visit.json``, so calling :func:`simulate_archive` again on the same directory *adds* visits
(new rootnames, later release dates) and the table lists them all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crlib.errors import ConfigError, InputDataError
from crlib.profiles import ACS_WFC, FIELD_TYPES
from crlib.simulate.effects import SimEffects
from crlib.simulate.geometry import DITHER_CHOICES
from crlib.simulate.programs import PROGRAM_VISITS, base36, filter_spec, visit_name
from crlib.simulate.visit import VisitPlan, render_visit

log = logging.getLogger(__name__)

ARCHIVE_SCHEMA = "crlib-local-archive/1"
VISIT_SCHEMA = "crlib-sim-visit/1"
DEFAULT_FIRST_RELEASE_MJD = 60000.0
RELEASE_SPACING_DAYS = 3.0
PROPRIETARY_DAYS = 365.0

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SimulatedExposure:
    """One simulated exposure.

    Attributes
    ----------
    rootname
        HST rootname (``ipppssoo``).
    path
        The ``<rootname>_flc.fits`` file.
    truth_path
        ``truth/<rootname>_simtruth.fits``.
    exptime_s
        Exposure time, seconds.
    cr_pixel_fraction
        Fraction of the exposure's pixels (both chips) in the CR truth mask.
    dither_arcsec
        Commanded dither offset (``POSTARG1``, ``POSTARG2``), arcsec.
    """

    rootname: str
    path: Path
    truth_path: Path
    exptime_s: float
    cr_pixel_fraction: float
    dither_arcsec: tuple[float, float]


@dataclass(frozen=True)
class SimulatedVisit:
    """One simulated visit (its ``truth/visit.json`` holds every injected quantity).

    Attributes
    ----------
    visit
        Visit id (first six characters of the rootnames).
    field_type, filter, proposal_id
        Field type, filter name and HST proposal id.
    pointing_error_px
        Magnitude of the visit-wide injected pointing error, pixels.
    directory
        ``<archive>/<visit>``.
    exposures
        The visit's exposures in time order.
    """

    visit: str
    field_type: str
    filter: str
    proposal_id: int
    pointing_error_px: float
    directory: Path
    exposures: list[SimulatedExposure] = field(default_factory=list)

    @property
    def truth_json(self) -> Path:
        """``truth/visit.json``."""
        return self.directory / "truth" / "visit.json"


@dataclass(frozen=True)
class SimulatedArchive:
    """A local archive: every visit in it (previous and new) and its observation table."""

    root: Path
    visits: list[SimulatedVisit]
    observations_path: Path


def _validate(
    visits: int, exposures: int, field_type: str, filters: Sequence[str], size: str, seed: int
) -> None:
    if field_type not in (*FIELD_TYPES, "mixed"):
        raise ConfigError(
            f"unknown field type {field_type!r}; choose one of {', '.join((*FIELD_TYPES, 'mixed'))}"
        )
    if visits < 1:
        raise ConfigError(f"visits must be at least 1 (got {visits})")
    if not 1 <= exposures <= 8:
        raise ConfigError(
            f"exposures per visit must be between 1 and 8 (got {exposures}); drizzle needs 2 or more"
        )
    if size not in ("full", "small"):
        raise ConfigError(f"size must be 'full' or 'small' (got {size!r})")
    if seed < 0:
        raise ConfigError(f"seed must be non-negative (got {seed})")
    if not filters:
        raise ConfigError("give at least one filter")
    for name in filters:
        filter_spec(name)


def _validate_optional(proposal_id: int | None, exptime_s: float | None, dither: str = "pattern") -> None:
    if dither not in DITHER_CHOICES:
        raise ConfigError(
            f"dither must be one of {', '.join(DITHER_CHOICES)} (got {dither!r}); "
            "'none' simulates an undithered CR-SPLIT visit"
        )
    if proposal_id is not None and not 1 <= proposal_id < 36**3:
        raise ConfigError(f"proposal id must be between 1 and {36**3 - 1} (got {proposal_id})")
    if exptime_s is not None and not exptime_s > 0:
        raise ConfigError(f"exposure time must be positive (got {exptime_s})")


def _prepare_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".crlib-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputDataError(
            root, f"cannot write the archive directory ({exc.strerror or exc})", fix="choose a writable --out"
        ) from exc


def _read_visit_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputDataError(
            path, f"unreadable visit truth ({exc})", fix="delete the visit directory and simulate again"
        ) from exc
    if data.get("schema") != VISIT_SCHEMA:
        raise InputDataError(
            path, f"unexpected schema {data.get('schema')!r}", fix=f"expected {VISIT_SCHEMA}"
        )
    return data


def existing_visits(root: Path) -> list[dict[str, Any]]:
    """``visit.json`` contents of every visit already in the archive, ordered by release date."""
    found = [_read_visit_json(path) for path in sorted(root.glob("*/truth/visit.json"))]
    return sorted(found, key=lambda v: (v["t_obs_release"], v["visit"]))


def visit_from_json(root: Path, data: dict[str, Any]) -> SimulatedVisit:
    """Rebuild a :class:`SimulatedVisit` from its ``visit.json``."""
    directory = root / data["visit"]
    exposures = [
        SimulatedExposure(
            rootname=e["rootname"],
            path=directory / f"{e['rootname']}_flc.fits",
            truth_path=directory / "truth" / f"{e['rootname']}_simtruth.fits",
            exptime_s=float(e["exptime_s"]),
            cr_pixel_fraction=float(e["cr_pixel_fraction"]),
            dither_arcsec=(float(e["dither_arcsec"][0]), float(e["dither_arcsec"][1])),
        )
        for e in data["exposures"]
    ]
    return SimulatedVisit(
        visit=data["visit"],
        field_type=data["field_type"],
        filter=data["filter"],
        proposal_id=int(data["proposal_id"]),
        pointing_error_px=float(data["pointing_error_px"]),
        directory=directory,
        exposures=exposures,
    )


def _choose_program(field_type: str, proposal_id: int | None, used: set[str], offset: int) -> tuple[int, str]:
    if proposal_id is None:
        candidates = PROGRAM_VISITS[field_type]
        for step in range(len(candidates)):
            proposal, code = candidates[(offset + step) % len(candidates)]
            if visit_name(proposal, code) not in used:
                return proposal, code
        proposal_id = candidates[offset % len(candidates)][0]
    for number in range(1, 36**2):
        code = base36(number, 2)
        if visit_name(proposal_id, code) not in used:
            return proposal_id, code
    raise ConfigError(f"proposal {proposal_id} has no free visit ids left in this archive")


def _obsid(rootname: str) -> str:
    return str(2_000_000_000 + int(hashlib.sha256(rootname.encode()).hexdigest()[:12], 16) % 900_000_000)


def observation_rows(data: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """CAOM observation rows and MAST product rows of one visit's ``visit.json``."""
    observations, products = [], []
    for exposure in data["exposures"]:
        rootname = exposure["rootname"]
        filename = f"{rootname}_flc.fits"
        obsid = _obsid(rootname)
        observations.append(
            {
                "obs_id": rootname,
                "obsid": obsid,
                "proposal_id": str(data["proposal_id"]),
                "instrument_name": ACS_WFC.mast_instrument_name,
                "filters": exposure.get("filter", data["filter"]),
                "t_min": exposure["t_min"],
                "t_max": exposure["t_max"],
                "t_exptime": exposure["exptime_s"],
                "t_obs_release": data["t_obs_release"],
                "target_name": data["target_name"],
                "s_ra": exposure["s_ra"],
                "s_dec": exposure["s_dec"],
                "obs_collection": "HST",
                "dataproduct_type": "image",
                "intentType": "science",
                "calib_level": 3,
                "dataURL": f"mast:HST/product/{filename}",
                "crlib_visit": data["visit"],
                "crlib_field_type": data["field_type"],
            }
        )
        products.append(
            {
                "obsID": obsid,
                "obs_id": rootname,
                "productFilename": filename,
                "dataURI": f"mast:HST/product/{filename}",
                "productSubGroupDescription": "FLC",
                "productType": "SCIENCE",
                "calib_level": 2,
                "size": exposure["size"],
                "md5": exposure["md5"],
                "crlib_path": f"{data['visit']}/{filename}",
            }
        )
    return observations, products


def write_observations(root: Path) -> Path:
    """Rebuild ``observations.json`` from every visit in the archive (atomic replace)."""
    observations: list[dict[str, Any]] = []
    products: list[dict[str, Any]] = []
    for data in existing_visits(root):
        rows, product_rows = observation_rows(data)
        observations.extend(rows)
        products.extend(product_rows)
    path = root / "observations.json"
    partial = path.with_suffix(".json.partial")
    partial.write_text(
        json.dumps({"schema": ARCHIVE_SCHEMA, "observations": observations, "products": products}, indent=1)
    )
    os.replace(partial, path)
    return path


def simulate_visit(
    root: Path,
    *,
    field_type: str,
    filter_name: str = "F606W",
    exposures: int = 4,
    size: Literal["full", "small"] = "small",
    seed: int = 0,
    visit_index: int = 0,
    proposal_id: int | None = None,
    release_mjd: float = DEFAULT_FIRST_RELEASE_MJD,
    exptime_s: float | None = None,
    gaia_catalog: Path | None = None,
    dither: str = "pattern",
    effects: SimEffects | None = None,
    extra_filters: Sequence[str] = (),
    progress: ProgressCallback | None = None,
    progress_offset: int = 0,
    progress_total: int | None = None,
) -> SimulatedVisit:
    """Simulate one visit into ``root/<visit>/`` (does not touch ``observations.json``).

    Parameters
    ----------
    root
        Archive directory.
    field_type
        ``globular_cluster``, ``extragalactic`` or ``resolved_galaxy``.
    filter_name
        ACS/WFC filter.
    exposures
        Exposures in the visit, 1–8 (drizzle-based truth needs ≥ 2).
    size
        ``"full"`` (2 x 4096x2048) or ``"small"`` (2 x 1024x512 crops).
    seed
        Archive seed; together with ``visit_index`` it fixes every random draw.
    visit_index
        Position of this visit in the archive (distinct indices give distinct visits).
    proposal_id
        HST proposal id; default: a real deepCR test-set proposal of this field type.
    release_mjd
        ``t_obs_release`` of the visit (MJD); observed ``PROPRIETARY_DAYS`` earlier.
    exptime_s
        Exposure time of every exposure; default: a typical value for the field type.
    gaia_catalog
        ``ra dec mag`` file: point the visit at it and put the stars at the catalog positions.
    dither
        ``"pattern"`` (the standard LINE/BOX dither for the exposure count) or ``"none"`` (an
        undithered CR-SPLIT visit with ~0.03 px frame-to-frame jitter, for the multi-frame truth).
    effects
        Archive effects (:class:`~crlib.simulate.effects.SimEffects`; default: every effect at
        its realistic strength, ``SimEffects.realistic()``; ``SimEffects.basic()`` for none).
    extra_filters
        Further filters of a multi-filter visit (used when ``effects.filters_per_visit > 1``).
    progress
        Called as ``progress(message, done, total)`` after each exposure.

    Returns
    -------
    SimulatedVisit
    """
    _validate(1, exposures, field_type, (filter_name, *extra_filters), size, seed)
    if field_type == "mixed":
        raise ConfigError("simulate_visit needs a concrete field type, not 'mixed'")
    _validate_optional(proposal_id, exptime_s, dither)
    _prepare_root(root)
    used = {v["visit"] for v in existing_visits(root)}
    proposal, code = _choose_program(field_type, proposal_id, used, seed + visit_index)
    plan = VisitPlan(
        visit=visit_name(proposal, code),
        proposal_id=proposal,
        field_type=field_type,
        filter=filter_spec(filter_name),
        exposures=exposures,
        size=size,
        seed=seed,
        visit_index=visit_index,
        release_mjd=release_mjd,
        start_mjd=release_mjd - PROPRIETARY_DAYS,
        exptime_s=exptime_s,
        gaia_catalog=gaia_catalog,
        dither=dither,
        effects=effects if effects is not None else SimEffects.realistic(),
        extra_filters=tuple(filter_spec(name) for name in extra_filters),
    )
    try:
        data = render_visit(
            root, plan, progress=progress, progress_offset=progress_offset, progress_total=progress_total
        )
    except OSError as exc:
        raise InputDataError(
            root / plan.visit,
            f"cannot write simulated files ({exc.strerror or exc})",
            fix="check free space and permissions",
        ) from exc
    data["schema"] = VISIT_SCHEMA
    truth_json = root / plan.visit / "truth" / "visit.json"
    truth_json.write_text(json.dumps(data, indent=1))
    log.info("simulated visit %s (%s, %s): %d exposures", plan.visit, field_type, filter_name, exposures)
    return visit_from_json(root, data)


def simulate_archive(
    out_dir: Path,
    *,
    visits: int = 2,
    exposures: int = 4,
    field_type: str = "mixed",
    filters: Sequence[str] = ("F606W",),
    size: Literal["full", "small"] = "small",
    seed: int = 0,
    proposal_id: int | None = None,
    first_release_mjd: float | None = None,
    exptime_s: float | None = None,
    gaia_catalog: Path | None = None,
    dither: str = "pattern",
    effects: SimEffects | None = None,
    progress: ProgressCallback | None = None,
) -> SimulatedArchive:
    """Simulate ``visits`` new visits into a local archive and rewrite ``observations.json``.

    Parameters
    ----------
    out_dir
        Archive directory (created if needed). Visits already there are kept; new ones get new
        rootnames and release dates after the latest existing one.
    visits
        Number of new visits (≥ 1).
    exposures
        Exposures per visit, 1–8 (drizzle-based truth needs ≥ 2).
    field_type
        One of ``globular_cluster``, ``extragalactic``, ``resolved_galaxy``, or ``mixed`` (cycle
        through the three, visit by visit, starting with ``globular_cluster``).
    filters
        Filters, cycled visit by visit.
    size
        ``"full"`` (2 x 4096x2048 chips) or ``"small"`` (2 x 1024x512 crops; fast tests).
    seed
        Random seed: the same seed on the same archive state gives identical files.
    proposal_id
        Use this proposal for every new visit (default: real deepCR test-set proposals).
    first_release_mjd
        ``t_obs_release`` of the first new visit (later ones every 3 days).
    exptime_s
        Exposure time (default: typical per field type, 339–696 s).
    gaia_catalog
        Optional ``ra dec mag`` star list (e.g. the NGC 6791 Gaia DR2 file) to simulate a real sky.
    dither
        ``"pattern"`` (standard dithers) or ``"none"`` (undithered CR-SPLIT visits).
    effects
        Archive effects (default ``SimEffects.realistic()``: every effect on; ``SimEffects.basic()``
        for none). With
        ``filters_per_visit > 1`` a visit uses that many of ``filters``, starting at its own.
    progress
        ``progress(message, done, total)`` callback, one call per exposure.

    Returns
    -------
    SimulatedArchive
        All visits in the archive (existing and new).

    Raises
    ------
    ConfigError
        For bad parameters.
    InputDataError
        If the directory cannot be written.
    """
    _validate(visits, exposures, field_type, filters, size, seed)
    _validate_optional(proposal_id, exptime_s, dither)
    root = Path(out_dir)
    _prepare_root(root)
    previous = existing_visits(root)
    if first_release_mjd is None:
        first_release_mjd = (
            previous[-1]["t_obs_release"] + RELEASE_SPACING_DAYS if previous else DEFAULT_FIRST_RELEASE_MJD
        )
    total = visits * exposures
    for number in range(visits):
        kind = FIELD_TYPES[number % len(FIELD_TYPES)] if field_type == "mixed" else field_type
        own = [filters[(number + j) % len(filters)] for j in range(len(filters))]
        simulate_visit(
            root,
            field_type=kind,
            filter_name=own[0],
            extra_filters=tuple(own[1:]),
            exposures=exposures,
            size=size,
            seed=seed,
            visit_index=len(previous) + number,
            proposal_id=proposal_id,
            release_mjd=float(first_release_mjd) + RELEASE_SPACING_DAYS * number,
            exptime_s=exptime_s,
            gaia_catalog=gaia_catalog,
            dither=dither,
            effects=effects,
            progress=progress,
            progress_offset=number * exposures,
            progress_total=total,
        )
    observations = write_observations(root)
    all_visits = [visit_from_json(root, data) for data in existing_visits(root)]
    return SimulatedArchive(root=root, visits=all_visits, observations_path=observations)
