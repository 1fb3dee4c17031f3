"""Fetch calibrated products safely: bounded concurrency, retries, resume, verification.

We stream files with our own :mod:`requests` loop rather than astroquery's
``Observations.download_file``: astroquery has no retry or backoff, no socket timeout, does not
verify sizes or checksums, writes straight to the final name (a crash leaves a truncated file
that its cache then trusts), and cannot be given a progress callback. Here every file is written
to ``<name>.part``, resumed with an HTTP ``Range`` request after a dropped connection, checked
against the archive's size (and MD5 when known), and only then renamed atomically into place,
so a file under its final name is always complete and a re-run never duplicates it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from crlib.archive.protocol import Archive
from crlib.archive.retry import RetryableError, RetryPolicy, describe_exception, is_retryable
from crlib.file_digest import file_hexdigest
from crlib.records import DownloadResult, Observation

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
CHUNK_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class DownloadProgress:
    """One progress event of one file (sent from worker threads).

    Attributes
    ----------
    rootname, filename
        Which exposure/file.
    bytes_done
        Bytes of the file on disk so far (including a resumed part).
    bytes_total
        Expected size in bytes, or ``None`` if unknown.
    event
        ``start``, ``progress``, ``retry``, ``done``, ``cached`` or ``failed``.
    """

    rootname: str
    filename: str
    bytes_done: int
    bytes_total: int | None
    event: Literal["start", "progress", "retry", "done", "cached", "failed"]


ProgressCallback = Callable[[DownloadProgress], None]


@dataclass(frozen=True, slots=True)
class FetchReport:
    """Outcome of fetching a batch of products.

    Attributes
    ----------
    results
        One :class:`~crlib.records.DownloadResult` per distinct product, in input order.
    seconds
        Wall time of the batch.
    """

    results: tuple[DownloadResult, ...]
    seconds: float

    @property
    def retries(self) -> int:
        """Extra attempts beyond the first, summed over files."""
        return sum(max(r.attempts - 1, 0) for r in self.results)

    def count(self, status: str) -> int:
        """Number of results with ``status`` (``downloaded``, ``cached``, ``failed``)."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def bytes(self) -> int:
        """Bytes of all files now on disk."""
        return sum(r.size_bytes for r in self.results if r.status != "failed")


def safe_destination(data_root: Path, visit: str, filename: str) -> Path:
    """Where a product goes: ``<data_root>/archive/<visit>/<filename>``, never outside ``data_root``.

    Raises
    ------
    ValueError
        If the archive-supplied visit or file name is not a plain file name (path separators,
        ``..``, control characters, leading dots) or the result would leave ``data_root``.
    """
    for label, value in (("visit", visit), ("file name", filename)):
        if not _SAFE_NAME.match(value) or ".." in value:
            raise ValueError(f"unsafe {label} {value!r} supplied by the archive")
    root = Path(data_root).resolve()
    target = (root / "archive" / visit / filename).resolve()
    if not target.is_relative_to(root / "archive"):
        raise ValueError(f"product {filename!r} would be written outside {root}")
    return target


def file_md5(path: Path) -> str:
    """MD5 of a file as ``md5:<hex>``."""
    return f"md5:{file_hexdigest(path, 'md5')}"


