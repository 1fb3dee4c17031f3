"""Text report of ``crlib bench truth`` (:func:`crlib.bench.truth.run_truth_benchmark` output)."""

from __future__ import annotations

from typing import Any

#: Names of the two timed tools: the whole truth stage, and AstroDrizzle alone.
CRLIB = "crlib"
BARE = "bare"

#: Effective parameters printed per tool (all of them are compared).
SHOWN_PARAMETERS = (
    "parameter_set",
    "skysub",
    "skymethod",
    "skymethod_used",
    "combine_type",
    "driz_cr",
    "driz_cr_snr",
    "driz_cr_scale",
    "driz_cr_grow",
    "driz_combine",
    "num_cores",
    "in_memory",
    "output",
)


def artefact_lines(visit: dict[str, Any]) -> list[str]:
    """Per-artefact-class lines of one visit's report (none for a basic simulation)."""
    from crlib.bench.artefact_fidelity import format_artefacts

    lines = []
    if visit.get("artefacts"):
        lines.append("  artefact pixels (not CR) labelled CR by the truth (target <= 1%):")
        lines.extend(format_artefacts(visit["artefacts"], indent="    "))
    excluded = visit.get("excluded") or {}
    if excluded:
        lines.append(
            "  excluded by the truth stage: " + ", ".join(f"{k[9:]} {v}" for k, v in excluded.items())
        )
    return lines


def alignment_lines(visit: dict[str, Any]) -> list[str]:
    """Per-exposure true alignment error, injected pointing error and the fit behind it."""
    check = visit.get("alignment_check")
    if not check:
        return []
    rule = ", ".join(f"{geometry} >= {n}" for geometry, n in check["rule"].items())
    frame = "true sky" if check["absolute"] else f"frame of reference exposure {check['reference']}"
    lines = [
        f"  alignment {visit['alignment_status']} ({visit.get('alignment_fit_geometry') or 'no fit'}), "
        f"true error in the {frame}; match rule {rule}: "
        f"{'kept' if check['rule_ok'] else 'BROKEN'}"
    ]
    if visit.get("alignment_reason"):
        lines.append(f"    reason: {visit['alignment_reason']}")
    for rootname, row in check["exposures"].items():
        inj = row.get("injected") or {}
        shift = inj.get("shift_px", [0.0, 0.0])
        if row.get("reference"):
            how = "reference"
        elif row.get("fitted"):
            how = (
                f"fit on {row['n_matches']} matches ({row['n_fit']} after clipping, "
                f"rule {row['min_matches']}), rms {row['fit_rms_px']:.3f} px"
            )
            if row.get("refine_n_matches") is not None:
                how += (
                    f"; refined on {row['refine_n_matches']} ({row['refine_n_fit']} after clipping, "
                    f"rule {row['refine_min_matches']}), rms {row['refine_rms_px']:.3f} px"
                )
        elif row.get("n_matches") is not None:
            how = f"fit refused ({row['n_matches']} matches), header WCS kept"
        else:
            how = "header WCS kept"
        lines.append(
            f"    {rootname}: error rms {row.get('rms_px', float('nan')):.3f} px, max "
            f"{row.get('max_px', float('nan')):.3f} (header {row.get('header_rms_px', float('nan')):.3f}); "
            f"injected shift ({shift[0]:+.2f}, {shift[1]:+.2f}) px, "
            f"roll {inj.get('roll_deg', 0.0):+.5f} deg, scale {inj.get('scale', 1.0) - 1.0:+.1e}; {how}"
        )
    return lines


def engine_lines(engines: dict[str, Any] | None) -> list[str]:
    """The drizzle engines' mask agreement and times on the same aligned inputs (none: not compared)."""
    if not engines:
        return []
    t = engines["targets"]
    seconds, cpu = engines["seconds"], engines["cpu_seconds"]
    return [
        f"  engines on the same aligned inputs: pixel agreement {engines['pixel_agreement']:.6f} "
        f"(>= {t['pixel_agreement']}), CR Jaccard {engines['cr_jaccard']:.6f} (>= {t['cr_jaccard']}), "
        f"{engines['differing_pixels']} differing pixels, blotted medians differ by <= "
        f"{engines['blot_max_abs_difference_e']:.3g} e-: {'PASS' if engines['passed'] else 'FAIL'}",
        f"  drizzle alone: AstroDrizzle {seconds['astrodrizzle']:.1f} s ({cpu['astrodrizzle']:.1f} CPU-s), "
        f"in-memory {seconds['inmemory']:.1f} s ({cpu['inmemory']:.1f} CPU-s), ratio "
        f"{seconds['inmemory'] / seconds['astrodrizzle']:.2f}",
    ]


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


