"""Ingestion never stalls on one bad exposure, and its run records tell the truth (issue 17).

One simulated archive carries every damage class an operator meets (``crlib.simulate.damage``):
chips of NaN, a constant chip, missing DQ/ERR extensions, a wrong BUNIT, zero EXPTIME, a file cut
short, a text file named like an FLC, a checksum that does not match, an exposure listed twice,
and a visit of blank sky (zero sources). ``crlib run`` processes the rest of every visit and
every other visit, records each damaged exposure with its reason, ends ``partial``, prints no
traceback, and a second run over the same data does not crash either.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from testsupport.sql import query_rows

pytestmark = pytest.mark.slow

#: Damage classes planted in each of the two damaged visits (rootnames are named by class).
VISIT_A_DAMAGES = ("all_nan", "half_nan", "constant", "missing_dq", "missing_err", "wrong_bunit")
VISIT_B_DAMAGES = ("zero_exptime", "truncated", "not_fits", "bad_checksum", "duplicate_rootname")

#: What the operator reads for each class: a fragment of the recorded reason.
EXPECTED_REASON = {
    "all_nan": "NaN",
    "half_nan": "%",
    "constant": "constant",
    "missing_dq": "DQ,1",
    "missing_err": "ERR,2",
    "wrong_bunit": "BUNIT",
    "zero_exptime": "EXPTIME",
    "truncated": "truncated",
    "not_fits": "not a FITS file",
    "bad_checksum": "md5",
}


#: Not damage but a science rule's rejection (an ordinary outcome, not a failure of the run).
REJECTED_BY_RULE = ("wrong_bunit", "zero_exptime")


def _crlib(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crlib", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def poisoned_archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three small visits: A and B with five and six damaged exposures beside three good ones, C blank."""
    from crlib.simulate import simulate_archive
    from crlib.simulate.damage import blank_field, plant_damaged_exposure

    root = tmp_path_factory.mktemp("poisoned-archive")
    archive = simulate_archive(
        root, visits=3, exposures=3, field_type="mixed", filters=("F606W",), size="small", seed=17
    )
    visit_a, visit_b, visit_c = (v.visit for v in archive.visits)
    planted = {damage: plant_damaged_exposure(root, visit_a, damage) for damage in VISIT_A_DAMAGES}
    planted |= {damage: plant_damaged_exposure(root, visit_b, damage) for damage in VISIT_B_DAMAGES}
    # Visit C keeps two exposures, both of blank sky: nothing to align on.
    shutil.rmtree(root / visit_c)
    from crlib.simulate import simulate_visit

    blank = simulate_visit(
        root, field_type="extragalactic", exposures=2, size="small", seed=23, visit_index=2
    )
    blank_field(root, blank.visit)
    good = {
        visit_a: sorted(e.rootname for e in archive.visits[0].exposures),
        visit_b: sorted(e.rootname for e in archive.visits[1].exposures),
        blank.visit: sorted(e.rootname for e in blank.exposures),
    }
    return {"root": root, "planted": planted, "good": good, "blank": blank.visit, "archive": archive}


