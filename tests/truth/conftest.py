"""Small simulated visits and their truth-stage results, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def truth_archive(tmp_path_factory: pytest.TempPathFactory):
    """Three small 3-exposure visits: globular cluster, extragalactic, resolved galaxy."""
    from crlib.simulate import simulate_archive

    root = tmp_path_factory.mktemp("truth-archive")
    return simulate_archive(root, visits=3, exposures=3, field_type="mixed", size="small", seed=11)


@pytest.fixture(scope="session")
def gc_truth(truth_archive, tmp_path_factory: pytest.TempPathFactory):
    """The drizzle truth stage run on the globular-cluster visit (no catalog queries)."""
    from crlib.align import AlignOptions
    from crlib.truth import TruthOptions, build_visit_truth

    visit = next(v for v in truth_archive.visits if v.field_type == "globular_cluster")
    work = tmp_path_factory.mktemp("truth-work") / visit.visit
    options = TruthOptions(align_options=AlignOptions(query_catalogs=False))
    return visit, build_visit_truth(Path(visit.directory), work_dir=work, options=options)
