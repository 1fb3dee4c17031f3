"""The fairness machinery of ``crlib bench truth`` (no AstroDrizzle run here; see test_cli.py)."""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap

import pytest

from crlib.bench import fair_timing as timing
from crlib.bench import truth as fidelity
from crlib.bench.truth_process import bare_astrodrizzle
from crlib.truth import drizzle
from crlib.truth.parameters import parameter_differences


def test_timed_runs_alternate_so_neither_tool_always_goes_first():
    assert timing.alternation_order(1) == ["crlib", "bare"]
    assert timing.alternation_order(2) == ["crlib", "bare", "bare", "crlib"]
    assert timing.alternation_order(3) == ["crlib", "bare", "bare", "crlib", "crlib", "bare"]
    with pytest.raises(ValueError, match="repeats"):
        timing.alternation_order(0)


def test_time_call_reports_an_import_inside_the_timed_region(tmp_path, monkeypatch):
    (tmp_path / "h9_fresh_module_for_timing.py").write_text("VALUE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "h9_fresh_module_for_timing", raising=False)

    def imports() -> int:
        import h9_fresh_module_for_timing

        return int(h9_fresh_module_for_timing.VALUE)

    result, seconds, imported = timing.time_call(imports)
    assert result == 3 and seconds >= 0
    assert imported == ("h9_fresh_module_for_timing",)
    assert timing.time_call(imports)[2] == ()


def test_preload_imports_drizzlepac_and_the_stage_modules():
    assert {"drizzlepac.astrodrizzle", "crlib.truth.visit"} <= set(timing.preload_modules())
    assert all(name in sys.modules for name in timing.PRELOAD_MODULES)


def _timed_lambdas(function) -> list[str]:
    """Source of the callables ``benchmark_visit`` times: ``calls = {tool: lambda: ...}``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    (calls,) = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.AnnAssign | ast.Assign)
        and isinstance(node.value, ast.Dict)
        and any(isinstance(v, ast.Lambda) for v in node.value.values)
    ]
    return [ast.unparse(value) for value in calls.values]


def test_timed_regions_hold_no_import_and_no_cleanup():
    """By structure: the timers wrap only the two tool calls; imports and rmtree stay outside."""
    timed = _timed_lambdas(fidelity.benchmark_visit)
    assert len(timed) == 2
    assert "build_visit_truth" in timed[0] and "bare_astrodrizzle" in timed[1]
    bare = inspect.getsource(bare_astrodrizzle)
    body = bare.split('"""')[-1]
    # the bare path's own imports are of modules preloaded before any timer
    for line in body.splitlines():
        if line.strip().startswith("from "):
            assert line.split()[1] in timing.PRELOAD_MODULES
    assert "rmtree" not in body
    timer = inspect.getsource(timing.time_call)
    assert "import" not in timer.split('"""')[-1]


def test_parameter_differences_names_every_mismatch():
    crlib = {"skymethod": "match", "num_cores": 1, "driz_cr_snr": "3.5 3.0", "output": "a"}
    assert parameter_differences(crlib, dict(crlib)) == {}
    bare = {**crlib, "skymethod": "localmin", "num_cores": 2}
    bare.pop("driz_cr_snr")
    assert parameter_differences(crlib, bare) == {
        "driz_cr_snr": ("3.5 3.0", None),
        "num_cores": (1, 2),
        "skymethod": ("match", "localmin"),
    }
    assert parameter_differences(crlib, {**crlib, "output": "b"}, ignore=frozenset({"output"})) == {}


def test_num_cores_default_request_and_limits(monkeypatch):
    assert drizzle.resolve_num_cores(None, 3) == drizzle.DEFAULT_NUM_CORES
    assert drizzle.resolve_num_cores(2, 3) == 2
    assert drizzle.resolve_num_cores(8, 3) == 3  # drizzlepac starts no more than one per exposure
    assert "num_cores" not in drizzle.FORCED_PARAMETERS  # a caller can choose it, for both tools

    class Daemon:
        daemon = True

    monkeypatch.setattr(drizzle.multiprocessing, "current_process", lambda: Daemon())
    assert drizzle.resolve_num_cores(2, 3) == 1


def _visit_report(*, match: bool) -> dict:
    params = {
        "parameter_set": "acs_wfc_any_n2",
        "skymethod": "match",
        "skymethod_used": "match",
        "num_cores": 1,
    }
    bare = dict(params) if match else {**params, "skymethod_used": "localmin"}
    runs = [
        {"tool": tool, "seconds": s, "load_average": [1.5, 1.2, 1.0], "imported_while_timed": []}
        for tool, s in zip(timing.alternation_order(2), (10.0, 8.0, 8.2, 10.4), strict=True)
    ]
    return {
        "visit": "j7t403",
        "field_type": "globular_cluster",
        "alignment_status": "aligned_relative",
        "alignment_error_rms_px": 0.01,
        "recall_50e": 0.99,
        "recall_3sigma": 0.9,
        "false_positive_rate": 2e-5,
        "false_positive_rate_outside_grow_ring": 1e-5,
        "star_core_contamination": 0.0,
        "truth_seconds": 10.2,
        "bare_astrodrizzle_seconds": 8.1,
        "time_ratio": 10.2 / 8.1,
        "statuses": {"j7t40301q": "ok"},
        "truth_step_seconds": {"align": 3.0, "drizzle": 5.0, "total": 10.0},
        "runs": runs,
        "order": [r["tool"] for r in runs],
        "threads": {
            "cpu_count": 2,
            "truth_mask_workers": 2,
            "align_catalog_workers": 2,
            "astrodrizzle_num_cores": {"crlib": 1, "bare": 1},
        },
        "parameters": {"crlib": params, "bare": bare},
        "parameters_match": match,
        "parameter_differences": {k: list(v) for k, v in parameter_differences(params, bare).items()},
    }


def test_report_prints_both_times_every_run_parameters_threads_and_load():
    report = {
        "targets": fidelity.TARGETS,
        "size": "small",
        "exposures": 3,
        "repeats": 2,
        "warmup": True,
        "cpu_count": 2,
        "load_average_start": [1.5, 1.2, 1.0],
        "load_average_end": [1.7, 1.3, 1.0],
        "visits": [_visit_report(match=True)],
    }
    text = fidelity.format_report(report)
    assert "median of 2 alternated runs" in text and "warm-up" in text
    assert "load average (1/5/15 min) [1.5, 1.2, 1.0]" in text and "2 CPU cores" in text
    assert "runs in order: crlib 10.0 s (load 1.5), bare 8.0 s (load 1.5), bare 8.2 s" in text
    assert "AstroDrizzle num_cores crlib 1, bare 1" in text
    assert "modules imported inside a timer: none" in text
    assert "parameters: identical" in text
    assert "crlib parameters:" in text and "bare parameters:" in text

    report["visits"] = [_visit_report(match=False)]
    assert "parameters DIFFER: skymethod_used: crlib 'match' vs bare 'localmin'" in fidelity.format_report(
        report
    )


def test_alignment_lines_show_true_error_injection_matches_and_the_rule():
    from crlib.bench.truth_report import alignment_lines

    row = {
        "rms_px": 0.012,
        "max_px": 0.02,
        "header_rms_px": 0.3,
        "injected": {"shift_px": [0.5, -1.0], "roll_deg": 0.0012, "scale": 1 + 4e-6},
        "reference": False,
        "fitted": True,
        "n_matches": 98,
        "n_fit": 97,
        "min_matches": 12,
        "fit_rms_px": 0.2,
        "refine_n_matches": 237,
        "refine_n_fit": 231,
        "refine_min_matches": 12,
        "refine_rms_px": 0.13,
    }
    visit = {
        "alignment_status": "aligned_relative",
        "alignment_fit_geometry": "rscale",
        "alignment_reason": "refined (rscale) on the looser catalogs within 1 px: >= 237 matches",
        "alignment_check": {
            "reference": "a01q",
            "absolute": False,
            "rule": {"rscale": 12, "rshift": 8, "shift": 4},
            "rule_ok": True,
            "exposures": {
                "a01q": {"rms_px": 0.0, "max_px": 0.0, "header_rms_px": 0.0, "reference": True},
                "a02q": row,
            },
        },
    }
    text = "\n".join(alignment_lines(visit))
    assert "frame of reference exposure a01q" in text and "rscale >= 12" in text and "kept" in text
    assert "a02q: error rms 0.012 px, max 0.020 (header 0.300)" in text
    assert "injected shift (+0.50, -1.00) px, roll +0.00120 deg, scale +4.0e-06" in text
    assert "fit on 98 matches (97 after clipping, rule 12)" in text and "refined on 237 (231" in text
    visit["alignment_check"]["rule_ok"] = False
    assert "BROKEN" in alignment_lines(visit)[0]
