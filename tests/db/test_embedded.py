"""The embedded PostgreSQL: quiet commands, shared while in use, stopped when the last user exits.

Real ``crlib`` subprocesses on a data root of their own, without ``XDG_RUNTIME_DIR`` (as for root
in a container or a service), so what a user sees on the terminal is what is checked.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from crlib.db import embedded
from crlib.db.embedded import RUNTIME_DIR_VARIABLE, ensure_runtime_dir
from crlib.errors import DatabaseError

#: A process that opens the embedded server, prints the postmaster's pid, waits for a line on
#: stdin, then proves its connection still works and exits normally.
HOLDER = """
import sys
from pathlib import Path
from sqlalchemy import create_engine, text
from crlib.db.embedded import embedded_server_state, embedded_server_url
root = Path(sys.argv[1])
url = embedded_server_url(root)
print(embedded_server_state(root).pid, flush=True)
sys.stdin.readline()
engine = create_engine(url)
with engine.connect() as connection:
    print(connection.execute(text("SELECT 1")).scalar(), flush=True)
engine.dispose()
"""

#: Opens the server, forks; the child opens it too (inheriting pgserver's handle), the parent
#: exits first; the child waits for ``<root>/go``, queries, and exits normally.
FORKER = """
import os, sys, time
from pathlib import Path
from sqlalchemy import create_engine, text
from crlib.db.embedded import embedded_server_url
root = Path(sys.argv[1])
embedded_server_url(root)
child = os.fork()
if child:
    while not (root / "child-ready").exists():
        time.sleep(0.05)
    print(child, flush=True)
    sys.exit(0)
url = embedded_server_url(root)
(root / "child-ready").touch()
while not (root / "go").exists():
    time.sleep(0.05)
engine = create_engine(url)
with engine.connect() as connection:
    (root / "child-queried").write_text(str(connection.execute(text("SELECT 1")).scalar()))
engine.dispose()
"""


@pytest.fixture
def data_root(tmp_path: Path) -> Iterator[Path]:
    """A short data root of the test's own (the socket lives in ``<data_root>/postgres``)."""
    root = tmp_path / "d"
    root.mkdir()
    yield root
    for process in _servers(root):  # never leave a server behind, whatever failed
        process.kill()


def _env(data_root: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {RUNTIME_DIR_VARIABLE, "PYTHONWARNINGS", "CRLIB_DATABASE_URL"}
    }
    return {**env, "CRLIB_DATA_ROOT": str(data_root), "COLUMNS": "300"}


def crlib(data_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crlib", *args],
        capture_output=True,
        text=True,
        env=_env(data_root),
        timeout=300,
    )


def _holder(data_root: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(data_root),
    )
    assert process.stdout is not None
    return process, int(process.stdout.readline())


def _servers(data_root: Path) -> list[psutil.Process]:
    """PostgreSQL processes serving ``<data_root>/postgres``."""
    pgdata = str((data_root / "postgres").resolve())
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and pgdata in (process.info["cmdline"] or []):
            found.append(process)
    return found


def _assert_stopped(data_root: Path, postmaster: int | None = None) -> None:
    assert not (data_root / "postgres" / "postmaster.pid").exists()
    assert _servers(data_root) == []
    if postmaster is not None:
        assert not _is_running_postgres(postmaster)


def _is_running_postgres(pid: int) -> bool:
    try:  # an exited server whose parent (here: init in a container) has not reaped it is a zombie
        process = psutil.Process(pid)
        return process.name() == "postgres" and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _postmaster_in(stdout: str) -> int:
    found = re.search(r"running \(pid (\d+)\)", stdout)
    assert found, stdout
    return int(found.group(1))


