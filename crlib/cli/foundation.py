"""``crlib config`` and ``crlib demo``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from crlib.cli.app import app


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
    from crlib.demo import run_demo

    settings = load_settings()
    summary = run_demo(settings, out=Path(out) if out else None, seed=seed)
    typer.echo(summary)


@app.command("run")
def run_command(
    proposal: Annotated[int | None, typer.Option(help="Reprocess this proposal instead of polling.")] = None,
    visit: Annotated[list[str] | None, typer.Option(help="With --proposal: only these visits.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name (default: the profile's).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")] = False,
) -> None:
    """Run the whole ingestion (poll, fetch, screen, truth, infer, score) in-process, like the nightly DAG."""
    from crlib.config import load_settings
    from crlib.pipeline.sequential import run_pipeline

    summary = run_pipeline(
        load_settings(),
        proposal_id=proposal,
        visits=list(visit or []),
        model=model,
        progress=lambda stage, item: typer.echo(f"{stage:7s} {item}", err=True),
    )
    typer.echo(
        json.dumps(summary, indent=2, default=str)
        if as_json
        else "\n".join(f"{key}: {value}" for key, value in summary.items())
    )
