"""Start and stop an ``mlflow server`` tracking server on loopback.

Production layout: a PostgreSQL backend store (the results database's server, its own database)
and a local artifact directory served through the server's artifact proxy
(``--serve-artifacts --artifacts-destination``), so clients only need the HTTP URI.
Clients then use ``CRLIB_MLFLOW_TRACKING_URI=http://127.0.0.1:<port>``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from crlib.errors import ConfigError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def backend_store_uri(database_url: str) -> str:
    """The SQLAlchemy URL MLflow's backend store accepts for a PostgreSQL results-database URL.

    The driver is spelled out (``postgresql+psycopg2://``): SQLAlchemy 2.1 maps a bare
    ``postgresql://`` to psycopg 3, which is not installed.
    """
    from crlib.database_url import sqlalchemy_url

    return sqlalchemy_url(database_url)


@dataclass
class TrackingServer:
    """A running ``mlflow server`` subprocess (use as a context manager or call :meth:`stop`).

    Attributes
    ----------
    uri
        ``http://<host>:<port>``: the tracking URI clients use.
    process
        The server process.
    log_path
        File receiving the server's stdout and stderr.
    """

    uri: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log_handle: object = field(default=None, repr=False)

    def stop(self, *, timeout_s: float = 20.0) -> None:
        """Terminate the server (and its workers) and wait for it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(timeout=timeout_s)
        handle = self._log_handle
        if handle is not None and hasattr(handle, "close"):
            handle.close()

    def __enter__(self) -> TrackingServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_tracking_server(
    *,
    backend_store: str,
    artifact_root: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: Path | None = None,
    startup_timeout_s: float = 120.0,
) -> TrackingServer:
    """Start ``mlflow server`` in a new process group and wait until ``/health`` answers.

    Parameters
    ----------
    backend_store
        Backend store URI: a PostgreSQL URL (``postgresql://user@host/db``) in production,
        ``sqlite:///...`` or a ``file://`` directory elsewhere.
    artifact_root
        Local directory holding artifacts (served through the server's artifact proxy).
    host
        Interface to bind; keep ``127.0.0.1`` unless a reverse proxy with authentication fronts it.
    port
        TCP port; a free one when ``None``.
    log_path
        Where the server's output goes (default ``artifact_root/../mlflow-server.log``).
    startup_timeout_s
        Seconds to wait for the health endpoint (the first start migrates the database schema).

    Returns
    -------
    TrackingServer
        Handle with the tracking ``uri``; stop it when done.

    Raises
    ------
    ConfigError
        If the server exits or does not answer in time; the message quotes its log.
    """
    import requests

    if backend_store.startswith(("postgres://", "postgresql://")):
        backend_store = backend_store_uri(backend_store)  # SQLAlchemy 2.1 would pick psycopg 3, not installed
    port = port or free_port(host)
    artifact_root = artifact_root.resolve()
    artifact_root.mkdir(parents=True, exist_ok=True)
    log_path = (log_path or artifact_root.parent / "mlflow-server.log").resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handle = log_path.open("ab")
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        backend_store,
        "--serve-artifacts",
        "--artifacts-destination",
        artifact_root.as_uri(),
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    log.info("starting mlflow server on %s:%d (artifacts in %s, log %s)", host, port, artifact_root, log_path)
    process = subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    server = TrackingServer(
        uri=f"http://{host}:{port}", process=process, log_path=log_path, _log_handle=handle
    )
    deadline = time.monotonic() + startup_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            server.stop()
            raise ConfigError(
                f"mlflow server exited with status {process.returncode}: {_tail(log_path)} "
                f"(check the backend store URI and that the database exists; full log: {log_path})"
            )
        try:
            if requests.get(f"{server.uri}/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.stop()
    raise ConfigError(
        f"mlflow server did not answer on {server.uri} within {startup_timeout_s:.0f} s: {_tail(log_path)}"
    )


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:])


__all__ = ["TrackingServer", "backend_store_uri", "free_port", "start_tracking_server"]
