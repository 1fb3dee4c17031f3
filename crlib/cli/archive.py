"""``crlib poll``, ``crlib fetch``, ``crlib screen`` and ``crlib bench screen``."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from crlib.cli.app import app, bench_app, fail

if TYPE_CHECKING:
    from crlib.archive.poll import PollResult
    from crlib.archive.retry import RetryPolicy
    from crlib.config import Settings

ArchiveOpt = Annotated[
    str | None, typer.Option("--archive", help="'mast' or 'local:DIR' (default: CRLIB_ARCHIVE).")
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=0.1, max=600, help="Socket read timeout per request, seconds.")
]
RetriesOpt = Annotated[
    int, typer.Option("--retries", min=0, max=50, help="Retries per request after the first try.")
]
BackoffOpt = Annotated[
    float, typer.Option("--backoff", min=0.0, max=300, help="First retry delay, seconds (doubles each time).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _policy(timeout: float, retries: int, backoff: float) -> RetryPolicy:
    from crlib.archive.retry import RetryPolicy

    return RetryPolicy(
        max_attempts=retries + 1,
        backoff_base_s=backoff,
        read_timeout_s=timeout,
        connect_timeout_s=min(timeout, 10.0),
    )


def _settings(archive: str | None) -> Settings:
    from crlib.config import load_settings

    return load_settings(archive=archive)


def _parse_date(value: str, option: str) -> float:
    from crlib.archive.poll import datetime_to_mjd

    try:
        return datetime_to_mjd(datetime.fromisoformat(value))
    except ValueError:
        fail(f"{option}: {value!r} is not an ISO date such as 2024-05-01 or 2024-05-01T12:00", code=2)
        raise


def _write_atomic(path: Path, text: str) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temp, path)


def _poll_document(result: PollResult) -> dict[str, Any]:
    from crlib.records import to_dict

    return {
        "schema": "crlib-poll/1",
        "source": result.source,
        "since_mjd": result.since_mjd,
        "until_mjd": result.until_mjd,
        "proposal_id": result.proposal_id,
        "visits": {visit: [obs.rootname for obs in members] for visit, members in result.visits.items()},
        "observations": [to_dict(obs) for obs in result.observations],
    }


def _record_poll(settings: Settings, result: PollResult) -> Path:
    """Write the poll manifest under ``data_root/archive/polls`` (and ``latest.json``)."""
    stamp = datetime.now().astimezone().strftime("%Y%m%dT%H%M%S%f")
    text = json.dumps(_poll_document(result), indent=2, default=str)
    polls = settings.data_root / "archive" / "polls"
    path = polls / f"poll-{stamp}.json"
    _write_atomic(path, text)
    _write_atomic(polls / "latest.json", text)
    return path


@app.command("poll")
def poll_command(
    archive: ArchiveOpt = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Release date lower bound (ISO); overrides the watermark.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Release date upper bound (ISO; default now).")
    ] = None,
    proposal: Annotated[
        int | None,
        typer.Option("--proposal", min=1, help="Every visit of this proposal (watermark untouched)."),
    ] = None,
    no_advance: Annotated[
        bool, typer.Option("--no-advance", help="Do not move the watermark (dry run).")
    ] = False,
    timeout: TimeoutOpt = 60.0,
    retries: RetriesOpt = 5,
    backoff: BackoffOpt = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Find newly released visits (since the archive's watermark) or all visits of a proposal."""
    from crlib.archive import archive_from_settings
    from crlib.archive.poll import commit_poll, poll_proposal, poll_released
    from crlib.archive.watermark import JsonWatermarkStore

    settings = _settings(archive)
    source = archive_from_settings(settings, policy=_policy(timeout, retries, backoff))
    store = JsonWatermarkStore.under(settings.data_root)
    if proposal is not None:
        if since or until:
            fail("--proposal cannot be combined with --since/--until", code=2)
        result = poll_proposal(source, proposal)
    else:
        since_mjd = _parse_date(since, "--since") if since else None
        until_mjd = _parse_date(until, "--until") if until else None
        result = poll_released(source, store, since_mjd=since_mjd, until_mjd=until_mjd)
    manifest = _record_poll(settings, result)
    watermark = None
    if proposal is None and since is None and not no_advance:
        watermark = commit_poll(store, result)
    summary = {
        "source": result.source,
        "since_mjd": result.since_mjd,
        "until_mjd": result.until_mjd,
        "proposal_id": result.proposal_id,
        "visits": {visit: [obs.rootname for obs in members] for visit, members in result.visits.items()},
        "n_visits": len(result.visits),
        "n_exposures": len(result.observations),
        "manifest": str(manifest),
        "watermark_mjd": watermark,
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{len(result.visits)} visit(s), {len(result.observations)} exposure(s) from {result.source}"
    )
    for column in ("visit", "proposal", "exposures", "filters", "released (MJD)"):
        table.add_column(column)
    for visit, members in result.visits.items():
        filters = ",".join(sorted({obs.filter for obs in members}))
        release = max(obs.release_mjd for obs in members)
        table.add_row(visit, str(members[0].proposal_id), str(len(members)), filters, f"{release:.3f}")
    console = Console()
    console.print(table)
    console.print(f"manifest: {manifest}" + (f"; watermark now MJD {watermark:.5f}" if watermark else ""))


