"""A visit observed in three filters through ``crlib run``: truth per filter, inference for all.

Real ACS/WFC visits often hold several filters. Screening groups exposures into (visit, detector,
filter) sets; each set with >= 2 accepted exposures is aligned and drizzled on its own (a median
of mixed bandpasses would label every star's colour a cosmic ray); a lone exposure in its filter
gets model inference and no truth, with the reason recorded.
"""

from __future__ import annotations

import pytest
from testsupport.sql import query_rows

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning")]


def test_a_three_filter_visit_gets_truth_per_filter_and_predictions_for_every_exposure(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crlib.config import load_settings
    from crlib.pipeline.sequential import run_pipeline
    from crlib.simulate import simulate_archive
    from crlib.simulate.effects import SimEffects

    archive = simulate_archive(
        tmp_path_factory.mktemp("three-filter-archive"),
        visits=1,
        exposures=5,
        field_type="extragalactic",
        filters=("F606W", "F814W", "F435W"),
        size="small",
        seed=17,
        effects=SimEffects.realistic(filters_per_visit=3),
    )
    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_ARCHIVE", f"local:{archive.root}")
    monkeypatch.setenv("CRLIB_THREADS", "2")
    (visit,) = archive.visits
    rootnames = sorted(e.rootname for e in visit.exposures)
    lone = rootnames[-1]  # the simulator's last block: F435W, one exposure

    summary = run_pipeline(load_settings(), run_id="three-filters")

    assert summary["status"] == "success", summary
    assert summary["accepted"] == 5 and summary["predicted"] == 5, summary
    assert summary["truth"] == {r: "ok" for r in rootnames if r != lone}, summary
    assert summary["scored"] == 4, summary
    # one alignment per filter set, each over its own two exposures
    alignments = dict(query_rows(database_url, "SELECT filter, status FROM alignment_results"))
    assert set(alignments) == {"F606W", "F814W"}, alignments
    assert all(status.startswith("aligned") for status in alignments.values()), alignments
    # truth rows name their filter's files only; the lone F435W exposure has none but a prediction
    truth = dict(
        query_rows(database_url, "SELECT rootname, status FROM truth_results WHERE method = 'drizzle'")
    )
    assert truth == {r: "ok" for r in rootnames if r != lone}, truth
    filters = dict(query_rows(database_url, "SELECT rootname, filter FROM exposures"))
    expected = ["F606W", "F606W", "F814W", "F814W", "F435W"]
    assert filters == dict(zip(rootnames, expected, strict=True)), filters
    predicted = {
        r for (r,) in query_rows(database_url, "SELECT rootname FROM predictions WHERE status = 'ok'")
    }
    assert predicted == set(rootnames)
