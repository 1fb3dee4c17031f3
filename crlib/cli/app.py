"""Root Typer application, shared options, error handling and logging set-up.

Stage modules (``crlib.cli.<stage>``) register their commands on :data:`app` (or on
:data:`bench_app` for ``crlib bench <name>``) when imported by :func:`register_commands`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Annotated

import click
import typer
from typer import exceptions as typer_exceptions
from typer._click import exceptions as typer_click_exceptions

from crlib.errors import CrlibError

# Typer >= 0.2x vendors its own click; both exception families can reach main().
_CLICK_EXIT = (click.exceptions.Exit, typer_exceptions.Exit)
_CLICK_ABORT = (click.exceptions.Abort, typer_exceptions.Abort)
_CLICK_ERROR = (click.ClickException, typer_click_exceptions.ClickException)


app = typer.Typer(
    name="crlib",
    help="HST ACS/WFC cosmic-ray service: simulate, poll, screen, align, truth, infer, score, record, train.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
bench_app = typer.Typer(
    help="Benchmarks: ratios against the reference tools measured in the same run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")

# Stage modules, in the order their commands should appear in --help.
COMMAND_MODULES = (
    "crlib.cli.foundation",
    "crlib.cli.simulate",
    "crlib.cli.archive",
    "crlib.cli.truth",
    "crlib.cli.model",
    "crlib.cli.accuracy",
    "crlib.cli.database",
    "crlib.cli.statistics",
    "crlib.cli.training",
    "crlib.cli.cluster",
    "crlib.cli.gpu",
    "crlib.cli.pipeline_cost",
)

_registered = False


def register_commands() -> None:
    """Import every stage's command module once (each registers itself on :data:`app`)."""
    global _registered
    if _registered:
        return
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside the module: surface it
                raise
    _registered = True


@app.callback()
def _root(
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    configure_logging(level)


class _LibraryLevel(logging.Filter):
    """Let other packages' records through from ``level`` up, crlib's own as their loggers decide.

    Some libraries set their own loggers' levels at import (tweakwcs: DEBUG), so the root logger's
    level alone does not hold back their INFO lines (the whole matching report of every fit).
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == "crlib" or record.name.startswith("crlib.") or record.levelno >= self.level


def configure_logging(level: int, *, libraries: int = logging.WARNING) -> None:
    """Send log records to stderr through rich (the CLI's job, never the library's).

    Parameters
    ----------
    level
        Lowest level of crlib's own records shown.
    libraries
        Lowest level of every other package's records shown, whatever level a library gave its
        own loggers (tweakwcs sets DEBUG on import).
    """
    from rich.console import Console
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False)
    handler.addFilter(_LibraryLevel(libraries))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(min(libraries, logging.WARNING))
    logging.getLogger("crlib").setLevel(level)


def fail(message: str, *, code: int = 1) -> None:
    """Print a one-line error to stderr and exit with ``code`` (no traceback)."""
    click.echo(f"crlib: error: {message}", err=True)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning expected errors into one-line messages."""
    register_commands()
    try:
        app(args=argv, standalone_mode=False)
    except _CLICK_EXIT as exc:
        raise SystemExit(exc.exit_code) from None
    except _CLICK_ABORT:
        fail("aborted", code=130)
    except typer_click_exceptions.NoArgsIsHelpError as exc:
        exc.show()  # help text for a bare group: not an error worth a one-liner
        raise SystemExit(exc.exit_code) from None
    except _CLICK_ERROR as exc:
        fail(exc.format_message().replace("\n", " "), code=exc.exit_code)
    except CrlibError as exc:
        fail(str(exc).replace("\n", " "))
    except PermissionError as exc:
        fail(f"permission denied: {exc.filename or exc} (choose a writable location)")
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except Exception as exc:
        missing = _missing_schema_object(exc)
        if missing is None:
            raise
        fail(
            f"the results database has no {missing}: its schema is older than this crlib "
            "(run `crlib db upgrade`, see `crlib db status`)"
        )
    sys.exit(0)


#: PostgreSQL error codes for a table/view, column or function that does not exist.
_UNDEFINED_OBJECT_CODES = {"42P01": "table or view", "42703": "column", "42883": "function"}


def _missing_schema_object(exc: BaseException) -> str | None:
    """``"table pipeline_status_nightly"`` when a query failed on a missing schema object, else None.

    A database never migrated (or migrated by an older crlib) answers a command's query with
    "relation ... does not exist"; that deserves a one-line pointer to ``crlib db upgrade``.
    """
    original = getattr(exc, "orig", None)
    kind = _UNDEFINED_OBJECT_CODES.get(str(getattr(original, "pgcode", "")))
    if kind is None or not type(exc).__module__.startswith("sqlalchemy"):
        return None
    first_line = str(original).strip().splitlines()[0] if str(original).strip() else ""
    quoted = first_line.split('"')
    return f"{kind} {quoted[1]}" if len(quoted) > 2 else kind
