"""``crlib stats ...`` (CR statistics, performance, training splits, runs) and ``crlib bench db``."""

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
from crlib.cli.database import open_database

stats_app = typer.Typer(
    help="CR statistics and model performance over the results database.", no_args_is_help=True
)
app.add_typer(stats_app, name="stats")


class OutputFormat(StrEnum):
    """How ``crlib stats`` prints its answer."""

    table = "table"
    csv = "csv"
    json = "json"


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


def _emit(rows: list[dict[str, Any]], fmt: OutputFormat, *, title: str, note: str | None = None) -> None:
    """Print ``rows``; ``note`` (how current the answer is) goes under a table, or to stderr."""
    if note and fmt is not OutputFormat.table:
        typer.echo(note, err=True)
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

    table = Table(title=title, caption=note)
    for column in columns:
        numeric = bool(rows) and isinstance(rows[0][column], int | float)
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*("" if row[c] is None else str(row[c]) for c in columns))
    Console().print(table if rows else f"{title}: no data recorded for this selection")


def _maybe_refresh(sessions: Any, refresh: bool) -> None:
    if refresh:
        from crlib.db.stats import refresh_summaries

        with sessions() as session:
            refresh_summaries(session)
            session.commit()


def _freshness(session: Any, proposal: int | None) -> str:
    """How the answer was computed, for the note under the output."""
    if proposal is not None:
        return "answered from the recorded rows of the proposal (always current)"
    from crlib.db.summaries import summary_state

    return summary_state(session).describe()


ProposalOpt = Annotated[int | None, typer.Option("--proposal", help="Only this HST proposal.")]


FilterOpt = Annotated[list[str] | None, typer.Option("--filter", help="Only these filters (repeatable).")]


FieldTypeOpt = Annotated[
    list[str] | None, typer.Option("--field-type", help="Only these field types (repeatable).")
]


SinceOpt = Annotated[str | None, typer.Option("--since", help="Observed on or after (YYYY-MM-DD).")]


UntilOpt = Annotated[str | None, typer.Option("--until", help="Observed on or before (YYYY-MM-DD).")]


FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="table, csv or json.")]


PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Also write a plot to this PNG file.")]


RefreshOpt = Annotated[
    bool,
    typer.Option(
        "--refresh",
        help="Refresh the summaries first (answers are exact either way; this makes them cheaper).",
    ),
]


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
    _, sessions = open_database()
    _maybe_refresh(sessions, refresh)
    with sessions() as session:
        rows = cr_rate(session, by=dims, where=where)
        note = _freshness(session, proposal)
    for row in rows:
        for key, value in row.items():
            if isinstance(value, dt.date):
                row[key] = value.isoformat()
    _emit(rows, fmt, title="CR rate by " + " x ".join(dims), note=note)
    if plot is not None:
        from crlib.cli.plots import plot_cr_rate

        plot_cr_rate(rows, dims=dims, path=plot)
        typer.echo(f"plot written to {plot}", err=True)


def _truth_statuses(values: list[str] | None) -> tuple[str, ...]:
    """``--truth-status ok,suspect`` (comma-separated or repeated) as a checked tuple."""
    from crlib.db.stats import DEFAULT_TRUTH_STATUSES
    from crlib.db.vocabulary import METRIC_TRUTH_STATUSES

    if not values:
        return DEFAULT_TRUTH_STATUSES
    chosen = [v.strip() for value in values for v in value.split(",") if v.strip()]
    for status in chosen:
        if status not in METRIC_TRUTH_STATUSES:
            raise click.BadParameter(
                f"{status!r} is not one of {', '.join(METRIC_TRUTH_STATUSES)}", param_hint="--truth-status"
            )
    return tuple(s for s in METRIC_TRUTH_STATUSES if s in chosen)


