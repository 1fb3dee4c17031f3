"""The truth stage's drizzle in memory: AstroDrizzle's steps 1-5 without their files, driz_cr on arrays.

:func:`run_inmemory_drizzle` runs what ``AstroDrizzle`` runs up to the CR masks, on the same
working copies with the same keywords (:func:`crlib.truth.drizzle.astrodrizzle_parameters`), and
hands the masks and blotted medians to the caller as arrays instead of ``*_crmask.fits`` and
``*_blt.fits`` files:

1. drizzlepac's own step functions, in ``AstroDrizzle``'s order, with ``in_memory=True``:
   ``processInput.setCommonInput`` (inputs, output WCS), ``staticMask.createStaticMask``,
   ``sky.subtractSky``, ``adrizzle.drizSeparate`` (``cdriz.tdriz``), ``createMedian.createMedian``
   and ``ablot.runBlot`` (``cdriz.tblot``). Their intermediate products stay in the image
   objects' ``virtualOutputs``; the single-drizzle images and weights are dropped from there as
   soon as the median is made, which lowers the peak memory. drizzlepac's
   ``OutputImage.writeFITS`` writes any output named ``*single_sci*`` to disk even in memory mode;
   the engine renames the single drizzles (``*_single_mem.fits``) so that nothing is written.
2. driz_cr (step 6) per chip with :func:`crlib.truth.driz_cr.driz_cr_good_mask`, which computes
   drizzlepac's ``drizCR._driz_cr`` mask pixel for pixel with fewer passes, the chips in threads.

The single drizzle and the blot run one forked process per exposure
(:mod:`crlib.truth.drizzle_forked`): ``cdriz.tdriz`` / ``tblot`` hold the GIL, so threads would run
them one after the other, and drizzlepac's own ``num_cores`` in memory mode passes the arrays
through ``multiprocessing.Manager`` proxies, which is slower than one process. Each child runs
drizzlepac's unchanged step on its exposure and hands the products back; the masks are the same
pixel for pixel as with ``processes=1``. The sky match measures one pair of exposures per forked
process (``forked_sky_overlaps``). The static mask and the median combine exposures and run in this
process. The final drizzle (step 7) is never run. See docs/truth.md, "In-memory
engine", for the measured agreement with the file engine and the time per step.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from crlib.formats.flc import rootname_from_path
from crlib.profiles import InstrumentProfile
from crlib.truth.driz_cr import driz_cr_good_mask
from crlib.truth.drizzle import (
    DrizzleRun,
    astrodrizzle_parameters,
    drizzlepac_session,
    missing_mask_problems,
    write_run_record,
)
from crlib.truth.drizzle_forked import forked_sky_overlaps, process_count, run_per_exposure

log = logging.getLogger(__name__)

#: drizzlepac's output names end in ``_sci<N>_<kind>.fits``; N is the SCI extver.
_EXTVER_IN_NAME = re.compile(r"_sci(\d+)_(?:crmask|blt)\.fits$")

#: Keywords this engine sets whatever the caller asked: memory mode, and drizzlepac's own parallelism
#: off (in memory mode it goes through ``multiprocessing.Manager`` proxies; this engine forks per
#: exposure itself, :mod:`crlib.truth.drizzle_forked`).
INMEMORY_PARAMETERS: dict[str, Any] = {"in_memory": True, "num_cores": 1}


def _config(paths: Sequence[Path], parameters: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """drizzlepac's configuration object for these keywords, built as ``AstroDrizzle()`` builds it."""
    from drizzlepac import util
    from stsci.tools import teal

    input_dict = dict(parameters)
    input_dict["input"] = [p.name for p in paths]
    defaults = teal.load("astrodrizzle", defaults=True)
    if "updatewcs" in input_dict:
        defaults["updatewcs"] = input_dict.pop("updatewcs")
    config = util.getDefaultConfigObj("astrodrizzle", defaults, input_dict, loadOnly=True)
    util.applyUserPars_steps(config, input_dict, step="3a")
    util.applyUserPars_steps(config, input_dict, step="7a")
    config["mdriztab"] = False
    return config, input_dict


