"""drizzlepac's per-exposure steps in forked processes, their in-memory products handed back.

drizzlepac's C kernels (``cdriz.tdriz``, ``cdriz.tblot``) hold the GIL, so threads cannot run two
exposures' single drizzles or blots at once, and drizzlepac's own parallel single drizzle
(``num_cores > 1``) runs in memory mode through ``multiprocessing.Manager`` proxies, which made a
full-size 3-exposure visit slower than one process (single drizzle 9.4 -> 11.2 s, the median that
reads the proxies 1.5 -> 4.3 s). :func:`run_per_exposure` instead forks one process per exposure,
runs the unchanged drizzlepac step on that exposure's image object in the child (the whole visit's
state is inherited by the fork, nothing is pickled on the way in), and hands back only what the
step added to the image's ``virtualOutputs``: the arrays through files in shared memory
(``/dev/shm`` where it exists; a file it has no room for -- Docker gives containers 64 MB there by
default -- goes to the temporary directory instead), the headers as text. The parent rebuilds the
same HDUs, so every later step (median, driz_cr) sees what a serial run would have left, pixel for
pixel.

Which steps may run this way: those whose work on one exposure reads nothing another exposure's
step writes -- the single drizzle (``adrizzle.drizSeparate`` on a one-image list: each exposure is
its own product) and the blot (``ablot.runBlot``: each chip blots the shared median). The sky match
runs one pair of exposures per process (:func:`forked_sky_overlaps`). The static mask and the
median combine exposures and stay in the parent.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "default_processes",
    "fork_available",
    "forked_map",
    "forked_sky_overlaps",
    "process_count",
    "run_per_exposure",
]

log = logging.getLogger(__name__)

#: What the children run (``call``) and where they hand arrays back (``folders``), set by the parent
#: just before it forks; each child reads them from its copy of this module (never pickled).
_FORKED_WORK: dict[str, Any] = {}

T = TypeVar("T")

#: One HDU as it crosses the process boundary: (astropy class name, header text, array file or None).
_HduRecord = tuple[str, str, str | None]


def fork_available() -> bool:
    """Whether this platform can fork worker processes (Linux: yes; Windows: no)."""
    return "fork" in multiprocessing.get_all_start_methods()


def default_processes(exposures: int, *, cores: int = 0) -> int:
    """Processes for ``exposures`` exposures: one each, at most two per core; one core: none.

    More processes than cores still shortens the step when the exposures do not divide evenly among
    the cores (3 exposures on 2 cores: the step takes 1.5 exposures' time instead of 2 rounds).
    ``cores``: the cores this task may use (0: every CPU core of the machine); a one-core task
    (``CRLIB_THREADS=1`` on a packed worker) drizzles in its own process.
    """
    usable = cores or os.cpu_count() or 1
    return 1 if usable <= 1 else max(1, min(exposures, 2 * usable))


def process_count(requested: int, exposures: int, *, cores: int = 0) -> int:
    """Forked processes a step uses: ``requested``, or :func:`default_processes` when it is 0."""
    return requested or default_processes(exposures, cores=cores)


def _shared_memory_dir() -> str | None:
    """``/dev/shm`` where the system has it (files there never touch a disk), else the temp dir."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _save_array(data: np.ndarray, name: str) -> str:
    """Write one array for the parent: to the shared-memory folder, else (no room) the disk folder."""
    *shared, last = (Path(folder) / f"{name}.npy" for folder in _FORKED_WORK["folders"])
    for path in shared:
        try:
            np.save(path, data, allow_pickle=False)
            return str(path)
        except OSError:  # ENOSPC in a small /dev/shm: the disk folder
            path.unlink(missing_ok=True)
    np.save(last, data, allow_pickle=False)
    return str(last)


def _hdu_record(hdu: Any, name: str) -> _HduRecord:
    path = None if hdu.data is None else _save_array(np.asarray(hdu.data), name)
    return type(hdu).__name__, hdu.header.tostring(), path


def _step_products(
    image: Any, step: Callable[[Any], None], index: int
) -> dict[str, tuple[str, list[_HduRecord]]]:
    """In the forked child: run the step on image ``index``; describe what it added or replaced."""
    from astropy.io import fits

    before = dict(image.virtualOutputs)  # the objects themselves: a replaced entry is a new object
    step(image)
    added: dict[str, tuple[str, list[_HduRecord]]] = {}
    for number, (key, value) in enumerate(image.virtualOutputs.items()):
        if key in before and before[key] is value:
            continue
        stem = f"{index}_{number}"
        if isinstance(value, fits.HDUList):
            added[key] = ("list", [_hdu_record(h, f"{stem}_{i}") for i, h in enumerate(value)])
        else:
            added[key] = ("hdu", [_hdu_record(value, stem)])
    return added


def _rebuild(kind: str, records: list[_HduRecord]) -> Any:
    """The HDU or HDUList a child described, data read into this process's memory."""
    from astropy.io import fits

    hdus = []
    for class_name, header_text, path in records:
        data = np.load(path, allow_pickle=False) if path else None
        hdus.append(getattr(fits, class_name)(data=data, header=fits.Header.fromstring(header_text)))
    return hdus[0] if kind == "hdu" else fits.HDUList(hdus)


def _forks_wanted(processes: int, tasks: int, step_name: str) -> bool:
    if processes <= 1 or tasks < 2 or not fork_available():
        return False
    if multiprocessing.current_process().daemon:
        log.warning("%s: %d processes asked for in a daemonic process: one process", step_name, processes)
        return False
    return True


def _reopen_inherited_files() -> None:
    """In a forked child: give every inherited regular file its own open-file description.

    A fork shares each open file's offset with the parent and the other children. astropy reads a
    lazily loaded HDU with seek + read on the file the parent opened, so two children reading the
    same exposure at once read each other's bytes: a first version of the forked sky match got
    wrong DQ masks that way on two benchmark visits in three (one pair's sky came back ``None``).
    Each inherited file is reopened by its path at the same offset and put in place of the
    inherited descriptor (``dup2``), so the child's reads are its own. Linux (``/proc/self/fd``)
    only; elsewhere nothing is done.
    """
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        return
    for entry in list(fd_dir.iterdir()):
        try:
            fd = int(entry.name)
            inherited = os.fstat(fd)
            if not stat.S_ISREG(inherited.st_mode):
                continue
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
            flags = int(info.split("flags:", 1)[1].split()[0], 8)
            offset = os.lseek(fd, 0, os.SEEK_CUR)
            private = os.open(os.readlink(entry), flags & (os.O_ACCMODE | os.O_APPEND))
        except (OSError, ValueError, IndexError):  # closed meanwhile, deleted file, odd fdinfo
            continue
        reopened = os.fstat(private)
        if (reopened.st_dev, reopened.st_ino) != (inherited.st_dev, inherited.st_ino):
            os.close(private)  # the path now names another file: keep the inherited descriptor
            continue
        os.lseek(private, offset, os.SEEK_SET)
        os.dup2(private, fd, inheritable=False)
        os.close(private)


def _run_forked_call(index: int) -> Any:
    if not _FORKED_WORK.get("files_reopened"):
        _reopen_inherited_files()
        _FORKED_WORK["files_reopened"] = True  # this child's copy of the module only
    log.debug("%s: item %d in forked process %d", _FORKED_WORK["step_name"], index, os.getpid())
    return _FORKED_WORK["call"](index)


def forked_map(call: Callable[[int], T], count: int, *, processes: int, step_name: str) -> list[T]:
    """``[call(0), ..., call(count - 1)]``, each call in a forked process, the results pickled back.

    ``call`` runs in a fork of this process (it sees this process's state as it was at the fork)
    and its side effects stay there; only its return value comes back. ``processes`` as for
    :func:`run_per_exposure`; with one process, or no ``fork``, or in a daemonic process, the
    calls run here.

    Raises
    ------
    RuntimeError
        When a worker process died (for example killed for memory), naming ``step_name`` and the
        setting that runs it in one process.
    """
    if not _forks_wanted(processes, count, step_name):
        return [call(index) for index in range(count)]
    _FORKED_WORK["call"] = call
    _FORKED_WORK["step_name"] = step_name
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(processes, count), mp_context=context) as pool:
            return list(pool.map(_run_forked_call, range(count)))
    except BrokenProcessPool as exc:
        raise RuntimeError(
            f"a worker process of the {step_name} step died ({exc}); if it was killed for memory, "
            "run the step in one process: CRLIB_TRUTH_DRIZZLE_PROCESSES=1"
        ) from exc
    finally:
        _FORKED_WORK.pop("call", None)
        _FORKED_WORK.pop("step_name", None)


