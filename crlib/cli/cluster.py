"""``crlib cluster`` (a local cluster until Ctrl-C), ``crlib bench cluster`` and ``bench warm-workers``."""

from __future__ import annotations

import json
import signal
import time
from typing import Annotated, Any

import typer

from crlib.cli.app import app, bench_app
from crlib.cli.choices import SizeOption


def _stop_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so ``kill`` shuts the cluster down as cleanly as Ctrl-C."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


@app.command("cluster")
def cluster_command(
    worker: Annotated[
        list[str] | None,
        typer.Option(
            "--worker",
            help="Celery worker name=queue[,queue][:concurrency]; repeatable (default: cpu=cpu gpu=gpu).",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="api-server port on 127.0.0.1 (UI and REST API).")] = 8080,
    broker_url: Annotated[
        str | None, typer.Option(help="Use this Celery broker instead of a private redis-server.")
    ] = None,
    inference_queue: Annotated[
        str, typer.Option(help="Queue of the inference tasks ('' = default).")
    ] = "gpu",
    inference_slots: Annotated[int, typer.Option(min=1, help="Size of the crlib_inference pool.")] = 2,
    triggerer: Annotated[bool, typer.Option(help="Also run the triggerer.")] = True,
) -> None:
    """Run Airflow on the CeleryExecutor locally until Ctrl-C: PostgreSQL metadata (embedded or
    CRLIB_DATABASE_URL's server), a private redis-server, api-server, scheduler, dag-processor,
    triggerer and Celery workers on queues cpu and gpu."""
    from crlib.config import load_settings
    from crlib.harness.cluster import local_cluster
    from crlib.harness.cluster_config import WorkerSpec

    specs = tuple(WorkerSpec.parse(w) for w in worker) if worker else None
    workers = specs or (WorkerSpec("cpu", ("cpu",)), WorkerSpec("gpu", ("gpu",)))
    settings = load_settings()
    _stop_on_sigterm()
    typer.echo("starting the cluster (database migrations first; about a minute)...", err=True)
    try:
        with local_cluster(
            settings,
            workers=workers,
            broker_url=broker_url,
            api_port=port,
            inference_queue=inference_queue or None,
            inference_slots=inference_slots,
            triggerer=triggerer,
        ) as cluster:
            passwords = cluster.home / "simple_auth_manager_passwords.json.generated"
            typer.echo(f"Airflow UI and API: {cluster.api_url}  (user admin, password in {passwords})")
            for spec in workers:
                queues = ",".join(spec.queues)
                typer.echo(f"worker {spec.name}: queues {queues}, concurrency {spec.concurrency}")
            typer.echo(f"process logs: {cluster.log_dir}")
            typer.echo(f"AIRFLOW_HOME={cluster.home}  (the airflow CLI needs the cluster's environment too)")
            typer.echo("Ctrl-C stops everything.")
            while True:
                cluster.check()
                time.sleep(2)
    except KeyboardInterrupt:
        typer.echo("stopping the cluster...", err=True)


