"""Per-archive watermarks: the release date (MJD) up to which an archive has been polled.

A watermark is advanced only after a poll's visits are safely recorded, and never moves back.
:class:`WatermarkStore` is the interface; :class:`JsonWatermarkStore` keeps the values in a
small JSON file under the data root (atomic replace) until the results database implements it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

from crlib.errors import InputDataError

log = logging.getLogger(__name__)


@runtime_checkable
class WatermarkStore(Protocol):
    """Where the poll watermark of each archive source lives."""

    def get(self, source: str) -> float | None:
        """The watermark of ``source`` (MJD), or ``None`` before its first recorded poll."""
        ...

    def advance(self, source: str, until_mjd: float) -> float:
        """Move the watermark forward to ``until_mjd`` (never backwards); return the stored value."""
        ...


class JsonWatermarkStore:
    """Watermarks in ``<path>`` as ``{"watermarks": {source: mjd}}``, written atomically.

    Parameters
    ----------
    path
        JSON file, e.g. ``<data_root>/state/watermarks.json`` (created on first advance).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def under(cls, data_root: Path) -> JsonWatermarkStore:
        """The store at its default place under a data root."""
        return cls(Path(data_root) / "state" / "watermarks.json")

    def _read(self) -> dict[str, float]:
        if not self.path.exists():
            return {}
        try:
            document = json.loads(self.path.read_text())
            return {str(k): float(v) for k, v in document["watermarks"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputDataError(
                self.path,
                f"unreadable watermark file ({exc})",
                fix="repair it or delete it to poll from the beginning",
            ) from None

    def get(self, source: str) -> float | None:
        """The stored watermark of ``source`` (MJD) or ``None``."""
        return self._read().get(source)

    def advance(self, source: str, until_mjd: float) -> float:
        """Store ``max(current, until_mjd)`` for ``source`` with an atomic file replace."""
        with self._lock:
            values = self._read()
            current = values.get(source)
            new = until_mjd if current is None else max(current, until_mjd)
            values[source] = new
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=".watermarks-", suffix=".json", dir=self.path.parent)
            try:
                with os.fdopen(handle, "w") as stream:
                    json.dump({"watermarks": values}, stream, indent=2, sort_keys=True)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.replace(temp, self.path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            log.info("watermark of %s advanced to MJD %.5f", source, new)
            return new
