"""The declarative base, naming convention and column helpers every table module uses."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    MetaData,
    Table,
    func,
)
from sqlalchemy.orm import DeclarativeBase, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def finite(column: str, *, minimum: float | None = 0.0, maximum: float | None = None) -> str:
    """SQL condition: ``column`` is a finite number within the bounds (NULL passes).

    PostgreSQL orders ``NaN`` above ``Infinity``, so ``< 'Infinity'`` rejects both.
    """
    parts = [f"{column} < 'Infinity'::float8", f"{column} > '-Infinity'::float8"]
    if minimum is not None:
        parts.append(f"{column} >= {minimum!r}")
    if maximum is not None:
        parts.append(f"{column} <= {maximum!r}")
    return "(" + " AND ".join(parts) + ")"


def one_of(column: str, values: tuple[str, ...]) -> str:
    """SQL condition: ``column`` is one of ``values``."""
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def now_column() -> Any:
    """A ``timestamptz`` column defaulting to the transaction time."""
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def encoded_histogram(column: str) -> str:
    """SQL condition: ``column`` holds ``n_bins`` counts in :mod:`crlib.db.histcodec`'s encoding."""
    return (
        f"CASE WHEN length({column}) < 2 THEN false ELSE get_byte({column}, 0) IN (0, 1, 2, 3, 4, 8) "
        f"AND length({column}) = 2 + 10 * get_byte({column}, 1) + n_bins * get_byte({column}, 0) END"
    )


def table_of(model: type[Base]) -> Table:
    """The :class:`~sqlalchemy.Table` of a mapped class (typed for Core statements)."""
    return cast(Table, model.__table__)


def constraint_fields() -> dict[str, str]:
    """Map each named constraint to ``table.column`` (for error messages).

    CHECK constraints are named after their column; foreign keys after their local columns.
    """
    fields: dict[str, str] = {}
    for table in Base.metadata.sorted_tables:
        for constraint in table.constraints:
            name = str(constraint.name) if constraint.name is not None else None
            if not name:
                continue
            if isinstance(constraint, CheckConstraint):
                column = name.removeprefix(f"ck_{table.name}_")
                fields[name] = f"{table.name}.{column}"
            elif isinstance(constraint, ForeignKeyConstraint):
                fields[name] = f"{table.name}.{', '.join(c.name for c in constraint.columns)}"
    return fields
