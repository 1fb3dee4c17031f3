"""Which exposures feed training: (FLC, truth) pairs with their visit, field type and filter.

Training uses recorded ground truth with status ``ok`` only, and exposures of at least 100 s
(deepCR-ACS/WFC paper). A truth file is any FITS file with a ``CRMASK`` image per chip
(``EXTVER`` = the SCI extver; 1 = CR) and optionally ``VALID`` (1 = label trustworthy):
``<rootname>_crtruth.fits`` from :mod:`crlib.truth`, or the simulator's ``<rootname>_simtruth.fits``
(no ``VALID``: validity then comes from the DQ array alone).

Every exposure carries its proposal id and target name (the visit split is keyed by the field,
:mod:`crlib.training.splits`) and whether it comes from crlib's simulator
(:func:`is_simulated_exposure`: the FLC's primary header says ``SIMULATE = T``, or the truth
file's says ``FILETYPE = 'SIMTRUTH'``). A model trained on simulated exposures is tagged
``crlib.truth_source`` (:func:`truth_source_of`) and cannot become the champion of the
real-data model without an explicit override (:mod:`crlib.registry.promotion`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from crlib.classify.metadata import classify_caom_row
from crlib.errors import InputDataError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: Shortest exposure used for training, seconds (deepCR-ACS/WFC paper).
MIN_EXPTIME_S = 100.0


@dataclass(frozen=True, slots=True)
class TrainingExposure:
    """One exposure usable for training.

    Attributes
    ----------
    rootname, visit
        Exposure id and its visit (``ipppss``); splits are made by visit.
    field_type
        ``globular_cluster`` / ``extragalactic`` / ``resolved_galaxy`` (``unknown`` if not known).
    filter
        Filter name, e.g. ``F606W``.
    exptime_s
        Exposure time, seconds.
    flc_path
        Calibrated exposure (electrons).
    truth_path
        Truth file with ``CRMASK`` (and ``VALID``) per chip.
    proposal_id
        HST proposal id as text (``""`` if unknown); with ``target_name`` it keys the split.
    target_name
        Target name as the archive lists it (``""`` if unknown).
    simulated
        Pixels or truth come from crlib's simulator (:func:`is_simulated_exposure`).
    """

    rootname: str
    visit: str
    field_type: str
    filter: str
    exptime_s: float
    flc_path: str
    truth_path: str
    proposal_id: str = ""
    target_name: str = ""
    simulated: bool = False


#: Values of the ``crlib.truth_source`` model-version tag.
TruthSource = Literal["real", "simulator", "mixed"]


def is_simulated_exposure(flc_path: str | Path, truth_path: str | Path) -> bool:
    """Whether an exposure's pixels or truth were made by crlib's simulator.

    The markers are in the files themselves, so they survive copying an archive anywhere: the
    simulator writes ``SIMULATE = T`` (and ``SIMVERS``) in every FLC's primary header and
    ``FILETYPE = 'SIMTRUTH'`` in its truth files. Real HST headers have neither. A file whose
    header cannot be read counts as not simulated (reading its pixels fails later, naming it).
    """
    from astropy.io import fits

    for path, test in (
        (flc_path, lambda h: bool(h.get("SIMULATE", False)) or "SIMVERS" in h),
        (truth_path, lambda h: str(h.get("FILETYPE", "")).strip().upper() == "SIMTRUTH"),
    ):
        try:
            if test(fits.getheader(str(path), 0)):
                return True
        except (OSError, ValueError) as exc:
            log.debug("%s: primary header unreadable (%s)", path, exc)
    return False


def truth_source_of(exposures: Iterable[TrainingExposure]) -> tuple[TruthSource, int, int]:
    """``(source, simulated, total)``: ``real``, ``simulator`` (all simulated) or ``mixed``."""
    flags = [e.simulated for e in exposures]
    simulated = sum(flags)
    if simulated == 0:
        return "real", 0, len(flags)
    return ("simulator" if simulated == len(flags) else "mixed"), simulated, len(flags)


def select_for_training(
    exposures: Iterable[TrainingExposure], *, min_exptime_s: float = MIN_EXPTIME_S
) -> list[TrainingExposure]:
    """Keep exposures of at least ``min_exptime_s`` seconds, sorted by rootname (log the rest)."""
    kept = []
    for exposure in exposures:
        if exposure.exptime_s < min_exptime_s:
            log.info(
                "%s: %.0f s < %.0f s, not used for training",
                exposure.rootname,
                exposure.exptime_s,
                min_exptime_s,
            )
            continue
        kept.append(exposure)
    return sorted(kept, key=lambda e: e.rootname)


def exposures_from_local_archive(
    archive: Path, *, min_exptime_s: float = MIN_EXPTIME_S, truth_suffix: str = "_simtruth.fits"
) -> list[TrainingExposure]:
    """Training exposures of a local (simulated) archive, using the simulator's truth files.

    Parameters
    ----------
    archive
        Directory holding ``observations.json`` (see :mod:`crlib.simulate`).
    min_exptime_s
        Shortest exposure kept, seconds.
    truth_suffix
        Truth file name after the rootname, looked up in ``<visit>/truth/``.

    Raises
    ------
    InputDataError
        If ``observations.json`` is missing or malformed, or a listed file does not exist.
    """
    manifest = archive / "observations.json"
    try:
        data = json.loads(manifest.read_text())
        observations = data["observations"]
        products = {p["obs_id"]: p for p in data.get("products", [])}
    except FileNotFoundError:
        raise InputDataError(
            manifest, "not found", fix="point at a directory written by `crlib simulate`"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise InputDataError(manifest, f"not a crlib local-archive manifest ({exc})") from None
    exposures = []
    for row in observations:
        rootname = str(row["obs_id"]).lower()
        visit = str(row.get("crlib_visit") or rootname[:6])
        product = products.get(row["obs_id"], {})
        flc = (
            archive / product["crlib_path"]
            if "crlib_path" in product
            else archive / visit / f"{rootname}_flc.fits"
        )
        truth = flc.parent / "truth" / f"{rootname}{truth_suffix}"
        for path in (flc, truth):
            if not path.is_file():
                raise InputDataError(
                    path, "listed in observations.json but missing", fix="re-run the simulation"
                )
        exposures.append(
            TrainingExposure(
                rootname=rootname,
                visit=visit,
                field_type=classify_caom_row(row).field_type,
                filter=str(row.get("filters", "unknown")),
                exptime_s=float(row["t_exptime"]),
                flc_path=str(flc),
                truth_path=str(truth),
                proposal_id=str(row.get("proposal_id") or ""),
                target_name=str(row.get("target_name") or ""),
                simulated=is_simulated_exposure(flc, truth),
            )
        )
    return select_for_training(exposures, min_exptime_s=min_exptime_s)


def exposures_from_database(
    session: Session, *, min_exptime_s: float = MIN_EXPTIME_S
) -> list[TrainingExposure]:
    """Training exposures from the results database: recorded truth with status ``ok``.

    The FLC is looked for next to the truth file (``<rootname>_flc.fits``, where the truth stage
    works), then at the exposure's ``product_uri`` when that is a local path; exposures whose
    files are gone are skipped with a log line.

    Parameters
    ----------
    session
        Results-database session.
    min_exptime_s
        Shortest exposure kept, seconds.
    """
    from sqlalchemy import select

    from crlib.db.orm import Exposure, TruthResultRow

    rows = session.execute(
        select(TruthResultRow.path, Exposure)
        .join(Exposure, Exposure.rootname == TruthResultRow.rootname)
        .where(TruthResultRow.status == "ok", TruthResultRow.path.is_not(None))
        .order_by(TruthResultRow.rootname, TruthResultRow.method)
    ).all()
    exposures: dict[str, TrainingExposure] = {}
    for truth_path, exposure in rows:
        if exposure.rootname in exposures:
            continue  # one truth per exposure: the first method in name order (drizzle)
        truth = Path(str(truth_path))
        candidates = [
            truth.parent / f"{exposure.rootname}_flc.fits",
            truth.parent.parent / f"{exposure.rootname}_flc.fits",
        ]
        if not exposure.product_uri.startswith("mast:"):
            candidates.append(Path(exposure.product_uri))
        flc = next((c for c in candidates if c.is_file()), None)
        if flc is None or not truth.is_file():
            log.warning("%s: truth or FLC file missing on disk, not used for training", exposure.rootname)
            continue
        exposures[exposure.rootname] = TrainingExposure(
            rootname=exposure.rootname,
            visit=exposure.visit,
            field_type=exposure.field_type or "unknown",
            filter=exposure.filter,
            exptime_s=float(exposure.exptime_s),
            flc_path=str(flc),
            truth_path=str(truth),
            proposal_id=str(exposure.proposal_id),
            target_name=exposure.target_name or "",
            simulated=is_simulated_exposure(flc, truth),
        )
    return select_for_training(exposures.values(), min_exptime_s=min_exptime_s)
