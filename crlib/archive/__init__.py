"""Archive access: MAST (astroquery) and local directories, polling with watermarks, safe downloads.

Modules: :mod:`~crlib.archive.protocol` (the interface), :mod:`~crlib.archive.mast`,
:mod:`~crlib.archive.local`, :mod:`~crlib.archive.caom` (rows to records, grouping),
:mod:`~crlib.archive.poll`, :mod:`~crlib.archive.watermark`, :mod:`~crlib.archive.download`,
and :mod:`~crlib.archive.retry`. The fake MAST server for tests is :mod:`crlib.harness.fake_mast`.
"""

from __future__ import annotations

from typing import Any

from crlib.archive.caom import group_by_set, group_by_visit, visit_of
from crlib.archive.download import DownloadProgress, FetchReport, fetch_observations, safe_destination
from crlib.archive.local import LocalArchive
from crlib.archive.mast import MastArchive
from crlib.archive.poll import PollResult, commit_poll, poll_and_record, poll_proposal, poll_released
from crlib.archive.protocol import Archive
from crlib.archive.retry import RetryPolicy, RetryStats
from crlib.archive.watermark import JsonWatermarkStore, WatermarkStore

__all__ = [
    "Archive",
    "DownloadProgress",
    "FetchReport",
    "JsonWatermarkStore",
    "LocalArchive",
    "MastArchive",
    "PollResult",
    "RetryPolicy",
    "RetryStats",
    "WatermarkStore",
    "archive_from_settings",
    "commit_poll",
    "fetch_observations",
    "group_by_set",
    "group_by_visit",
    "poll_and_record",
    "poll_proposal",
    "poll_released",
    "safe_destination",
    "visit_of",
]


def archive_from_settings(settings: Any, *, policy: RetryPolicy | None = None) -> Archive:
    """The backend named by ``Settings.archive`` (``mast`` or ``local:<dir>``)."""
    from crlib.profiles import get_profile

    kind, directory = settings.archive_location()
    if kind == "local":
        assert directory is not None
        return LocalArchive(directory, profile=get_profile(settings.instrument))
    return MastArchive.from_settings(settings, policy=policy)