def _performance_note(session: Any, where: Any, results: list[Any], proposal: int | None) -> str:
    """What was pooled (splits, truth), what each model version's ``unseen`` rests on, freshness."""
    from crlib.db.training_splits import training_splits
    from crlib.db.vocabulary import TRAINING_SPLITS

    lines = [where.describe_selection()]
    hints = []
    if not set(TRAINING_SPLITS) & set(where.splits or TRAINING_SPLITS):
        hints.append("--include-training adds the visits each version was trained or validated on")
    if where.truth_statuses == ("ok",):
        hints.append("--truth-status ok,suspect adds suspect truth")
    if hints:
        lines.append("(" + "; ".join(hints) + ")")
    pooled = {model for row in results for model in row.models}
    unrecorded = False
    for state in training_splits(session):
        if f"{state.model_name}:{state.version}" in pooled:
            lines.append(state.describe())
            unrecorded |= not state.recorded and state.source == "mlflow"
    if unrecorded:
        lines.append(
            "(crlib stats training-splits --from-registry records the training manifests MLflow holds)"
        )
    lines += _top_bin_ties(results)
    lines.append(_freshness(session, proposal))
    return "\n".join(lines)


def _top_bin_ties(results: list[Any]) -> list[str]:
    """One line per group whose TPR at an FPR point is read inside the top score bin's tie."""
    from crlib.metrics.roc import top_bin_tie_note

    lines = []
    for row in results:
        note = top_bin_tie_note(row.fpr, list(row.tpr_at_fpr))
        if note:
            label = ", ".join(f"{name}={value}" for name, value in row.group.items()) or "all"
            lines.append(f"{label}: {note}")
    return lines


