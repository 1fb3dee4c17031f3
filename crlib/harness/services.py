"""What the local cluster runs on: background processes, a private Redis broker, PostgreSQL databases.

Each service runs in its own process group (so stopping or killing it reaches every child it
forked), writes its output to one log file, and is watched: a service that exits raises
:class:`ServiceError` with the end of its log and the log's path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from crlib.errors import ConfigError, CrlibError, DatabaseError

log = logging.getLogger(__name__)


class ServiceError(CrlibError):
    """A background process failed to start, died, or did not become ready in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (chosen by the OS).

    Parameters
    ----------
    host
        Interface to probe.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def log_tail(path: Path, *, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (``(no output)`` if empty or unreadable)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


@dataclass
class Service:
    """A started background process: its name, handle and log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def raise_if_dead(self) -> None:
        """Raise :class:`ServiceError` (exit status, log path and tail) if the process has exited."""
        if not self.alive():
            raise ServiceError(
                f"{self.name} exited with status {self.popen.returncode}; see {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the process and everything in its process group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, *, timeout: float) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``timeout`` seconds."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
        self.signal_group(signal.SIGKILL)  # children a clean exit left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a machine dying), and reap the process."""
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=30)


def spawn(name: str, command: list[str], *, env: Mapping[str, str], log_path: Path, cwd: Path) -> Service:
    """Start ``command`` in a new process group with stdout and stderr appended to ``log_path``.

    Parameters
    ----------
    name
        Name used in messages.
    command
        Program and arguments.
    env
        Complete environment of the process.
    log_path
        File receiving its output (parent directories are created).
    cwd
        Working directory.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as stream:
        popen = subprocess.Popen(
            command,
            stdout=stream,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    log.info("started %s (pid %d), log %s", name, popen.pid, log_path)
    return Service(name=name, popen=popen, log_path=log_path)


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    watch: Callable[[], None],
    hint: str,
    interval: float = 0.5,
) -> None:
    """Poll ``condition`` until true, calling ``watch`` (which raises if a process died) each time.

    Raises
    ------
    ServiceError
        After ``timeout`` seconds, saying what was awaited and ``hint`` (which log to read).
    """
    deadline = time.monotonic() + timeout
    while True:
        watch()
        if condition():
            return
        if time.monotonic() > deadline:
            raise ServiceError(f"timed out after {timeout:.0f} s waiting for {what}; {hint}")
        time.sleep(interval)


# ----------------------------------------------------------------------------- Redis
def redis_server_binary() -> str | None:
    """Path of a ``redis-server`` executable (``PATH``, then ``/usr/bin``, ``/usr/sbin``), or ``None``."""
    found = shutil.which("redis-server")
    if found:
        return found
    for candidate in (Path("/usr/bin/redis-server"), Path("/usr/sbin/redis-server")):
        if candidate.exists():
            return str(candidate)
    return None


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1 and a free port, without persistence.

    Parameters
    ----------
    work_dir
        Directory for its log (``redis.log``) and working files.
    port
        TCP port (default: a free one).
    """

    def __init__(self, work_dir: Path, *, port: int | None = None) -> None:
        self.work_dir = Path(work_dir)
        self.port = port or free_port()
        self._service: Service | None = None

    @property
    def url(self) -> str:
        """Celery broker URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, timeout: float = 30) -> str:
        """Start the server and wait until it answers ``PING``; returns :attr:`url`.

        Raises
        ------
        ConfigError
            If no ``redis-server`` is installed.
        ServiceError
            If it exits or does not answer in time (names its log).
        """
        binary = redis_server_binary()
        if binary is None:
            raise ConfigError("redis-server is not installed (e.g. apt-get install redis-server)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--dir", str(self.work_dir),
        ]  # fmt: skip
        service = spawn(
            "redis-server", command, env=os.environ, log_path=self.work_dir / "redis.log", cwd=self.work_dir
        )
        self._service = service
        wait_until(
            self.ping,
            timeout=timeout,
            what=f"redis-server on port {self.port}",
            watch=service.raise_if_dead,
            hint=f"see {service.log_path}",
            interval=0.1,
        )
        return self.url

    def ping(self) -> bool:
        """Whether the server answers ``PING`` (one RESP command over a socket)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); idempotent."""
        if self._service is not None:
            self._service.stop(timeout=10)
            self._service = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ----------------------------------------------------------------------------- PostgreSQL
def _admin_engine(server_url: str) -> Any:
    from sqlalchemy import create_engine

    from crlib.database_url import sqlalchemy_url

    return create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")


def _check_name(name: str) -> None:
    if not name or not name.replace("_", "").isalnum():
        raise ConfigError(f"database name {name!r} must be letters, digits and '_'")


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the PostgreSQL server of ``server_url`` if missing; return its URL.

    Parameters
    ----------
    server_url
        SQLAlchemy URL of any database on the server (its credentials are reused).
    name
        Database to create (letters, digits, ``_``).

    Raises
    ------
    DatabaseError
        If the server refuses (e.g. the role lacks ``CREATEDB``), naming the server (password masked).
    """
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from crlib.database_url import mask_url

    _check_name(name)
    engine = _admin_engine(server_url)
    try:
        with engine.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
            if exists.first() is None:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise DatabaseError(
            f"cannot create database {name} on {mask_url(server_url)}: {reason}; "
            "create it (owned by this role) or grant the role CREATEDB"
        ) from None
    finally:
        engine.dispose()
    return make_url(engine.url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (ending its sessions first) on the server of ``server_url``."""
    from sqlalchemy import text

    _check_name(name)
    engine = _admin_engine(server_url)
    try:
        with engine.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    finally:
        engine.dispose()
