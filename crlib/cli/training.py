"""``crlib train``, ``promote``, ``models``, ``tracking-server`` and ``crlib bench train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from crlib.cli.app import app, bench_app, fail
from crlib.cli.choices import DeviceOption

if TYPE_CHECKING:
    from crlib.config import Settings

InitialOption = Literal["champion", "deepcr", "scratch"]


def _cli_run_id() -> str:
    import datetime as dt

    return f"cli__{dt.datetime.now(dt.UTC):%Y-%m-%dT%H%M%S}"


@app.command("train")
def train_command(
    epochs: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=10000,
            help="Epochs (the first 40% with BatchNorm learning; default CRLIB_TRAIN_EPOCHS).",
        ),
    ] = None,
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
    batch_size: Annotated[
        int | None, typer.Option(min=1, max=1024, help="Patches per step (default CRLIB_TRAIN_BATCH_SIZE).")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            min=1e-7, max=1.0, help="Adam learning rate (default 0.005 from scratch, else CRLIB_TRAIN_LR)."
        ),
    ] = None,
    hidden: Annotated[
        int, typer.Option(min=2, max=256, help="Network width when training from scratch.")
    ] = 32,
    patch: Annotated[int, typer.Option(min=16, max=1024, help="Patch edge, pixels (even).")] = 256,
    border: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=1024,
            help="Chip border discarded, pixels (default: the instrument profile's scoring border, 128 for "
            "ACS/WFC; the promotion gate refuses test patches cut under another).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    validation_fraction: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Share of fields (proposal, target) per stratum for validation (hashed)."
        ),
    ] = None,
    test_fraction: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Share of fields (proposal, target) per stratum held out for the gate."
        ),
    ] = None,
    max_patches: Annotated[
        int | None, typer.Option(min=1, help="Subsample the training split to this many patches per epoch.")
    ] = None,
    device: Annotated[
        DeviceOption | None,
        typer.Option(help="auto (CUDA when available), cpu or cuda (default CRLIB_DEVICE)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Retrain on accumulated ground truth; log to MLflow and register the result as `challenger`."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from crlib.config import load_settings
    from crlib.errors import ConfigError
    from crlib.pipeline.lifecycle import train_challenger, training_request
    from crlib.training.trainer import TrainingProgress

    settings = load_settings()
    try:
        request = training_request(
            settings,
            initial=initial,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            hidden=hidden,
            patch=patch,
            border=border,
            seed=seed,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            max_patches_per_epoch=max_patches,
            device=device,
        )
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    exposures = None
    if archive is not None:
        from crlib.training.sources import exposures_from_local_archive

        exposures = exposures_from_local_archive(archive)
    with Progress(
        TextColumn("epoch {task.fields[epoch]}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        transient=True,
        disable=as_json,
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

        summary = train_challenger(
            settings,
            run_id=_cli_run_id(),
            request=request,
            exposures=exposures,
            record=archive is None,
            progress=update,
        )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(
        f"run {summary['run_id']}: registered {summary['label']} as challenger "
        f"({summary['patches_per_second']:.1f} patches/s)"
    )
    _print_truth_source(settings, summary)
    _print_comparison(summary)


def _print_truth_source(settings: Settings, summary: dict[str, Any]) -> None:
    """Say when the new version was trained on simulator data (the gate refuses it by default)."""
    from crlib.registry.versions import TRUTH_SOURCE_TAG, get_version

    if not summary.get("model_name") or not summary.get("version"):
        return
    tags = get_version(settings.resolved_mlflow_uri(), summary["model_name"], summary["version"]).tags
    source = tags.get(TRUTH_SOURCE_TAG, "unknown")
    if source in ("simulator", "mixed"):
        typer.echo(
            f"note: trained on simulator data ({TRUTH_SOURCE_TAG}={source}, "
            f"{tags.get('crlib.simulated_exposures', '?')} exposures simulated): "
            "`crlib promote` refuses it unless --allow-simulated"
        )


def _print_comparison(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"test split TPR (%) at FPR 0.05% / 0.5% [dilated]: {summary['initial']} -> trained")
    for column in ("group", summary["initial"], "trained"):
        table.add_column(column)

    def cell(numbers: dict[str, float | None] | None) -> str:
        if not numbers:
            return "-"

        def shown(key: str) -> str:
            value = numbers.get(key)
            return "n/a" if value is None else f"{value:.2f}"

        return f"{shown('0.0005')} / {shown('0.005')} [{shown('0.0005_dilated')} / {shown('0.005_dilated')}]"

    for group, numbers in summary["tpr"].items():
        table.add_row(group, cell(numbers.get("initial")), cell(numbers.get("trained")))
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
        float | None,
        typer.Option(
            min=0.0,
            max=100.0,
            help="Largest allowed drop of any number, points (CRLIB_GATE_MAX_DROP_POINTS).",
        ),
    ] = None,
    min_mean_gain: Annotated[
        float | None,
        typer.Option(
            min=-100.0,
            max=100.0,
            help="Mean gain must exceed this, points (CRLIB_GATE_MIN_MEAN_GAIN_POINTS).",
        ),
    ] = None,
    confidence: Annotated[
        float,
        typer.Option(min=0.5, max=0.999, help="Coverage of the mean gain's bootstrap confidence interval."),
    ] = 0.95,
    resamples: Annotated[
        int, typer.Option(min=100, max=100000, help="Bootstrap resamples of the test fields (seeded).")
    ] = 1000,
    min_test_fields: Annotated[
        int,
        typer.Option(min=1, max=10000, help="Fewest test fields (proposal, target) the interval needs."),
    ] = 2,
    allow_simulated: Annotated[
        bool,
        typer.Option(
            "--allow-simulated",
            help="Let a challenger trained on simulator data become champion (refused otherwise).",
        ),
    ] = False,
    exclude_seen: Annotated[
        bool,
        typer.Option(
            "--exclude-seen",
            help="Score only the test fields neither model trained on, instead of refusing to run.",
        ),
    ] = False,
    record: Annotated[bool, typer.Option(help="Record the decision in the results database.")] = True,
    device: Annotated[DeviceOption | None, typer.Option(help="auto, cpu or cuda.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Promote the challenger only if it beats the champion on a test set neither model trained on.

    The gate refuses to score when a test visit or field is in either model's training manifest,
    and refuses to promote when any number drops too far, the mean gain's confidence interval
    includes a loss, or the challenger was trained on simulator data (without --allow-simulated).
    """
    from crlib.config import load_settings
    from crlib.errors import ConfigError
    from crlib.pipeline.lifecycle import promote_model
    from crlib.registry.gate_decision import GateThresholds

    settings = load_settings()
    try:
        thresholds = GateThresholds(
            max_drop_points=settings.gate_max_drop_points if max_drop is None else max_drop,
            min_mean_gain_points=settings.gate_min_mean_gain_points
            if min_mean_gain is None
            else min_mean_gain,
            confidence=confidence,
            resamples=resamples,
            min_test_fields=min_test_fields,
            allow_simulated=allow_simulated,
            exclude_seen=exclude_seen,
        )
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    decision = promote_model(
        settings,
        version=version,
        dry_run=dry_run,
        run_id=_cli_run_id(),
        dataset=dataset,
        thresholds=thresholds,
        device=device,
        record=record,
    )
    if as_json:
        typer.echo(json.dumps(decision, indent=2))
    else:
        for c in decision["comparisons"]:
            mark = "FAIL" if c["failed"] else "ok"
            dilated = " dilated" if c["dilated"] else ""
            typer.echo(
                f"{mark:4} {c['group']:32} FPR {float(c['fpr']) * 100:g}%{dilated:8} "
                f"champion {c['champion_percent']:6.2f}  challenger {c['challenger_percent']:6.2f}  "
                f"{c['delta_points']:+.2f}"
            )
        typer.echo(_interval_line(decision))
        for note in decision.get("notes", []):
            typer.echo(f"note: {note}")
    name = decision["model_name"]
    if decision["promoted"]:
        verb = "would be promoted (dry run)" if dry_run else "promoted to champion"
        typer.echo(f"{name} v{decision['challenger_version']} {verb}", err=as_json)
    else:
        reasons = decision["reasons"]
        if as_json:
            fail(f"{name} v{decision['challenger_version']} not promoted: " + "; ".join(reasons))
        for reason in reasons:
            typer.echo(f"refused: {reason}")
        fail(f"{name} v{decision['challenger_version']} not promoted ({len(reasons)} reason(s) above)")