class _Fetcher:
    """Downloads one product at a time per worker thread (one requests session per thread)."""

    def __init__(
        self,
        archive: Archive,
        *,
        policy: RetryPolicy,
        progress: ProgressCallback | None,
        chunk_bytes: int,
        sleep: Callable[[float], None],
    ) -> None:
        self.archive = archive
        self.policy = policy
        self.progress = progress
        self.chunk_bytes = chunk_bytes
        self.sleep = sleep
        self.headers = archive.request_headers()
        self._local = threading.local()

    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = requests.Session()
            session.headers["User-Agent"] = "crlib-downloader"
            self._local.session = session
        return session

    def _emit(self, obs: Observation, done: int, event: Any) -> None:
        if self.progress is not None:
            self.progress(DownloadProgress(obs.rootname, obs.product_filename, done, obs.size_bytes, event))

    # ------------------------------------------------------------------ transports
    def _transfer_http(self, url: str, part: Path, obs: Observation) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if obs.size_bytes is not None and offset >= obs.size_bytes:
            if offset == obs.size_bytes:
                return  # complete already; verified by the caller
            part.unlink()
            offset = 0
        headers = dict(self.headers)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        with self._session().get(url, headers=headers, stream=True, timeout=self.policy.timeout) as response:
            if response.status_code == 416:  # our partial file does not fit the server's: start over
                part.unlink(missing_ok=True)
                raise RetryableError("server refused the resume range; restarting the file")
            response.raise_for_status()
            mode = "ab" if offset and response.status_code == 206 else "wb"
            done = offset if mode == "ab" else 0
            with open(part, mode) as handle:
                for chunk in response.iter_content(chunk_size=self.chunk_bytes):
                    handle.write(chunk)
                    done += len(chunk)
                    self._emit(obs, done, "progress")
                handle.flush()
                os.fsync(handle.fileno())

    def _transfer_file(self, url: str, part: Path, obs: Observation) -> None:
        source = Path(unquote(urlparse(url).path))
        offset = part.stat().st_size if part.exists() else 0
        if offset > source.stat().st_size:
            part.unlink()
            offset = 0
        done = offset
        with open(source, "rb") as src, open(part, "ab" if offset else "wb") as dst:
            src.seek(offset)
            for block in iter(lambda: src.read(self.chunk_bytes), b""):
                dst.write(block)
                done += len(block)
                self._emit(obs, done, "progress")
            dst.flush()
            os.fsync(dst.fileno())

    # ------------------------------------------------------------------ one file
    def _verify(self, part: Path, obs: Observation) -> str:
        size = part.stat().st_size
        if obs.size_bytes is not None and size != obs.size_bytes:
            raise RetryableError(f"size {size} B differs from the archive's {obs.size_bytes} B")
        checksum = file_md5(part)
        if obs.checksum and obs.checksum.startswith("md5:") and obs.checksum.lower() != checksum:
            part.unlink()  # corrupt content cannot be resumed
            raise RetryableError(f"checksum {checksum} differs from the archive's {obs.checksum}")
        return checksum

    def fetch(self, obs: Observation, dest: Path) -> DownloadResult:
        if dest.exists():
            try:
                checksum = self._verify(dest, obs)
            except RetryableError as exc:
                log.warning("%s: existing file is bad (%s); downloading again", dest, exc)
                dest.unlink(missing_ok=True)
            else:
                self._emit(obs, dest.stat().st_size, "cached")
                return DownloadResult(obs.rootname, str(dest), dest.stat().st_size, checksum, 0, "cached")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        url = self.archive.download_url(obs)
        transfer = self._transfer_file if url.startswith("file:") else self._transfer_http
        self._emit(obs, part.stat().st_size if part.exists() else 0, "start")
        attempts = 0
        while True:
            attempts += 1
            try:
                transfer(url, part, obs)
                checksum = self._verify(part, obs)
                os.replace(part, dest)
                size = dest.stat().st_size
                self._emit(obs, size, "done")
                return DownloadResult(obs.rootname, str(dest), size, checksum, attempts, "downloaded")
            except Exception as exc:
                summary = describe_exception(exc)
                if not is_retryable(exc) or attempts >= self.policy.max_attempts:
                    reason = f"{summary} after {attempts} attempt(s)"
                    log.error("%s: download failed: %s", obs.product_filename, reason)
                    self._emit(obs, part.stat().st_size if part.exists() else 0, "failed")
                    return DownloadResult(obs.rootname, str(dest), 0, "", attempts, "failed", reason=reason)
                delay = self.policy.delay_s(attempts)
                log.info(
                    "%s: attempt %d failed (%s); retry in %.2f s",
                    obs.product_filename,
                    attempts,
                    summary,
                    delay,
                )
                self._emit(obs, part.stat().st_size if part.exists() else 0, "retry")
                self.sleep(delay)


def fetch_observations(
    archive: Archive,
    observations: Iterable[Observation],
    *,
    data_root: Path,
    concurrency: int = 4,
    policy: RetryPolicy | None = None,
    progress: ProgressCallback | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchReport:
    """Download each exposure's calibrated product into ``data_root/archive/<visit>/``.

    Parameters
    ----------
    archive
        Backend that lists the products and builds their URLs.
    observations
        Exposures to fetch; duplicates (same visit and file) are fetched once.
    data_root
        Root of crlib's working storage (``Settings.data_root``).
    concurrency
        Files in flight at once (``Settings.download_concurrency``).
    policy
        Attempts, backoff and timeouts per file.
    progress
        Called from worker threads with :class:`DownloadProgress` events.
    chunk_bytes
        Streaming chunk size in bytes.
    sleep
        Sleep between attempts (tests may shorten it).

    Returns
    -------
    FetchReport
        One result per distinct product; failures carry the reason, never raise.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    policy = policy or RetryPolicy()
    fetcher = _Fetcher(archive, policy=policy, progress=progress, chunk_bytes=chunk_bytes, sleep=sleep)
    unique: dict[Path, Observation] = {}
    early: list[DownloadResult] = []
    for obs in observations:
        try:
            dest = safe_destination(data_root, obs.visit, obs.product_filename)
        except ValueError as exc:
            early.append(DownloadResult(obs.rootname, "", 0, "", 0, "failed", reason=str(exc)))
            continue
        unique.setdefault(dest, obs)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="crlib-fetch") as pool:
        futures = [pool.submit(fetcher.fetch, obs, dest) for dest, obs in unique.items()]
        results = [future.result() for future in futures]
    report = FetchReport(results=tuple(early + results), seconds=time.perf_counter() - start)
    log.info(
        "fetched %d files (%d downloaded, %d cached, %d failed, %d retries) in %.1f s",
        len(report.results),
        report.count("downloaded"),
        report.count("cached"),
        report.count("failed"),
        report.retries,
        report.seconds,
    )
    return report
