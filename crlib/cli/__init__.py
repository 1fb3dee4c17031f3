"""The ``crlib`` command line (Typer). Every stage is a subcommand calling the same functions as the DAGs."""

from crlib.cli.app import app, main

__all__ = ["app", "main"]