@bench_app.command("cluster")
def bench_cluster_command(
    visits: Annotated[int, typer.Option(min=2, max=30, help="Visits in the simulated proposal.")] = 4,
    exposures: Annotated[int, typer.Option(min=2, max=8, help="Exposures per visit.")] = 2,
    size: Annotated[
        SizeOption,
        typer.Option(help="full (2 x 4096x2048 chips: task work dominates Airflow's overhead) or small."),
    ] = "full",
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 2026,
    keep: Annotated[
        bool, typer.Option(help="Keep scratch files and databases (logs; ~20 GB at full size).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the measurements as JSON.")] = False,
) -> None:
    """Reprocess a simulated proposal in one process, then on 1 and on 2 Celery workers (one thread per
    task); print the wall times, the 2-worker/1-worker ratio and Airflow's per-task overhead."""
    from crlib.bench.scaling import SCALING_TARGET, run_scaling_benchmark
    from crlib.config import load_settings

    report = run_scaling_benchmark(
        load_settings(),
        visits=visits,
        exposures=exposures,
        size=size,
        seed=seed,
        keep=keep,
        progress=lambda message: typer.echo(message, err=True),
    )
    one = report.run(1)
    if as_json:
        payload = {
            "visits": report.visits,
            "exposures_per_visit": report.exposures,
            "size": report.size,
            "in_process_s": round(report.in_process_s, 2),
            "runs": [
                {
                    "workers": r.workers,
                    "wall_s": round(r.wall_s, 2),
                    "tasks": r.tasks,
                    "task_seconds": round(r.task_seconds, 2),
                    "mean_queue_wait_s": round(r.mean_queue_wait_s, 2),
                    "hosts": list(r.hosts),
                    "load_1min_at_end": round(r.load_1min, 2),
                }
                for r in report.runs
            ],
            "ratio": round(report.ratio, 3),
            "target": SCALING_TARGET,
            "passed": report.passed(),
            "overhead_per_task_s": round(report.overhead_per_task_s, 2),
            "in_task_overhead_s": round(report.in_task_overhead_s, 2),
            "between_tasks_s": round(report.between_tasks_s, 2),
            "cores": report.cores,
            "load_before": report.load_before,
            "load_after": report.load_after,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(
        f"crlib bench cluster: {report.visits} visits x {report.exposures} {report.size} exposures, "
        f"{one.tasks} tasks, one thread and one slot per worker"
    )
    typer.echo(f"  in one process (crlib run):  {report.in_process_s:8.1f} s")
    for run in report.runs:
        typer.echo(
            f"  {run.workers} worker(s):                {run.wall_s:8.1f} s   "
            f"(task time {run.task_seconds:.1f} s, mean queue wait {run.mean_queue_wait_s:.1f} s, "
            f"hosts {', '.join(run.hosts)}, load {run.load_1min:.1f} at the end)"
        )
    verdict = "meets" if report.passed() else "misses"
    typer.echo(
        f"  ratio 2 workers / 1 worker:  {report.ratio:8.3f}     ({verdict} the target <= {SCALING_TARGET})"
    )
    typer.echo(
        f"  Airflow overhead per task:   {report.overhead_per_task_s:8.2f} s  "
        "((1-worker wall - in-process) / tasks)"
    )
    typer.echo(
        f"    inside the task instances:  {report.in_task_overhead_s:8.2f} s  "
        "(task process, DAG parse, imports)"
    )
    typer.echo(
        f"    between task instances:     {report.between_tasks_s:8.2f} s  (scheduling, Celery hand-off)"
    )
    typer.echo(f"  machine: {report.cores} cores, {_load_averages(report.load_before, report.load_after)}")
    for note in report.notes:
        typer.echo(f"  {note}")


@bench_app.command("warm-workers")
def bench_warm_workers_command(
    visits: Annotated[int, typer.Option(min=1, max=10, help="Visits in the simulated proposal.")] = 2,
    exposures: Annotated[int, typer.Option(min=2, max=8, help="Exposures per visit.")] = 3,
    size: Annotated[SizeOption, typer.Option(help="Simulated chip size.")] = "small",
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 2026,
    as_json: Annotated[bool, typer.Option("--json", help="Print the measurements as JSON.")] = False,
) -> None:
    """Per-task overhead of the infer tasks on a cold and on a warm Celery worker (issue 16: <= 0.5 s warm).

    Reprocesses one simulated proposal on a one-worker local cluster with CRLIB_WARM_WORKERS=false,
    then with warm pool processes; overhead = mean infer task duration - mean prediction time.
    """
    from crlib.bench.warm_workers import WARM_OVERHEAD_TARGET_S, run_warm_worker_benchmark
    from crlib.config import load_settings

    report = run_warm_worker_benchmark(
        load_settings(),
        visits=visits,
        exposures=exposures,
        size=size,
        seed=seed,
        progress=lambda message: typer.echo(message, err=True),
    )
    rows = {"cold": report.cold, "warm": report.warm}
    if as_json:
        payload = {
            "visits": report.visits,
            "exposures_per_visit": report.exposures,
            "size": report.size,
            **{
                label: {
                    "tasks": len(costs.task_seconds),
                    "task_seconds": [round(s, 3) for s in costs.task_seconds],
                    "predict_seconds": [round(s, 3) for s in costs.predict_seconds],
                    "overhead_s": round(costs.overhead_s, 3),
                }
                for label, costs in rows.items()
            },
            "saved_per_task_s": round(report.saved_per_task_s, 3),
            "target_s": WARM_OVERHEAD_TARGET_S,
            "passed": report.passed(),
            "load_before": report.load_before,
            "load_after": report.load_after,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo(
        f"crlib bench warm-workers: {report.visits} visits x {report.exposures} {report.size} exposures, "
        "one worker, one slot, one thread"
    )
    for label, costs in rows.items():
        typer.echo(
            f"  {label}: {len(costs.task_seconds)} infer tasks, median {costs.median_task_s:.2f} s, "
            f"overhead {costs.overhead_s:.2f} s per task (mean task - mean prediction)"
        )
    verdict = "meets" if report.passed() else "misses"
    typer.echo(
        f"  warm saves {report.saved_per_task_s:.2f} s per task; warm overhead {verdict} the target "
        f"<= {WARM_OVERHEAD_TARGET_S} s"
    )
    typer.echo(f"  {_load_averages(report.load_before, report.load_after)}")


def _load_averages(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """``load average before a, b, c, after d, e, f`` (1/5/15 minutes)."""
    return (
        f"load average before {', '.join(f'{x:.2f}' for x in before)}, "
        f"after {', '.join(f'{x:.2f}' for x in after)}"
    )