def test_every_damage_class_is_quarantined_and_the_rest_processed(
    poisoned_archive: dict[str, Any], database_url: str, tmp_path: Path
) -> None:
    root, planted, good = poisoned_archive["root"], poisoned_archive["planted"], poisoned_archive["good"]
    env = {
        **os.environ,
        "CRLIB_DATABASE_URL": database_url,
        "CRLIB_ARCHIVE": f"local:{root}",
        "CRLIB_DATA_ROOT": str(tmp_path / "data"),
        "CRLIB_THREADS": "2",
        "CRLIB_DEVICE": "cpu",
        "CRLIB_INFERENCE_MODEL": "deepcr",
    }
    result = _crlib("run", "--json", env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    summary = json.loads(result.stdout)

    # The run says what happened: partial, every damaged exposure listed with its reason.
    assert summary["status"] == "partial", summary
    assert summary["errors"] == {}, summary["errors"]
    failed = summary["failed"]
    for damage, fragment in EXPECTED_REASON.items():
        rootname = planted[damage]
        if damage in REJECTED_BY_RULE:
            assert fragment in "; ".join(summary["rejected"][rootname]), (damage, summary["rejected"])
            continue
        assert rootname in failed, (damage, failed)
        assert fragment in failed[rootname], (damage, failed[rootname])
        assert rootname in failed[rootname] or "download" in failed[rootname], failed[rootname]
    damaged = {planted[d] for d in EXPECTED_REASON if d not in REJECTED_BY_RULE}
    assert set(failed) == damaged, failed
    assert summary["message"].startswith(f"{len(damaged)} of "), summary["message"]

    # Every good exposure of every visit went all the way: truth, prediction, metrics.
    all_good = sorted(r for rootnames in good.values() for r in rootnames)
    truth = summary["truth"]
    assert all(truth[r] in ("ok", "suspect") for r in all_good), truth
    scored = {r for (r,) in query_rows(database_url, "SELECT rootname FROM exposure_metrics")}
    assert scored == set(all_good), scored
    # The blank visit kept its header WCS (nothing to align on) and still got truth.
    aligned = dict(query_rows(database_url, "SELECT visit, status FROM alignment_results"))
    assert aligned[poisoned_archive["blank"]] == "not_aligned", aligned

    # The database agrees: each damaged exposure is a rejection with its reason, no derived rows.
    reasons = dict(
        query_rows(
            database_url,
            "SELECT v.rootname, string_agg(r.message, '; ') FROM screening_verdicts v "
            "JOIN screening_reasons r USING (rootname) WHERE v.verdict = 'reject' GROUP BY 1",
        )
    )
    for damage in EXPECTED_REASON:
        assert EXPECTED_REASON[damage] in reasons[planted[damage]], (damage, reasons)
    run = query_rows(database_url, "SELECT dag_id, status, message FROM pipeline_runs")
    assert run == [("crlib_cli_run", "partial", summary["message"])], run

    # The next run over the same data does not crash either: same outcome, no duplicate rows.
    counts = query_rows(database_url, "SELECT count(*) FROM exposure_metrics")
    proposal = poisoned_archive["archive"].visits[0].proposal_id
    again = _crlib("run", "--json", "--proposal", str(proposal), env=env)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Traceback" not in again.stderr
    second = json.loads(again.stdout)
    assert second["status"] == "partial", second
    visit_a = poisoned_archive["archive"].visits[0].visit
    assert set(second["failed"]) == {planted[d] for d in VISIT_A_DAMAGES if d not in REJECTED_BY_RULE}
    assert query_rows(database_url, "SELECT count(*) FROM exposure_metrics") == counts
    assert sorted(second["truth"]) == sorted([*good[visit_a]])


def test_killed_run_is_abandoned_and_an_empty_request_is_refused(
    small_archive, database_url: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "CRLIB_DATABASE_URL": database_url,
        "CRLIB_ARCHIVE": f"local:{small_archive.root}",
        "CRLIB_DATA_ROOT": str(tmp_path / "data"),
        "CRLIB_THREADS": "1",
        "CRLIB_DEVICE": "cpu",
        "CRLIB_INFERENCE_MODEL": "deepcr",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "crlib", "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            ready = query_rows(
                database_url, "SELECT count(*) FROM pg_tables WHERE tablename = 'pipeline_runs'"
            )
            if (
                ready[0][0]
                and query_rows(database_url, "SELECT count(*) FROM pipeline_runs WHERE status = 'running'")[
                    0
                ][0]
            ):
                break
            assert child.poll() is None, child.communicate()
            time.sleep(0.2)
        else:
            raise AssertionError("the run never started")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert query_rows(database_url, "SELECT status FROM pipeline_runs") == [("running",)]

    # The next run starts (and is refused: proposal 12177 has nothing in this archive): one line,
    # exit 1, and the killed run is recorded as abandoned on the way.
    refused = _crlib("run", "--proposal", "12177", env=env, timeout=300)
    assert refused.returncode == 1, refused
    (error,) = [line for line in refused.stderr.splitlines() if line.startswith("crlib: error:")]
    assert "12177" in error and "no ACS/WFC exposures" in error, refused.stderr
    assert "Traceback" not in refused.stderr

    pipeline = json.loads(_crlib("stats", "pipeline", "--format", "json", env=env).stdout)
    (row,) = [r for r in pipeline if r["dag_id"] == "crlib_cli_run"]
    assert (row["runs"], row["abandoned"], row["failed"], row["unfinished"]) == (2, 1, 1, 0), row
    (message,) = query_rows(database_url, "SELECT message FROM pipeline_runs WHERE status = 'abandoned'")[0]
    assert "process" in message and "gone" in message, message

    visit_only = _crlib("run", "--visit", small_archive.visits[0].visit.upper(), env=env, timeout=300)
    assert visit_only.returncode != 0 and "--proposal" in visit_only.stderr, visit_only.stderr
