"""``crlib db ...`` (schema, roles), ``crlib stats ...`` (CR statistics, performance), ``crlib bench db``."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from crlib.cli.app import app, bench_app

db_app = typer.Typer(help="Results database: schema migrations, roles, status.", no_args_is_help=True)
stats_app = typer.Typer(
    help="CR statistics and model performance over the results database.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(stats_app, name="stats")


class OutputFormat(StrEnum):
    """How ``crlib stats`` prints its answer."""

    table = "table"
    csv = "csv"
    json = "json"


def _open(*, upgrade: bool = False) -> tuple[Any, Any]:
    from crlib.config import load_settings
    from crlib.db.session import open_results_db

    return open_results_db(load_settings(), upgrade=upgrade)


# --------------------------------------------------------------------------- crlib db
@db_app.command("upgrade")
def upgrade_command(
    revision: Annotated[str, typer.Option(help="Target revision (default: newest).")] = "head",
) -> None:
    """Apply the schema migrations to the configured (or embedded) results database."""
    from crlib.db.migrate import current_revision, upgrade
    from crlib.db.urls import mask_url

    engine, _ = _open()
    before = current_revision(engine)
    after = upgrade(engine, revision=revision)
    typer.echo(f"{mask_url(engine.url.render_as_string())}: revision {before or '(empty)'} -> {after}")


@db_app.command("status")
def status_command() -> None:
    """Show the database URL (password masked), its schema revision and the summaries' refresh times."""
    from crlib.db.migrate import current_revision, head_revision
    from crlib.db.urls import mask_url

    engine, sessions = _open()
    current, head = current_revision(engine), head_revision()
    typer.echo(f"database: {mask_url(engine.url.render_as_string())}")
    typer.echo(
        f"revision: {current or '(empty)'} (newest: {head}"
        + ("" if current == head else "; run crlib db upgrade")
        + ")"
    )
    if current == head:
        from crlib.db.stats import summaries_refreshed_at

        with sessions() as session:
            for view, when in summaries_refreshed_at(session).items():
                typer.echo(f"{view}: refreshed {when.isoformat() if when else 'never'}")


@db_app.command("roles")
def roles_command(
    reader_password: Annotated[
        str | None,
        typer.Option(envvar="CRLIB_READER_PASSWORD", help="Let crlib_reader log in with this password."),
    ] = None,
    writer_password: Annotated[
        str | None,
        typer.Option(envvar="CRLIB_WRITER_PASSWORD", help="Let crlib_writer log in with this password."),
    ] = None,
) -> None:
    """Create crlib_writer (service) and read-only crlib_reader (statistics users) and grant them."""
    from crlib.db.roles import READER_ROLE, WRITER_ROLE, ensure_roles

    engine, _ = _open(upgrade=True)
    ensure_roles(engine, reader_password=reader_password, writer_password=writer_password)
    typer.echo(f"roles {WRITER_ROLE} (read/write) and {READER_ROLE} (read-only) are ready")


# --------------------------------------------------------------------------- crlib stats
def _filters(
    proposal: int | None,
    filters: list[str] | None,
    field_types: list[str] | None,
    since_text: str | None,
    until_text: str | None,
    model: str | None = None,
) -> Any:
    from crlib.db.stats import StatsFilter
    from crlib.profiles import FIELD_TYPES

    if proposal is not None and proposal < 1:
        raise click.BadParameter(f"{proposal} is not a proposal number", param_hint="--proposal")
    since, until = _date(since_text, "--since"), _date(until_text, "--until")
    for field_type in field_types or []:
        if field_type not in FIELD_TYPES:
            raise click.BadParameter(
                f"{field_type!r} is not one of {', '.join(FIELD_TYPES)}", param_hint="--field-type"
            )
    if since and until and since > until:
        raise click.BadParameter("--since is after --until", param_hint="--since")
    return StatsFilter(
        proposal_id=proposal,
        filters=tuple(f.upper() for f in filters or ()),
        field_types=tuple(field_types or ()),
        since=since,
        until=until,
        model=model,
    )


