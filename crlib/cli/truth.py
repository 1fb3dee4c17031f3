"""``crlib align``, ``crlib truth`` and ``crlib bench truth``."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from crlib.cli.app import app, bench_app

if TYPE_CHECKING:
    from crlib.truth.options import VisitTruth


class TruthMethod(StrEnum):
    """Ground-truth methods."""

    drizzle = "drizzle"
    multiframe = "multiframe"


class DrizzleEngineChoice(StrEnum):
    """The truth stage's drizzle engines (:data:`crlib.truth.drizzle.DrizzleEngine`)."""

    inmemory = "inmemory"
    astrodrizzle = "astrodrizzle"


class TruthTiming(StrEnum):
    """How ``crlib bench truth`` times the two tools (:data:`crlib.bench.truth.Timing`)."""

    process = "process"
    in_process = "in-process"


class ChipSize(StrEnum):
    """Simulated chip sizes."""

    full = "full"
    small = "small"


def _work_dir(visit_dir: Path, work_dir: Path | None) -> Path:
    if work_dir is not None:
        return work_dir
    from crlib.config import load_settings

    return load_settings().data_root / "work" / visit_dir.resolve().name


VisitArg = Annotated[
    Path,
    typer.Argument(exists=True, file_okay=False, dir_okay=True, help="Visit directory holding *_flc.fits."),
]
CatalogFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--catalog-file", exists=True, dir_okay=False, help="Astrometric catalog file (ra dec [mag])."
    ),
]
WorkDirOpt = Annotated[
    Path | None,
    typer.Option("--work-dir", help="Per-visit working directory (default: <data_root>/work/<visit>)."),
]


@app.command("align")
def align_command(
    visit_dir: VisitArg,
    catalog_file: CatalogFileOpt = None,
    no_query: Annotated[bool, typer.Option("--no-query", help="Do not query GAIA/GSC/2MASS.")] = False,
    timeout: Annotated[float, typer.Option(min=0.5, max=120, help="Catalog query timeout, seconds.")] = 5.0,
    work_dir: WorkDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the AlignmentResult as JSON.")] = False,
) -> None:
    """Align a visit's exposures (tweakwcs relative + absolute fit) on copies in the working directory."""
    import shutil

    from crlib.align.options import AlignOptions
    from crlib.align.visit import align_visit
    from crlib.errors import InputDataError
    from crlib.formats.exposures import copy_to_work_dir, find_exposures, read_exposure_info
    from crlib.records import to_dict

    paths = find_exposures(visit_dir)
    if not paths:
        raise InputDataError(visit_dir, "no *_flc.fits or *_flt.fits files", fix="point at a visit directory")
    # headers only: an exposure with damaged pixels is left out of the fit by align_visit, with a reason
    infos = [read_exposure_info(p, check_pixels=False) for p in paths]
    target = _work_dir(visit_dir, work_dir)
    if target.exists():
        shutil.rmtree(target)
    copies = copy_to_work_dir(paths, target)
    options = AlignOptions(catalog_file=catalog_file, query_catalogs=not no_query, timeout_s=timeout)
    result = align_visit(copies, visit=visit_dir.resolve().name, profile=infos[0].profile, options=options)
    if as_json:
        typer.echo(json.dumps(to_dict(result), indent=2, default=str))
        return
    rms = f"{result.rms_px:.3f} px" if result.rms_px is not None else "n/a"
    typer.echo(
        f"{result.visit}: {result.status}  catalog={result.catalog or '-'}  "
        f"fit={result.fit_geometry or '-'}  "
        f"matches={result.n_matches}  rms={rms}  wcsname={result.wcsname or '-'}"
    )
    if result.reason:
        typer.echo(f"  reason: {result.reason}")
    typer.echo(f"  aligned copies in {target}")


