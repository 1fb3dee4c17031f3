"""A one-chip subarray visit and a full-frame visit through the nightly DAG and through ``crlib run``.

The archive (served by the fake MAST over HTTP) holds two small simulated visits: one as the
simulator writes it (two chips), one whose exposures are cut the way the archive serves an ACS/WFC
``WFC1-512`` subarray: the WFC1 chip only, 512x512, renumbered ``SCI,1``, ``SUBARRAY=T``. Nothing
in the pipeline is told which is which: chip counts and shapes come from the files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from testsupport.sql import query_rows

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")]

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance" / "conftest.py"


def _crop_one_chip() -> Any:
    spec = importlib.util.spec_from_file_location("crlib_tests_conformance_layouts", CONFORMANCE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.crop_one_chip


def _cut_visit_to_subarrays(root: Path, visit: Any) -> None:
    """Replace every exposure of ``visit`` by its WFC1-512 subarray and fix the archive's listing."""
    crop = _crop_one_chip()
    listing = root / "observations.json"
    document = json.loads(listing.read_text())
    for exposure in visit.exposures:
        flc = Path(exposure.path)
        staged = flc.parent / "subarray"
        staged.mkdir(exist_ok=True)
        cut, _ = crop(
            flc,
            Path(exposure.truth_path),
            staged,
            extver=2,
            renumber=True,
            columns=slice(256, 768),
            aperture="WFC1-512",
        )
        cut.replace(flc)
        for product in document["products"]:
            if product["obs_id"] == exposure.rootname:
                product["size"] = flc.stat().st_size
                product["md5"] = hashlib.md5(flc.read_bytes()).hexdigest()
    listing.write_text(json.dumps(document))


@pytest.fixture(scope="module")
def layouts_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from crlib.harness.fake_mast import FakeMast
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("layouts-archive")
    archive = simulate_archive(root, visits=2, exposures=3, field_type="mixed", size="small", seed=23)
    _cut_visit_to_subarrays(root, archive.visits[0])
    with FakeMast(root) as fake:
        yield archive, fake


def _per_visit(database_url: str) -> dict[str, dict[str, Any]]:
    """What the results database holds per visit: truth statuses, chips, predictions, scores."""
    rows = query_rows(
        database_url,
        "SELECT e.visit, "
        "  array_agg(DISTINCT t.status), "
        "  count(DISTINCT t.rootname), "
        "  (SELECT count(*) FROM truth_chips c "
        "   WHERE left(c.rootname, 6) = e.visit AND c.method = 'drizzle'), "
        "  (SELECT count(*) FROM predictions p WHERE left(p.rootname, 6) = e.visit AND p.status = 'ok'), "
        "  (SELECT count(*) FROM exposure_metrics m WHERE left(m.rootname, 6) = e.visit), "
        "  (SELECT count(*) FROM cr_statistics s WHERE left(s.rootname, 6) = e.visit) "
        "FROM exposures e JOIN truth_results t ON t.rootname = e.rootname AND t.method = 'drizzle' "
        "GROUP BY e.visit",
    )
    return {
        r[0]: {
            "truth": sorted(r[1]),
            "truths": r[2],
            "chips": r[3],
            "predictions": r[4],
            "scores": r[5],
            "stats": r[6],
        }
        for r in rows
    }


def _expected(chips: int) -> dict[str, Any]:
    return {
        "truth": ["ok"],
        "truths": 3,
        "chips": 3 * chips,
        "predictions": 3,
        "scores": 3,
        "stats": 3 * chips,
    }


def test_subarray_and_full_frame_visits_through_the_nightly_dag_and_crlib_run(
    airflow_db, dagbag, layouts_archive, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crlib.config import load_settings
    from crlib.pipeline.sequential import run_pipeline

    archive, fake = layouts_archive
    monkeypatch.setenv("CRLIB_ARCHIVE", "mast")
    monkeypatch.setenv("CRLIB_MAST_SERVER", fake.url)
    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_THREADS", "2")
    subarray, full = (v.visit for v in archive.visits)

    run = dagbag.dags["crlib_nightly_ingest"].test(
        logical_date=pendulum.datetime(2026, 11, 21, 3, 30, tz="UTC")
    )
    assert run.state == "success"
    assert [r[0] for r in query_rows(database_url, "SELECT status FROM pipeline_runs")] == ["success"]
    recorded = _per_visit(database_url)
    assert recorded == {subarray: _expected(1), full: _expected(2)}, recorded
    # CR rates over each chip's real area: the subarray's (one 512x512 chip) agree with the full
    # frame's (with one fixed chip area they would come out at half the full frame's)
    rates = dict(
        query_rows(
            database_url,
            "SELECT left(rootname, 6), avg(rate_per_cm2_s) FROM cr_statistics GROUP BY 1",
        )
    )
    assert 0.6 < rates[subarray] / rates[full] < 1.6, rates
    assert query_rows(
        database_url, f"SELECT DISTINCT chip FROM cr_statistics WHERE left(rootname, 6) = '{subarray}'"
    ) == [(1,)]

    # ``crlib run`` (the same stages, in one process) reprocesses the subarray visit: rows replaced.
    summary = run_pipeline(
        load_settings(), run_id="cli-subarray", proposal_id=archive.visits[0].proposal_id, visits=[subarray]
    )
    assert summary["status"] == "success" and summary["scored"] == 3, summary
    assert _per_visit(database_url) == recorded
