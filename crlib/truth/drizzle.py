"""Run AstroDrizzle (median, blot, driz_cr) on one visit and collect its per-exposure CR masks.

Facts this module works around (drizzlepac 3.11 on this stack):

* ``updatewcs=False``: FLC files carry their distortion; ``True`` would call the MAST astrometry service.
* drizzlepac modifies its inputs (DQ bit 4096 is ORed in during the final drizzle, MDRIZSKY written),
  so it only ever runs on copies in a per-visit working directory.
* ``driz_cr`` writes ``<root>_sci<N>_crmask.fits`` as uint8 with **1 = good, 0 = CR**; ``clean=True``
  deletes it, so we run with ``clean=False`` and invert the masks (ours are 1 = CR).
* ``skymethod='match'`` silently falls back to ``localmin``: stsci.skypac 1.0.12 calls
  ``SphericalPolygon.iter_polygons_flat``, which spherical_geometry 1.4 removed. While AstroDrizzle
  runs we provide that method (iterating the flat sub-polygons, exactly what the old method did)
  and we record which sky method was really used by watching drizzlepac's fallback warning.
* ``num_cores``: drizzlepac forks one process per exposure in its drizzle, blot and driz_cr steps
  when ``num_cores > 1`` (and refuses to in a daemonic process, e.g. a Celery prefork worker).
  The number comes from ``overrides`` or the ``num_cores`` argument; every run writes the keywords
  it passed, and the sky method it really got, to ``<output>_parameters.json`` (see
  :func:`read_run_record`), so two runs can be shown to have used the same parameters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crlib.config import TruthEngine
from crlib.formats.flc import rootname_from_path
from crlib.profiles import InstrumentProfile
from crlib.truth.parameters import load_svm_parameters

log = logging.getLogger(__name__)

#: The two ways the truth stage drizzles: drizzlepac's ``AstroDrizzle`` call with its files, or
#: its steps in memory (:mod:`crlib.truth.drizzle_inmemory`).
DrizzleEngine = TruthEngine

#: Parameters we always force, whatever the SVM set says (and why).
FORCED_PARAMETERS: dict[str, Any] = {
    "updatewcs": False,  # offline; the FLC files already carry their distortion
    "clean": False,  # keep the *_crmask.fits files (clean=True deletes them)
    "in_memory": False,  # crmask files are only written to disk when not in memory
    "preserve": False,
    "restore": False,
    "build": True,
}

#: AstroDrizzle's process count when neither the caller nor ``overrides`` set ``num_cores``. One
#: process: on the shared 2-core machine the fork-per-exposure runs were slower (see docs/truth.md,
#: "Benchmark"), and a forked child inherits every thread's locks.
DEFAULT_NUM_CORES = 1

#: Keywords that name the run's own files: equal for two runs only if their output names are equal.
RUN_FILE_PARAMETERS = frozenset({"output", "runfile"})


@dataclass(frozen=True, slots=True)
class DrizzleRun:
    """What one AstroDrizzle run produced.

    Attributes
    ----------
    work_dir
        Directory the run worked in (holds the modified input copies and all products).
    inputs
        The input copies, in order.
    condition
        drizzlepac SVM parameter set used (e.g. ``acs_wfc_any_n2``).
    parameters
        Every keyword passed to ``AstroDrizzle``.
    skymethod_requested, skymethod_used
        Sky method asked for, and the one that actually ran (``localmin`` after a silent fallback).
    crmask_files
        ``{(rootname, sci_extver): path}`` of drizzlepac's crmask files (1 = good, 0 = CR).
    seconds
        Wall time of the drizzle run (the ``AstroDrizzle`` call, or the in-memory steps), seconds.
    problems
        Output checks that failed (missing crmask, empty run ...); empty when all is well.
    engine
        ``astrodrizzle`` (drizzlepac's files) or ``inmemory`` (:mod:`crlib.truth.drizzle_inmemory`).
    masks, blots
        The in-memory engine's results, ``{(rootname, sci_extver): array}``: CR masks as uint8
        with **1 = CR**, blotted medians as float32 electrons; empty for the file engine, whose
        results are read from ``crmask_files`` and the ``*_blt.fits`` files.
    """

    work_dir: Path
    inputs: tuple[Path, ...]
    condition: str
    parameters: dict[str, Any]
    skymethod_requested: str
    skymethod_used: str
    crmask_files: dict[tuple[str, int], Path] = field(default_factory=dict)
    seconds: float = 0.0
    problems: tuple[str, ...] = ()
    engine: DrizzleEngine = "astrodrizzle"
    masks: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    blots: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)

    def has_mask(self, rootname: str) -> bool:
        """Whether driz_cr made a mask for some chip of ``rootname``."""
        return rootname in _masked_rootnames((*self.masks, *self.crmask_files))

    def cr_mask(self, rootname: str, sci_extver: int) -> np.ndarray | None:
        """CR mask of one chip as uint8, **1 = CR** (``None`` when driz_cr wrote none).

        Returns
        -------
        numpy.ndarray or None
            Shape (ny, nx) of the chip.
        """
        from astropy.io import fits

        if (rootname, sci_extver) in self.masks:
            return self.masks[(rootname, sci_extver)]
        path = self.crmask_files.get((rootname, sci_extver))
        if path is None:
            return None
        with fits.open(path, memmap=False) as hdul:
            good = np.asarray(hdul[0].data)
        return (good == 0).astype(np.uint8)

    def blot(self, rootname: str, sci_extver: int) -> np.ndarray | None:
        """Blotted median of one chip, float32 (ny, nx) electrons (``None`` when there is none)."""
        from astropy.io import fits

        if (rootname, sci_extver) in self.blots:
            return self.blots[(rootname, sci_extver)]
        for path in sorted(self.work_dir.glob(f"{rootname}*_sci{sci_extver}_blt.fits")):
            with fits.open(path, memmap=False) as hdul:
                return np.asarray(hdul[0].data, dtype=np.float32)
        return None


class _SkyFallbackWatcher(logging.Handler):
    """Notices drizzlepac's "Reverting sky computation" warning."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.fell_back = False

    def emit(self, record: logging.LogRecord) -> None:
        if "Reverting sky computation" in record.getMessage():
            self.fell_back = True


@contextlib.contextmanager
def skymatch_compatibility() -> Iterator[bool]:
    """Give spherical_geometry 1.4 polygons the ``iter_polygons_flat`` that stsci.skypac calls.

    Yields
    ------
    bool
        ``True`` when the method had to be provided (removed again on exit).
    """
    from spherical_geometry.polygon import SphericalPolygon

    if hasattr(SphericalPolygon, "iter_polygons_flat"):
        yield False
        return
    SphericalPolygon.iter_polygons_flat = SphericalPolygon.__iter__  # type: ignore[attr-defined]
    try:
        yield True
    finally:
        del SphericalPolygon.iter_polygons_flat  # type: ignore[attr-defined]


def find_crmask_files(work_dir: Path, rootnames: Sequence[str]) -> dict[tuple[str, int], Path]:
    """drizzlepac's ``<root>_..._sci<N>_crmask.fits`` files in ``work_dir``, keyed by (rootname, N)."""
    found: dict[tuple[str, int], Path] = {}
    for rootname in rootnames:
        for path in sorted(Path(work_dir).glob(f"{rootname}*_sci*_crmask.fits")):
            stem = path.name[: -len("_crmask.fits")]
            tail = stem.rsplit("_sci", 1)[-1]
            if tail.isdigit():
                found[(rootname, int(tail))] = path
    return found


def resolve_num_cores(requested: Any, n_inputs: int) -> int:
    """AstroDrizzle's ``num_cores`` for a run: ``requested`` (``None``: :data:`DEFAULT_NUM_CORES`).

    At least 1, at most one process per input (drizzlepac starts no more), and 1 in a daemonic
    process, which may not have children.

    Parameters
    ----------
    requested
        Wanted process count (``0`` or ``None``: the default).
    n_inputs
        Exposures in the run.

    Returns
    -------
    int
    """
    wanted = int(requested) if requested else DEFAULT_NUM_CORES
    cores = max(1, min(wanted, max(n_inputs, 1)))
    if cores > 1 and multiprocessing.current_process().daemon:
        log.warning("num_cores=%d asked for in a daemonic process: AstroDrizzle runs on one core", cores)
        return 1
    return cores


def run_record_path(work_dir: Path, output_name: str) -> Path:
    """Where :func:`run_astrodrizzle` writes the record of a run's effective parameters."""
    return Path(work_dir) / f"{output_name}_parameters.json"


def read_run_record(work_dir: Path, output_name: str) -> dict[str, Any]:
    """The record :func:`run_astrodrizzle` wrote for ``output_name`` in ``work_dir``.

    Returns
    -------
    dict
        ``inputs`` (file names), ``condition``, ``parameters`` (every keyword passed to ``AstroDrizzle``),
        ``skymethod_requested``, ``skymethod_used``, ``drizzlepac_version``, ``seconds``.
    """
    record: dict[str, Any] = json.loads(run_record_path(work_dir, output_name).read_text())
    return record


def _drizzlepac_version() -> str:
    import drizzlepac

    return str(getattr(drizzlepac, "__version__", "unknown"))


def run_astrodrizzle(
    inputs: Sequence[Path],
    *,
    profile: InstrumentProfile,
    output_name: str,
    final_drizzle: bool = False,
    fix_skymatch: bool = True,
    overrides: dict[str, Any] | None = None,
    num_cores: int | None = None,
) -> DrizzleRun:
    """Run AstroDrizzle with drizzlepac's SVM parameter set on copies of one visit's exposures.

    Parameters
    ----------
    inputs
        Exposure files **already copied** into one working directory (they get modified).
    profile
        Instrument profile (selects the SVM parameter set).
    output_name
        Root name of the drizzled product (written in the working directory).
    final_drizzle
        Run step 7 (final combined image). The CR masks come from step 6, so the truth stage skips
        it; the benchmark's "bare AstroDrizzle" runs it.
    fix_skymatch
        Provide the polygon method skypac needs so ``skymethod='match'`` really runs.
    overrides
        Extra AstroDrizzle keywords that win over the SVM set (never over :data:`FORCED_PARAMETERS`);
        ``num_cores`` here wins over the argument.
    num_cores
        AstroDrizzle processes (``None``: :data:`DEFAULT_NUM_CORES`); see :func:`resolve_num_cores`.

    Returns
    -------
    DrizzleRun
        With ``problems`` listing failed output checks (the caller turns them into a status).
    """
    from drizzlepac import astrodrizzle

    paths, condition, parameters = astrodrizzle_parameters(
        inputs,
        profile=profile,
        output_name=output_name,
        final_drizzle=final_drizzle,
        overrides=overrides,
        num_cores=num_cores,
    )
    work_dir = paths[0].parent
    start = time.perf_counter()
    with drizzlepac_session(work_dir, output_name, fix_skymatch=fix_skymatch) as session:
        astrodrizzle.AstroDrizzle(input=[p.name for p in paths], **parameters)
    seconds = time.perf_counter() - start
    requested, used = session.sky_methods(parameters)

    rootnames = [rootname_from_path(p) for p in paths]
    crmasks = find_crmask_files(work_dir, rootnames)
    run = DrizzleRun(
        work_dir=work_dir,
        inputs=tuple(paths),
        condition=condition,
        parameters=dict(parameters),
        skymethod_requested=requested,
        skymethod_used=used,
        crmask_files=crmasks,
        seconds=seconds,
        problems=missing_mask_problems(rootnames, crmasks),
    )
    write_run_record(run, output_name)
    return run


def astrodrizzle_parameters(
    inputs: Sequence[Path],
    *,
    profile: InstrumentProfile,
    output_name: str,
    final_drizzle: bool = False,
    overrides: dict[str, Any] | None = None,
    num_cores: int | None = None,
) -> tuple[list[Path], str, dict[str, Any]]:
    """The inputs' resolved paths, the SVM condition and every AstroDrizzle keyword of a run.

    The SVM set for the visit's size, then ``num_cores``, then ``overrides``, then
    :data:`FORCED_PARAMETERS`, then the run's own names (``output``, ``runfile``) and
    ``driz_combine`` (``final_drizzle``). Both engines use it, so both run the same parameters.

    Returns
    -------
    tuple
        ``(paths, condition, parameters)``.
    """
    paths = [Path(p).resolve() for p in inputs]
    if not paths:
        raise ValueError("a drizzle run needs at least one input file")
    condition, parameters = load_svm_parameters(profile, len(paths))
    parameters["num_cores"] = num_cores
    parameters.update(overrides or {})
    parameters.update(FORCED_PARAMETERS)
    parameters["num_cores"] = resolve_num_cores(parameters["num_cores"], len(paths))
    parameters["driz_combine"] = bool(final_drizzle)
    parameters["runfile"] = f"{output_name}_astrodrizzle.log"
    parameters["output"] = output_name
    return paths, condition, parameters


class DrizzlepacSession:
    """What :func:`drizzlepac_session` watched: whether drizzlepac fell back from its sky method."""

    def __init__(self) -> None:
        self.watcher = _SkyFallbackWatcher()

    def sky_methods(self, parameters: dict[str, Any]) -> tuple[str, str]:
        """``(requested, used)`` sky methods of the run that used ``parameters``."""
        requested = str(parameters.get("skymethod", "localmin"))
        if not self.watcher.fell_back:
            return requested, requested
        used = "globalmin" if "globalmin" in requested else "localmin"
        log.warning("AstroDrizzle fell back from skymethod=%r to %r", requested, used)
        return requested, used


@contextlib.contextmanager
def drizzlepac_session(
    work_dir: Path, output_name: str, *, fix_skymatch: bool
) -> Iterator[DrizzlepacSession]:
    """Run drizzlepac inside ``work_dir``, its stdout in ``<output>_stdout.log``, the sky fallback watched.

    Yields
    ------
    DrizzlepacSession
    """
    session = DrizzlepacSession()
    sky_logger = logging.getLogger("drizzlepac.sky")
    sky_logger.addHandler(session.watcher)
    try:
        # drizzlepac prints to stdout; keep it out of our callers' output (e.g. ``--json``)
        with (
            contextlib.chdir(work_dir),
            open(Path(work_dir) / f"{output_name}_stdout.log", "w") as stdout_log,
            contextlib.redirect_stdout(stdout_log),
            skymatch_compatibility() if fix_skymatch else contextlib.nullcontext(False),
        ):
            yield session
    finally:
        sky_logger.removeHandler(session.watcher)


def missing_mask_problems(rootnames: Sequence[str], masks: dict[tuple[str, int], Any]) -> tuple[str, ...]:
    """One problem per exposure that driz_cr made no mask for."""
    masked = _masked_rootnames(masks)
    return tuple(
        f"{rootname}: driz_cr wrote no crmask (file dropped or CR step skipped)"
        for rootname in rootnames
        if rootname not in masked
    )


def _masked_rootnames(keys: Iterable[tuple[str, int]]) -> set[str]:
    """The rootnames among ``(rootname, sci_extver)`` mask keys."""
    return {rootname for rootname, _ in keys}


def write_run_record(run: DrizzleRun, output_name: str) -> None:
    """Write the record :func:`read_run_record` reads (inputs, parameters, sky methods, engine, time)."""
    log.info(
        "%s %s on %d exposures: %.1f s, skymethod %s, num_cores %d",
        run.engine,
        run.condition,
        len(run.inputs),
        run.seconds,
        run.skymethod_used,
        run.parameters["num_cores"],
    )
    record = {
        "inputs": [p.name for p in run.inputs],
        "condition": run.condition,
        "engine": run.engine,
        "parameters": run.parameters,
        "skymethod_requested": run.skymethod_requested,
        "skymethod_used": run.skymethod_used,
        "drizzlepac_version": _drizzlepac_version(),
        "seconds": run.seconds,
    }
    run_record_path(run.work_dir, output_name).write_text(json.dumps(record, indent=2, default=str))