def _timing_words(timing: str) -> str:
    if timing == "process":
        return "each run a whole process (interpreter start, imports and exit included)"
    return "both calls in this process, modules preloaded"


def format_report(report: dict[str, Any]) -> str:
    """Human-readable table of :func:`run_truth_benchmark` output, with every timed run and the
    parameters both tools used."""
    t = report["targets"]
    lines = [
        f"truth fidelity ({report['size']}, {report['exposures']} exposures/visit); targets: align <= "
        f"{t['alignment_rms_px']} px, recall(>50e-) >= {t['recall_50e']}, FPR <= {t['false_positive_rate']}, "
        f"star cores <= {t['star_core_contamination']}, time <= {t['time_ratio']}x bare AstroDrizzle; "
        f"truth stage drizzle engine: {report.get('engine', 'astrodrizzle')}",
        f"timing: {_timing_words(report.get('timing', 'in_process'))}, "
        f"median of {report['repeats']} alternated runs per tool"
        f"{' after one untimed warm-up run each' if report['warmup'] else ' (no warm-up)'}; "
        f"{report['cpu_count']} CPU cores; load average (1/5/15 min) "
        f"{_shown(report['load_average_start'])} at start, {_shown(report['load_average_end'])} at end",
        f"{'field type':18s} {'align':>8s} {'err px':>7s} {'rec50':>6s} {'rec3s':>6s} {'FPR':>9s} "
        f"{'FPR-ring':>9s} {'cores':>6s} {'truth s':>8s} {'bare s':>7s} {'ratio':>6s}  status",
    ]
    for v in report["visits"]:
        err = v["alignment_error_rms_px"]
        lines.append(
            f"{v['field_type']!s:18s} {v['alignment_status'] or '-':>8.8s} "
            f"{(f'{err:.3f}' if err is not None else '-'):>7s} "
            f"{v['recall_50e']:6.3f} {v['recall_3sigma']:6.3f} "
            f"{v['false_positive_rate']:9.2e} {v['false_positive_rate_outside_grow_ring']:9.2e} "
            f"{v['star_core_contamination']:6.3f} {v['truth_seconds']:8.1f} "
            f"{v['bare_astrodrizzle_seconds']:7.1f} "
            f"{v['time_ratio']:6.2f}  {','.join(sorted(set(v['statuses'].values())))}"
        )
    for v in report["visits"]:
        lines.append(f"{v['field_type']} ({v['visit']}):")
        lines.extend(alignment_lines(v))
        lines.extend(artefact_lines(v))
        runs = ", ".join(
            f"{r['tool']} {r['seconds']:.1f} s"
            + (f" / {r['cpu_seconds']:.1f} CPU-s" if r.get("cpu_seconds") is not None else "")
            + f" (load {r['load_average'][0] if r['load_average'] else '-'})"
            for r in v["runs"]
        )
        lines.append(f"  runs in order: {runs}")
        steps = ", ".join(f"{k} {s:.1f}" for k, s in v["truth_step_seconds"].items())
        lines.append(f"  truth stage steps (s, last run): {steps}")
        threads = v["threads"]
        lines.append(
            f"  threads: crlib align catalogs {threads['align_catalog_workers']}, masks "
            f"{threads['truth_mask_workers']}, in-memory drizzle processes "
            f"{_shown(threads.get('drizzle_processes'))}; AstroDrizzle num_cores crlib "
            f"{_shown(threads['astrodrizzle_num_cores'].get(CRLIB))}, bare "
            f"{_shown(threads['astrodrizzle_num_cores'].get(BARE))}"
        )
        lines.extend(engine_lines(v.get("engines")))
        imported = sorted({m for r in v["runs"] for m in r["imported_while_timed"]})
        lines.append(f"  modules imported inside a timer: {', '.join(imported) if imported else 'none'}")
        for tool in (CRLIB, BARE):
            p = v["parameters"].get(tool) or {}
            shown = ", ".join(f"{key}={_shown(p.get(key))}" for key in SHOWN_PARAMETERS)
            lines.append(f"  {tool + ' parameters:':18s} {shown}")
        if v["parameters_match"]:
            n = len(v["parameters"][CRLIB] or {})
            lines.append(f"  parameters: identical ({n} keywords compared)")
        else:
            diff = "; ".join(
                f"{k}: crlib {a!r} vs bare {b!r}" for k, (a, b) in v["parameter_differences"].items()
            )
            lines.append(f"  parameters DIFFER: {diff}")
    return "\n".join(lines)