def _date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint=option) from None


def _emit(rows: list[dict[str, Any]], fmt: OutputFormat, *, title: str) -> None:
    if fmt is OutputFormat.json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    columns = list(rows[0]) if rows else []
    if fmt is OutputFormat.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        typer.echo(buffer.getvalue(), nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        numeric = bool(rows) and isinstance(rows[0][column], int | float)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    Console().print(table if rows else f"{title}: no data (record results, or refresh with --refresh)")


def _maybe_refresh(sessions: Any, refresh: bool) -> None:
    if refresh:
        from crlib.db.stats import refresh_summaries

        with sessions() as session:
            refresh_summaries(session)


ProposalOpt = Annotated[int | None, typer.Option("--proposal", help="Only this HST proposal.")]
FilterOpt = Annotated[list[str] | None, typer.Option("--filter", help="Only these filters (repeatable).")]
FieldTypeOpt = Annotated[
    list[str] | None, typer.Option("--field-type", help="Only these field types (repeatable).")
]
SinceOpt = Annotated[str | None, typer.Option("--since", help="Observed on or after (YYYY-MM-DD).")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Observed on or before (YYYY-MM-DD).")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="table, csv or json.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Also write a plot to this PNG file.")]
RefreshOpt = Annotated[bool, typer.Option("--refresh", help="Refresh the summaries first.")]


@stats_app.command("cr-rate")
def cr_rate_command(
    by: Annotated[
        list[str] | None,
        typer.Option("--by", help="Group by: year, month, day, filter, field_type, chip, exptime."),
    ] = None,
    proposal: ProposalOpt = None,
    filters: FilterOpt = None,
    field_types: FieldTypeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    plot: PlotOpt = None,
    refresh: RefreshOpt = False,
) -> None:
    """CR rate (events cm^-2 s^-1, exptime-weighted) and counts by month, filter, chip, exposure time."""
    from crlib.db.stats import CR_RATE_DIMENSIONS, cr_rate

    dims = by or ["month"]
    for dim in dims:
        if dim not in CR_RATE_DIMENSIONS:
            raise click.BadParameter(
                f"{dim!r}; choose from {', '.join(CR_RATE_DIMENSIONS)}", param_hint="--by"
            )
    where = _filters(proposal, filters, field_types, since, until)
    _, sessions = _open()
    _maybe_refresh(sessions, refresh)
    with sessions() as session:
        rows = cr_rate(session, by=dims, where=where)
    for row in rows:
        for key, value in row.items():
            if isinstance(value, dt.date):
                row[key] = value.isoformat()
    _emit(rows, fmt, title="CR rate by " + " x ".join(dims))
    if plot is not None:
        from crlib.db.plots import plot_cr_rate

        plot_cr_rate(rows, dims=dims, path=plot)
        typer.echo(f"plot written to {plot}", err=True)


@stats_app.command("performance")
def performance_command(
    by: Annotated[
        list[str] | None, typer.Option("--by", help="Group by: model, field_type, filter, month, year.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name or name:version.")] = None,
    proposal: ProposalOpt = None,
    filters: FilterOpt = None,
    field_types: FieldTypeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    plot: PlotOpt = None,
    refresh: RefreshOpt = False,
) -> None:
    """Pooled model performance (TPR at FPR 0.05% and 0.5%) by model version x field type x filter."""
    from crlib.db.stats import PERFORMANCE_DIMENSIONS, model_performance

    dims = by or ["model", "field_type", "filter"]
    for dim in dims:
        if dim not in PERFORMANCE_DIMENSIONS:
            raise click.BadParameter(
                f"{dim!r}; choose from {', '.join(PERFORMANCE_DIMENSIONS)}", param_hint="--by"
            )
    where = _filters(proposal, filters, field_types, since, until, model)
    _, sessions = _open()
    _maybe_refresh(sessions, refresh)
    with sessions() as session:
        results = model_performance(session, by=dims, where=where)
    _emit([r.as_dict() for r in results], fmt, title="Model performance (pooled ROC) by " + " x ".join(dims))
    if plot is not None:
        from crlib.db.plots import plot_roc_curves

        plot_roc_curves(results, path=plot)
        typer.echo(f"plot written to {plot}", err=True)


@stats_app.command("pipeline")
def pipeline_command(
    since: SinceOpt = None, until: UntilOpt = None, fmt: FormatOpt = OutputFormat.table
) -> None:
    """Pipeline runs per night (UTC) and DAG, by status."""
    from crlib.db.stats import pipeline_status

    where = _filters(None, None, None, since, until)
    _, sessions = _open()
    with sessions() as session:
        rows = pipeline_status(session, where=where)
    _emit(rows, fmt, title="Pipeline status per night")


@stats_app.command("refresh")
def refresh_command(
    blocking: Annotated[
        bool, typer.Option("--blocking", help="Plain REFRESH (faster for big changes; blocks readers).")
    ] = False,
) -> None:
    """Recompute the statistics summaries from the recorded results."""
    from crlib.db.stats import refresh_summaries

    _, sessions = _open()
    with sessions() as session:
        timings = refresh_summaries(session, concurrently=not blocking)
    for view, seconds in timings.items():
        typer.echo(f"{view}: {seconds:.2f} s")


# --------------------------------------------------------------------------- crlib bench db
@bench_app.command("db")
def bench_db_command(
    exposures: Annotated[int, typer.Option(help="Synthetic exposures to generate (>= 100).")] = 1_000_000,
    bins: Annotated[
        int | None, typer.Option(help="Histogram bins per metrics row (default: crlib.metrics bins).")
    ] = None,
    record_rows: Annotated[int, typer.Option(help="Metrics rows recorded for the throughput figure.")] = 5000,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Statistics latency over a generated archive and bulk-recording rate, in a scratch database."""
    from crlib.db.bench import RECORD_TARGET_ROWS_PER_S, STATS_TARGET_S, run_db_benchmark

    if exposures < 100:
        raise click.BadParameter(f"{exposures} is below 100", param_hint="--exposures")
    if bins is not None and bins < 2:
        raise click.BadParameter(f"{bins} is below 2", param_hint="--bins")
    if record_rows < 10:
        raise click.BadParameter(f"{record_rows} is below 10", param_hint="--record-rows")

    engine, _ = _open()
    report = run_db_benchmark(engine, exposures=exposures, bins=bins, record_rows=min(record_rows, exposures))
    rows: list[dict[str, Any]] = []
    for label, seconds in report.timings.items():
        rows.append({"measure": label, "value": round(seconds, 3), "unit": "s", "target": "", "ratio": ""})
    for label, seconds in report.queries.items():
        rows.append(
            {
                "measure": f"query: {label}",
                "value": round(seconds, 4),
                "unit": "s",
                "target": f"<= {STATS_TARGET_S:g}",
                "ratio": f"{STATS_TARGET_S / max(seconds, 1e-9):.1f}x under target",
            }
        )
    base = report.references["cr_rate by month from base tables"]
    rows.append(
        {
            "measure": "reference: cr_rate by month from base tables",
            "value": round(base, 3),
            "unit": "s",
            "target": "",
            "ratio": f"summary {base / max(report.queries['cr_rate by month'], 1e-9):.0f}x faster",
        }
    )
    rows.append(
        {
            "measure": "record_metrics (COPY + upsert)",
            "value": round(report.record_rows_per_s),
            "unit": "rows/s",
            "target": f">= {RECORD_TARGET_ROWS_PER_S:g}",
            "ratio": f"{report.record_rows_per_s / report.reference_rows_per_s:.0f}x ORM row-by-row "
            f"({report.reference_rows_per_s:.0f} rows/s)",
        }
    )
    for table, size in report.table_sizes.items():
        rows.append({"measure": f"size {table}", "value": size, "unit": "", "target": "", "ratio": ""})
    _emit(rows, fmt, title=f"crlib bench db: {report.exposures:,} exposures, {report.bins} histogram bins")
    if not report.passed():
        typer.echo("some targets were missed (see the table)", err=True)
