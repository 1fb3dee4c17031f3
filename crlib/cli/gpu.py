"""``crlib bench gpu``: inference and training speed on the GPU, masks checked against the CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from crlib.cli.app import bench_app
from crlib.cli.choices import DeviceOption, SizeOption


@bench_app.command("gpu")
def bench_gpu_command(
    device: Annotated[
        DeviceOption, typer.Option(help="auto (CUDA when available, else a CPU plumbing check), cuda or cpu.")
    ] = "auto",
    size: Annotated[
        SizeOption,
        typer.Option(
            help="full: simulated 2 x 2048x4096 exposure; small: 2 x 128x256 chips, 64x64 patches (tests)."
        ),
    ] = "full",
    flc: Annotated[
        Path | None, typer.Option(help="Benchmark this exposure instead of a generated one.")
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option(
            min=1, max=1000, help="Timed inference runs per precision, median (default 5 on CUDA, 1 on CPU)."
        ),
    ] = None,
    train_steps: Annotated[
        int, typer.Option(min=1, max=100000, help="Timed training steps per batch size.")
    ] = 20,
    train_batch: Annotated[
        list[int] | None,
        typer.Option(
            min=1, max=4096, help="Training batch size (repeat; default 16 and 64 on CUDA, 4 or 2 on CPU)."
        ),
    ] = None,
    window: Annotated[
        int | None, typer.Option(min=32, max=8192, help="Inference window side (default: the device's).")
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(min=1, max=1024, help="Inference windows per forward pass (default: the device's)."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, max=1024, help="CPU workers (default CRLIB_THREADS, else every core)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the JSON report to this file.")] = None,
) -> None:
    """GPU inference per precision (ms, masks vs CPU fp32), training patches/s, targets: one JSON report."""
    from crlib.bench.gpu import run_gpu_benchmark
    from crlib.config import load_settings

    report = run_gpu_benchmark(
        device=device,
        size=size,
        flc=flc,
        repeats=repeats,
        train_steps=train_steps,
        train_batches=tuple(train_batch) if train_batch else None,
        window=window,
        batch=batch,
        threads=threads or load_settings().torch_threads(),
    )
    text = json.dumps(report, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    typer.echo(text)