def _interval_line(decision: dict[str, Any]) -> str:
    """``mean difference +0.120 points, 95% CI [-0.300, +0.500] over 4 test fields (...)``."""
    mean, low, high = (decision.get(k) for k in ("mean_delta_points", "ci_low_points", "ci_high_points"))
    text = f"mean difference {'n/a' if mean is None else f'{mean:+.3f}'} points"
    fields = decision.get("test_fields", 0)
    if low is None or high is None:
        return f"{text}, no confidence interval ({fields} test field(s))"
    gate = decision["thresholds"]
    return (
        f"{text}, {gate['confidence']:.0%} CI [{low:+.3f}, {high:+.3f}] over {fields} test field(s) "
        f"({gate['resamples']} resamples, seed {gate['seed']})"
    )


@app.command("models")
def models_command(
    bootstrap: Annotated[
        bool,
        typer.Option("--bootstrap", help="Register deepCR's shipped weights as champion if none exists."),
    ] = False,
    history: Annotated[bool, typer.Option("--history", help="Also list every alias move.")] = False,
    decisions: Annotated[
        int,
        typer.Option(min=0, max=1000, help="Show this many recent promotion decisions (results database)."),
    ] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List registered model versions with their aliases, test metrics and recent gate decisions."""
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
        champion = bootstrap_registry(uri, instrument=settings.instrument)
        _record_bootstrap(settings, champion)
    versions = list_versions(uri, name)
    events = alias_history(uri, name) if history else []
    recorded, note = _recent_decisions(settings, name, decisions)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "model": name,
                    "versions": [asdict(v) for v in versions],
                    "alias_history": [asdict(e) for e in events],
                    "decisions": [asdict(d) | {"outcome": d.outcome} for d in recorded],
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
        truth = v.tags.get("crlib.truth_source")
        table.add_row(
            v.version,
            ", ".join(v.aliases),
            v.tags.get("crlib.source", "") + (f" ({truth})" if truth else ""),
            v.tags.get("crlib.gate.outcome", ""),
            metric_text,
        )
    Console().print(table)
    for event in events:
        typer.echo(
            f"{event.at_ms}: {event.alias} -> v{event.version} (was {event.previous_version}): {event.reason}"
        )
    if note:
        typer.echo(note, err=True)
    for d in recorded:
        mean = "n/a" if d.mean_delta_points is None else f"{d.mean_delta_points:+.3f}"
        why = f": {'; '.join(d.reasons)}" if d.reasons else ""
        typer.echo(
            f"{d.decided_at:%Y-%m-%d %H:%M:%S} v{d.challenger_version} vs champion v{d.champion_version}: "
            f"{d.outcome}, mean {mean} points{why}"
        )


def _record_bootstrap(settings: Any, champion: Any) -> None:
    """Record the champion's training splits (``external`` for deepCR's weights) in the results database.

    Statistics then say of its scores that its training visits are not known to crlib, before any
    gate decision records it. Skipped, with a note, when the results database cannot be opened.
    """
    from crlib.db.session import open_results_db
    from crlib.errors import CrlibError
    from crlib.registry.decisions import sync_training_splits

    try:
        engine, sessions = open_results_db(settings, upgrade=True, pool_size=1)
    except CrlibError as exc:
        typer.echo(f"training splits of {champion.label} not recorded: {exc}", err=True)
        return
    try:
        with sessions() as session:
            sync_training_splits(
                session, settings.resolved_mlflow_uri(), champion.name, version=champion.version
            )
    finally:
        engine.dispose()


def _recent_decisions(settings: Any, model_name: str, limit: int) -> tuple[list[Any], str | None]:
    """The last ``limit`` recorded gate decisions, or a note why they cannot be shown."""
    if limit <= 0:
        return [], None
    from crlib.db.model_registry import decision_history
    from crlib.db.session import open_results_db
    from crlib.errors import CrlibError

    try:
        engine, sessions = open_results_db(settings, upgrade=True, pool_size=1)
    except CrlibError as exc:
        return [], f"promotion decisions not shown: {exc}"
    try:
        with sessions() as session:
            return decision_history(session, model_name, limit=limit), None
    finally:
        engine.dispose()


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
    from crlib.bench.training import run_training_benchmark
    from crlib.config import load_settings

    settings = load_settings()
    result = run_training_benchmark(
        patches=patches, batch_size=batch_size, patch=patch, threads=settings.torch_threads()
    )
    for key, value in result.items():
        typer.echo(f"{key}: {value}")
    if result.get("ratio_vs_deepcr", 0) <= 0:
        fail("benchmark produced no measurement")