@app.command("truth")
def truth_command(
    visit_dir: VisitArg,
    method: Annotated[TruthMethod, typer.Option(help="Ground-truth method.")] = TruthMethod.drizzle,
    catalog_file: CatalogFileOpt = None,
    no_query: Annotated[bool, typer.Option("--no-query", help="Do not query GAIA/GSC/2MASS.")] = False,
    no_align: Annotated[
        bool, typer.Option("--no-align", help="Skip alignment (pre-aligned data only).")
    ] = False,
    border: Annotated[
        int, typer.Option(min=0, max=512, help="Discard this many edge pixels (paper: 128).")
    ] = 0,
    work_dir: WorkDirOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", help="Where *_crtruth.fits go.")] = None,
    engine: Annotated[
        DrizzleEngineChoice | None,
        typer.Option(
            help="Drizzle engine: inmemory (drizzlepac's steps without their files) or astrodrizzle "
            "(the AstroDrizzle call); default: CRLIB_TRUTH_ENGINE.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
) -> None:
    """Build ground-truth CR masks (<rootname>_crtruth.fits) for one visit, with quality gates.

    A visit observed in several filters gets one truth run per filter (driz_cr compares exposures
    of one bandpass); a filter with a single exposure is reported failed with that reason.
    """
    from crlib.align.options import AlignOptions
    from crlib.config import load_settings
    from crlib.records import to_dict
    from crlib.truth.byfilter import build_truth_per_filter
    from crlib.truth.options import TruthOptions

    settings = load_settings()
    options = TruthOptions(
        align=not no_align,
        align_options=AlignOptions(catalog_file=catalog_file, query_catalogs=not no_query),
        border_px=border,
        engine=engine.value if engine is not None else settings.truth_engine,
        drizzle_processes=settings.truth_drizzle_processes,
    )
    results = build_truth_per_filter(
        visit_dir,
        work_dir=_work_dir(visit_dir, work_dir),
        out_dir=out_dir,
        method=method.value,
        options=options,
    )
    if as_json:
        payload = [
            {
                "visit": result.visit,
                "method": result.method,
                "alignment": to_dict(result.alignment) if result.alignment else None,
                "exposures": [to_dict(r) for r in result.exposures],
                "seconds": result.seconds,
                "out_dir": str(result.out_dir),
            }
            for result in results
        ]
        typer.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2, default=str))
    else:
        _print_truth(results)
    if any(r.status == "failed" for result in results for r in result.exposures):
        raise typer.Exit(code=2)


def _print_truth(results: list[VisitTruth]) -> None:
    """The truth runs' records as text, one block per filter when there are several."""
    for result in results:
        if len(results) > 1:
            names = ", ".join(r.rootname for r in result.exposures)
            typer.echo(f"-- {result.visit}, one filter's exposures: {names}")
        if result.alignment:
            a = result.alignment
            rms = f"{a.rms_px:.3f} px" if a.rms_px is not None else "n/a"
            typer.echo(
                f"alignment: {a.status} ({a.fit_geometry or '-'}, rms {rms}, catalog {a.catalog or '-'})"
            )
        for r in result.exposures:
            chips = ", ".join(
                f"chip{c.chip}: {c.cr_pixels} px/{c.cr_events} ev, valid {c.valid_fraction:.2f}"
                for c in r.chips
            )
            typer.echo(f"{r.rootname}: {r.status}  {chips}")
            for reason in r.reasons:
                typer.echo(f"    {reason}")
    total = sum(result.seconds.get("total", 0.0) for result in results)
    typer.echo(f"products in {results[0].out_dir}; {total:.1f} s")


