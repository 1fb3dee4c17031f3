"""Polling an archive: new visits since the watermark, or every visit of one proposal."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from crlib.archive.caom import group_by_visit
from crlib.archive.protocol import Archive
from crlib.archive.watermark import WatermarkStore
from crlib.records import Observation

log = logging.getLogger(__name__)


def mjd_now() -> float:
    """Current time as MJD (UTC)."""
    return datetime_to_mjd(datetime.now(UTC))


def datetime_to_mjd(moment: datetime) -> float:
    """MJD of a datetime (naive values are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    epoch = datetime(1858, 11, 17, tzinfo=UTC)
    return (moment - epoch).total_seconds() / 86400.0


@dataclass(frozen=True, slots=True)
class PollResult:
    """What one poll found.

    Attributes
    ----------
    source
        Archive source (watermark key).
    since_mjd, until_mjd
        Release-date window queried (MJD); ``None`` for a proposal query.
    proposal_id
        Proposal queried, or ``None`` for a release-date poll.
    observations
        Exposures found (one calibrated product each), sorted by rootname.
    """

    source: str
    since_mjd: float | None
    until_mjd: float | None
    proposal_id: int | None
    observations: tuple[Observation, ...]
    visits: dict[str, tuple[Observation, ...]] = field(default_factory=dict)


def poll_released(
    archive: Archive,
    store: WatermarkStore,
    *,
    until_mjd: float | None = None,
    since_mjd: float | None = None,
) -> PollResult:
    """Exposures released after the archive's watermark and up to ``until_mjd``.

    The query window is ``[since, until]``; exposures released exactly at a previous watermark
    were already returned by that poll and are dropped, so consecutive polls never overlap.
    The watermark is *not* moved here: call :func:`commit_poll` after recording the result.

    Parameters
    ----------
    archive
        Backend to query.
    store
        Watermarks; ``store.get(archive.source)`` is the lower bound (0 before the first poll).
    until_mjd
        Upper bound (MJD); default now.
    since_mjd
        Explicit lower bound overriding the watermark (re-polls, backfills).
    """
    until = mjd_now() if until_mjd is None else float(until_mjd)
    watermark = store.get(archive.source)
    since = since_mjd if since_mjd is not None else (watermark if watermark is not None else 0.0)
    if since > until:
        raise ValueError(f"poll window is empty: since MJD {since} is after until MJD {until}")
    found = archive.released_between(since, until)
    if watermark is not None and since_mjd is None:
        found = [obs for obs in found if obs.release_mjd > watermark]
    observations = tuple(sorted(found, key=lambda o: o.rootname))
    visits = group_by_visit(observations)
    log.info(
        "%s: %d exposures in %d visits released in MJD [%.5f, %.5f]",
        archive.source,
        len(observations),
        len(visits),
        since,
        until,
    )
    return PollResult(archive.source, since, until, None, observations, visits)


def poll_proposal(archive: Archive, proposal_id: int) -> PollResult:
    """Every exposure of one proposal (reprocessing; leaves the watermark alone)."""
    observations = tuple(sorted(archive.proposal_observations(proposal_id), key=lambda o: o.rootname))
    visits = group_by_visit(observations)
    log.info(
        "%s: proposal %d has %d exposures in %d visits",
        archive.source,
        proposal_id,
        len(observations),
        len(visits),
    )
    return PollResult(archive.source, None, None, proposal_id, observations, visits)


def commit_poll(store: WatermarkStore, result: PollResult) -> float | None:
    """Advance the watermark to the poll's upper bound (after its visits are recorded).

    Returns the stored watermark, or ``None`` for proposal polls (which never move it).
    """
    if result.until_mjd is None:
        return None
    return store.advance(result.source, result.until_mjd)


def poll_and_record(
    archive: Archive,
    store: WatermarkStore,
    record: Callable[[PollResult], None],
    *,
    until_mjd: float | None = None,
) -> PollResult:
    """Poll, hand the result to ``record`` (database/manifest), then advance the watermark.

    If ``record`` raises, the watermark stays where it was and the next poll finds the same
    visits again.
    """
    result = poll_released(archive, store, until_mjd=until_mjd)
    record(result)
    commit_poll(store, result)
    return result
