"""``crlib db ...``: schema migrations, the embedded server, roles, status."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from crlib.cli.app import app

db_app = typer.Typer(help="Results database: schema migrations, roles, status.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def open_database(*, upgrade: bool = False) -> tuple[Any, Any]:
    from crlib.config import load_settings
    from crlib.db.session import open_results_db

    return open_results_db(load_settings(), upgrade=upgrade)


# --------------------------------------------------------------------------- crlib db
@db_app.command("upgrade")
def upgrade_command(
    revision: Annotated[str, typer.Option(help="Target revision (default: newest).")] = "head",
) -> None:
    """Apply the schema migrations to the configured (or embedded) results database."""
    from crlib.database_url import mask_url
    from crlib.db.migrate import current_revision, upgrade

    engine, _ = open_database()
    before = current_revision(engine)
    after = upgrade(engine, revision=revision)
    typer.echo(f"{mask_url(engine.url.render_as_string())}: revision {before or '(empty)'} -> {after}")


@db_app.command("status")
def status_command() -> None:
    """Show the database URL (password masked), the embedded server, schema revision and refresh times."""
    from crlib.config import load_settings
    from crlib.database_url import mask_url
    from crlib.db.migrate import current_revision, head_revision
    from crlib.db.session import open_results_db

    settings = load_settings()
    engine, sessions = open_results_db(settings)
    current, head = current_revision(engine), head_revision()
    typer.echo(f"database: {mask_url(engine.url.render_as_string())}")
    if settings.database_url is None:
        from crlib.db.embedded import embedded_server_state

        typer.echo(f"server: {embedded_server_state(settings.data_root).describe()}")
    typer.echo(
        f"revision: {current or '(empty)'} (newest: {head}"
        + ("" if current == head else "; run crlib db upgrade")
        + ")"
    )
    if current == head:
        from crlib.db.summaries import summary_state

        with sessions() as session:
            state = summary_state(session)
        for table, when in state.refreshed_at.items():
            typer.echo(f"{table}: refreshed {when.isoformat() if when else 'never'}")
        typer.echo(state.describe())


def _embedded_settings(action: str) -> Any:
    """Settings of a command that manages the embedded server (refused with CRLIB_DATABASE_URL)."""
    from crlib.config import load_settings
    from crlib.errors import ConfigError

    settings = load_settings()
    if settings.database_url is not None:
        raise ConfigError(
            f"CRLIB_DATABASE_URL is set: crlib does not {action} that server (unset it to use the "
            "embedded PostgreSQL)"
        )
    return settings


@db_app.command("start")
def start_command() -> None:
    """Start the embedded PostgreSQL and keep it running until `crlib db stop` (for psql, MLflow, ...).

    Without it the embedded server stops when the last crlib command or task using it exits.
    """
    from crlib.database_url import mask_url
    from crlib.db.embedded import embedded_server_state, keep_embedded_server

    settings = _embedded_settings("start")
    url = keep_embedded_server(settings.data_root)
    typer.echo(f"database: {mask_url(url)}")
    typer.echo(f"server: {embedded_server_state(settings.data_root).describe()}")


@db_app.command("stop")
def stop_command(
    force: Annotated[
        bool, typer.Option("--force", help="Stop it even while other processes are using it.")
    ] = False,
) -> None:
    """Stop the embedded PostgreSQL now (it otherwise stops when the last process using it exits)."""
    from crlib.db.embedded import stop_embedded_server

    settings = _embedded_settings("stop")
    pgdata = (settings.data_root / "postgres").resolve()
    if stop_embedded_server(settings.data_root, force=force):
        typer.echo(f"embedded PostgreSQL in {pgdata} stopped")
    else:
        typer.echo(f"embedded PostgreSQL in {pgdata} was not running")


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

    engine, _ = open_database(upgrade=True)
    ensure_roles(engine, reader_password=reader_password, writer_password=writer_password)
    typer.echo(f"roles {WRITER_ROLE} (read/write) and {READER_ROLE} (read-only) are ready")


# --------------------------------------------------------------------------- crlib stats
# --------------------------------------------------------------------------- crlib bench db