@stats_app.command("performance")
def performance_command(
    by: Annotated[
        list[str] | None,
        typer.Option(
            "--by", help="Group by: model, field_type, filter, month, year, split, truth_status, border."
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", help="Model name or name:version.")] = None,
    proposal: ProposalOpt = None,
    filters: FilterOpt = None,
    field_types: FieldTypeOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    include_training: Annotated[
        bool,
        typer.Option(
            "--include-training",
            help="Also pool exposures whose visit was in the train or validation split of the model "
            "version that predicted them (default: only test and unseen visits).",
        ),
    ] = False,
    truth_status: Annotated[
        list[str] | None,
        typer.Option(
            "--truth-status",
            help="Truth statuses to pool, comma-separated: ok, suspect, unknown (default: ok).",
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
    plot: PlotOpt = None,
    refresh: RefreshOpt = False,
) -> None:
    """Pooled model performance (TPR at FPR 0.05% and 0.5%) by model version x field type x filter.

    By default only exposures the model version never learnt from (split test or unseen) scored
    against truth whose status is ok are pooled; the output says what was pooled.
    """
    import dataclasses

    from crlib.db.stats import DEFAULT_SPLITS, PERFORMANCE_DIMENSIONS, model_performance
    from crlib.db.vocabulary import SPLITS

    dims = by or ["model", "field_type", "filter"]
    for dim in dims:
        if dim not in PERFORMANCE_DIMENSIONS:
            raise click.BadParameter(
                f"{dim!r}; choose from {', '.join(PERFORMANCE_DIMENSIONS)}", param_hint="--by"
            )
    where = dataclasses.replace(
        _filters(proposal, filters, field_types, since, until, model),
        splits=SPLITS if include_training else DEFAULT_SPLITS,
        truth_statuses=_truth_statuses(truth_status),
    )
    _, sessions = open_database()
    _maybe_refresh(sessions, refresh)
    with sessions() as session:
        results = model_performance(session, by=dims, where=where)
        note = _performance_note(session, where, results, proposal)
    _emit(
        [r.as_dict() for r in results],
        fmt,
        title="Model performance (pooled ROC) by " + " x ".join(dims),
        note=note,
    )
    if plot is not None:
        from crlib.cli.plots import plot_roc_curves

        plot_roc_curves(results, path=plot)
        typer.echo(f"plot written to {plot}", err=True)


@stats_app.command("training-splits")
def training_splits_command(
    model: Annotated[
        str | None, typer.Argument(help="Model name or name:version (default: every model).")
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            help="Record this training manifest for MODEL (name:version): a patch dataset's "
            "manifest.json or the training run's dataset/manifest.json.",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Dataset id of --manifest (default: its directory's name)."),
    ] = None,
    external: Annotated[
        bool,
        typer.Option(
            "--external",
            help="Record MODEL as weights crlib did not train (deepCR's shipped models): every visit unseen.",
        ),
    ] = False,
    from_registry: Annotated[
        bool,
        typer.Option(
            "--from-registry",
            help="Record every registered version's training manifest (MODEL: name[:version]) from MLflow, "
            "through its chain of starting versions; deepCR's shipped weights as external.",
        ),
    ] = False,
    fmt: FormatOpt = OutputFormat.table,
) -> None:
    """Show (or record) what each model version was trained on, which decides the split of its scores."""
    from crlib.db.training_splits import record_training_splits, training_splits
    from crlib.db.vocabulary import EXTERNAL_TRAINING

    if from_registry:
        if manifest is not None or external:
            raise click.BadParameter(
                "--from-registry reads the manifests from MLflow: leave out --manifest/--external",
                param_hint="--from-registry",
            )
        _sync_from_registry(model)

    if manifest is not None or external:
        name, _, version = (model or "").partition(":")
        if not name or not version:
            raise click.BadParameter("give the model version as name:version", param_hint="MODEL")
        if manifest is not None and external:
            raise click.BadParameter("--manifest and --external exclude each other", param_hint="--external")
        splits, dataset_id = ({}, EXTERNAL_TRAINING) if manifest is None else _manifest_splits(manifest)
        dataset_id = dataset or dataset_id
        _, sessions = open_database()
        with sessions() as session:
            count = record_training_splits(
                session, model_name=name, version=version, splits=splits, dataset_id=dataset_id
            )
        typer.echo(f"{name}:{version}: recorded {count} visits of dataset {dataset_id}", err=True)
    _, sessions = open_database()
    with sessions() as session:
        states = training_splits(session, model=model)
    rows = [
        {
            "model": f"{s.model_name}:{s.version}",
            "source": s.source,
            "training_dataset": s.training_dataset,
            **s.visits,
            "meaning": s.describe().split(": ", 1)[1],
        }
        for s in states
    ]
    _emit(rows, fmt, title="Training data of each model version")


def _sync_from_registry(model: str | None) -> None:
    """``crlib stats training-splits --from-registry``: record what MLflow knows, say what it did."""
    from crlib.config import load_settings
    from crlib.registry.decisions import sync_training_splits
    from crlib.registry.versions import registered_model_name

    settings = load_settings()
    name, _, version = (model or "").partition(":")
    name = name or registered_model_name(settings.instrument)
    _, sessions = open_database(upgrade=True)
    with sessions() as session:
        found = sync_training_splits(session, settings.resolved_mlflow_uri(), name, version=version or None)
    for number, splits in sorted(found.items(), key=lambda item: int(item[0])):
        if splits is None:
            typer.echo(
                f"{name}:{number}: no readable training manifest in MLflow; left as recorded", err=True
            )
        else:
            typer.echo(
                f"{name}:{number}: recorded {len(splits.splits)} visits of dataset {splits.dataset_id}",
                err=True,
            )


def _manifest_splits(path: Path) -> tuple[dict[str, str], str]:
    """``({visit: split}, dataset id)`` from a patch dataset's ``manifest.json``."""
    from crlib.errors import InputDataError

    try:
        document = json.loads(path.read_text())
        visits = {str(v): str(entry["split"]) for v, entry in document["visits"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputDataError(path, f"not a training manifest with visits and their splits ({exc})") from None
    return visits, path.resolve().parent.name


@stats_app.command("pipeline")
def pipeline_command(
    since: SinceOpt = None, until: UntilOpt = None, fmt: FormatOpt = OutputFormat.table
) -> None:
    """Pipeline runs per night (UTC) and DAG, by status (success, partial, failed, abandoned, unfinished).

    Runs still ``running`` whose process is gone, or without a heartbeat for
    CRLIB_RUN_LEASE_MINUTES, are recorded as ``abandoned`` first.
    """
    import datetime as dt

    from crlib.config import load_settings
    from crlib.db.runs import reap_abandoned
    from crlib.db.stats import pipeline_status

    where = _filters(None, None, None, since, until)
    _, sessions = open_database()
    with sessions() as session:
        reaped = reap_abandoned(session, lease=dt.timedelta(minutes=load_settings().run_lease_minutes))
        rows = pipeline_status(session, where=where)
    for run_id in reaped:
        typer.echo(f"run {run_id} recorded as abandoned (see its message)", err=True)
    _emit(rows, fmt, title="Pipeline status per night")


@stats_app.command("refresh")
def refresh_command(
    blocking: Annotated[
        bool, typer.Option("--blocking", help="One transaction for everything (all or nothing).")
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Rebuild every summary from the recorded rows (whole archive).")
    ] = False,
) -> None:
    """Fold the (month x filter) cells changed since the last refresh into the statistics summaries."""
    from crlib.db.stats import refresh_summaries
    from crlib.db.summaries import summary_state

    _, sessions = open_database()
    with sessions() as session:
        pending = summary_state(session).pending_cells
        session.commit()  # end the read's transaction, so the refresh commits its own batches
        timings = refresh_summaries(session, concurrently=not blocking, full=full)
        session.commit()
        state = summary_state(session)
    typer.echo(f"{'all' if full else pending} changed month x filter cell(s) refreshed")
    for table, seconds in timings.items():
        typer.echo(f"{table}: {seconds:.2f} s")
    typer.echo(state.describe())


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
    from crlib.bench.database import RECORD_TARGET_ROWS_PER_S, STATS_TARGET_S, run_db_benchmark

    if exposures < 100:
        raise click.BadParameter(f"{exposures} is below 100", param_hint="--exposures")
    if bins is not None and bins < 2:
        raise click.BadParameter(f"{bins} is below 2", param_hint="--bins")
    if record_rows < 10:
        raise click.BadParameter(f"{record_rows} is below 10", param_hint="--record-rows")

    engine, _ = open_database()
    report = run_db_benchmark(engine, exposures=exposures, bins=bins, record_rows=min(record_rows, exposures))
    rows: list[dict[str, Any]] = []

    def add(measure: str, value: Any, unit: str, target: str = "", ratio: str = "") -> None:
        rows.append({"measure": measure, "value": value, "unit": unit, "target": target, "ratio": ratio})

    for when, load in report.load_average.items():
        add(f"load average at {when} (1/5/15 min)", " / ".join(f"{v:.2f}" for v in load), "")
    for label, seconds in report.timings.items():
        if label.startswith("changed cells"):
            add(label, int(seconds), "cells")
        else:
            add(label, round(seconds, 3), "s")
    for group, queries in (("query", report.queries), ("query with changed cells", report.live_queries)):
        for label, seconds in queries.items():
            add(
                f"{group}: {label}",
                round(seconds, 4),
                "s",
                f"<= {STATS_TARGET_S:g}",
                f"{STATS_TARGET_S / max(seconds, 1e-9):.1f}x under target"
                if seconds <= STATS_TARGET_S
                else f"{seconds / STATS_TARGET_S:.1f}x over target",
            )
    rate = report.record_rows_per_s
    add(
        f"record_metrics, {report.record_rows} rows in one call",
        round(rate),
        "rows/s",
        f">= {RECORD_TARGET_ROWS_PER_S:g}",
        f"{rate / RECORD_TARGET_ROWS_PER_S:.2f}x target; "
        f"{rate / max(report.reference_rows_per_s, 1e-9):.0f}x ORM row by row",
    )
    add("record_metrics, replacing the same rows", round(report.rerecord_rows_per_s), "rows/s")
    add("record_metrics, one exposure per call", round(report.single_row_calls_per_s), "calls/s")
    add("reference: ORM, one row per transaction", round(report.reference_rows_per_s), "rows/s")
    add("storage per metrics row (4 histograms)", round(report.bytes_per_metrics_row), "bytes")
    for table, size in report.table_sizes.items():
        add(f"size {table}", size, "")
    _emit(rows, fmt, title=f"crlib bench db: {report.exposures:,} exposures, {report.bins} histogram bins")
    if not report.passed():
        typer.echo("some targets were missed (see the table)", err=True)
