"""``crlib bench accuracy``: TPR at FPR 0.05% / 0.5% per field type and filter, next to the paper."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from crlib.cli.app import bench_app
from crlib.cli.choices import DeviceOption, EffectsOption, SizeOption

if TYPE_CHECKING:
    from crlib.bench.accuracy import AccuracyReport


class Detector(StrEnum):
    """Compared detectors (:data:`crlib.bench.accuracy.MODEL_KINDS`)."""

    global_ = "global"
    per_filter = "per_filter"
    lacosmic = "lacosmic"
    global_bf16 = "global_bf16"
    per_filter_bf16 = "per_filter_bf16"


_COLUMN_TITLES = {
    "global": "ours: ACS-WFC",
    "per_filter": "ours: per-filter",
    "lacosmic": "LACosmic",
    "global_bf16": "ACS-WFC bf16",
    "per_filter_bf16": "per-filter bf16",
}


@bench_app.command("accuracy")
def bench_accuracy_command(
    size: Annotated[SizeOption, typer.Option(help="Simulated exposure size.")] = "small",
    visits_per_cell: Annotated[
        int, typer.Option("--visits-per-cell", min=1, max=50, help="Visits per field type x filter.")
    ] = 1,
    exposures: Annotated[
        int, typer.Option(min=3, max=8, help="Exposures per visit (drizzle truth needs >= 3).")
    ] = 3,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Scratch directory; its crlib-accuracy/ is replaced (default: <data_root>/bench)."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Simulator seed (same seed, same numbers).")] = 0,
    field_type: Annotated[
        list[str] | None,
        typer.Option("--field-type", help="Field type (repeatable; default: all three).", show_default=False),
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option("--filter", help="Filter (repeatable; default F435W F606W F814W).", show_default=False),
    ] = None,
    models: Annotated[
        list[Detector] | None,
        typer.Option(
            "--model",
            help="Detector to compare (repeatable; default: global, per_filter, lacosmic). *_bf16: the "
            "deepCR model with the engine in bf16, scored on the same truth (needs native bf16).",
            show_default=False,
        ),
    ] = None,
    sigclip: Annotated[
        list[float] | None,
        typer.Option("--sigclip", help="LACosmic sigclip sweep value (repeatable).", show_default=False),
    ] = None,
    include_suspect: Annotated[
        bool, typer.Option("--include-suspect", help="Also score exposures whose truth is 'suspect'.")
    ] = False,
    device: Annotated[
        DeviceOption | None, typer.Option(help="deepCR device (default: the configured one).")
    ] = None,
    keep_files: Annotated[
        bool, typer.Option("--keep-files", help="Keep FLC, truth and prediction files.")
    ] = False,
    border: Annotated[
        int | None,
        typer.Option(
            min=0, help="Scoring border, px (default: the ACS/WFC profile's, 128, as pipeline scoring)."
        ),
    ] = None,
    min_peak_snr: Annotated[
        float | None,
        typer.Option(
            "--min-peak-snr",
            min=0.0,
            help="Truth: prune driz_cr components below this many sigma (default 5; 0 keeps them all).",
        ),
    ] = None,
    effects: Annotated[
        EffectsOption,
        typer.Option(
            help="Simulator effects: 'realistic' (real PSFs, CTE, dated hot/warm/sink pixels, satellites, "
            "crowded structured resolved galaxies ...) or 'basic' (the original simulator)."
        ),
    ] = "realistic",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """deepCR global and per-filter models and LACosmic on simulated visits with drizzle truth vs Table 3."""
    import dataclasses

    from crlib.bench.accuracy import ACCURACY_FILTERS, MODEL_KINDS, run_accuracy_benchmark
    from crlib.bench.precision import precision_comparison
    from crlib.config import load_settings
    from crlib.jsonvalues import json_compatible
    from crlib.model.lacosmic import SIGCLIP_SWEEP
    from crlib.profiles import ACS_WFC, FIELD_TYPES
    from crlib.simulate.effects import parse_effects

    settings = load_settings()
    report = run_accuracy_benchmark(
        workdir if workdir is not None else settings.data_root / "bench",
        field_types=tuple(field_type or FIELD_TYPES),
        filters=tuple(f.upper() for f in (filters or ACCURACY_FILTERS)),
        size=size,
        visits_per_cell=visits_per_cell,
        exposures=exposures,
        seed=seed,
        models=tuple(m.value for m in models) if models else MODEL_KINDS,
        sigclips=tuple(sigclip or SIGCLIP_SWEEP),
        include_suspect=include_suspect,
        device=device or settings.device,
        threads=settings.torch_threads(),
        keep_files=keep_files,
        rules=ACS_WFC.scoring if border is None else dataclasses.replace(ACS_WFC.scoring, border_px=border),
        min_peak_snr=min_peak_snr,
        effects=parse_effects(effects),
    )
    comparison = precision_comparison(report)
    if as_json:
        document = report.to_dict()
        if comparison["shifts"]:
            document["precision_comparison"] = json_compatible(comparison, non_finite="null")
        typer.echo(json.dumps(document, indent=2))
        return
    print_report(report)
    if comparison["shifts"]:
        print_precision_comparison(comparison)


def print_report(report: AccuracyReport) -> None:
    """Print the two tables (no dilation, 3x3 dilation), truth status counts and the caveats."""
    from rich.console import Console
    from rich.table import Table

    from crlib.bench.accuracy import ALL_FILTERS

    console = Console()
    console.width = max(console.width, 150)
    kinds = report.settings["models"]
    settings = report.settings
    scoring = settings.get("scoring", {})
    header = (
        f"{settings['size']} exposures, {settings['visits_per_cell']} visit(s) per cell, "
        f"{settings['exposures_per_visit']} exposures per visit, seed {settings['seed']}, "
        f"scoring border {scoring.get('border_px', 0)} px"
        + (", DQ-flagged pixels excluded" if scoring.get("exclude_dq") else "")
        + f", truth pruned below {settings.get('truth_min_peak_snr', 0):g} sigma"
        + _effects_text(settings.get("effects"))
    )
    console.print(f"[bold]{report.caveat}[/bold]")
    for label, title in (("plain", "no dilation"), ("dilated", "3x3 dilation of the predicted mask")):
        table = Table(
            title=f"TPR (%) at FPR 0.05% / 0.5%, {title}: {header}",
            caption="'*': FPR point outside the pooled ROC's measured points (interpolated to an end). "
            "Per-filter 'all' rows pool three models' scores at common thresholds.",
            caption_justify="left",
        )
        for column in ("field type", "filter", "scored / truth", "CR px"):
            table.add_column(column)
        for kind in kinds:
            table.add_column(_COLUMN_TITLES[kind], justify="right")
        table.add_column("paper (ACS-WFC)", justify="right")
        for group in report.groups:
            status = ", ".join(f"{n} {s}" for s, n in group.truth_status.items()) or "-"
            cells = [
                group.field_type if group.filter != ALL_FILTERS else "",
                group.filter,
                f"{group.exposures} / {status}",
                f"{group.n_cr:,}",
            ]
            for kind in kinds:
                values = []
                for fpr_key in ("0.0005", "0.005"):
                    text = tpr_percent(group.tpr[kind][label][fpr_key])
                    if text != "-" and not group.within_reach(kind, label, fpr_key):
                        text += "*"
                    values.append(text)
                cells.append(" / ".join(values))
            paper = group.paper
            cells.append(
                " / ".join(tpr_percent(paper[label][k]) for k in ("0.0005", "0.005")) if paper else "-"
            )
            table.add_row(*cells, end_section=group.filter == ALL_FILTERS)
        console.print(table)
    _print_dilation(console, report, kinds)
    counts = report.truth_status_counts()
    scored = settings["scored_truth_statuses"]
    excluded = sorted(set(counts) - set(scored))
    console.print(
        f"truth over {sum(counts.values())} simulated exposures: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; scored truth statuses: {', '.join(scored)}"
        + (f" ({', '.join(excluded)} excluded)" if excluded else "")
        + f"; {len(report.exposures)} exposures scored."
    )
    for visit in report.visits:
        for rootname, reasons in visit.reasons.items():
            console.print(f"  {visit.visit} {rootname} {visit.truth_status[rootname]}: {'; '.join(reasons)}")
    if "lacosmic" in kinds:
        objlim = ", ".join(f"{k} {v:g}" for k, v in settings["lacosmic_objlim"].items())
        sweep = ", ".join(f"{s:g}" for s in settings["lacosmic_sigclips"])
        console.print(f"LACosmic: objlim {objlim}; sigclip sweep {sweep}")
    console.print(f"device {settings['device']}, {settings['threads']} threads; {report.seconds:.0f} s")
    console.print("Evaluation differences from deepCR's deepCR.evaluate:")
    for note in report.notes:
        console.print(f"  - {note}")


def print_precision_comparison(comparison: dict) -> None:
    """Print TPR fp32 -> bf16 per field type and the verdict against the bf16-default limit."""
    from rich.console import Console
    from rich.table import Table

    from crlib.bench.accuracy import ALL_FILTERS

    console = Console()
    verdict = comparison["verdict"]
    table = Table(
        title=f"bf16 vs fp32 on the same truth: TPR (%) fp32 -> bf16, shift in points "
        f"(limit |shift| < {verdict['limit_points']:g} per field type)"
    )
    for column in ("model", "field type", "filter", "scoring", "FPR 0.05%", "FPR 0.5%"):
        table.add_column(column)
    rows: dict[tuple[str, str, str, str], list[str]] = {}
    for shift in comparison["shifts"]:
        key = (shift["model"], shift["field_type"], shift["filter"], shift["label"])
        rows.setdefault(key, []).append(
            f"{tpr_percent(shift['fp32'])} -> {tpr_percent(shift['bf16'])} ({shift['shift_points']:+.3f})"
        )
    for (model, field_type, filter_name, label), cells in rows.items():
        if filter_name == ALL_FILTERS:
            table.add_row(model, field_type, filter_name, label, *cells)
    console.print(table)
    if verdict["pass"] is None:
        console.print("bf16 verdict: nothing to compare (no per-field-type TPR in both precisions)")
        return
    worst = verdict["worst"]
    console.print(
        f"bf16 verdict: {'PASS' if verdict['pass'] else 'FAIL'}: largest per-field-type shift "
        f"{worst['shift_points']:+.3f} points ({worst['model']}, {worst['field_type']}, {worst['label']}, "
        f"FPR {float(worst['fpr']):.2%}) over {verdict['compared']} comparisons"
    )


def _effects_text(effects: dict | None) -> str:
    """``, effects realistic|basic|custom`` for the table titles (empty when not recorded)."""
    if effects is None:
        return ", simulator's default effects"
    from crlib.simulate.effects import SimEffects

    for name, preset in (("basic", SimEffects.basic()), ("realistic", SimEffects.realistic())):
        if effects == preset.as_dict():
            return f", effects {name}"
    return ", effects custom"


def _print_dilation(console: Any, report: AccuracyReport, kinds: Sequence[str]) -> None:
    """Per field type: what dilating the mask does at the threshold of the plain mask's FPR."""
    from crlib.bench.accuracy import ALL_FILTERS

    console.print(
        "What the 3x3-cross dilation adds at the plain mask's threshold (TPR plain -> dilated, "
        "FPR plain -> dilated, share of the added pixels that are truth CRs):"
    )
    for group in report.groups:
        if group.filter != ALL_FILTERS:
            continue
        for kind in kinds:
            parts = []
            for fpr_key, name in (("0.0005", "0.05%"), ("0.005", "0.5%")):
                effect = group.dilation.get(kind, {}).get(fpr_key)
                if effect is None or not math.isfinite(effect["dilated_tpr"]):
                    parts.append(f"at FPR {name}: -")
                    continue
                share = effect["ring_cr_share"]
                parts.append(
                    f"at FPR {name}: TPR {tpr_percent(effect['plain_tpr'])} -> "
                    f"{tpr_percent(effect['dilated_tpr'])}, FPR {100 * effect['plain_fpr']:.3f} -> "
                    f"{100 * effect['dilated_fpr']:.3f} %, "
                    + (f"ring {100 * share:.1f} % CR" if math.isfinite(share) else "nothing added")
                )
            console.print(f"  {group.field_type} {_COLUMN_TITLES[kind]}: " + "; ".join(parts))


def tpr_percent(value: float) -> str:
    """A TPR fraction as a percentage with two decimals, ``-`` for NaN."""
    return f"{100 * value:.2f}" if math.isfinite(value) else "-"
