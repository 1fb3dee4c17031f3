"""Exposure metrics in the results database: bulk recording at thousands of rows per second, reading back.

:func:`record_metrics` works in one transaction: it logs the (month, filter) cells whose
summaries must be refreshed, deletes the rows being replaced, and ``COPY``\\ s the new rows in
binary form straight into ``exposure_metrics``. The COPY stream is produced while the server
inserts: each row is checked in Python (a bad value raises naming ``exposure_metrics.<column>``
and the exposure, and aborts the COPY) and its four score histograms are encoded with one
:func:`struct.pack` each (:mod:`crlib.db.histcodec`). Re-recording an exposure x model version
replaces its row. If a concurrent recorder inserts the same key first, the unique index stops
the COPY and the delete + COPY is retried in a savepoint (last writer wins, as with
``INSERT ... ON CONFLICT DO UPDATE``). A crash anywhere leaves nothing of the batch.

Provenance (what each row rests on) is written with the row: the truth status, method and gate
reasons (from the record, or else from the exposure's recorded truth: the drizzle truth first;
``unknown`` when none with status ``ok``/``suspect`` is recorded), the split of the exposure's
visit for the model version (from ``model_version_splits``, see
:func:`crlib.db.training_splits.record_training_splits`; ``unseen`` when the visit is not in the
version's training manifest) and the scoring rules (``border_px``, ``dq_excluded``). Two indexed
lookups per batch, not per row.

Where the time goes (5,000 rows, 1,699 bins, 4 histograms): converting the tuples of Python
ints dominates the client (~30 of ~55 us per row, ~4x less when the histograms are numpy
arrays); the server spends ~100 us per row on the heap/TOAST inserts of ~14 kB and the two
foreign-key checks. The previous design (``integer[]`` columns, COPY into a staging table,
then ``INSERT ... ON CONFLICT``) parsed every array element and compressed every row with pglz.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crlib.db import copyio
from crlib.db.atomic import require_exposures, stage_transaction
from crlib.db.histcodec import (
    INT64_MAX,
    HistogramError,
    counts_array,
    decode_histogram,
    encode_array,
    encode_counts,
)
from crlib.db.model_registry import model_version_id
from crlib.db.orm import ExposureMetricsRow, table_of
from crlib.db.validation import check_row, one_of, within
from crlib.db.vocabulary import KNOWN_FIELD_TYPES, METRIC_TRUTH_STATUSES, SPLITS, TRUTH_METHODS
from crlib.errors import DatabaseError
from crlib.records import ExposureMetrics

log = logging.getLogger(__name__)

#: Columns written by :func:`record_metrics`, in COPY order.
METRICS_COLUMNS: tuple[str, ...] = (
    "rootname",
    "model_version_id",
    "field_type",
    "tp",
    "fp",
    "fn",
    "tn",
    "tpr_at_fpr",
    "tpr_at_fpr_dilated",
    "n_bins",
    "hist_cr",
    "hist_noncr",
    "hist_cr_dilated",
    "hist_noncr_dilated",
    "border_px",
    "dq_excluded",
    "split",
    "truth_status",
    "truth_method",
    "truth_reasons",
)
HISTOGRAMS: tuple[str, ...] = ("hist_cr", "hist_noncr", "hist_cr_dilated", "hist_noncr_dilated")
MAX_BINS = 32767
ROOTNAME_LENGTH = 9
_COUNTS = struct.Struct(">iqiqiqiq")  # tp, fp, fn, tn as COPY fields
_LENGTH = struct.Struct(">i")
_RETRIES = 3
_SCALAR_CHECKS = {
    "field_type": one_of(KNOWN_FIELD_TYPES, hint=" (see crlib.profiles.FIELD_TYPES)"),
    "tp": within(0.0),
    "fp": within(0.0),
    "fn": within(0.0),
    "tn": within(0.0),
}


@dataclass
class _Row:
    """One validated metrics row waiting for its model version id, split and (maybe) truth."""

    rootname: str
    model: tuple[str, str]
    head: bytes  # field_type .. n_bins, encoded COPY fields
    histograms: list[bytes]  # encoded COPY fields (length prefix + value, or NULL) and the rules
    split: str | None  # as given on the record (must agree with the recorded manifest)
    truth: tuple[str, str | None, tuple[str, ...]] | None  # status, method, reasons as given


#: Truth of an exposure as recorded: ``{method: (status, reasons)}``.
Truths = dict[str, tuple[str, tuple[str, ...]]]


def _provenance(metric: ExposureMetrics, record: str) -> tuple[bytes, tuple | None, str | None]:
    """Check the provenance fields; return the encoded rules, the given truth and the given split."""
    checks = (
        ("truth_status", metric.truth_status, METRIC_TRUTH_STATUSES),
        ("truth_method", metric.truth_method, TRUTH_METHODS),
        ("split", metric.split, SPLITS),
    )
    for column, value, allowed in checks:
        if value is not None and value not in allowed:
            hint = " (a failed truth is never scored)" if value == "failed" else ""
            raise DatabaseError(
                f"exposure_metrics.{column} of {record} is not one of {', '.join(allowed)}{hint} "
                f"(value {value!r}); nothing was stored"
            )
    border = metric.border_px
    if isinstance(border, bool) or not isinstance(border, int | np.integer) or not 0 <= border <= MAX_BINS:
        raise DatabaseError(
            f"exposure_metrics.border_px of {record} must be an integer in 0..{MAX_BINS} "
            f"(value {border!r}); nothing was stored"
        )
    reasons = tuple(metric.truth_reasons or ())
    if not all(isinstance(r, str) for r in reasons):
        raise DatabaseError(f"exposure_metrics.truth_reasons of {record} must be texts; nothing was stored")
    rules = copyio.int2_field(int(border)) + copyio.bool_field(bool(metric.dq_excluded))
    truth = None if metric.truth_status is None else (metric.truth_status, metric.truth_method, reasons)
    if truth is None and (metric.truth_method is not None or reasons):
        raise DatabaseError(
            f"exposure_metrics.truth_status of {record} is missing while its truth method or reasons "
            "are given; nothing was stored"
        )
    return rules, truth, metric.split


def _chosen_truth(truths: Truths | None) -> tuple[str, str | None, tuple[str, ...]]:
    """The recorded truth a row rests on: drizzle first, then multi-frame; ``unknown`` without one."""
    for method in TRUTH_METHODS:
        if truths and method in truths:
            status, reasons = truths[method]
            return status, method, reasons
    return "unknown", None, ()


def _record_name(metric: ExposureMetrics, rootname: str) -> str:
    return f"metrics of exposure {rootname} ({metric.model_name} {metric.model_version})"


def _rates(values: Any, column: str, record: str) -> str:
    if not isinstance(values, dict):
        raise DatabaseError(
            f"exposure_metrics.{column} of {record} must be a mapping of FPR to TPR, "
            f"not {type(values).__name__}; nothing was stored"
        )
    clean: dict[str, float] = {}
    for key, value in values.items():
        bad = (
            isinstance(value, bool)
            or not isinstance(value, int | float | np.integer | np.floating)
            or not (0.0 <= float(value) <= 1.0)  # also false for NaN
        )
        if bad:
            raise DatabaseError(
                f"exposure_metrics.{column}[{key!r}] of {record} must be a rate in [0, 1], "
                f"got {value!r}; nothing was stored"
            )
        clean[str(key)] = float(value)
    return json.dumps(clean)


def _encoded(values: Any, column: str, record: str) -> tuple[bytes, int]:
    """The encoded histogram and its number of bins (raises naming the column and record)."""
    if isinstance(values, tuple | list):
        fast = encode_counts(values)
        if fast is not None:
            return fast, len(values)
    elif not isinstance(values, np.ndarray):
        raise DatabaseError(
            f"exposure_metrics.{column} of {record} must be a sequence of counts, "
            f"not {type(values).__name__}; nothing was stored"
        )
    try:
        counts = counts_array(values)
    except HistogramError as exc:
        raise DatabaseError(f"exposure_metrics.{column} of {record} {exc}; nothing was stored") from None
    return encode_array(counts), int(counts.size)


def _scalars_are_plain(rootname: str, metric: ExposureMetrics) -> bool:
    """Cheap test that lets the common case skip :func:`check_row`."""
    counts = (metric.tp, metric.fp, metric.fn, metric.tn)
    return (
        len(rootname) <= ROOTNAME_LENGTH
        and (metric.field_type is None or metric.field_type in KNOWN_FIELD_TYPES)
        and all(type(v) is int and 0 <= v <= INT64_MAX for v in counts)
    )


def _prepare(metric: ExposureMetrics) -> _Row:
    rootname = str(metric.rootname).strip().lower()
    record = _record_name(metric, rootname)
    if not _scalars_are_plain(rootname, metric):
        scalars = {
            "rootname": rootname,
            "field_type": metric.field_type,
            "tp": metric.tp,
            "fp": metric.fp,
            "fn": metric.fn,
            "tn": metric.tn,
        }
        check_row(table_of(ExposureMetricsRow), scalars, record=record, checks=_SCALAR_CHECKS)
    given = [metric.hist_cr, metric.hist_noncr, metric.hist_cr_dilated, metric.hist_noncr_dilated]
    has_dilated = any(h is not None and len(h) for h in given[2:])
    wanted = given if has_dilated else given[:2]
    encoded = [_encoded(h, c, record) for h, c in zip(wanted, HISTOGRAMS, strict=False)]
    n_bins = encoded[0][1]
    if not 1 <= n_bins <= MAX_BINS:
        raise DatabaseError(
            f"exposure_metrics.hist_cr of {record} has {n_bins} bins; 1 to {MAX_BINS} fit; nothing was stored"
        )
    for column, (_, length) in zip(HISTOGRAMS, encoded, strict=False):
        if length != n_bins:
            raise DatabaseError(
                f"exposure_metrics.{column} of {record} has {length} bins but hist_cr has {n_bins}; "
                "nothing was stored"
            )
    rules, truth, split = _provenance(metric, record)
    fields: list[bytes] = []
    for blob, _ in encoded:
        fields += [_LENGTH.pack(len(blob)), blob]
    fields += [copyio.NULL_FIELD] * (4 - len(encoded))
    fields.append(rules)
    head = b"".join(
        (
            copyio.text_field(metric.field_type),
            _COUNTS.pack(8, int(metric.tp), 8, int(metric.fp), 8, int(metric.fn), 8, int(metric.tn)),
            copyio.jsonb_field(_rates(metric.tpr_at_fpr, "tpr_at_fpr", record)),
            copyio.jsonb_field(_rates(metric.tpr_at_fpr_dilated, "tpr_at_fpr_dilated", record)),
            copyio.int2_field(n_bins),
        )
    )
    return _Row(rootname, (str(metric.model_name), str(metric.model_version)), head, fields, split, truth)


def record_metrics(session: Session, metrics: Sequence[ExposureMetrics]) -> int:
    """Bulk-record exposure metrics (one transaction; re-recording replaces rows).

    Parameters
    ----------
    session
        Session on the results database. If it is in a transaction, the batch is written in a
        savepoint of it; otherwise it is committed on its own.
    metrics
        Any number of metrics. The dilated histograms may be empty (stored as NULL); the plain
        ones are required.

    Returns
    -------
    int
        Number of metric rows recorded.

    Raises
    ------
    DatabaseError
        A bad value (naming ``exposure_metrics.<column>`` and the exposure), an exposure that
        was never recorded, a duplicate key in the batch, or a ``split`` on a record that the
        model version's recorded training manifest contradicts; nothing of the batch is stored.
    """
    if not metrics:
        return 0
    keys = [(str(m.rootname).strip().lower(), (str(m.model_name), str(m.model_version))) for m in metrics]
    if len(set(keys)) != len(keys):
        raise DatabaseError(
            "metrics batch names the same exposure and model version twice; nothing was stored"
        )
    # Check the first row (and any key that cannot exist) before any SQL, so common mistakes fail
    # before a transaction starts; every row is checked while it is encoded.
    _prepare(metrics[0])
    for metric, (root, _) in zip(metrics, keys, strict=True):
        if len(root) > ROOTNAME_LENGTH:
            _prepare(metric)
    roots = sorted({root for root, _ in keys})
    with stage_transaction(session, f"metrics of {len(keys)} exposures"):
        ids = {model: model_version_id(session, *model) for model in sorted({m for _, m in keys})}
        missing = session.scalars(
            text(
                "SELECT r FROM unnest(CAST(:roots AS varchar[])) AS r "
                "WHERE NOT EXISTS (SELECT 1 FROM exposures e WHERE e.rootname = r) LIMIT 6"
            ),
            {"roots": roots},
        ).all()
        if missing:
            require_exposures(session, missing, what="metrics")
        order = sorted(range(len(keys)), key=lambda i: (keys[i][0], ids[keys[i][1]]))
        session.execute(
            text(
                "INSERT INTO summary_changes (month, filter) "
                "SELECT DISTINCT date_trunc('month', obs_date)::date, filter FROM exposures "
                "WHERE rootname = ANY(CAST(:roots AS varchar[]))"
            ),
            {"roots": roots},
        )
        splits = _recorded_splits(session, sorted(set(ids.values())), sorted({r[:6] for r in roots}))
        wanting = sorted({keys[i][0] for i, m in enumerate(metrics) if m.truth_status is None})
        truths = _recorded_truths(session, wanting) if wanting else {}
        key_roots = [keys[i][0] for i in order]
        key_ids = [ids[keys[i][1]] for i in order]
        for attempt in range(1, _RETRIES + 1):
            try:
                with session.begin_nested():
                    session.execute(
                        text(
                            "DELETE FROM exposure_metrics m USING unnest(CAST(:roots AS varchar[]), "
                            "CAST(:ids AS integer[])) AS k(rootname, model_version_id) "
                            "WHERE m.rootname = k.rootname AND m.model_version_id = k.model_version_id"
                        ),
                        {"roots": key_roots, "ids": key_ids},
                    )
                    copyio.copy_in(
                        session,
                        f"COPY exposure_metrics ({', '.join(METRICS_COLUMNS)}) FROM STDIN (FORMAT binary)",
                        _copy_chunks(metrics, order, ids, splits, truths),
                    )
                break
            except IntegrityError as exc:
                if getattr(exc.orig, "pgcode", None) != "23505" or attempt == _RETRIES:
                    raise
                log.info("metrics recorded concurrently for the same exposures; retrying (%d)", attempt)
    return len(keys)


def _recorded_splits(session: Session, version_ids: Sequence[int], visits: Sequence[str]) -> dict[tuple, str]:
    """``{(model version id, visit): split}`` recorded in the versions' training manifests."""
    rows = session.execute(
        text(
            "SELECT model_version_id, visit, split FROM model_version_splits "
            "WHERE model_version_id = ANY(CAST(:ids AS integer[])) "
            "AND visit = ANY(CAST(:visits AS varchar[]))"
        ),
        {"ids": list(version_ids), "visits": list(visits)},
    ).all()
    return {(int(r[0]), str(r[1])): str(r[2]) for r in rows}


