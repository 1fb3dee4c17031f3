"""``crlib bench infer``: in-process methods beside whole-process ``crlib infer``, with a breakdown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crlib.bench import inference as benchmark
from crlib.bench.inference import (
    CLI_VARIANTS,
    _grouped,
    _package_group,
    _ratios,
    run_inference_benchmark,
    trace_breakdown,
)


def test_whole_process_runs_are_reported_beside_the_engine_with_a_breakdown(flc_factory) -> None:
    flc, _ = flc_factory("jbnch01aq", shape=(128, 160))
    report = run_inference_benchmark(
        flc=flc, threads=1, methods=("engine-fp32",), cli_variants=("cli-same-model",), repeats=2
    )
    engine = report["methods"]["engine-fp32"]
    assert len(engine["samples"]) == 2 and engine["seconds"] > 0 and engine["read_seconds"] > 0
    cli = report["cli"]["cli-same-model"]
    assert cli["command"].endswith("--model ACS-WFC --precision fp32")
    assert len(cli["samples"]) == 2 and cli["wall_s"] > 0 and cli["peak_rss_mb"] > 50
    parts = report["cli_breakdown"]
    for part in (
        "interpreter start",
        "imports: torch",
        "imports: crlib",
        "settings",
        "model choice (registry lookup)",
        "model load",
        "FITS read",
        "inference",
        "FITS write",
        "command (other)",
        "interpreter exit",
    ):
        assert part in parts, part
    assert parts["inference"] > 0 and parts["imports: torch"] > 0
    total = parts.pop("total (traced run)")
    assert sum(parts.values()) == pytest.approx(total, abs=0.02)
    assert report["ratios"]["cli-same-model_over_engine-fp32"] > 0
    assert set(report["load_average"]) == {"start", "end"} and len(report["load_average"]["start"]) == 3
    assert report["repeats"] == 2 and report["size"] == "given"


def test_breakdown_parts_sum_to_the_wall_time() -> None:
    trace = {
        "marks": {"t0": 0.0, "started": 100.2, "main": 100.25, "command": 101.5, "ended": 110.0},
        "stages": {"FITS read": 0.5, "inference": 6.0, "FITS write": 0.4},
        "imports_by_phase": {"command-line imports": 1.2, "FITS read": 0.1, "command (other)": 1.5},
        "imports_by_group": {"torch": 2.0, "crlib": 0.5, "astropy": 0.3},
    }
    parts = trace_breakdown(trace, wall_s=10.6, start=100.0)
    assert parts["interpreter start"] == pytest.approx(0.25)
    assert parts["interpreter exit"] == pytest.approx(0.6)
    assert parts["imports: torch"] == 2.0 and parts["inference"] == 6.0
    assert parts["command (other)"] == pytest.approx(9.75 - 2.8 - 6.9)
    assert sum(parts.values()) == pytest.approx(10.6, abs=1e-3)


def test_package_groups_and_ratios() -> None:
    assert _package_group("torchgen") == "torch" and _package_group("erfa") == "astropy"
    assert _package_group("json") == "other (stdlib, small packages)"
    assert list(_grouped({"json": 0.1, "torch": 2.0, "torchgen": 0.5})) == [
        "torch",
        "other (stdlib, small packages)",
    ]
    results = {"deepcr": {"seconds": 20.0}, "engine-fp32": {"seconds": 8.0}}
    ratios = _ratios(results, {"cli-same-model": {"wall_s": 10.0}})
    assert ratios == {"deepcr_over_engine-fp32": 2.5, "cli-same-model_over_engine-fp32": 1.25}
    assert set(CLI_VARIANTS) == {"cli-same-model", "cli-default"}


def test_unknown_methods_are_refused() -> None:
    from crlib.errors import CrlibError

    with pytest.raises(CrlibError, match="unknown benchmark methods"):
        run_inference_benchmark(methods=("tensorflow",), size="small")


def test_command_prints_every_section(monkeypatch, capsys) -> None:
    from crlib.cli.app import main

    canned: dict[str, Any] = {
        "exposure": "jx_flc.fits",
        "size": "full",
        "threads": 2,
        "model": "ACS-WFC",
        "repeats": 3,
        "methods": {"deepcr": {"seconds": 20.0, "peak_rss_mb": 2000.0}, "engine-bf16": {"skipped": "no"}},
        "cli": {"cli-same-model": {"wall_s": 11.0, "peak_rss_mb": 900.0, "command": "crlib -q infer FILE"}},
        "cli_breakdown": {"imports: torch": 1.5, "inference": 8.0},
        "ratios": {"cli-same-model_over_engine-fp32": 1.2},
        "load_average": {"start": (2.0, 2.1, 2.2), "end": (2.5, 2.4, 2.3)},
    }
    seen: dict[str, Any] = {}

    def fake(**kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs)
        return canned

    monkeypatch.setattr(benchmark, "run_inference_benchmark", fake)
    with pytest.raises(SystemExit) as done:
        main(["bench", "infer", "--repeats", "3", "--method", "deepcr", "--method", "engine-bf16"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "load average 2.00 / 2.10 / 2.20 at start" in out
    assert "whole process" in out and "cli-same-model" in out and "imports: torch" in out
    assert "(target <= 1.3x)" in out
    assert seen["methods"] == ("deepcr", "engine-bf16") and seen["repeats"] == 3
    with pytest.raises(SystemExit) as done:
        main(["bench", "infer", "--json", "--no-cli", "--method", "deepcr"])
    assert json.loads(capsys.readouterr().out)["model"] == "ACS-WFC"
    assert seen["cli_variants"] == () and seen["trace"] is False
    with pytest.raises(SystemExit) as done:
        main(["bench", "infer", "--method", "tf"])
    assert done.value.code == 1 and "unknown method" in capsys.readouterr().err


def test_crlib_command_is_this_interpreters(tmp_path: Path) -> None:
    command = benchmark.crlib_command()
    assert Path(command[-1]).name == "crlib"
