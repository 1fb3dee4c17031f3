"""Checking values before they reach the results database, and naming the field when they are bad.

Two layers guard every column: :func:`check_row` here (so the message names the field and the
record) and the CHECK / foreign-key constraints of the schema (so nothing else can store bad
values either). :func:`translated_errors` turns a constraint violation that still gets through
into a :class:`~crlib.errors.DatabaseError` naming the ``table.column``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
from sqlalchemy import BigInteger, Float, Integer, String, Table
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from crlib.errors import DatabaseError
from crlib.jsonvalues import json_compatible

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

Check = Callable[[Any], str | None]


def one_of(allowed: tuple[str, ...] | frozenset[str], *, hint: str = "") -> Check:
    """A check accepting only ``allowed`` values (``None`` passes; nullability is checked apart)."""

    def check(value: Any) -> str | None:
        if value is None or value in allowed:
            return None
        shown = ", ".join(sorted(allowed)) if len(allowed) <= 8 else f"{len(allowed)} known names"
        return f"is not one of {shown}{hint}"

    return check


def within(low: float | None = None, high: float | None = None) -> Check:
    """A check accepting numbers in ``[low, high]``."""

    def check(value: Any) -> str | None:
        if value is None:
            return None
        if low is not None and value < low:
            return f"is below {low}"
        if high is not None and value > high:
            return f"is above {high}"
        return None

    return check


def json_safe(value: Any) -> Any:
    """``value`` as JSON-compatible data for a descriptive payload: non-finite floats as strings.

    Used for header summaries, rule values and parameters, where a ``NaN`` in a header is
    information, not a measurement (:func:`crlib.jsonvalues.json_compatible` with
    ``non_finite="string"``); measured values are checked strictly instead.
    """
    return json_compatible(value, non_finite="string")


def _problem(column: Any, value: Any) -> str | None:
    kind = column.type
    if value is None:
        if not column.nullable and column.server_default is None:
            return "is missing"
        return None
    if isinstance(kind, String):
        if not isinstance(value, str):
            return f"must be text, not {type(value).__name__}"
        if kind.length is not None and len(value) > kind.length:
            return f"is {len(value)} characters long; at most {kind.length} fit"
        if "\x00" in value:
            return "contains a NUL character"
        return None
    if isinstance(kind, Float):
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            return f"must be a number, not {type(value).__name__}"
        if not math.isfinite(float(value)):
            return f"must be a finite number, got {value!r}"
        return None
    if isinstance(kind, Integer | BigInteger):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            return f"must be an integer, not {type(value).__name__}"
        limit = INT64_MAX if isinstance(kind, BigInteger) else INT32_MAX
        if not -limit <= int(value) <= limit:
            return f"is out of range ({value})"
        return None
    if isinstance(kind, ARRAY) and isinstance(kind.item_type, Integer | BigInteger):
        return _array_problem(value, INT64_MAX if isinstance(kind.item_type, BigInteger) else INT32_MAX)
    if isinstance(kind, JSONB):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            return f"is not storable as JSON ({exc})"
    return None


def _array_problem(value: Any, limit: int) -> str | None:
    array = np.asarray(value)
    if array.ndim != 1 or array.size == 0:
        return f"must be a non-empty 1-D sequence of counts, got shape {array.shape}"
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            return "contains NaN or infinite values"
        if not np.all(array == np.round(array)):
            return "contains non-integer values"
    elif array.dtype.kind not in "iu":
        return f"must hold integers, not {array.dtype}"
    if array.min() < 0:
        return "contains negative counts"
    if array.max() > limit:
        return f"contains a count above {limit}"
    return None


def check_row(
    table: Table, row: Mapping[str, Any], *, record: str, checks: Mapping[str, Check] | None = None
) -> None:
    """Raise if any value of ``row`` cannot go into ``table``.

    Parameters
    ----------
    table
        Target table (its column types give lengths, numeric kinds and nullability).
    row
        Column name to value.
    record
        Names the record in the message, e.g. ``exposure jbt122x8q``.
    checks
        Extra per-column domain checks (vocabularies, ranges).

    Raises
    ------
    DatabaseError
        ``"<table>.<column> of <record> <problem>"``.
    """
    for name, value in row.items():
        column = table.c[name]
        problem = _problem(column, value)
        if problem is None and checks and name in checks:
            problem = checks[name](value)
        if problem is not None:
            shown = repr(value)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            raise DatabaseError(
                f"{table.name}.{name} of {record} {problem} (value {shown}); nothing was stored"
            )


@cache
def _constraint_fields() -> dict[str, str]:
    from crlib.db.orm import constraint_fields

    return constraint_fields()


@contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """Turn database constraint/data errors raised inside the block into a :class:`DatabaseError`.

    Parameters
    ----------
    what
        What was being recorded, e.g. ``"metrics of 12 exposures"``.
    """
    from sqlalchemy.exc import DataError, IntegrityError, OperationalError

    try:
        yield
    except (IntegrityError, DataError) as exc:
        diag = getattr(exc.orig, "diag", None)
        constraint = getattr(diag, "constraint_name", None)
        detail = (getattr(diag, "message_detail", None) or "").strip()
        primary = (getattr(diag, "message_primary", None) or str(exc.orig)).strip()
        field = _constraint_fields().get(constraint or "")
        column = getattr(diag, "column_name", None)
        table = getattr(diag, "table_name", None)
        if field is None and column and table:
            field = f"{table}.{column}"
        where = f"{field}: " if field else ""
        raise DatabaseError(
            f"the results database rejected {what}: {where}{primary}"
            + (f" ({detail})" if detail else "")
            + "; nothing of it was stored"
        ) from None
    except OperationalError as exc:
        raise DatabaseError(
            f"lost the results database while recording {what}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}; nothing of it was stored, "
            "re-run the stage"
        ) from None