def _recorded_truths(session: Session, rootnames: Sequence[str]) -> dict[str, Truths]:
    """``{rootname: {method: (status, reasons)}}`` of the recorded truths with status ok/suspect."""
    rows = session.execute(
        text(
            "SELECT rootname, method, status, reasons FROM truth_results "
            "WHERE rootname = ANY(CAST(:roots AS varchar[])) AND status IN ('ok', 'suspect')"
        ),
        {"roots": list(rootnames)},
    ).all()
    found: dict[str, Truths] = {}
    for rootname, method, status, reasons in rows:
        found.setdefault(str(rootname), {})[str(method)] = (str(status), tuple(reasons or ()))
    return found


def _copy_chunks(
    metrics: Sequence[ExposureMetrics],
    order: Sequence[int],
    ids: dict[tuple[str, str], int],
    splits: dict[tuple, str],
    truths: dict[str, Truths],
) -> Iterator[bytes]:
    """The binary COPY stream of ``metrics`` in ``order``, checked and encoded row by row.

    Produced lazily, in chunks of about 64 rows, so Python encodes while the server inserts.
    """
    start = copyio.row_count(len(METRICS_COLUMNS))
    parts: list[bytes] = [copyio.COPY_HEADER]
    for count, index in enumerate(order, start=1):
        row = _prepare(metrics[index])
        version_id = ids[row.model]
        split = splits.get((version_id, row.rootname[:6]), "unseen")
        if row.split is not None and row.split != split:
            raise DatabaseError(
                f"exposure_metrics.split of {_record_name(metrics[index], row.rootname)} is {row.split!r}, "
                f"but the model version's recorded training manifest puts visit {row.rootname[:6]} in "
                f"{split!r}; nothing was stored"
            )
        status, method, reasons = row.truth or _chosen_truth(truths.get(row.rootname))
        parts.append(start + copyio.text_field(row.rootname) + copyio.int4_field(version_id) + row.head)
        parts += row.histograms
        parts += [
            copyio.text_field(split),
            copyio.text_field(status),
            copyio.text_field(method),
            copyio.text_array_field(reasons),
        ]
        if count % 64 == 0:
            yield b"".join(parts)
            parts = []
    parts.append(copyio.COPY_TRAILER)
    yield b"".join(parts)


