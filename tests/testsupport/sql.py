"""Read what a test's pipeline run left in the results database, over a fresh connection."""

from __future__ import annotations

from typing import Any


def query_rows(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """Every row of one SQL query, as tuples (a new engine, disposed afterwards)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]
    finally:
        engine.dispose()


def table_counts(database_url: str, tables: tuple[str, ...]) -> dict[str, int]:
    """``count(*)`` of each table."""
    return {table: int(query_rows(database_url, f"SELECT count(*) FROM {table}")[0][0]) for table in tables}
