"""``crlib train``, ``promote``, ``models``, ``tracking-server`` and ``crlib bench train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

import typer

from crlib.cli.app import app, bench_app, fail

InitialOption = Literal["champion", "deepcr", "scratch"]
DeviceOption = Literal["auto", "cpu", "cuda"]


def _device(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@app.command("train")
def train_command(
    epochs: Annotated[
        int, typer.Option(min=1, max=10000, help="Epochs (the first 40% with BatchNorm learning).")
    ] = 20,
    initial: Annotated[
        InitialOption,
        typer.Option("--from", help="Start from the registered champion, deepCR's weights, or scratch."),
    ] = "champion",
    archive: Annotated[
        Path | None,
        typer.Option(
            help="Train on a local simulated archive (its _simtruth files) instead of recorded truth."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1024, help="Patches per step.")] = 16,
    lr: Annotated[
        float | None,
        typer.Option(min=1e-7, max=1.0, help="Adam learning rate (default 0.005 scratch, 0.001 fine-tune)."),
    ] = None,
    hidden: Annotated[
        int, typer.Option(min=2, max=256, help="Network width when training from scratch.")
    ] = 32,
    patch: Annotated[int, typer.Option(min=16, max=1024, help="Patch edge, pixels (even).")] = 256,
    border: Annotated[int, typer.Option(min=0, max=1024, help="Chip border discarded, pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    validation_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of new visits per stratum for validation.")
    ] = 0.15,
    test_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of new visits per stratum held out for the gate.")
    ] = 0.15,
    device: Annotated[DeviceOption, typer.Option(help="auto (CUDA when available), cpu or cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Retrain on accumulated ground truth; log to MLflow and register the result as `challenger`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from crlib.config import load_settings
    from crlib.training.patches import PatchParameters
    from crlib.training.pipeline import TrainingRequest, run_training
    from crlib.training.trainer import TrainingConfig, TrainingProgress

    if patch % 2:
        raise typer.BadParameter("--patch must be even")
    if validation_fraction + test_fraction >= 1.0:
        raise typer.BadParameter("--validation-fraction + --test-fraction must leave visits for training")
    from crlib.training.splits import SplitFractions

    settings = load_settings()
    import torch

    torch.set_num_threads(settings.torch_threads())
    exposures = _training_exposures(settings, archive)
    config = TrainingConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr if lr is not None else (0.005 if initial == "scratch" else 0.001),
        seed=seed,
        device=_device(device),
    )
    from crlib.profiles import get_profile

    request = TrainingRequest(
        instrument=settings.instrument,
        initial=initial,
        config=config,
        hidden=hidden,
        patches=PatchParameters(
            patch=patch, border=border, saturation_e=get_profile(settings.instrument).saturation_e
        ),
        fractions=SplitFractions(
            1.0 - validation_fraction - test_fraction, validation_fraction, test_fraction
        ),
    )
    with Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("train", total=None, epoch="-", loss=0.0)

        def update(event: TrainingProgress) -> None:
            bar.update(
                task,
                total=event.steps * event.epochs,
                completed=(event.epoch - 1) * event.steps + event.step,
                epoch=f"{event.epoch}/{event.epochs}",
                loss=event.loss,
            )

        result = run_training(
            exposures,
            tracking_uri=settings.resolved_mlflow_uri(),
            work_dir=settings.data_root / "training",
            request=request,
            progress=update,
        )
    summary = {
        "run_id": result.run_id,
        "version": result.version.label if result.version else None,
        "dataset": str(result.dataset.directory),
        "patches_per_split": result.dataset.manifest["patches_per_split"],
        "patches_per_second": round(result.patches_per_second, 2),
        "test": {"trained": result.test_report.table(), result.initial_label: result.initial_report.table()},
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(
        f"run {result.run_id}: registered {summary['version']} as challenger "
        f"({result.patches_per_second:.1f} patches/s)"
    )
    _print_comparison(result.initial_label, result.initial_report, "trained", result.test_report)


def _training_exposures(settings, archive: Path | None):  # type: ignore[no-untyped-def]
    from crlib.training.sources import exposures_from_database, exposures_from_local_archive

    if archive is not None:
        return exposures_from_local_archive(archive)
    from crlib.db.session import open_results_db

    _, sessions = open_results_db(settings, upgrade=True)
    with sessions() as session:
        return exposures_from_database(session)


def _print_comparison(label_a: str, report_a, label_b: str, report_b) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"test split TPR (%) at FPR 0.05% / 0.5% [dilated]: {label_a} -> {label_b}")
    for column in ("group", label_a, label_b):
        table.add_column(column)
    a = {g.key: g for g in report_a.groups}
    for group in report_b.groups:
        old = a.get(group.key)

        def cell(g) -> str:  # type: ignore[no-untyped-def]
            if g is None:
                return "-"
            return (
                f"{100 * g.tpr['0.0005']:.2f} / {100 * g.tpr['0.005']:.2f} "
                f"[{100 * g.tpr_dilated['0.0005']:.2f} / {100 * g.tpr_dilated['0.005']:.2f}]"
            )

        table.add_row(group.key, cell(old), cell(group))
    Console().print(table)


@app.command("promote")
def promote_command(
    version: Annotated[str, typer.Option(help="Challenger version number or alias.")] = "challenger",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and report; move no alias.")] = False,
    dataset: Annotated[
        Path | None,
        typer.Option(help="Patch dataset whose test split is scored (default: the challenger's)."),
    ] = None,
    max_drop: Annotated[
        float, typer.Option(min=0.0, max=100.0, help="Largest allowed drop of any number, points.")
    ] = 0.5,
    min_mean_gain: Annotated[
        float, typer.Option(min=-100.0, max=100.0, help="Mean gain must exceed this, points.")
    ] = 0.0,
    record: Annotated[bool, typer.Option(help="Record the decision in the results database.")] = True,
    device: Annotated[DeviceOption, typer.Option(help="auto, cpu or cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Promote the challenger to champion only if it beats the champion on the fixed test set."""
    from crlib.config import load_settings
    from crlib.errors import ConfigError
    from crlib.registry.promotion import GateThresholds, promote
    from crlib.registry.versions import get_version, registered_model_name
    from crlib.training.patches import open_patch_dataset

    settings = load_settings()
    uri = settings.resolved_mlflow_uri()
    name = registered_model_name(settings.instrument)
    if dataset is None:
        tag = get_version(uri, name, version).tags.get("crlib.dataset_dir")
        if not tag:
            raise ConfigError(
                f"{name} {version} has no recorded dataset; pass --dataset <patch dataset directory>"
            )
        dataset = Path(tag)
    recorder = None
    if record and not dry_run:
        from crlib.db.session import open_results_db
        from crlib.registry.decisions import database_recorder

        _, sessions = open_results_db(settings, upgrade=True)
        recorder = database_recorder(sessions, tracking_uri=uri)
    decision = promote(
        uri,
        model_name=name,
        dataset=open_patch_dataset(dataset),
        challenger=version,
        thresholds=GateThresholds(max_drop_points=max_drop, min_mean_gain_points=min_mean_gain),
        dry_run=dry_run,
        device=_device(device),
        recorder=recorder,
    )
    if as_json:
        typer.echo(json.dumps(decision.to_json(), indent=2, default=str))
    else:
        for c in decision.comparisons:
            mark = "FAIL" if c.failed else "ok"
            typer.echo(
                f"{mark:4} {c.group:32} FPR {float(c.fpr) * 100:g}%{' dilated' if c.dilated else '':8} "
                f"champion {c.champion_percent:6.2f}  challenger {c.challenger_percent:6.2f}  "
                f"{c.delta_points:+.2f}"
            )
        typer.echo(f"mean difference {decision.mean_delta_points:+.3f} points")
    if decision.promoted:
        verb = "would be promoted (dry run)" if dry_run else "promoted to champion"
        typer.echo(f"{name} v{decision.challenger_version} {verb}", err=as_json)
    else:
        fail(f"{name} v{decision.challenger_version} not promoted: " + "; ".join(decision.reasons))