def load_metrics(
    session: Session,
    *,
    rootnames: Sequence[str] | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
) -> list[ExposureMetrics]:
    """Read recorded metrics back as :class:`~crlib.records.ExposureMetrics` (histograms decoded,
    with their recorded provenance: truth status, method and reasons, split, scoring rules).

    Parameters
    ----------
    session
        Session on the results database.
    rootnames
        Only these exposures (default: all; mind the size of a whole archive).
    model_name, model_version
        Only this model (and version).
    """
    clauses = ["TRUE"]
    params: dict[str, Any] = {}
    if rootnames is not None:
        clauses.append("m.rootname = ANY(%(roots)s)")
        params["roots"] = [r.strip().lower() for r in rootnames]
    if model_name is not None:
        clauses.append("mo.name = %(model)s")
        params["model"] = model_name
    if model_version is not None:
        clauses.append("v.version = %(version)s")
        params["version"] = model_version
    query = (
        "SELECT m.rootname, mo.name, v.version, m.field_type, m.tp, m.fp, m.fn, m.tn, "
        "m.tpr_at_fpr::text, m.tpr_at_fpr_dilated::text, m.n_bins, m.hist_cr, m.hist_noncr, "
        "m.hist_cr_dilated, m.hist_noncr_dilated, m.truth_status, m.truth_method, m.truth_reasons, "
        "m.split, m.border_px, m.dq_excluded FROM exposure_metrics m "
        "JOIN model_versions v ON v.id = m.model_version_id JOIN models mo ON mo.id = v.model_id "
        f"WHERE {' AND '.join(clauses)} ORDER BY m.rootname, mo.name, v.version"
    )
    found: list[ExposureMetrics] = []

    def on_row(f: copyio.Row) -> None:
        n_bins = int(copyio.int_value(f[10]) or 0)
        hists = [tuple(decode_histogram(v, n_bins).tolist()) if v is not None else () for v in f[11:15]]
        found.append(
            ExposureMetrics(
                rootname=str(copyio.text_value(f[0])),
                model_name=str(copyio.text_value(f[1])),
                model_version=str(copyio.text_value(f[2])),
                tp=int(copyio.int_value(f[4]) or 0),
                fp=int(copyio.int_value(f[5]) or 0),
                fn=int(copyio.int_value(f[6]) or 0),
                tn=int(copyio.int_value(f[7]) or 0),
                tpr_at_fpr=json.loads(str(copyio.text_value(f[8]))),
                tpr_at_fpr_dilated=json.loads(str(copyio.text_value(f[9]))),
                hist_cr=hists[0],
                hist_noncr=hists[1],
                field_type=copyio.text_value(f[3]),
                hist_cr_dilated=hists[2],
                hist_noncr_dilated=hists[3],
                truth_status=copyio.text_value(f[15]),
                truth_method=copyio.text_value(f[16]),
                truth_reasons=copyio.text_array_value(f[17]) or (),
                split=copyio.text_value(f[18]),
                border_px=int(copyio.int_value(f[19]) or 0),
                dq_excluded=bool(copyio.bool_value(f[20])),
            )
        )

    copyio.copy_out(session, query, params, on_row)
    return found