def _chip_outputs(images: list[Any]) -> list[tuple[Any, str, int, str]]:
    """``(image, rootname, sci_extver, extension)`` of every chip drizzlepac blotted a median onto."""
    chips = []
    for image in images:
        rootname = rootname_from_path(Path(image._filename))
        for number in range(1, image._numchips + 1):
            chip = image[f"{image.scienceExt},{number}"]
            if not chip.group_member or chip.outputNames["blotImage"] not in image.virtualOutputs:
                continue
            match = _EXTVER_IN_NAME.search(chip.outputNames["crmaskImage"])
            extver = int(match.group(1)) if match else number
            chips.append((image, rootname, extver, f"{image.scienceExt},{number}"))
    return chips


def _chip_driz_cr(image: Any, extension: str, parameters: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """One chip's ``(CR mask uint8 with 1 = CR, blotted median float32 e-)``, as drizCR._driz_cr."""
    chip = image[extension]
    conversion = chip._conversionFactor
    blot = np.array(image.virtualOutputs[chip.outputNames["blotImage"]][0].data, dtype=np.float32)
    blot *= conversion
    sci = image.getData(extension) * conversion
    good = driz_cr_good_mask(
        sci,
        blot,
        gain=chip._effGain,
        read_noise_e=chip._rdnoise,
        background_e=chip.subtractedSky * conversion,
        snr=parameters["driz_cr_snr"],
        scale=parameters["driz_cr_scale"],
        grow=int(parameters["driz_cr_grow"]),
        ctegrow=int(parameters["driz_cr_ctegrow"]),
        cte_dir=int(getattr(chip, "cte_dir", 0)),
    )
    return (~good).astype(np.uint8), blot


def _drizzle_steps(
    config: Any, input_dict: dict[str, Any], *, processes: int, cores: int
) -> tuple[list[Any], str | None, dict[str, float]]:
    """Steps 1-5 as AstroDrizzle runs them; ``(images, reason no median was made or None, seconds)``.

    ``processes``: forked processes for the single drizzle and the blot (0: one per exposure, at
    most two per core of ``cores``, 0 meaning the machine's; 1: this process).
    """
    from drizzlepac import ablot, adrizzle, createMedian, processInput, sky, staticMask, util

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    images, output_wcs = processInput.setCommonInput(config, overwrite_dict=input_dict)
    images = list(images or [])
    _keep_single_drizzles_in_memory(images)
    seconds["initialize"] = time.perf_counter() - start
    if len(images) < 2:
        return images, f"drizzlepac kept {len(images)} usable input(s); driz_cr needs 2 or more", seconds
    forks = process_count(processes, len(images), cores=cores)

    def sky_match() -> None:
        with forked_sky_overlaps(processes=forks):
            sky.subtractSky(images, config)

    def per_exposure(step: Callable[[Any], None], name: str) -> Callable[[], None]:
        return lambda: run_per_exposure(images, step, processes=forks, step_name=name)

    steps = (
        ("static_mask", lambda: staticMask.createStaticMask(images, config)),
        ("sky", sky_match),
        (
            "single_drizzle",
            per_exposure(
                lambda image: adrizzle.drizSeparate([image], output_wcs, config, wcsmap=None),
                "single drizzle",
            ),
        ),
        ("median", lambda: createMedian.createMedian(images, config)),
        ("blot", per_exposure(lambda image: ablot.runBlot([image], output_wcs, config, wcsmap=None), "blot")),
    )
    for name, step in steps:
        start = time.perf_counter()
        try:
            step()
        except util.StepAbortedError as exc:
            if not str(exc).startswith("Rejecting all pixels"):
                _close(images)
                raise
            return images, f"the median step rejected every pixel ({exc})", seconds
        except BaseException:
            _close(images)  # the caller never sees these image objects: close their files here
            raise
        seconds[name] = time.perf_counter() - start
        if name == "median":
            _drop_single_drizzles(images)
    return images, None, seconds


def _keep_single_drizzles_in_memory(images: Sequence[Any]) -> None:
    """Rename each single-drizzle output so that memory mode keeps it in memory only.

    drizzlepac's ``OutputImage.writeFITS`` writes an output whose name contains ``single_sci`` to
    disk even in memory mode (1-3 s on a full-size visit of 3 exposures); nothing reads
    the file back (``createMedian`` takes the image from ``virtualOutputs`` by the same name). The
    image's and every chip's ``outputNames`` carry the name (drizzlepac groups the chips of one
    single drizzle by it).
    """
    for image in images:
        chips = image.returnAllChips(extname=image.scienceExt)
        for names in (image.outputNames, *(chip.outputNames for chip in chips)):
            single = names.get("outSingle")
            if single:
                names["outSingle"] = single.replace("_single_sci", "_single_mem")


def _drop_single_drizzles(images: Sequence[Any]) -> None:
    """Free the single-drizzle images and weights once the median is made: nothing after needs them."""
    for image in images:
        for kind in ("outSingle", "outSWeight"):
            image.virtualOutputs.pop(image.outputNames.get(kind), None)


def _close(images: Sequence[Any]) -> None:
    for image in images:
        image.close()


def run_inmemory_drizzle(
    inputs: Sequence[Path],
    *,
    profile: InstrumentProfile,
    output_name: str,
    fix_skymatch: bool = True,
    overrides: dict[str, Any] | None = None,
    workers: int = 0,
    processes: int = 0,
) -> DrizzleRun:
    """Single drizzle, median, blot and driz_cr of one visit, the CR masks kept in memory.

    Parameters
    ----------
    inputs
        Exposure files **already copied** into one working directory (drizzlepac writes MDRIZSKY
        into them, as ``AstroDrizzle`` does).
    profile
        Instrument profile (selects the SVM parameter set).
    output_name
        Root name of the run's record and logs in the working directory.
    fix_skymatch
        Provide the polygon method skypac needs so ``skymethod='match'`` really runs.
    overrides
        Extra AstroDrizzle keywords that win over the SVM set (never over the forced ones, nor
        over :data:`INMEMORY_PARAMETERS`).
    workers
        Cores this call may use: threads for the driz_cr step (0: one per CPU core, at most one
        per chip), and the cap of ``processes=0``.
    processes
        Forked processes for the single drizzle and the blot (0: one per exposure, at most two
        per core, none with one core; 1: all in this process). The masks do not depend on it.

    Returns
    -------
    DrizzleRun
        ``engine="inmemory"``, ``masks`` (uint8, 1 = CR) and ``blots`` (float32 e-) per
        ``(rootname, sci_extver)``; ``problems`` names the exposures without a mask and why.
    """
    paths, condition, parameters = astrodrizzle_parameters(
        inputs, profile=profile, output_name=output_name, final_drizzle=False, overrides=overrides
    )
    parameters.update(INMEMORY_PARAMETERS)
    work_dir = paths[0].parent
    masks: dict[tuple[str, int], np.ndarray] = {}
    blots: dict[tuple[str, int], np.ndarray] = {}
    reason: str | None = None
    start = time.perf_counter()
    with drizzlepac_session(work_dir, output_name, fix_skymatch=fix_skymatch) as session:
        config, input_dict = _config(paths, parameters)
        images, reason, seconds = _drizzle_steps(config, input_dict, processes=processes, cores=workers)
        try:
            if reason is None and parameters.get("driz_cr", True):
                chips = _chip_outputs(images)
                step_start = time.perf_counter()
                threads = max(1, min(workers or (os.cpu_count() or 1), len(chips) or 1))
                with ThreadPoolExecutor(max_workers=threads) as pool:
                    results = list(pool.map(lambda c: _chip_driz_cr(c[0], c[3], parameters), chips))
                for (_, rootname, extver, _), (mask, blot) in zip(chips, results, strict=True):
                    masks[(rootname, extver)] = mask
                    blots[(rootname, extver)] = blot
                seconds["driz_cr"] = time.perf_counter() - step_start
        finally:
            _close(images)
    requested, used = session.sky_methods(parameters)
    rootnames = [rootname_from_path(p) for p in paths]
    problems = missing_mask_problems(rootnames, masks)
    if reason is not None:
        problems = tuple(f"{problem}: {reason}" for problem in problems)
    log.info("in-memory drizzle steps: %s", ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    run = DrizzleRun(
        work_dir=work_dir,
        inputs=tuple(paths),
        condition=condition,
        parameters=dict(parameters),
        skymethod_requested=requested,
        skymethod_used=used,
        seconds=time.perf_counter() - start,
        problems=problems,
        engine="inmemory",
        masks=masks,
        blots=blots,
    )
    write_run_record(run, output_name)
    return run
