"""The scratch proposal the cluster benchmarks (``bench cluster``, ``bench warm-workers``) run on.

The benchmarks themselves start CeleryExecutor clusters (minutes); what they share, simulating the
proposal and owning its scratch databases and files, runs here against the session's PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from crlib.bench.scaling import PROPOSAL_ID, scratch_proposal
from crlib.config import Settings
from crlib.harness.services import drop_database


def _databases(server_url: str) -> set[str]:
    engine = create_engine(server_url)
    try:
        with engine.connect() as connection:
            return {row[0] for row in connection.execute(text("SELECT datname FROM pg_database"))}
    finally:
        engine.dispose()


@pytest.mark.parametrize("keep", [False, True])
def test_scratch_proposal_simulates_and_cleans_up(
    tmp_path: Path, postgres_server_url: str, keep: bool
) -> None:
    settings = Settings(data_root=tmp_path, database_url=SecretStr(postgres_server_url))
    messages: list[str] = []
    with scratch_proposal(
        settings,
        "bench-warm",
        roles=("airflow", "results"),
        visits=1,
        exposures=1,
        size="small",
        seed=5,
        notify=messages.append,
        keep=keep,
    ) as scratch:
        assert scratch.work.parent == (tmp_path / "bench-warm").resolve()
        assert any(scratch.work.glob("archive/**/*_flc.fits")), "the proposal's exposures are simulated"
        listing = json.loads((scratch.work / "archive" / "observations.json").read_text())
        assert {str(row["proposal_id"]) for row in listing["observations"]} == {str(PROPOSAL_ID)}
        assert set(scratch.databases) == {"airflow", "results"}
        assert all(
            name.startswith(f"crlib_bench_warm_{scratch.stamp}_") for name in scratch.databases.values()
        )
        url = scratch.database_url("results").get_secret_value()
        assert make_url(url).database == scratch.databases["results"]
        assert scratch.databases["results"] in _databases(postgres_server_url)
    assert messages and "1 visits x 1 small exposures" in messages[0]
    left = _databases(postgres_server_url) & set(scratch.databases.values())
    if keep:
        assert scratch.work.is_dir() and left == {scratch.databases["results"]}
        drop_database(postgres_server_url, scratch.databases["results"])
    else:
        assert not scratch.work.exists() and not left, "scratch files and databases are removed"
