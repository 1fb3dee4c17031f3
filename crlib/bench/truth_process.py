"""``crlib bench truth --timing process``: each timed run of either tool is a whole process.

Issue 16 compares the truth stage with bare AstroDrizzle "both as whole processes": a run then pays
for what a user's run pays for (interpreter start, imports, drizzlepac's own set-up, exit), not
only for the call. :func:`tool_command` builds the child command of one run; the child
(``python -m crlib.bench.truth_process crlib|bare ...``) makes exactly the call the in-process
benchmark times (:func:`crlib.truth.visit.build_visit_truth`, or
:func:`crlib.truth.drizzle.run_astrodrizzle` on fresh copies) and, for the truth stage, leaves its
:class:`~crlib.truth.visit.VisitTruth` in a pickle in the working directory so that the parent
can score it (a file of this benchmark's own run, read back by the same code version).
:func:`time_process` runs one child to its end and returns its wall and CPU seconds
(:func:`crlib.bench.inference.run_timed`: ``wait4``, so the children's children count).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlib.bench.inference import run_timed
from crlib.bench.truth_report import BARE, CRLIB

if TYPE_CHECKING:
    from crlib.profiles import InstrumentProfile
    from crlib.truth.drizzle import DrizzleRun

log = logging.getLogger(__name__)

__all__ = ["bare_astrodrizzle", "result_path", "time_process", "tool_command"]


def result_path(work_dir: Path) -> Path:
    """Where a truth-stage child leaves its pickled ``VisitTruth``: in ``work_dir``, which the
    benchmark removes before every run, so a run never reads an earlier run's result."""
    return Path(work_dir) / "visittruth.pickle"


def tool_command(
    tool: str,
    visit_dir: Path,
    work_dir: Path,
    *,
    output_name: str,
    engine: str = "inmemory",
    num_cores: int | None = None,
    catalog_file: Path | None = None,
) -> list[str]:
    """The child command of one timed run of ``tool`` (``crlib`` or ``bare``).

    Parameters
    ----------
    tool
        ``crlib`` (the truth stage) or ``bare`` (bare AstroDrizzle on fresh copies).
    visit_dir, work_dir
        The visit and the run's working directory (it must not exist yet).
    output_name
        AstroDrizzle's output name for the bare run (the truth stage names its own).
    engine
        The truth stage's drizzle engine (``inmemory`` or ``astrodrizzle``; unused by ``bare``).
    num_cores
        AstroDrizzle ``num_cores`` for both tools (``None``: each tool's default).
    catalog_file
        Astrometric catalog for the truth stage's absolute fit (``None``: relative fit only).

    Returns
    -------
    list of str
        ``[python, -m, crlib.bench.truth_process, tool, ...]``.
    """
    if tool not in (CRLIB, BARE):
        raise ValueError(f"tool must be {CRLIB!r} or {BARE!r}, got {tool!r}")
    command = [sys.executable, "-m", "crlib.bench.truth_process", tool, str(visit_dir), str(work_dir)]
    command += ["--output-name", output_name, "--engine", engine, "--num-cores", str(num_cores or 0)]
    if catalog_file is not None:
        command += ["--catalog-file", str(catalog_file)]
    return command


def bare_astrodrizzle(
    visit_dir: Path,
    work_dir: Path,
    *,
    output_name: str,
    overrides: dict[str, Any],
    profile: InstrumentProfile | None = None,
) -> DrizzleRun:
    """Bare AstroDrizzle as the truth stage stages it: copies of the visit's files in a fresh ``work_dir``.

    Parameters
    ----------
    visit_dir, work_dir
        The visit and the working directory (it must not exist yet).
    output_name
        AstroDrizzle's output name.
    overrides
        AstroDrizzle keywords over the single-visit parameter set (e.g. ``num_cores``).
    profile
        The exposures' instrument profile (``None``: read from the first exposure's header).
    """
    from crlib.formats.exposures import copy_to_work_dir, find_exposures, read_exposure_info
    from crlib.truth.drizzle import run_astrodrizzle

    exposures = find_exposures(visit_dir)
    profile = profile or read_exposure_info(exposures[0]).profile
    copies = copy_to_work_dir(exposures, work_dir)
    return run_astrodrizzle(copies, profile=profile, output_name=output_name, overrides=overrides)


def time_process(command: Sequence[str], *, logs_dir: Path) -> dict[str, float]:
    """Run one child to its end; its wall and CPU seconds (user + system, children included).

    Raises
    ------
    crlib.errors.CrlibError
        When the child fails (the end of its stderr is in the message, the whole of it in
        ``logs_dir/stderr.txt``).
    """
    logs_dir.mkdir(parents=True, exist_ok=True)
    timed = run_timed(command, env=dict(os.environ), workdir=logs_dir)
    return {"wall_s": float(timed["wall_s"]), "cpu_s": float(timed["cpu_s"])}


def read_visit_truth(work_dir: Path) -> Any:
    """The ``VisitTruth`` a truth-stage child of this benchmark left for ``work_dir``."""
    with open(result_path(work_dir), "rb") as stream:
        return pickle.load(stream)  # written by this benchmark's own child, same code version


def _main(argv: Sequence[str]) -> None:
    """Child body: one run of one tool, as :func:`crlib.bench.truth.benchmark_visit` calls it."""
    parser = argparse.ArgumentParser(prog="python -m crlib.bench.truth_process")
    parser.add_argument("tool", choices=(CRLIB, BARE))
    parser.add_argument("visit_dir", type=Path)
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--output-name", required=True)
    parser.add_argument("--engine", required=True)
    parser.add_argument("--num-cores", type=int, default=0)
    parser.add_argument("--catalog-file", type=Path, default=None)
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"num_cores": args.num_cores} if args.num_cores else {}
    if args.tool == BARE:
        run = bare_astrodrizzle(
            args.visit_dir, args.work_dir, output_name=args.output_name, overrides=overrides
        )
        if run.problems:
            raise SystemExit(f"AstroDrizzle problems: {'; '.join(run.problems)}")
        return
    from crlib.align.options import AlignOptions
    from crlib.truth.options import TruthOptions
    from crlib.truth.visit import build_visit_truth

    options = TruthOptions(
        align_options=AlignOptions(catalog_file=args.catalog_file, query_catalogs=False),
        drizzle_overrides=overrides,
        engine=args.engine,
    )
    truth = build_visit_truth(args.visit_dir, work_dir=args.work_dir, options=options)
    with open(result_path(args.work_dir), "wb") as stream:
        pickle.dump(truth, stream)


if __name__ == "__main__":  # child entry: python -m crlib.bench.truth_process crlib|bare VISIT WORK ...
    logging.basicConfig(level=logging.WARNING)
    _main(sys.argv[1:])
