"""The embedded PostgreSQL server used when no ``CRLIB_DATABASE_URL`` is configured.

A real PostgreSQL 16 from the ``pgserver`` wheel, its data directory under the data root, reached
over a Unix socket.

Lifecycle
---------
pgserver records every process that opened the server in ``<pgdata>/.handle_pids.json`` (under an
inter-process lock) and removes it again when that process exits. crlib opens the server with
pgserver's ``stop`` mode: a command or Airflow task that needs the database joins a running
server (or starts one), and when the last registered process exits, it stops the server. On top
of that, crlib

* drops processes that died without saying so (``kill -9``, an out-of-memory kill) from the
  list, so that they cannot keep the server running for ever;
* registers a process forked from one that opened the server (it inherits pgserver's handle
  without being on the list) as a user of its own;
* keeps a server started by ``crlib db start`` (:func:`keep_embedded_server`) running until
  ``crlib db stop`` (:func:`stop_embedded_server`), for clients that connect by URL
  (``psql``, an MLflow server, Airflow's metadata database) and are therefore not on the list.

Runtime directory
-----------------
pgserver asks :mod:`platformdirs` for the user's runtime directory when it is imported (its
inter-process lock file lives there). Where ``XDG_RUNTIME_DIR`` is unset (root in a container,
a service without a login session, cron) that lookup warns on every command and task.
:func:`ensure_runtime_dir` gives the process a private runtime directory first, the one
platformdirs would fall back to, so all processes share the same lock file, and passes it on to
child processes (Airflow tasks, the server) through the environment.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlib.errors import DatabaseError

if TYPE_CHECKING:
    from types import ModuleType

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "crlib"
#: Environment variable naming the per-user runtime directory (XDG base directory spec).
RUNTIME_DIR_VARIABLE = "XDG_RUNTIME_DIR"
#: pgserver's list of the processes using a server, inside the data directory.
HANDLES_FILE = ".handle_pids.json"
#: Present while ``crlib db start`` keeps the server running (inside the data directory).
KEEP_FILE = ".crlib_keep_running"

_PRIVATE_MODE = 0o700
_SHUTDOWN_TIMEOUT_S = 60.0
#: Data directory -> id of the pgserver handle whose exit this process prepares.
_handles: dict[Path, int] = {}
#: ``(data directory, database)`` pairs known to exist.
_created: set[tuple[Path, str]] = set()
#: Serialises this module's work across threads (pgserver's file lock cannot: POSIX record locks
#: belong to the whole process).
_thread_lock = threading.RLock()


@dataclass(frozen=True, slots=True)
class EmbeddedServerState:
    """What ``<data_root>/postgres`` is doing right now.

    Attributes
    ----------
    pgdata
        The server's data directory.
    pid
        The postmaster's process id; ``None`` when no server runs.
    socket_dir
        Directory holding the server's Unix socket (the URL's ``host``).
    users
        Live processes registered as using the server (this one included, if it does).
    kept
        ``crlib db start`` keeps the server running until ``crlib db stop``.
    """

    pgdata: Path
    pid: int | None
    socket_dir: Path | None
    users: tuple[int, ...]
    kept: bool

    @property
    def running(self) -> bool:
        """Whether a server process runs for this data directory."""
        return self.pid is not None

    def describe(self) -> str:
        """One line for ``crlib db status``: who shares the server and how it stops."""
        if not self.running:
            return (
                f"embedded PostgreSQL in {self.pgdata}: not running (a command or task that needs "
                "it starts it; it stops when the last one exits)"
            )
        me = os.getpid()
        others = [pid for pid in self.users if pid != me]
        listed = ", ".join(str(pid) for pid in others)
        plural = "es" if len(others) > 1 else ""
        if me in self.users and not others:
            who, when = "this command only", "it stops when this command exits"
        elif me in self.users:
            who = f"this command and {len(others)} other process{plural} ({listed})"
            when = "it stops when the last of them exits"
        elif others:
            who, when = f"{len(others)} process{plural} ({listed})", "it stops when the last of them exits"
        else:
            who = "no process" if self.kept else "no live process (its users were killed)"
            when = "the next command using it stops it when it exits"
        how = "kept running by `crlib db start` until `crlib db stop`" if self.kept else when
        stop = "" if self.kept else "; `crlib db stop` stops it now, `crlib db start` keeps it running"
        return f"embedded PostgreSQL in {self.pgdata}: running (pid {self.pid}), used by {who}; {how}{stop}"


def ensure_runtime_dir() -> Path | None:
    """Give this process a usable, private ``XDG_RUNTIME_DIR`` and return it.

    A set ``XDG_RUNTIME_DIR`` is kept when it is a directory of this user with mode 0700 below
    directories no other user can replace. Otherwise (unset, as for root in a container or a
    service, or unusable, as after ``sudo``) the variable is set, for this process and the
    processes it starts, to the directory platformdirs itself falls back to: ``/run/user/<uid>``
    when usable, else ``<tmp>/runtime-<uid>`` (created with mode 0700, or tightened to it when
    this user owns it with a looser mode).

    Returns
    -------
    Path or None
        The runtime directory; ``None`` on Windows and macOS, where platformdirs does not need
        ``XDG_RUNTIME_DIR`` (and so never warns about it).

    Raises
    ------
    DatabaseError
        When ``<tmp>/runtime-<uid>`` exists but is not this user's directory (names
        ``XDG_RUNTIME_DIR`` as the way out).
    """
    if sys.platform in ("win32", "darwin"):  # pragma: no cover - tested on Linux
        return None
    current = os.environ.get(RUNTIME_DIR_VARIABLE, "")
    if current and _runtime_dir_problem(Path(current)) is None:
        return Path(current)
    uid = os.geteuid()
    chosen = Path(f"/run/user/{uid}")
    if _runtime_dir_problem(chosen) is not None:
        chosen = Path(tempfile.gettempdir()) / f"runtime-{uid}"
        _make_private_dir(chosen)
    if current:
        log.debug(
            "%s=%s is unusable (%s); using %s",
            RUNTIME_DIR_VARIABLE,
            current,
            _runtime_dir_problem(Path(current)),
            chosen,
        )
    os.environ[RUNTIME_DIR_VARIABLE] = str(chosen)
    return chosen


def embedded_server_url(data_root: Path, *, database: str = DEFAULT_DATABASE) -> str:
    """Start (or join) the embedded server under ``data_root/postgres`` and return its URL.

    This process is registered as a user of the server until it exits; the server stops when
    the last registered process exits, unless ``crlib db start`` keeps it running.

    Parameters
    ----------
    data_root
        crlib's data root; the cluster lives in ``data_root/postgres``.
    database
        Database to create if missing and return a URL for.

    Returns
    -------
    str
        A ``postgresql+psycopg2://`` URL with ``host=<socket dir>``.

    Raises
    ------
    DatabaseError
        If the server cannot be initialised or started; names the log file to read.
    """
    pgdata = _pgdata(data_root)
    pgdata.mkdir(parents=True, exist_ok=True)
    pgserver = _pgserver()
    with _thread_lock:
        return _open_server(pgserver, pgdata, database)


def _open_server(pgserver: ModuleType, pgdata: Path, database: str) -> str:
    from crlib.database_url import sqlalchemy_url

    try:
        with _server_lock(pgserver):
            _live_users(pgdata, prune=True)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        if os.getpid() not in _registered(pgdata) or not _is_postgres(server.get_postmaster_info().pid):
            # A handle inherited through fork, or a server stopped by `crlib db stop` meanwhile.
            with _server_lock(pgserver):
                server.ensure_postgres_running()
                server.global_process_id_list.get_and_add(os.getpid())
        if _handles.get(pgdata) != id(server):
            _handles[pgdata] = id(server)
            # atexit runs handlers last-in first-out: (re-)registered after pgserver's hook for
            # this handle, ours runs first.
            atexit.unregister(_before_exit)
            atexit.register(_before_exit)
        if (pgdata, database) not in _created:
            exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
            if "(1 row)" not in exists:
                log.info("creating database %s in the embedded server at %s", database, pgdata)
                server.psql(f'CREATE DATABASE "{database}";')
            _created.add((pgdata, database))
    except DatabaseError:
        raise
    except Exception as exc:
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata} ({exc}); see {pgdata / 'log'} "
            "or set CRLIB_DATABASE_URL to a running server"
        ) from exc
    return sqlalchemy_url(server.get_uri(database))


def embedded_server_state(data_root: Path) -> EmbeddedServerState:
    """The embedded server's state under ``data_root`` (starts nothing).

    Parameters
    ----------
    data_root
        crlib's data root.

    Returns
    -------
    EmbeddedServerState
        Postmaster pid and socket, live registered users, whether ``crlib db start`` keeps it.
    """
    pgdata = _pgdata(data_root)
    pid, socket_dir = _postmaster(pgdata)
    return EmbeddedServerState(
        pgdata=pgdata,
        pid=pid,
        socket_dir=socket_dir,
        users=tuple(_live_users(pgdata)) if pid is not None else (),
        kept=(pgdata / KEEP_FILE).exists(),
    )


def keep_embedded_server(data_root: Path, *, database: str = DEFAULT_DATABASE) -> str:
    """Start (or join) the embedded server and keep it running after this process exits.

    For clients that connect by URL and so do not count as users (``psql``, an MLflow server,
    Airflow's metadata database); :func:`stop_embedded_server` ends it.

    Returns
    -------
    str
        The database URL, as :func:`embedded_server_url` returns it.
    """
    url = embedded_server_url(data_root, database=database)
    (_pgdata(data_root) / KEEP_FILE).touch()
    return url


def stop_embedded_server(data_root: Path, *, force: bool = False) -> bool:
    """Stop the embedded server under ``data_root`` now (fast shutdown: open sessions end).

    Parameters
    ----------
    data_root
        crlib's data root.
    force
        Stop it even while other live processes are registered as using it.

    Returns
    -------
    bool
        Whether a server was running.

    Raises
    ------
    DatabaseError
        When other processes still use the server and ``force`` is false (names them), or the
        server does not stop.
    """
    import psutil

    pgdata = _pgdata(data_root)
    if not (pgdata / "PG_VERSION").exists():
        return False
    pgserver = _pgserver()
    with _server_lock(pgserver):
        pid, _ = _postmaster(pgdata)
        others = [user for user in _live_users(pgdata, prune=True) if user != os.getpid()]
        if pid is not None and others and not force:
            raise DatabaseError(
                f"the embedded PostgreSQL in {pgdata} is in use by process(es) "
                f"{', '.join(map(str, others))}; let them finish, or use `crlib db stop --force`"
            )
        (pgdata / KEEP_FILE).unlink(missing_ok=True)
        _write_handles(pgdata, [])
        if pid is not None:
            log.info("stopping the embedded PostgreSQL in %s (pid %d)", pgdata, pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                # SIGINT is PostgreSQL's "fast" shutdown: sessions end, the server stops at once.
                psutil.Process(pid).send_signal(signal.SIGINT)
            deadline = time.monotonic() + _SHUTDOWN_TIMEOUT_S
            # Not Process.wait(): the server is not our child, and an exited one stays a zombie
            # until its parent (often init) reaps it.
            while _is_postgres(pid):
                if time.monotonic() > deadline:
                    raise DatabaseError(
                        f"the embedded PostgreSQL in {pgdata} (pid {pid}) did not stop within "
                        f"{_SHUTDOWN_TIMEOUT_S:g} s; see {pgdata / 'log'}"
                    )
                time.sleep(0.05)
    with _thread_lock:  # this process's own handle (if any) is spent: its exit does nothing
        instance = pgserver.PostgresServer._instances.pop(pgdata, None)
        if instance is not None:
            atexit.unregister(instance._cleanup)
        _handles.pop(pgdata, None)
        _created.difference_update({key for key in _created if key[0] == pgdata})
    return pid is not None


# ----------------------------------------------------------------------------- internals
def _pgdata(data_root: Path) -> Path:
    return (Path(data_root) / "postgres").resolve()


def _pgserver() -> ModuleType:
    """Import pgserver once this process has a runtime directory (pgserver reads it at import)."""
    ensure_runtime_dir()
    import pgserver

    return pgserver


@contextlib.contextmanager
def _server_lock(pgserver: ModuleType) -> Iterator[None]:
    """pgserver's own inter-process lock, which guards every handle list and server start/stop.

    The very lock object pgserver uses: POSIX record locks belong to the process, so a second
    lock object on the same file would release pgserver's lock when closed. Never nested.
    """
    with _thread_lock, pgserver.PostgresServer._lock:
        yield


def _registered(pgdata: Path) -> list[int]:
    try:
        value = json.loads((pgdata / HANDLES_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [int(pid) for pid in value] if isinstance(value, list) else []


def _write_handles(pgdata: Path, pids: list[int]) -> None:
    if (pgdata / HANDLES_FILE).exists() or pids:
        (pgdata / HANDLES_FILE).write_text(json.dumps(pids))


def _alive(pid: int) -> bool:
    import psutil

    if pid == os.getpid():
        return True
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_postgres(pid: int) -> bool:
    """Whether ``pid`` is a live PostgreSQL server process (a stale pid file may name another)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.name() == "postgres"
    except psutil.Error:
        return False


def _live_users(pgdata: Path, *, prune: bool = False) -> list[int]:
    """Registered processes that still run; with ``prune`` (under the lock) forget the others."""
    registered = _registered(pgdata)
    live = [pid for pid in registered if _alive(pid)]
    if prune and live != registered:
        gone = sorted(set(registered) - set(live))
        log.debug("forgetting exited users %s of the embedded PostgreSQL in %s", gone, pgdata)
        _write_handles(pgdata, live)
    return live


def _postmaster(pgdata: Path) -> tuple[int | None, Path | None]:
    """``(pid, socket dir)`` of the server running for ``pgdata``, from its ``postmaster.pid``."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None, None
    if not _is_postgres(pid):
        return None, None
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
    return pid, socket_dir


def _before_exit() -> None:
    """At exit, before pgserver's own hook: forget dead users, honour ``crlib db start``.

    pgserver stops a server when this process is the only one left on its list; a dead process
    left on it would keep the server running for ever. Its handle must also know the server
    process that runs now (another process may have stopped and restarted it meanwhile).
    """
    pgserver = sys.modules.get("pgserver")
    if pgserver is None:
        return
    for pgdata in list(_handles):
        server: Any = pgserver.PostgresServer._instances.get(pgdata)
        if server is None:
            continue
        try:
            with _server_lock(pgserver):
                _live_users(pgdata, prune=True)
                info = server._postmaster_info
                if info is None or not _is_postgres(info.pid):
                    server._postmaster_info = pgserver.utils.PostmasterInfo.read_from_pgdata(pgdata)
            server.cleanup_mode = None if (pgdata / KEEP_FILE).exists() else "stop"
        except Exception:  # an exit hook must not raise; pgserver's own hook still runs
            log.debug("could not tidy the embedded server's users at exit", exc_info=True)


def _runtime_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot serve as this user's runtime directory (``None``: it can)."""
    uid = os.geteuid()
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if info.st_uid != uid:
        return f"{path} is owned by uid {info.st_uid}, not {uid}"
    if stat.S_IMODE(info.st_mode) != _PRIVATE_MODE:
        return f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, not {_PRIVATE_MODE:04o}"
    for parent in _ancestors(path.parent.resolve()):
        parent_info = os.stat(parent)
        if parent_info.st_uid not in (0, uid):
            return f"{path} is below {parent}, owned by uid {parent_info.st_uid}"
        shared = parent_info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if shared and not parent_info.st_mode & stat.S_ISVTX:
            return f"{path} is below {parent}, writable by other users"
    return None


def _ancestors(path: Path) -> list[Path]:
    return [path, *path.parents]


def _make_private_dir(path: Path) -> None:
    """Create ``path`` with mode 0700, or tighten this user's existing directory to it."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=_PRIVATE_MODE)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise DatabaseError(
            f"{path} is not a directory of this user, so it cannot hold the embedded PostgreSQL's "
            f"lock; set {RUNTIME_DIR_VARIABLE} to a directory you own with mode 0700"
        )
    if stat.S_IMODE(info.st_mode) != _PRIVATE_MODE:
        # pgserver's lock file library creates the directory with the default 0755.
        path.chmod(_PRIVATE_MODE)