@app.command("fetch")
def fetch_command(
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            exists=True,
            dir_okay=False,
            help="Poll manifest (default: <data_root>/archive/polls/latest.json).",
        ),
    ] = None,
    archive: ArchiveOpt = None,
    visit: Annotated[
        list[str] | None, typer.Option("--visit", help="Only these visits (repeatable).")
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", min=1, max=64, help="Parallel downloads (CRLIB_DOWNLOAD_CONCURRENCY)."),
    ] = None,
    timeout: TimeoutOpt = 60.0,
    retries: RetriesOpt = 5,
    backoff: BackoffOpt = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Download a poll's calibrated products into <data_root>/archive/<visit>/ (resumable, verified)."""
    from crlib.archive import archive_from_settings
    from crlib.archive.download import fetch_observations
    from crlib.errors import InputDataError
    from crlib.records import Observation, to_dict

    settings = _settings(archive)
    path = manifest or settings.data_root / "archive" / "polls" / "latest.json"
    if not path.is_file():
        raise InputDataError(path, "no poll manifest", fix="run `crlib poll` first or pass --manifest")
    try:
        document = json.loads(path.read_text())
        observations = [Observation(**row) for row in document["observations"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputDataError(
            path, f"not a crlib poll manifest ({exc})", fix="run `crlib poll` again"
        ) from None
    if visit:
        observations = [obs for obs in observations if obs.visit in set(visit)]
    source = archive_from_settings(settings, policy=_policy(timeout, retries, backoff))
    if document.get("source") and document["source"] != source.source:
        raise InputDataError(
            path,
            f"manifest comes from {document['source']}, not {source.source}",
            fix="pass the same --archive as for `crlib poll`",
        )
    workers = concurrency or settings.download_concurrency
    policy = _policy(timeout, retries, backoff)
    if as_json:
        report = fetch_observations(
            source, observations, data_root=settings.data_root, concurrency=workers, policy=policy
        )
    else:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        from crlib.archive.download import DownloadProgress

        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()
        ) as bar:
            total = sum(obs.size_bytes or 0 for obs in observations) or None
            task = bar.add_task(f"fetching {len(observations)} file(s)", total=total)
            done: dict[str, int] = {}

            def on_progress(event: DownloadProgress) -> None:
                done[event.filename] = event.bytes_done
                bar.update(task, completed=sum(done.values()))

            report = fetch_observations(
                source,
                observations,
                data_root=settings.data_root,
                concurrency=workers,
                policy=policy,
                progress=on_progress,
            )
    summary = {
        "downloaded": report.count("downloaded"),
        "cached": report.count("cached"),
        "failed": report.count("failed"),
        "retries": report.retries,
        "bytes": report.bytes,
        "seconds": round(report.seconds, 3),
        "results": [to_dict(result) for result in report.results],
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(
            f"{summary['downloaded']} downloaded, {summary['cached']} already present, "
            f"{summary['failed']} failed, "
            f"{summary['retries']} retries, {report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s"
        )
        for result in report.results:
            if result.status == "failed":
                typer.echo(f"failed: {result.rootname}: {result.reason}", err=True)
    if report.count("failed"):
        raise typer.Exit(code=1)


@app.command("screen")
def screen_command(
    files: Annotated[list[Path], typer.Argument(help="FLC/FLT files (.fits or .fits.gz).")],
    instrument: Annotated[
        str | None,
        typer.Option("--instrument", help="Screening profile: acs_wfc or wfc3_uvis (CRLIB_INSTRUMENT)."),
    ] = None,
    as_json: JsonOpt = False,
    data_check: Annotated[
        bool,
        typer.Option(
            "--data-check/--no-data-check",
            help="Also check each chip's pixels (all-NaN, mostly NaN, constant): ~20 ms per full-size FLC.",
        ),
    ] = True,
) -> None:
    """Screen exposures by their headers (drizzlepac single-visit rules, calibration state, training
    rules), their extensions (SCI/ERR/DQ for every chip in the file) and a cheap check of their pixels."""
    from crlib.config import load_settings
    from crlib.screening import get_screening_profile, screen_files

    name = instrument or load_settings().instrument
    try:
        profile = get_screening_profile(name)
    except KeyError as exc:
        fail(f"--instrument: {exc.args[0]}", code=2)
        raise
    verdicts = screen_files(files, profile=profile, data_check=data_check)
    if as_json:
        rows = [
            {
                "file": v.file,
                "rootname": v.rootname,
                "verdict": v.verdict,
                "usable_for_training": v.usable_for_training,
                "reasons": [
                    {
                        "rule": r.rule,
                        "keyword": r.keyword,
                        "value": r.value,
                        "message": r.message,
                        "severity": r.severity,
                    }
                    for r in v.reasons
                ],
                "header_summary": v.header_summary,
            }
            for v in verdicts
        ]
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"screening ({profile.instrument.mast_instrument_name} profile)")
    for column in ("file", "verdict", "training", "reasons"):
        table.add_column(column)
    for v in verdicts:
        reasons = "\n".join(f"[{r.severity}] {r.rule}: {r.message}" for r in v.reasons) or "-"
        table.add_row(Path(v.file).name, v.verdict, "yes" if v.usable_for_training else "no", reasons)
    Console().print(table)


@bench_app.command("screen")
def bench_screen_command(
    n: Annotated[int, typer.Option("--n", min=1, max=1_000_000, help="Headers to screen.")] = 1000,
    template: Annotated[
        Path | None, typer.Option("--template", exists=True, dir_okay=False, help="FITS file to replicate.")
    ] = None,
) -> None:
    """Screen N header files (hard links to one real FLC header); report seconds and headers/s.

    The reference is the naive reader: astropy opening each file and parsing every extension header.
    """
    import os
    import tempfile
    import time

    from astropy.io import fits

    from crlib.profiles import ACS_WFC
    from crlib.screening import screen_file

    source = template or ACS_WFC.template_path()
    with tempfile.TemporaryDirectory(prefix="crlib-bench-screen-") as tmp:
        paths = []
        for index in range(n):
            path = Path(tmp) / f"j{index:05d}xq_flc.fits"
            try:
                os.link(source, path)
            except OSError:
                path.write_bytes(Path(source).read_bytes())
            paths.append(path)
        start = time.perf_counter()
        # headers only: the template has header-only chips (the pixel check is measured separately)
        verdicts = [screen_file(path, data_check=False) for path in paths]
        seconds = time.perf_counter() - start
        sample = paths[: min(n, 200)]
        start = time.perf_counter()
        for path in sample:
            with fits.open(path) as hdus:
                for hdu in hdus:
                    _ = hdu.header
        reference = (time.perf_counter() - start) / len(sample) * n
    accepted = sum(v.verdict == "accept" for v in verdicts)
    typer.echo(
        f"screened {n} headers in {seconds:.2f} s ({n / seconds:.0f} headers/s, {accepted} accepted); "
        f"astropy reading every extension header: {reference:.2f} s (x{reference / seconds:.1f} slower)"
    )
