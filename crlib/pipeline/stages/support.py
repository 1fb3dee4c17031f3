"""What every stage shares: the run's observations, recording a failure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from crlib.pipeline.ledger import RunLedger
from crlib.records import Observation

log = logging.getLogger(__name__)

T = TypeVar("T")


def record_error(ledger: RunLedger, key: str, stage: str, exc: BaseException) -> str:
    """Put an unexpected exception (a bug) in the ledger's ``errors``; returns its one-line text.

    Parameters
    ----------
    ledger
        The run's ledger.
    key
        The visit or rootname the stage was processing.
    stage
        The stage's name (the text starts with it).
    exc
        The exception (its traceback goes to the log).

    Returns
    -------
    str
        ``"<stage>: internal error <type>: <first line> (a crlib bug: ...)"``.
    """
    text = f"{stage}: internal error {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    text = text.rstrip(": ") + " (a crlib bug: the traceback is in the log)"
    ledger.record_error(key, text)
    log.exception("%s %s failed", stage, key)
    return text


def observations(ledger: RunLedger, visit: str | None = None) -> list[Observation]:
    """The run's polled observations (of one ``visit``, or all)."""
    rows = ledger.observations()
    return [Observation(**row) for row in rows if visit is None or row["visit"] == visit]


def quarantined_call(
    compute: Callable[[], T],
    *,
    ledger: RunLedger,
    key: str,
    stage: str,
    outcome: str,
    expected: tuple[type[Exception], ...],
    on_failure: Callable[[str], object],
    passthrough: tuple[type[Exception], ...] = (),
) -> T | None:
    """Run a stage's computation for one exposure; bad data becomes a recorded outcome.

    Parameters
    ----------
    compute
        The computation.
    ledger, key, stage
        Where an unexpected exception is recorded (:func:`record_error`).
    outcome
        What a failure means for ``key`` (``no prediction``, ``not scored``), for the log.
    expected
        Exceptions that mean bad data of ``key``: logged as a warning, recorded through
        ``on_failure`` with their text, and ``None`` is returned.
    on_failure
        Records the failure on the exposure: called with the exception's text (expected) or the
        one-line text :func:`record_error` recorded (a bug).
    passthrough
        Exceptions that are not ``key``'s fault (a model that cannot be loaded): raised as they are.

    Returns
    -------
    object or None
        What ``compute`` returned; ``None`` after an expected failure.

    Raises
    ------
    Exception
        ``passthrough`` exceptions, and unexpected ones (bugs) after they were recorded in the
        ledger's ``errors`` and through ``on_failure``.
    """
    try:
        return compute()
    except passthrough:
        raise
    except expected as exc:
        log.warning("%s: %s: %s", key, outcome, exc)
        on_failure(str(exc))
        return None
    except Exception as exc:  # a bug: recorded on the exposure and in the ledger, then raised
        on_failure(record_error(ledger, key, stage, exc))
        raise
