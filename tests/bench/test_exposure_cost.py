"""``crlib bench pipeline`` (issue #16 item 6): core-seconds per exposure beside the reference tools."""

from __future__ import annotations

import json
import sys

import pytest

from crlib.bench.exposure_cost import (
    TARGET_CORE_SECONDS_PER_EXPOSURE,
    process_cost,
    run_pipeline_cost_benchmark,
)
from crlib.bench.pipeline import STAGE_ORDER
from crlib.cli.pipeline_cost import print_pipeline_cost
from crlib.config import load_settings
from crlib.errors import CrlibError


def test_a_child_process_is_charged_its_own_cpu_time(tmp_path) -> None:
    burn = (
        "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\nprint('done')"
    )
    cost = process_cost([sys.executable, "-c", burn], workdir=tmp_path / "logs")
    assert (tmp_path / "logs" / "stdout.txt").read_text().strip() == "done"
    assert cost.core_s >= 0.3 and cost.wall_s >= 0.3
    with pytest.raises(CrlibError, match=r"failed \(3\)"):
        process_cost([sys.executable, "-c", "import sys; sys.exit(3)"], workdir=tmp_path / "logs")


def test_bad_parameters_are_refused() -> None:
    settings = load_settings()
    with pytest.raises(CrlibError, match="exposures must be 3-8"):
        run_pipeline_cost_benchmark(settings, exposures=2)
    with pytest.raises(CrlibError, match="field types must be among"):
        run_pipeline_cost_benchmark(settings, field_types=("nebula",))


@pytest.mark.slow
def test_small_visit_through_every_stage_beside_astrodrizzle_and_deepcr(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_DEVICE", "cpu")
    settings = load_settings()
    report = run_pipeline_cost_benchmark(
        settings, field_types=("extragalactic",), size="small", exposures=3, effects="basic"
    )
    document = json.loads(json.dumps(report.as_dict()))
    (row,) = document["field_types"]
    assert row["outcome"]["exposures"] == 3 and row["outcome"]["scored"] == 3
    assert set(row["stage_core_s"]) == set(STAGE_ORDER)
    # the heavy stages cost CPU; every stage is charged per exposure
    assert row["stage_core_s"]["truth"] > 0 and row["stage_core_s"]["infer"] > 0
    crlib = row["per_exposure"]["crlib"]
    assert crlib["core_s"] == pytest.approx(sum(row["stage_core_s"].values()))
    for reference in ("astrodrizzle", "deepcr"):
        cost = row["per_exposure"][reference]
        assert cost["core_s"] > 0 and cost["wall_s"] > 0, reference
    assert row["ratios"]["crlib_truth_over_astrodrizzle"] > 0 and row["ratios"]["crlib_infer_over_deepcr"] > 0
    target = document["target"]
    assert target["core_s_per_exposure"] == TARGET_CORE_SECONDS_PER_EXPOSURE
    assert target["pass"] == (document["core_s_per_exposure"] <= TARGET_CORE_SECONDS_PER_EXPOSURE)
    assert document["inference_precision"].split()[0] in ("fp32", "bf16")
    # the scratch archives and data roots are gone
    assert not any((settings.data_root / "bench").glob("pipeline-*"))

    # what `crlib bench pipeline` prints for it
    print_pipeline_cost(report)
    printed = capsys.readouterr().out
    assert "core-seconds per exposure" in printed and "bare AstroDrizzle" in printed
    assert f"{document['core_s_per_exposure']:.2f} core-s per exposure" in printed