def run_per_exposure(
    images: Sequence[Any], step: Callable[[Any], None], *, processes: int, step_name: str
) -> None:
    """Run ``step(image)`` for every drizzlepac image object, one forked process per exposure.

    The images' ``virtualOutputs`` end as a serial ``for image in images: step(image)`` would
    leave them (entries the step adds or replaces, copied back; a name that several exposures
    write, such as drizzlepac's scratch ``singleDrizMask``, ends with the last exposure's).

    Parameters
    ----------
    images
        drizzlepac ``imageObject`` instances in memory mode, in the visit's order.
    step
        Runs one drizzlepac step on one image object (for example
        ``lambda image: adrizzle.drizSeparate([image], output_wcs, config)``).
    processes
        Worker processes; ``1`` (or a platform without ``fork``, one exposure, or a daemonic
        process such as a ``multiprocessing.Pool`` worker, which may not have children) runs the
        step here, serially.
    step_name
        The step's name, for errors.

    Raises
    ------
    RuntimeError
        When a worker process died (for example killed for memory), naming the step and the
        setting that runs it in one process.
    """
    if not _forks_wanted(processes, len(images), step_name):
        for image in images:
            step(image)
        return
    shared = _shared_memory_dir()
    folders = [tempfile.mkdtemp(prefix="crlib-drizzle-", dir=shared)]
    if shared is not None:
        folders.append(tempfile.mkdtemp(prefix="crlib-drizzle-"))  # when /dev/shm is full
    _FORKED_WORK["folders"] = folders
    try:
        results = forked_map(
            lambda index: _step_products(images[index], step, index),
            len(images),
            processes=processes,
            step_name=step_name,
        )
        for image, added in zip(images, results, strict=True):
            for key, (kind, records) in added.items():
                image.virtualOutputs[key] = _rebuild(kind, records)
    finally:
        _FORKED_WORK.clear()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def forked_sky_overlaps(*, processes: int) -> Iterator[None]:
    """While open, skypac's sky match measures each pair of exposures in a forked process.

    ``stsci.skypac.skymatch._overlap_matrix`` measures the sky in every pair's overlap with
    ``_calc_sky``, one pair after the other (its own comment: the calls are independent and could
    run in parallel). This replaces it with the same loop over :func:`forked_map`, filling the same
    matrices in the same places, so the sky values are identical (each child reads through its own
    file descriptors, :func:`_reopen_inherited_files`). Restored on exit.
    """
    from stsci.skypac import skymatch

    original = skymatch._overlap_matrix

    def overlap_matrix(skylines: Sequence[Any], skystat: Any) -> tuple[np.ndarray, np.ndarray]:
        count = len(skylines)
        pairs = [(i, j) for i in range(count) for j in range(i + 1, count)]
        results = forked_map(
            lambda k: skymatch._calc_sky(skylines[pairs[k][0]], skylines[pairs[k][1]], skystat),
            len(pairs),
            processes=processes,
            step_name="sky match",
        )
        sky = np.zeros((count, count), dtype=float)
        weight = np.zeros((count, count), dtype=float)
        for (i, j), (sky1, weight1, sky2, weight2, area) in zip(pairs, results, strict=True):
            if area == 0.0 or sky1 is None or sky2 is None:
                continue
            sky[j, i], weight[j, i], sky[i, j], weight[i, j] = sky1, weight1, sky2, weight2
        return sky, weight

    skymatch._overlap_matrix = overlap_matrix
    try:
        yield
    finally:
        skymatch._overlap_matrix = original