@app.command("models")
def models_command(
    bootstrap: Annotated[
        bool,
        typer.Option("--bootstrap", help="Register deepCR's shipped weights as champion if none exists."),
    ] = False,
    history: Annotated[bool, typer.Option("--history", help="Also list every alias move.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List registered model versions with their aliases and test metrics."""
    from dataclasses import asdict

    from crlib.config import load_settings
    from crlib.registry.versions import (
        alias_history,
        bootstrap_registry,
        list_versions,
        registered_model_name,
    )

    settings = load_settings()
    uri = settings.resolved_mlflow_uri()
    name = registered_model_name(settings.instrument)
    if bootstrap:
        bootstrap_registry(uri, instrument=settings.instrument)
    versions = list_versions(uri, name)
    events = alias_history(uri, name) if history else []
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "model": name,
                    "versions": [asdict(v) for v in versions],
                    "alias_history": [asdict(e) for e in events],
                },
                indent=2,
                default=str,
            )
        )
        return
    if not versions:
        typer.echo(f"no versions of {name} at {uri} (run `crlib models --bootstrap`)")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name} at {uri}")
    for column in ("version", "aliases", "source", "gate", "test TPR@0.05% / 0.5%"):
        table.add_column(column)
    for v in versions:
        tprs = sorted((k, val) for k, val in v.tags.items() if k.startswith("crlib.test."))
        groups: dict[str, list[str]] = {}
        for key, value in tprs:
            group = key.removeprefix("crlib.test.").rsplit(".tpr_at_", 1)[0]
            groups.setdefault(group, []).append(value)
        metric_text = "\n".join(f"{g.split('/')[0]}: {' / '.join(vals)}" for g, vals in groups.items())
        table.add_row(
            v.version,
            ", ".join(v.aliases),
            v.tags.get("crlib.source", ""),
            v.tags.get("crlib.gate.outcome", ""),
            metric_text,
        )
    Console().print(table)
    for event in events:
        typer.echo(
            f"{event.at_ms}: {event.alias} -> v{event.version} (was {event.previous_version}): {event.reason}"
        )


