"""``crlib infer``, ``crlib score`` and ``crlib bench infer``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from crlib.cli.app import app, bench_app, fail
from crlib.cli.choices import DeviceOption, PrecisionOption, SizeOption


@app.command("infer")
def infer_command(
    files: Annotated[list[Path], typer.Argument(help="Calibrated exposures (FLC/FLT, electrons).")],
    model: Annotated[
        str | None,
        typer.Option(
            help="champion, challenger, a registered version number, deepcr, or a shipped deepCR model "
            "name (default: CRLIB_INFERENCE_MODEL; auto = the registry's champion if registered, else "
            "deepCR's per-filter/global weights)."
        ),
    ] = None,
    device: Annotated[DeviceOption, typer.Option(help="auto (CUDA when available), cpu or cuda.")] = "auto",
    precision: Annotated[
        PrecisionOption | None,
        typer.Option(
            help="auto (bf16 on a CPU with native bf16, else fp32), fp32, or bf16 where the hardware has "
            "it (default: CRLIB_INFERENCE_PRECISION, auto)."
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0.0, max=1.0, help="Mask threshold (default: the profile's).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default: beside each input).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print PredictionResult records as JSON.")] = False,
) -> None:
    """Predict cosmic rays with a deepCR model; writes <rootname>_crpred.fits per exposure."""
    from crlib.config import load_settings
    from crlib.errors import InputDataError
    from crlib.model.exposure import failed_prediction, predict_exposure
    from crlib.model.inference import MaskEngine
    from crlib.profiles import get_profile
    from crlib.records import to_dict
    from crlib.registry.serving import exposure_filter_of, load_inference_model, resolve_model_reference

    settings = load_settings()
    precision = precision or settings.inference_precision
    profile = get_profile(settings.instrument)
    engines: dict[tuple[str, str], MaskEngine] = {}
    reasons: set[str] = set()
    results = []
    for path in files:
        target = out if out is not None else path.resolve().parent
        reference = resolve_model_reference(settings, model, filter_name=exposure_filter_of(path))
        if reference.reason not in reasons and not as_json:
            reasons.add(reference.reason)
            typer.echo(f"model {reference.label}: {reference.reason}", err=True)
        key = (reference.name, reference.version)
        try:
            if key not in engines:
                engines[key] = MaskEngine(
                    load_inference_model(settings, reference),
                    device=device,
                    precision=precision,
                    threads=settings.torch_threads(),
                )
            results.append(
                predict_exposure(
                    path,
                    out_dir=target,
                    device=device,
                    precision=precision,
                    threshold=threshold,
                    engine=engines[key],
                    # the model was chosen for CRLIB_INSTRUMENT: another instrument's file is refused
                    # with the fix, never predicted with the wrong model
                    expected_profile=profile,
                )
            )
        except InputDataError as exc:
            results.append(
                failed_prediction(
                    path, str(exc), model_name=reference.name, model_version=reference.version, device=device
                )
            )
    if as_json:
        typer.echo(json.dumps([to_dict(r) for r in results], indent=2, default=str))
    else:
        for r in results:
            if r.status == "ok":
                used = f"{r.model_name}:{r.model_version}"
                typer.echo(f"{r.rootname}: {used} on {r.device} in {r.seconds:.1f} s -> {r.path}")
            else:
                typer.echo(f"{r.rootname}: FAILED: {r.reason}", err=True)
    failed = [r for r in results if r.status != "ok"]
    if failed:
        fail(f"{len(failed)} of {len(results)} exposures failed")


@app.command("score")
def score_command(
    prediction: Annotated[Path, typer.Argument(help="A <rootname>_crpred.fits from `crlib infer`.")],
    truth: Annotated[Path, typer.Argument(help="A <rootname>_crtruth.fits or simulator _simtruth.fits.")],
    field_type: Annotated[str | None, typer.Option(help="Field type to record.")] = None,
    roc_png: Annotated[Path | None, typer.Option(help="Also write the ROC plot here.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the ExposureMetrics as JSON (no histograms).")
    ] = False,
) -> None:
    """Score a prediction against ground truth: confusion counts and TPR at FPR 0.05% / 0.5%."""
    from crlib.metrics.roc import plot_roc
    from crlib.metrics.scoring import score_prediction_file
    from crlib.records import to_dict

    metrics, curves = score_prediction_file(prediction, truth, field_type=field_type)
    if roc_png is not None:
        plot_roc(
            {f"{metrics.model_name}": curves["plain"], f"{metrics.model_name} dilated": curves["dilated"]},
            roc_png,
            title=f"{metrics.rootname}",
        )
    shown = {k: v for k, v in to_dict(metrics).items() if not k.startswith("hist_")}
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    typer.echo(
        f"{metrics.rootname} ({metrics.model_name}): "
        f"TP {metrics.tp} FP {metrics.fp} FN {metrics.fn} TN {metrics.tn}"
    )
    for label, values in (("plain", metrics.tpr_at_fpr), ("dilated", metrics.tpr_at_fpr_dilated)):
        parts = ", ".join(f"TPR@FPR {float(k) * 100:g}% = {v * 100:.2f}%" for k, v in values.items())
        typer.echo(f"  {label}: {parts}")


@bench_app.command("infer")
def bench_infer_command(
    size: Annotated[SizeOption, typer.Option(help="Simulated exposure size.")] = "full",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    flc: Annotated[
        Path | None, typer.Option(help="Benchmark this exposure instead of a simulated one.")
    ] = None,
    repeats: Annotated[
        int, typer.Option(min=1, help="Runs of every method and command, in rotating order (medians).")
    ] = 1,
    method: Annotated[
        list[str] | None,
        typer.Option(
            help="In-process methods to time (repeat the option): deepcr, engine-fp32, engine-bf16, "
            "astroscrappy (default: all)."
        ),
    ] = None,
    cli: Annotated[
        bool, typer.Option(help="Also time `crlib infer FILE` as whole processes and trace one run.")
    ] = True,
) -> None:
    """deepCR clean() vs our engine (fp32, bf16) vs astroscrappy, and `crlib infer` end to end."""
    from crlib.bench.inference import CLI_OVER_ENGINE_TARGET, CLI_VARIANTS, METHODS, run_inference_benchmark
    from crlib.config import load_settings

    chosen = tuple(method) if method else METHODS
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        fail(f"unknown method(s) {', '.join(unknown)}; choose among {', '.join(METHODS)}")
    report = run_inference_benchmark(
        size=size,
        threads=load_settings().torch_threads(),
        flc=flc,
        methods=chosen,
        cli_variants=tuple(CLI_VARIANTS) if cli else (),
        repeats=repeats,
        trace=cli,
    )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    load = report["load_average"]
    typer.echo(
        f"exposure {report['exposure']} ({report['size']}), {report['threads']} threads, "
        f"model {report['model']}, {report['repeats']} run(s) each (medians); load average "
        f"{' / '.join(f'{v:.2f}' for v in load['start'])} at start, "
        f"{' / '.join(f'{v:.2f}' for v in load['end'])} at end"
    )
    typer.echo("in process (file already read, model loaded; detection over both chips; wall and CPU time):")
    for name, result in report["methods"].items():
        if "skipped" in result:
            typer.echo(f"  {name:16s} skipped: {result['skipped']}")
            continue
        line = f"  {name:16s} {result['seconds']:8.2f} s  peak RSS {result['peak_rss_mb']:7.0f} MB"
        if "cpu_seconds" in result:
            line += f"  CPU {result['cpu_seconds']:7.2f} s"
        agreement = result.get("agreement_with_deepcr")
        if agreement:
            line += f"  mask Jaccard vs deepCR {agreement['jaccard']:.4f}"
        typer.echo(line)
        path = result.get("execution_path")
        if path:
            typer.echo(
                f"  {'':16s} {path['device']}, {path['kernels']} kernels, {path['cpu_capability']}, "
                f"{path['workers']} worker(s) x {path['torch_threads_per_worker']} torch thread(s), "
                f"{path['window']}-px windows, batch {path['batch']}, {path['memory_format']}"
            )
    if report["cli"]:
        typer.echo("whole process (cold start: imports, model, FITS read and write, exit):")
        for name, result in report["cli"].items():
            typer.echo(
                f"  {name:16s} {result['wall_s']:8.2f} s  peak RSS {result['peak_rss_mb']:7.0f} MB"
                f"  CPU {result.get('cpu_s', float('nan')):7.2f} s  ({result['command']})"
            )
    if report["cli_breakdown"]:
        typer.echo("where one traced `crlib infer` run spends its time (s):")
        for part, seconds in report["cli_breakdown"].items():
            typer.echo(f"  {part:44s} {seconds:7.3f}")
    for name, ratio in report["ratios"].items():
        note = ""
        if name.startswith("cli-"):
            note = f" (target <= {CLI_OVER_ENGINE_TARGET:g}x)"
        typer.echo(f"  {name}: {ratio:.2f}x{note}")
