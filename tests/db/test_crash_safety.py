"""A recorder killed with SIGKILL mid-stage leaves no partial stage; re-running gives a clean run's rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

CHILD = """
import sys
from conftest_loader import load
factory = load(sys.argv[2])
from crlib.db.engine import make_engine, session_factory
engine = make_engine(sys.argv[1])
engine = engine.execution_options()
from sqlalchemy import create_engine
engine = create_engine(engine.url, connect_args={"application_name": "crlib-kill-test"})
records = factory.visit_records("jbt122", n=int(sys.argv[3]), bins=1699, seed=7)
with session_factory(engine)() as session:
    factory.record_visit(session, records)
print("done", flush=True)
"""

LOADER = """
import importlib.util

def load(path):
    spec = importlib.util.spec_from_file_location("crlib_tests_db_visit_factory", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
"""

N_EXPOSURES = 400


def _start_child(tmp_path: Path, url: str) -> subprocess.Popen[str]:
    (tmp_path / "conftest_loader.py").write_text(LOADER)
    script = tmp_path / "record_visit.py"
    script.write_text(CHILD)
    factory = Path(__file__).with_name("db_visit_factory.py")
    return subprocess.Popen(
        [sys.executable, str(script), url, str(factory), str(N_EXPOSURES)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )


def _kill_while_recording_metrics(child: subprocess.Popen[str], url: str) -> None:
    monitor = create_engine(url, isolation_level="AUTOCOMMIT")
    deadline = time.monotonic() + 240
    try:
        with monitor.connect() as connection:
            while time.monotonic() < deadline:
                busy = connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crlib-kill-test' "
                        "AND xact_start IS NOT NULL "
                        # The metrics stage's own statements only: screening also deletes
                        # exposure_metrics rows (of rejected exposures), in an earlier stage.
                        "AND (query ILIKE 'COPY exposure_metrics%' "
                        "OR query ILIKE 'DELETE FROM exposure_metrics m USING unnest%')"
                    )
                ).scalar_one()
                if busy:
                    os.kill(child.pid, signal.SIGKILL)
                    return
                if child.poll() is not None:
                    break
                time.sleep(0.005)
    finally:
        monitor.dispose()
    raise AssertionError(f"never caught the recorder mid-metrics; child said {child.communicate()}")


def _counts(url: str, factory: Any) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return factory.table_counts(connection)
    finally:
        engine.dispose()


def _statistics(url: str) -> dict[str, Any]:
    """Every ``crlib stats`` answer, live and after a refresh (they must agree)."""
    from crlib.db.engine import session_factory
    from crlib.db.stats import cr_rate, model_performance, refresh_summaries

    engine = create_engine(url)
    try:
        with session_factory(engine)() as session:
            live = {
                "rates": cr_rate(session, by=("month", "chip")),
                "performance": [r.as_dict() for r in model_performance(session, by=("model", "filter"))],
            }
            refresh_summaries(session)
            refreshed = {
                "rates": cr_rate(session, by=("month", "chip")),
                "performance": [r.as_dict() for r in model_performance(session, by=("model", "filter"))],
            }
            assert refreshed == live
            return refreshed
    finally:
        engine.dispose()


def _wait_for_backend_gone(url: str) -> None:
    monitor = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with monitor.connect() as connection:
            for _ in range(600):
                left = connection.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crlib-kill-test'")
                ).scalar_one()
                if not left:
                    return
                time.sleep(0.05)
    finally:
        monitor.dispose()


def test_sigkill_mid_recording_then_rerun_equals_clean_run(
    factory: Any, engine: Any, database_url: str, postgres_server_url: str, tmp_path: Path
) -> None:
    child = _start_child(tmp_path, database_url)
    _kill_while_recording_metrics(child, database_url)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert "done" not in out
    _wait_for_backend_gone(database_url)

    after_kill = _counts(database_url, factory)
    # Every stage before metrics is complete; the metrics stage left nothing at all.
    assert after_kill["exposures"] == N_EXPOSURES
    assert after_kill["truth_chips"] == 2 * after_kill["truth_results"] == 2 * N_EXPOSURES
    assert after_kill["predictions"] == N_EXPOSURES
    assert after_kill["exposure_metrics"] == 0

    rerun = _start_child(tmp_path, database_url)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "done" in out

    # A clean run in a fresh database gives exactly the same rows.
    clean_name = f"crlib_clean_{uuid.uuid4().hex[:8]}"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{clean_name}"'))
    clean_url = make_url(postgres_server_url).set(database=clean_name).render_as_string(hide_password=False)
    try:
        from crlib.db.engine import make_engine
        from crlib.db.migrate import upgrade

        clean_engine = make_engine(clean_url)
        upgrade(clean_engine)
        clean_engine.dispose()
        clean = _start_child(tmp_path, clean_url)
        _, err = clean.communicate(timeout=300)
        assert clean.returncode == 0, err
        assert _counts(database_url, factory) == _counts(clean_url, factory)
        assert _counts(database_url, factory)["exposure_metrics"] == N_EXPOSURES
        assert _statistics(database_url) == _statistics(clean_url)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{clean_name}" WITH (FORCE)'))
        admin.dispose()