@app.command("tracking-server")
def tracking_server_command(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 5000,
    backend_store: Annotated[
        str | None, typer.Option(help="Backend store URI (default: database 'mlflow' on the results server).")
    ] = None,
) -> None:
    """Run an MLflow tracking server on 127.0.0.1 (PostgreSQL backend, local artifacts) until Ctrl-C."""
    import time

    from crlib.config import load_settings
    from crlib.registry.server import start_tracking_server

    settings = load_settings()
    if backend_store is None:
        from sqlalchemy.engine import make_url

        from crlib.db.engine import resolve_database_url

        backend_store = (
            make_url(resolve_database_url(settings))
            .set(database="mlflow")
            .render_as_string(hide_password=False)
        )
        _ensure_database(backend_store)
    server = start_tracking_server(
        backend_store=backend_store, artifact_root=settings.data_root / "mlartifacts", port=port
    )
    typer.echo(
        f"MLflow tracking server at {server.uri} "
        f"(set CRLIB_MLFLOW_TRACKING_URI={server.uri}); Ctrl-C stops it"
    )
    try:
        while server.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _ensure_database(url: str) -> None:
    """Create the database named in ``url`` on its server if missing."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database}
        ).first()
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


@bench_app.command("train")
def bench_train_command(
    patches: Annotated[int, typer.Option(min=4, max=4096, help="Patches per measured epoch.")] = 32,
    batch_size: Annotated[int, typer.Option(min=1, max=256, help="Patches per step.")] = 8,
    patch: Annotated[int, typer.Option(min=32, max=512, help="Patch edge, pixels.")] = 256,
) -> None:
    """Training throughput (patches/s) of crlib's loop vs deepCR's own training step, same data."""
    from crlib.config import load_settings
    from crlib.training.bench import run_training_benchmark

    settings = load_settings()
    result = run_training_benchmark(
        patches=patches, batch_size=batch_size, patch=patch, threads=settings.torch_threads()
    )
    for key, value in result.items():
        typer.echo(f"{key}: {value}")
    if result.get("ratio_vs_deepcr", 0) <= 0:
        fail("benchmark produced no measurement")