@bench_app.command("truth")
def bench_truth_command(
    out: Annotated[
        Path | None, typer.Option(help="Scratch directory (default: <data_root>/bench/truth).")
    ] = None,
    size: Annotated[ChipSize, typer.Option(help="Simulated chip size.")] = ChipSize.full,
    exposures: Annotated[int, typer.Option(min=2, max=12, help="Exposures per visit.")] = 3,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    field_type: Annotated[
        list[str] | None,
        typer.Option(
            "--field-type",
            help="Field type(s) to simulate (repeatable; default: all three).",
            show_default=False,
        ),
    ] = None,
    method: Annotated[
        TruthMethod,
        typer.Option(
            help="drizzle: dithered visits, time vs bare AstroDrizzle; multiframe: undithered CR-SPLIT "
            "visits, multi-frame and drizzle truth side by side and their agreement."
        ),
    ] = TruthMethod.drizzle,
    repeats: Annotated[
        int,
        typer.Option(
            min=1,
            max=10,
            help="Timed runs of each tool, alternated (crlib, bare, bare, crlib, ...); medians are compared.",
        ),
    ] = 2,
    warmup: Annotated[
        bool, typer.Option("--warmup/--no-warmup", help="Run each tool once, untimed, before timing.")
    ] = True,
    num_cores: Annotated[
        int | None,
        typer.Option(
            "--num-cores",
            min=1,
            max=64,
            help="AstroDrizzle num_cores for both the truth stage and bare AstroDrizzle "
            "(default: each at its best: the truth stage's own, bare AstroDrizzle every core).",
        ),
    ] = None,
    effects: Annotated[
        str,
        typer.Option(
            help="Simulator effects: 'basic', or 'realistic' (every archive effect on, a satellite "
            "trail forced into the second exposure; recall/FPR per artefact class reported)."
        ),
    ] = "realistic",
    engine: Annotated[
        DrizzleEngineChoice,
        typer.Option(
            help="The truth stage's drizzle engine; both engines' masks are also compared on the "
            "stage's aligned inputs."
        ),
    ] = DrizzleEngineChoice.inmemory,
    timing: Annotated[
        TruthTiming,
        typer.Option(
            help="process: every timed run of either tool is a whole process (interpreter start, "
            "imports, exit; CPU seconds too); in-process: the two calls timed in this process "
            "after preloading their modules."
        ),
    ] = TruthTiming.process,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Truth fidelity on simulated visits: alignment, recall, FPR, star cores, time vs AstroDrizzle.

    Both tools make the same AstroDrizzle call (parameter set, sky method, driz_cr settings,
    driz_combine; num_cores each at its best unless --num-cores) on copies staged the same way,
    each run a whole process (or both in this process after preloading), one warm-up each, and the
    runs alternate; the report prints every run, both parameter sets, threads and load average.
    """
    from crlib.bench.truth import format_report, run_truth_benchmark
    from crlib.config import load_settings
    from crlib.profiles import FIELD_TYPES

    unknown = sorted(set(field_type or ()) - set(FIELD_TYPES))
    if unknown:
        raise typer.BadParameter(
            f"unknown field type(s) {', '.join(unknown)}; choose from {', '.join(FIELD_TYPES)}",
            param_hint="--field-type",
        )
    scratch = out or load_settings().data_root / "bench" / "truth"
    from crlib.simulate.effects import SimEffects, parse_effects

    chosen = parse_effects(effects)
    simulated = SimEffects.realistic(satellite_exposures=(1,)) if effects == "realistic" else chosen
    chip_size: Literal["full", "small"] = "full" if size == ChipSize.full else "small"
    field_types = tuple(field_type) if field_type else FIELD_TYPES
    if method == TruthMethod.multiframe:
        from crlib.bench.truth_crosscheck import format_crosscheck, run_crosscheck_benchmark

        if exposures < 3:
            raise typer.BadParameter("the multi-frame method needs >= 3 exposures", param_hint="--exposures")
        report = run_crosscheck_benchmark(
            scratch,
            size=chip_size,
            exposures=exposures,
            seed=seed,
            field_types=field_types,
            effects=simulated,
        )
        typer.echo(json.dumps(report, indent=2, default=str) if as_json else format_crosscheck(report))
        return
    report = run_truth_benchmark(
        scratch,
        size=chip_size,
        exposures=exposures,
        seed=seed,
        field_types=field_types,
        repeats=repeats,
        warmup=warmup,
        num_cores=num_cores,
        effects=simulated,
        engine=engine.value,
        timing="process" if timing == TruthTiming.process else "in_process",
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        typer.echo(format_report(report))
