"""Retry policy for talking to an unreliable archive: exponential backoff with jitter.

MAST answers with intermittent 503s, stalls and dropped connections, and astroquery has no retry
of its own, so every query and every download goes through :func:`call_with_retries` (queries) or
the download loop in :mod:`crlib.archive.download`, both driven by one :class:`RetryPolicy`.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: HTTP statuses worth retrying: server overload/maintenance, gateway problems, rate limiting.
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a request.

    Attributes
    ----------
    max_attempts
        Total attempts per request (first try included).
    backoff_base_s
        Delay before the second attempt, seconds; doubles after every failure.
    backoff_max_s
        Upper bound of one delay, seconds.
    jitter
        Fraction of each delay drawn at random (0: none, 1: "full jitter"), so many clients that
        failed together do not retry together.
    connect_timeout_s, read_timeout_s
        Socket timeouts of one HTTP request, seconds (a stalled server counts as a failure).
    seed
        Seed of the jitter RNG (tests); ``None`` draws from the OS.
    """

    max_attempts: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    jitter: float = 0.5
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    seed: int | None = None
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            raise ValueError("backoff delays must be >= 0 seconds")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be within [0, 1], got {self.jitter}")
        if self.seed is not None:
            self._rng.seed(self.seed)

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` timeout tuple for :mod:`requests`, seconds."""
        return (self.connect_timeout_s, self.read_timeout_s)

    def delay_s(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` consecutive failures, seconds."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2.0 ** max(failures - 1, 0)))
        return ceiling * (1.0 - self.jitter * self._rng.random())


class RetryableError(Exception):
    """A transient failure (bad size, truncated body...) that the caller may retry."""


def is_retryable(exc: BaseException) -> bool:
    """Whether an exception raised while talking to an archive is transient.

    Transient: timeouts, connection resets, truncated bodies (also as invalid JSON), and HTTP
    statuses in :data:`RETRYABLE_STATUSES`. Anything else (404, 401, bad query) is permanent.
    """
    import requests

    if isinstance(exc, RetryableError | TimeoutError | ConnectionError | json.JSONDecodeError):
        return True
    if isinstance(exc, requests.HTTPError):
        response = exc.response
        return response is None or response.status_code in RETRYABLE_STATUSES
    if isinstance(
        exc,
        requests.Timeout | requests.ConnectionError | requests.exceptions.ChunkedEncodingError,
    ):
        return True
    if isinstance(exc, requests.exceptions.ContentDecodingError | requests.exceptions.JSONDecodeError):
        return True
    try:  # astroquery's own TimeoutError is not a builtin TimeoutError subclass
        from astroquery.exceptions import TimeoutError as AstroqueryTimeout
    except ImportError:  # pragma: no cover - astroquery is a hard dependency
        return False
    return isinstance(exc, AstroqueryTimeout)


@dataclass(slots=True)
class RetryStats:
    """Counts of one operation's attempts (mutable; shared by the callers of one poll/fetch)."""

    attempts: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)


def call_with_retries(
    operation: Callable[[], T],
    *,
    policy: RetryPolicy,
    what: str,
    stats: RetryStats | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation`` until it succeeds, retrying transient failures with backoff.

    Parameters
    ----------
    operation
        Zero-argument callable doing one attempt.
    policy
        Attempts, backoff and jitter.
    what
        Short description for log messages and the final error (never contains secrets).
    stats
        Optional counters updated in place.
    sleep
        Sleep function (tests may pass a no-op).

    Returns
    -------
    The operation's result.

    Raises
    ------
    crlib.errors.ArchiveError
        When all attempts failed or a failure is permanent; names ``what`` and the last error.
    """
    from crlib.errors import ArchiveError

    failures = 0
    while True:
        if stats is not None:
            stats.attempts += 1
        try:
            return operation()
        except Exception as exc:
            failures += 1
            summary = describe_exception(exc)
            if stats is not None:
                stats.errors.append(summary)
            if not is_retryable(exc):
                raise ArchiveError(f"{what} failed: {summary}") from exc
            if failures >= policy.max_attempts:
                raise ArchiveError(
                    f"{what} failed after {failures} attempts: {summary} "
                    "(the archive may be down; try again later or raise the retry limit)"
                ) from exc
            delay = policy.delay_s(failures)
            if stats is not None:
                stats.retries += 1
            log.warning("%s: attempt %d failed (%s); retrying in %.2f s", what, failures, summary, delay)
            sleep(delay)


def describe_exception(exc: BaseException) -> str:
    """One-line description of a transport error (status code or exception class and message)."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
