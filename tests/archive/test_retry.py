"""Retry policy: bounded exponential backoff with jitter; which failures are transient."""

from __future__ import annotations

import pytest
import requests

from crlib.archive.retry import RetryPolicy, RetryStats, call_with_retries, is_retryable
from crlib.errors import ArchiveError


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=8.0, jitter=0.5, seed=1)
    delays = [policy.delay_s(n) for n in range(1, 8)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert all(4.0 <= d <= 8.0 for d in delays[4:])
    assert len(set(delays)) == len(delays)


def test_transient_and_permanent_failures() -> None:
    assert is_retryable(_http_error(503)) and is_retryable(_http_error(429))
    assert not is_retryable(_http_error(404)) and not is_retryable(_http_error(401))
    assert is_retryable(requests.ReadTimeout()) and is_retryable(requests.ConnectionError())
    assert is_retryable(requests.exceptions.ChunkedEncodingError())
    assert not is_retryable(ValueError("bad query"))


def test_call_with_retries_counts_and_gives_up() -> None:
    failures = [_http_error(503), requests.ReadTimeout()]
    stats = RetryStats()

    def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    policy = RetryPolicy(backoff_base_s=0.0, max_attempts=3)
    assert call_with_retries(flaky, policy=policy, what="q", stats=stats, sleep=lambda s: None) == "ok"
    assert stats.attempts == 3 and stats.retries == 2

    def always_down() -> None:
        raise _http_error(503)

    with pytest.raises(ArchiveError, match="q failed after 3 attempts: HTTP 503"):
        call_with_retries(always_down, policy=policy, what="q", sleep=lambda s: None)
    with pytest.raises(ArchiveError, match="HTTP 404"):
        call_with_retries(lambda: (_ for _ in ()).throw(_http_error(404)), policy=policy, what="q")
