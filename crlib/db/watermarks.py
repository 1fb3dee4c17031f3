"""Archive polling watermarks kept in the results database.

:class:`DatabaseWatermarkStore` has the method names of the archive stage's ``WatermarkStore``
protocol (``get`` / ``advance``), so the poller can keep its progress in Postgres, shared by
every worker and surviving restarts.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from crlib.db.orm import ArchiveWatermark, table_of
from crlib.db.validation import check_row, translated_errors
from crlib.errors import DatabaseError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


class DatabaseWatermarkStore:
    """Per-source watermarks (MJD of the newest release already polled) in ``archive_watermarks``.

    Parameters
    ----------
    sessions
        A ``sessionmaker`` of the results database; each call uses its own short transaction.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def get(self, source: str) -> float | None:
        """The watermark of ``source`` (MJD), or ``None`` if it was never advanced."""
        with self._sessions() as session:
            return session.scalars(
                select(ArchiveWatermark.mjd).where(ArchiveWatermark.source == source)
            ).first()

    def advance(self, source: str, until_mjd: float) -> float:
        """Move the watermark of ``source`` forward to ``until_mjd`` (never backwards).

        Returns
        -------
        float
            The stored watermark afterwards (``until_mjd`` or the newer value already there).

        Raises
        ------
        DatabaseError
            If ``mjd`` is not a finite number or ``source`` is too long.
        """
        mjd = until_mjd
        if isinstance(mjd, bool) or not isinstance(mjd, int | float) or not math.isfinite(mjd):
            raise DatabaseError(
                f"archive_watermarks.mjd of source {source!r} must be a finite MJD, got {mjd!r}"
            )
        check_row(
            table_of(ArchiveWatermark), {"source": source, "mjd": float(mjd)}, record=f"source {source!r}"
        )
        inserted = insert(table_of(ArchiveWatermark)).values(source=source, mjd=float(mjd))
        statement = inserted.on_conflict_do_update(
            index_elements=["source"],
            set_={
                "mjd": func.greatest(table_of(ArchiveWatermark).c.mjd, inserted.excluded.mjd),
                "updated_at": func.now(),
            },
        ).returning(table_of(ArchiveWatermark).c.mjd)
        with translated_errors(f"watermark of {source!r}"), self._sessions.begin() as session:
            stored = float(session.execute(statement).scalar_one())
        log.debug("watermark %s now %.5f", source, stored)
        return stored
