"""Recording stage results in the results database: idempotent upserts, one transaction per stage result.

Every ``record_*`` function takes a :class:`~sqlalchemy.orm.Session` and writes one stage result
(a visit's observations, its screening verdicts, a truth result, a batch of metrics ...)
atomically: if the session is not already in a transaction, the function commits its own; if it
is, the function works in a savepoint of the caller's transaction. Rows are keyed by their natural
keys, so recording the same result again replaces the rows (child rows such as screening reasons
and truth chips are replaced as a set) and never duplicates them. A crash or kill mid-way leaves
nothing of the stage result behind.

Exposure metrics are written by :mod:`crlib.db.metric_store` (binary COPY), re-exported here.
A model version's training manifest (the split of each visit it was trained, validated or tested
on) is recorded by :func:`record_training_splits`; :func:`split_of` answers the split of a visit
(both in :mod:`crlib.db.training_splits`, re-exported here).

Values are validated before any SQL runs; a bad value raises :class:`~crlib.errors.DatabaseError`
naming the ``table.column`` and the record.

Examples
--------
>>> engine, Session = open_results_db(settings, upgrade=True)   # doctest: +SKIP
>>> with Session() as session:                                  # doctest: +SKIP
...     record_observations(session, observations)
...     record_screening(session, verdicts)
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, case, delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from crlib.db.atomic import mjd_to_date, require_exposures, stage_transaction, upsert
from crlib.db.metric_store import load_metrics, record_metrics
from crlib.db.model_registry import (
    current_aliases,
    model_version_id,
    record_alias,
    record_model_version,
)
from crlib.db.orm import (
    AlignmentResultRow,
    CrStatisticsRow,
    Exposure,
    ExposureMetricsRow,
    PredictionRow,
    Proposal,
    ScreeningReasonRow,
    ScreeningVerdictRow,
    TruthChipRow,
    TruthResultRow,
    Visit,
    table_of,
)
from crlib.db.runs import finish_run, start_run
from crlib.db.training_splits import record_training_splits, split_of, training_splits
from crlib.db.validation import check_row, json_safe, one_of, within
from crlib.db.vocabulary import (
    FIELD_TYPE_METHODS,
    KNOWN_FIELD_TYPES,
    KNOWN_FILTERS,
    LABELLING_METHODS,
    normalise_filter,
)
from crlib.errors import DatabaseError
from crlib.records import (
    AlignmentResult,
    CrStatistics,
    Observation,
    PredictionResult,
    ScreeningVerdict,
    TruthResult,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from crlib.classify.labels import FieldTypeLabel

__all__ = [
    "current_aliases",
    "finish_run",
    "load_metrics",
    "mjd_to_date",
    "model_version_id",
    "observation_row",
    "record_alias",
    "record_alignment",
    "record_cr_statistics",
    "record_field_types",
    "record_metrics",
    "record_model_version",
    "record_observations",
    "record_predictions",
    "record_screening",
    "record_training_splits",
    "record_truth",
    "split_of",
    "stage_transaction",
    "start_run",
    "training_splits",
]

MJD_EPOCH = dt.date(1858, 11, 17)
_FIELD_TYPE = one_of(KNOWN_FIELD_TYPES, hint=" (see crlib.profiles.FIELD_TYPES)")
_FRACTION = within(0.0, 1.0)
_NON_NEGATIVE = within(0.0)
#: Checks of a chip's CR counts, alike in the truth chips and the CR statistics rows.
_CHIP_COUNT_CHECKS = {"chip": within(1), "cr_pixels": _NON_NEGATIVE, "cr_events": _NON_NEGATIVE}


# --------------------------------------------------------------------------- archive
def observation_row(observation: Observation) -> dict[str, Any]:
    """The ``exposures`` row of an :class:`Observation` (validated)."""
    rootname = observation.rootname.strip().lower()
    instrument = observation.instrument.strip().upper()
    detector = instrument.split("/", 1)[1] if "/" in instrument else instrument
    if not isinstance(observation.t_min_mjd, int | float) or not np.isfinite(observation.t_min_mjd):
        raise DatabaseError(
            f"exposures.t_min_mjd of exposure {rootname} must be a finite number, got "
            f"{observation.t_min_mjd!r}; nothing was stored"
        )
    row = {
        "rootname": rootname,
        "visit": observation.visit.strip().lower(),
        "proposal_id": observation.proposal_id,
        "instrument": instrument,
        "detector": detector,
        "filter": normalise_filter(observation.filter),
        "exptime_s": observation.exptime_s,
        "t_min_mjd": observation.t_min_mjd,
        "t_max_mjd": observation.t_max_mjd,
        "obs_date": mjd_to_date(observation.t_min_mjd),
        "release_mjd": observation.release_mjd,
        "target_name": observation.target_name,
        "ra_deg": observation.ra_deg,
        "dec_deg": observation.dec_deg,
        "field_type": observation.field_type,
        "field_type_method": observation.field_type_method,
        "product_filename": observation.product_filename,
        "product_uri": observation.product_uri,
        "size_bytes": observation.size_bytes,
        "checksum": observation.checksum,
    }
    check_row(
        table_of(Exposure),
        row,
        record=f"exposure {rootname}",
        checks={
            "filter": one_of(
                KNOWN_FILTERS, hint=" (unknown filter; add it to the filters table by a migration)"
            ),
            "field_type": _FIELD_TYPE,
            "field_type_method": one_of(FIELD_TYPE_METHODS, hint=" (see crlib.classify.labels)"),
            "exptime_s": _NON_NEGATIVE,
            "ra_deg": within(0.0, 360.0),
            "dec_deg": within(-90.0, 90.0),
            "proposal_id": within(1),
        },
    )
    if len(rootname) != 9 or not rootname.isalnum() or row["visit"] != rootname[:6]:
        raise DatabaseError(
            f"exposures.rootname {rootname!r} must be 9 letters/digits starting with its visit "
            f"{row['visit']!r}; nothing was stored"
        )
    if row["field_type"] is not None and row["field_type_method"] not in LABELLING_METHODS:
        raise DatabaseError(
            f"exposures.field_type_method of exposure {rootname} must say how field type "
            f"{row['field_type']!r} was decided (one of {', '.join(LABELLING_METHODS)}), got "
            f"{row['field_type_method']!r}; label it with crlib.classify; nothing was stored"
        )
    return row


def record_observations(session: Session, observations: Sequence[Observation]) -> int:
    """Upsert the proposals, visits and exposures of ``observations`` (one transaction).

    Parameters
    ----------
    session
        Session on the results database.
    observations
        Exposures as the archive lists them (typically one visit's).

    Returns
    -------
    int
        Number of exposures recorded.
    """
    rows = [observation_row(o) for o in observations]
    if not rows:
        return 0
    proposals = {
        r["proposal_id"]: {"proposal_id": r["proposal_id"], "instrument": r["instrument"]} for r in rows
    }
    visits = {
        r["visit"]: {"visit": r["visit"], "proposal_id": r["proposal_id"], "instrument": r["instrument"]}
        for r in rows
    }
    with stage_transaction(session, f"observations of {len(rows)} exposures"):
        upsert(session, Proposal, sorted(proposals.values(), key=lambda r: r["proposal_id"]), touch=None)
        upsert(session, Visit, sorted(visits.values(), key=lambda r: r["visit"]), touch=None)
        table = table_of(Exposure)
        statement = insert(table)
        new, old = statement.excluded, table.c
        # The archive's listing never erases a label it cannot give: an exposure the metadata
        # leaves unknown keeps the field type the image classifier recorded for it.
        keep_image_label = and_(new.field_type.is_(None), old.field_type_method == "image")
        updates: dict[str, Any] = {
            name: new[name] for name in rows[0] if name not in ("rootname", "field_type", "field_type_method")
        }
        updates["field_type"] = case((keep_image_label, old.field_type), else_=new.field_type)
        updates["field_type_method"] = case(
            (keep_image_label, old.field_type_method), else_=new.field_type_method
        )
        updates["recorded_at"] = func.now()
        session.execute(
            statement.on_conflict_do_update(index_elements=["rootname"], set_=updates),
            sorted(rows, key=lambda r: r["rootname"]),
        )
    return len(rows)


def record_field_types(session: Session, labels: Mapping[str, FieldTypeLabel]) -> int:
    """Record field-type labels decided after polling (the image classifier) on their exposures.

    Only exposures the archive's metadata left unlabelled (``field_type`` NULL) are changed: a
    label from the simulator's column or the metadata rules is never overridden here.

    Parameters
    ----------
    session
        Session on the results database.
    labels
        Label per rootname (:class:`crlib.classify.labels.FieldTypeLabel`); an ``unknown`` label
        records method ``unknown`` with a NULL field type.

    Returns
    -------
    int
        Number of exposures whose label was recorded.
    """
    rows = []
    for rootname, label in sorted(labels.items()):
        check_row(
            table_of(Exposure),
            {"field_type": label.column_value, "field_type_method": label.method},
            record=f"exposure {rootname}",
            checks={
                "field_type": _FIELD_TYPE,
                "field_type_method": one_of(FIELD_TYPE_METHODS, hint=" (see crlib.classify.labels)"),
            },
        )
        rows.append((rootname.strip().lower(), label.column_value, label.method))
    if not rows:
        return 0
    changed = 0
    with stage_transaction(session, f"field types of {len(rows)} exposures"):
        require_exposures(session, [r[0] for r in rows], what="field types")
        for rootname, field_type, method in rows:
            result = session.execute(
                table_of(Exposure)
                .update()
                .where(Exposure.rootname == rootname, Exposure.field_type.is_(None))
                .values(field_type=field_type, field_type_method=method)
            )
            changed += int(getattr(result, "rowcount", 0) or 0)
    return changed


# --------------------------------------------------------------------------- screening
def record_screening(session: Session, verdicts: Sequence[ScreeningVerdict]) -> int:
    """Record screening verdicts with every reason; re-recording replaces an exposure's reasons.

    The verdict's ``header_summary`` is stored on the exposure. An exposure recorded as rejected
    loses the results an earlier run derived from it (truth, CR statistics, predictions, metrics) in
    the same transaction: reprocessing under changed rules replaces a proposal's rows, and rows of
    exposures the service now rejects no longer count in the statistics.
    """
    verdict_rows: list[dict[str, Any]] = []
    reason_rows: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    for verdict in verdicts:
        rootname = verdict.rootname.strip().lower()
        row = {
            "rootname": rootname,
            "file": str(verdict.file),
            "verdict": verdict.verdict,
            "usable_for_training": bool(verdict.usable_for_training),
        }
        check_row(
            table_of(ScreeningVerdictRow),
            row,
            record=f"exposure {rootname}",
            checks={"verdict": one_of(("accept", "reject"))},
        )
        verdict_rows.append(row)
        summaries[rootname] = json_safe(dict(verdict.header_summary))
        for position, reason in enumerate(verdict.reasons):
            reason_row = {
                "rootname": rootname,
                "position": position,
                "rule": reason.rule,
                "keyword": reason.keyword,
                "value": json_safe(reason.value),
                "message": reason.message,
                "severity": reason.severity,
            }
            check_row(
                table_of(ScreeningReasonRow),
                reason_row,
                record=f"exposure {rootname} reason {position} ({reason.rule})",
                checks={"severity": one_of(("reject", "warning", "info"))},
            )
            reason_rows.append(reason_row)
    if not verdict_rows:
        return 0
    rootnames = sorted(summaries)
    with stage_transaction(session, f"screening verdicts of {len(verdict_rows)} exposures"):
        require_exposures(session, rootnames, what="screening verdicts")
        upsert(
            session,
            ScreeningVerdictRow,
            sorted(verdict_rows, key=lambda r: r["rootname"]),
            touch="recorded_at",
        )
        session.execute(delete(ScreeningReasonRow).where(ScreeningReasonRow.rootname.in_(rootnames)))
        if reason_rows:
            session.execute(insert(table_of(ScreeningReasonRow)), reason_rows)
        for rootname in rootnames:
            session.execute(
                table_of(Exposure)
                .update()
                .where(Exposure.rootname == rootname)
                .values(header_summary=summaries[rootname])
            )
        rejected = sorted(r["rootname"] for r in verdict_rows if r["verdict"] == "reject")
        if rejected:
            dropped = {
                table.__tablename__: session.execute(
                    delete(table).where(table.rootname.in_(rejected))
                ).rowcount  # type: ignore[attr-defined]
                for table in (ExposureMetricsRow, PredictionRow, CrStatisticsRow, TruthResultRow)
            }
            if any(dropped.values()):
                log.info("rejected exposures %s: dropped earlier results %s", ", ".join(rejected), dropped)
    return len(verdict_rows)


# --------------------------------------------------------------------------- alignment
def record_alignment(session: Session, result: AlignmentResult, *, filter_name: str) -> None:
    """Record (replace) the alignment result of one visit's exposures in one filter.

    Parameters
    ----------
    session
        Open session.
    result
        The alignment of the set.
    filter_name
        The set's filter (e.g. ``F606W``): a multi-filter visit is aligned per filter.
    """
    visit = result.visit.strip().lower()
    row = {
        "visit": visit,
        "filter": filter_name.strip().upper(),
        "status": result.status,
        "catalog": result.catalog,
        "fit_geometry": result.fit_geometry,
        "n_matches": result.n_matches,
        "rms_px": result.rms_px,
        "wcsname": result.wcsname,
        "reason": result.reason,
        "per_exposure": json_safe(result.per_exposure),
    }
    check_row(
        table_of(AlignmentResultRow),
        row,
        record=f"visit {visit} filter {row['filter'] or '-'}",
        checks={
            "status": one_of(("aligned_absolute", "aligned_relative", "not_aligned", "failed")),
            "n_matches": _NON_NEGATIVE,
            "rms_px": _NON_NEGATIVE,
        },
    )
    with stage_transaction(session, f"alignment of visit {visit}"):
        if session.get(Visit, visit) is None:
            raise DatabaseError(
                f"cannot record the alignment of visit {visit}: the visit is not in the results database; "
                "record its observations first"
            )
        upsert(session, AlignmentResultRow, [row], touch="recorded_at")


# --------------------------------------------------------------------------- truth and statistics
def record_truth(session: Session, result: TruthResult) -> None:
    """Record (replace) one exposure's ground truth by one method, with its per-chip summaries."""
    rootname = result.rootname.strip().lower()
    row = {
        "rootname": rootname,
        "method": result.method,
        "status": result.status,
        "path": result.path,
        "reasons": [str(r) for r in result.reasons],
        "parameters": json_safe(result.parameters),
    }
    record = f"truth of exposure {rootname}"
    check_row(
        table_of(TruthResultRow),
        row,
        record=record,
        checks={"method": one_of(("drizzle", "multiframe")), "status": one_of(("ok", "suspect", "failed"))},
    )
    chips = []
    for chip in result.chips:
        chip_row = {
            "rootname": rootname,
            "method": result.method,
            "chip": chip.chip,
            "cr_pixels": chip.cr_pixels,
            "cr_events": chip.cr_events,
            "valid_fraction": chip.valid_fraction,
        }
        check_row(
            table_of(TruthChipRow),
            chip_row,
            record=f"{record} chip {chip.chip}",
            checks={**_CHIP_COUNT_CHECKS, "valid_fraction": _FRACTION},
        )
        chips.append(chip_row)
    with stage_transaction(session, record):
        require_exposures(session, [rootname], what=record)
        upsert(session, TruthResultRow, [row], touch="recorded_at")
        session.execute(
            delete(TruthChipRow).where(
                TruthChipRow.rootname == rootname, TruthChipRow.method == result.method
            )
        )
        if chips:
            session.execute(insert(table_of(TruthChipRow)), chips)


def record_cr_statistics(session: Session, statistics: Sequence[CrStatistics]) -> int:
    """Record per-chip CR statistics; an exposure's chips are replaced as a set."""
    rows: list[dict[str, Any]] = []
    for stat in statistics:
        rootname = stat.rootname.strip().lower()
        row: dict[str, Any] = {
            "rootname": rootname,
            "chip": stat.chip,
            "cr_pixels": stat.cr_pixels,
            "cr_events": stat.cr_events,
            "exptime_s": stat.exptime_s,
            "rate_per_cm2_s": stat.rate_per_cm2_s,
        }
        check_row(
            table_of(CrStatisticsRow),
            row,
            record=f"CR statistics of exposure {rootname} chip {stat.chip}",
            checks={**_CHIP_COUNT_CHECKS, "exptime_s": _NON_NEGATIVE, "rate_per_cm2_s": _NON_NEGATIVE},
        )
        rows.append(row)
    if not rows:
        return 0
    rootnames = sorted({r["rootname"] for r in rows})
    with stage_transaction(session, f"CR statistics of {len(rootnames)} exposures"):
        require_exposures(session, rootnames, what="CR statistics")
        session.execute(delete(CrStatisticsRow).where(CrStatisticsRow.rootname.in_(rootnames)))
        session.execute(insert(table_of(CrStatisticsRow)), rows)
    return len(rows)


# --------------------------------------------------------------------------- predictions and metrics
def record_predictions(session: Session, predictions: Sequence[PredictionResult]) -> int:
    """Record predictions keyed by exposure x model version x code version."""
    if not predictions:
        return 0
    prepared: list[tuple[str, str, dict[str, Any]]] = []
    for prediction in predictions:
        rootname = prediction.rootname.strip().lower()
        row: dict[str, Any] = {
            "rootname": rootname,
            "code_version": prediction.code_version,
            "threshold": prediction.threshold,
            "device": prediction.device,
            "seconds": prediction.seconds,
            "peak_memory_mb": prediction.peak_memory_mb,
            "path": str(prediction.path),
            "status": prediction.status,
            "reason": prediction.reason,
        }
        check_row(
            table_of(PredictionRow),
            row,
            record=f"prediction of exposure {rootname} by {prediction.model_name} {prediction.model_version}",
            checks={
                "threshold": _FRACTION,
                "seconds": _NON_NEGATIVE,
                "peak_memory_mb": _NON_NEGATIVE,
                "status": one_of(("ok", "failed")),
            },
        )
        prepared.append((str(prediction.model_name), str(prediction.model_version), row))
    with stage_transaction(session, f"{len(prepared)} predictions"):
        require_exposures(session, [r["rootname"] for _, _, r in prepared], what="predictions")
        ids: dict[tuple[str, str], int] = {}
        rows = []
        for name, version, row in prepared:
            key = (name, version)
            if key not in ids:
                ids[key] = model_version_id(session, name, version)
            rows.append({**row, "model_version_id": ids[key]})
        rows.sort(key=lambda r: (r["rootname"], r["model_version_id"], r["code_version"]))
        upsert(session, PredictionRow, rows, touch="recorded_at")
    return len(rows)
