"""``crlib bench pipeline``: core-seconds per exposure through every stage, beside AstroDrizzle and deepCR."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from crlib.cli.app import bench_app
from crlib.cli.choices import EffectsOption, SizeOption

if TYPE_CHECKING:
    from crlib.bench.exposure_cost import PipelineCostReport


@bench_app.command("pipeline")
def bench_pipeline_command(
    field_type: Annotated[
        list[str] | None,
        typer.Option("--field-type", help="Field type (repeatable; default: all three).", show_default=False),
    ] = None,
    size: Annotated[SizeOption, typer.Option(help="Simulated exposure size.")] = "full",
    exposures: Annotated[int, typer.Option(min=3, max=8, help="Exposures per visit.")] = 3,
    seed: Annotated[int, typer.Option(min=0, help="Simulation seed.")] = 2026,
    effects: Annotated[EffectsOption, typer.Option(help="Simulator effects.")] = "realistic",
    references: Annotated[
        bool, typer.Option(help="Also time bare AstroDrizzle and deepCR clean() on the same files.")
    ] = True,
    work_dir: Annotated[
        Path | None, typer.Option(help="Keep the archives and data roots here (default: temporary).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Core-seconds per exposure, every stage, one visit per field type; AstroDrizzle and deepCR beside."""
    from crlib.bench.exposure_cost import run_pipeline_cost_benchmark
    from crlib.config import load_settings
    from crlib.profiles import FIELD_TYPES

    report = run_pipeline_cost_benchmark(
        load_settings(),
        field_types=tuple(field_type or FIELD_TYPES),
        size=size,
        exposures=exposures,
        seed=seed,
        effects=effects,
        references=references,
        work_dir=work_dir,
        keep=work_dir is not None,
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    print_pipeline_cost(report)


def print_pipeline_cost(report: PipelineCostReport) -> None:
    """One table: per field type, core-seconds per exposure per stage, total, and the references."""
    from rich.console import Console
    from rich.table import Table

    from crlib.bench.pipeline import STAGE_ORDER

    document = report.as_dict()
    table = Table(
        title=f"crlib bench pipeline: core-seconds per exposure ({report.size}, {report.cpu_count} CPUs, "
        f"{report.threads} torch threads, inference {report.precision})"
    )
    table.add_column("stage")
    for row in document["field_types"]:
        table.add_column(f"{row['field_type']} ({row['exposures']} exp.)", justify="right")
    for stage in STAGE_ORDER:
        table.add_row(stage, *(f"{row['stage_core_s'][stage]:.2f}" for row in document["field_types"]))
    table.add_row(
        "crlib total (wall s)",
        *(
            f"{row['per_exposure']['crlib']['core_s']:.2f} ({row['per_exposure']['crlib']['wall_s']:.2f})"
            for row in document["field_types"]
        ),
        end_section=True,
    )
    for name, title in (
        ("astrodrizzle", "bare AstroDrizzle (wall s)"),
        ("deepcr", "deepCR clean() (wall s)"),
    ):
        cells = []
        for row in document["field_types"]:
            cost = row["per_exposure"].get(name)
            cells.append("-" if cost is None else f"{cost['core_s']:.2f} ({cost['wall_s']:.2f})")
        table.add_row(title, *cells)
    for ratio in ("crlib_truth_over_astrodrizzle", "crlib_infer_over_deepcr"):
        table.add_row(
            ratio, *(f"{row['ratios'].get(ratio, float('nan')):.2f}" for row in document["field_types"])
        )
    console = Console()
    console.print(table)
    target = document["target"]
    console.print(
        f"crlib end to end: {document['core_s_per_exposure']:.2f} core-s per exposure "
        f"(target <= {target['core_s_per_exposure']:g}: {'PASS' if target['pass'] else 'FAIL'}); "
        f"outcomes: "
        + "; ".join(f"{row['field_type']} {row['outcome']}" for row in document["field_types"])
        + f"; {report.seconds:.0f} s"
    )
