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
        str | None, typer.Option(help="Where to write the demo archive (default: <data_root>/demo/archive).")
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