def test_a_command_is_quiet_leaves_no_server_and_the_next_one_works(data_root: Path) -> None:
    first = crlib(data_root, "db", "status")
    assert first.returncode == 0, first.stderr
    assert "XDG_RUNTIME_DIR" not in first.stderr and "Warning" not in first.stderr, first.stderr
    assert "used by this command only; it stops when this command exits" in first.stdout
    _assert_stopped(data_root, _postmaster_in(first.stdout))

    upgraded = crlib(data_root, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    second = crlib(data_root, "db", "status")
    assert second.returncode == 0 and "XDG_RUNTIME_DIR" not in second.stderr, second.stderr
    assert "run crlib db upgrade" not in second.stdout  # the upgrade's schema was kept
    _assert_stopped(data_root, _postmaster_in(second.stdout))

    stopped = crlib(data_root, "db", "stop")
    assert stopped.returncode == 0 and "was not running" in stopped.stdout, stopped.stderr


def test_a_running_server_is_joined_and_stops_after_its_last_user(data_root: Path) -> None:
    holder, postmaster = _holder(data_root)
    try:
        status = crlib(data_root, "db", "status")
        assert status.returncode == 0, status.stderr
        assert _postmaster_in(status.stdout) == postmaster  # joined, not a second server
        assert f"this command and 1 other process ({holder.pid})" in status.stdout
        assert _is_running_postgres(postmaster)  # the command's exit left it to the holder
        output, _ = holder.communicate("go\n", timeout=60)
        assert output.strip() == "1" and holder.returncode == 0
    finally:
        holder.kill()
    _assert_stopped(data_root, postmaster)


def test_a_killed_user_does_not_keep_the_server_running(data_root: Path) -> None:
    holder, postmaster = _holder(data_root)
    holder.kill()  # SIGKILL: no exit hook runs, its pid stays on pgserver's list
    holder.wait(timeout=30)
    assert _is_running_postgres(postmaster)
    status = crlib(data_root, "db", "status")
    assert status.returncode == 0, status.stderr
    assert _postmaster_in(status.stdout) == postmaster
    assert "used by this command only" in status.stdout
    _assert_stopped(data_root, postmaster)


def test_db_start_keeps_it_running_and_db_stop_refuses_while_in_use(data_root: Path) -> None:
    started = crlib(data_root, "db", "start")
    assert started.returncode == 0, started.stderr
    assert "kept running by `crlib db start`" in started.stdout
    postmaster = _postmaster_in(started.stdout)
    assert _is_running_postgres(postmaster)

    holder, seen = _holder(data_root)
    try:
        assert seen == postmaster
        refused = crlib(data_root, "db", "stop")
        assert refused.returncode == 1
        assert f"in use by process(es) {holder.pid}" in refused.stderr and "--force" in refused.stderr
        assert _is_running_postgres(postmaster)
        status = crlib(data_root, "db", "status")
        assert "kept running by `crlib db start` until `crlib db stop`" in status.stdout

        forced = crlib(data_root, "db", "stop", "--force")
        assert forced.returncode == 0 and "stopped" in forced.stdout, forced.stderr
        _assert_stopped(data_root, postmaster)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not (data_root / "postgres" / embedded.KEEP_FILE).exists()


def test_a_forked_child_keeps_the_server_after_its_parent_exits(data_root: Path) -> None:
    # Popen, not run(): the child inherits the pipes, and run() would wait for the child too.
    parent = subprocess.Popen(
        [sys.executable, "-c", FORKER, str(data_root)], stdout=subprocess.PIPE, text=True, env=_env(data_root)
    )
    assert parent.stdout is not None
    with parent.stdout:
        child = int(parent.stdout.readline())
    assert parent.wait(timeout=120) == 0
    servers = _servers(data_root)
    assert servers, "the parent's exit stopped the server its child still uses"
    (data_root / "go").touch()
    deadline = time.monotonic() + 60
    while psutil.pid_exists(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (data_root / "child-queried").read_text() == "1"
    deadline = time.monotonic() + 30
    while _servers(data_root) and time.monotonic() < deadline:
        time.sleep(0.1)
    _assert_stopped(data_root)


def test_database_url_is_refused_by_start_and_stop(data_root: Path) -> None:
    env = {**_env(data_root), "CRLIB_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}
    for action in ("start", "stop"):
        result = subprocess.run(
            [sys.executable, "-m", "crlib", "db", action],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert result.returncode == 1
        assert "CRLIB_DATABASE_URL is set" in result.stderr


# ----------------------------------------------------------------------------- runtime directory
@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tempfile.gettempdir()`` answers a fresh directory; ``XDG_RUNTIME_DIR`` is unset."""
    base = tmp_path / "tmp"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    monkeypatch.delenv(RUNTIME_DIR_VARIABLE, raising=False)
    return base


def _expected(private_tmp: Path) -> set[Path]:
    uid = os.geteuid()
    return {Path(f"/run/user/{uid}"), private_tmp / f"runtime-{uid}"}


def test_unset_runtime_dir_gets_a_private_one_platformdirs_accepts(private_tmp: Path) -> None:
    import platformdirs

    chosen = ensure_runtime_dir()
    assert chosen in _expected(private_tmp)
    assert os.environ[RUNTIME_DIR_VARIABLE] == str(chosen)
    assert stat.S_IMODE(chosen.stat().st_mode) == 0o700
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert platformdirs.user_runtime_path("crlib-test").parent == chosen


def test_a_loose_or_foreign_runtime_dir_is_replaced_and_a_good_one_kept(
    private_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    monkeypatch.setenv(RUNTIME_DIR_VARIABLE, str(loose))
    chosen = ensure_runtime_dir()
    assert chosen != loose and chosen in _expected(private_tmp)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o755  # the user's own directory is left alone

    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    good.chmod(0o700)
    monkeypatch.setenv(RUNTIME_DIR_VARIABLE, str(good))
    assert ensure_runtime_dir() == good


def test_the_fallback_is_tightened_and_never_followed_through_a_link(
    private_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "_runtime_dir_problem", lambda path: "not usable")  # skip /run/user
    fallback = private_tmp / f"runtime-{os.geteuid()}"
    fallback.mkdir(mode=0o755)
    fallback.chmod(0o755)  # as pgserver's lock file library leaves it
    assert ensure_runtime_dir() == fallback
    assert stat.S_IMODE(fallback.stat().st_mode) == 0o700

    fallback.rmdir()
    (tmp_path / "elsewhere").mkdir()
    fallback.symlink_to(tmp_path / "elsewhere")
    monkeypatch.delenv(RUNTIME_DIR_VARIABLE)
    with pytest.raises(DatabaseError, match=RUNTIME_DIR_VARIABLE):
        ensure_runtime_dir()


def test_a_process_can_stop_and_reopen_the_server_and_still_leaves_none(data_root: Path) -> None:
    script = """
import sys
from pathlib import Path
from sqlalchemy import create_engine, text
from crlib.db.embedded import embedded_server_url, stop_embedded_server
root = Path(sys.argv[1])
embedded_server_url(root)
assert stop_embedded_server(root)
engine = create_engine(embedded_server_url(root))
with engine.connect() as connection:
    print(connection.execute(text("SELECT 1")).scalar())
"""
    result = subprocess.run(
        [sys.executable, "-c", script, str(data_root)],
        capture_output=True,
        text=True,
        env=_env(data_root),
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.strip() == "1", result.stderr
    assert "Warning" not in result.stderr, result.stderr
    _assert_stopped(data_root)
