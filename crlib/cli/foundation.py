"""``crlib config``, ``crlib demo``, ``crlib run`` and ``crlib bench dag``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from crlib.cli.app import app, bench_app


@app.command("config")
def config_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Print the effective settings (environment CRLIB_*), secrets masked."""
    from crlib.config import load_settings

    shown = load_settings().masked()
    if as_json:
        typer.echo(json.dumps(shown, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="crlib settings (env prefix CRLIB_)")
    table.add_column("setting")
    table.add_column("value")
    for key, value in shown.items():
        table.add_row(key, str(value))
    Console().print(table)


@app.command("demo")
def demo_command(
    out: Annotated[
        str | None, typer.Option(help="Parent of the demo archive-<stamp>/ (default: <data_root>/demo).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 2026,
) -> None:
    """Run the main job end to end on the embedded defaults (simulated archive)."""
    from pathlib import Path

    from crlib.config import load_settings
    from crlib.harness.demo import run_demo

    settings = load_settings()
    summary = run_demo(settings, out=Path(out) if out else None, seed=seed)
    typer.echo(summary)


@app.command("run")
def run_command(
    proposal: Annotated[int | None, typer.Option(help="Reprocess this proposal instead of polling.")] = None,
    visit: Annotated[
        list[str] | None, typer.Option(help="With --proposal: only these visits (ipppss, any case).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default: the profile's).")] = None,
    redo: Annotated[
        list[str] | None,
        typer.Option(
            help="Stage to compute afresh (repeatable: fetch, screen, truth, infer, score); stages not "
            "named reuse what earlier runs produced while it is still valid. Default: redo all."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Run the whole ingestion (poll, fetch, screen, truth, infer, score) in-process, like the nightly DAG.

    Exit status: 0 when the run ends ``success`` or ``partial`` (some exposures failed: each is
    listed under ``failed`` with its reason), 1 when it ends ``failed`` or the request names
    nothing (a proposal without exposures, an unknown visit).
    """
    import click

    from crlib.config import load_settings
    from crlib.pipeline.sequential import STAGES, run_pipeline

    unknown = sorted(set(redo or ()) - set(STAGES))
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}; choose from {', '.join(STAGES)}", param_hint="--redo"
        )
    if visit and proposal is None:
        raise click.BadParameter(
            "--visit needs the visit's --proposal (without it the run polls for new releases)",
            param_hint="--visit",
        )
    summary = run_pipeline(
        load_settings(),
        proposal_id=proposal,
        visits=list(visit or []),
        model=model,
        redo=STAGES if redo is None else tuple(redo),
        progress=lambda stage, item: typer.echo(f"{stage:7s} {item}", err=True),
    )
    typer.echo(json.dumps(summary, indent=2, default=str) if as_json else format_run_summary(summary))
    if summary.get("status") == "failed":
        raise typer.Exit(1)


def format_run_summary(summary: dict) -> str:
    """The run summary for a terminal: status first, then one line per key, failures one per line."""
    lines = [
        f"status: {summary.get('status')}" + (f" ({summary['message']})" if summary.get("message") else "")
    ]
    for key, value in summary.items():
        if key in ("status", "message"):
            continue
        if key in ("failed", "errors", "rejected") and isinstance(value, dict):
            lines.append(f"{key}: {len(value)}")
            lines.extend(
                f"  {name}: {'; '.join(why) if isinstance(why, list) else why}"
                for name, why in sorted(value.items())
            )
        else:
            lines.append(f"{key}: {value}")
    return "\n".join(lines)


@bench_app.command("dag")
def bench_dag_command(
    size: Annotated[str, typer.Option(help="full (2 x 4096x2048 chips) or small (2 x 1024x512).")] = "full",
    exposures: Annotated[int, typer.Option(help="Exposures in the simulated visit (2-8).")] = 4,
    dag: Annotated[str, typer.Option(help="nightly (crlib_nightly_ingest) or reprocess.")] = "nightly",
    work_dir: Annotated[
        str | None, typer.Option(help="Keep the archive, outputs and Airflow home here (default: temporary).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 2026,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Per-stage wall time of one visit through the stages called directly vs through the Airflow DAG."""
    from pathlib import Path

    import click

    from crlib.bench.pipeline import DAG_IDS, run_dag_benchmark
    from crlib.config import load_settings

    if size not in ("full", "small"):
        raise click.BadParameter(f"{size!r}; choose full or small", param_hint="--size")
    if dag not in DAG_IDS:
        raise click.BadParameter(f"{dag!r}; choose from {', '.join(DAG_IDS)}", param_hint="--dag")
    if not 2 <= exposures <= 8:
        raise click.BadParameter(f"{exposures} is not in 2-8", param_hint="--exposures")
    report = run_dag_benchmark(
        load_settings(),
        size=size,  # type: ignore[arg-type]
        exposures=exposures,
        dag=dag,  # type: ignore[arg-type]
        work_dir=Path(work_dir) if work_dir else None,
        seed=seed,
        keep=work_dir is not None,
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(
            title=f"crlib bench dag: {report.dag_id}, 1 visit x {report.exposures} {report.size} exposures"
        )
        rows = report.rows()
        for column in rows[0]:
            table.add_column(column, justify="left" if column in ("stage", "calls/tasks") else "right")
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row.values()))
        Console().print(table)
        load = ", ".join(f"{v:.2f}" for v in report.load_before)
        typer.echo(
            f"Airflow metadata setup (not in any run): {report.airflow_setup_s:.1f} s; "
            f"load average before: {load} on {report.cpu_count} CPUs; "
            f"after: {', '.join(f'{v:.2f}' for v in report.load_after)}"
        )
    if not report.same_outcome:
        typer.echo(
            "direct and DAG runs recorded different outcomes: "
            f"{report.outcome_direct} vs {report.outcome_dag}",
            err=True,
        )
        raise typer.Exit(1)
