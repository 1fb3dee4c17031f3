"""Warm an inference worker: import the inference stack and load its models before tasks start.

Airflow 3 runs every task in a process that its supervisor *forks* from the Celery pool process
(``airflow.sdk.execution_time.supervisor``: a bare ``os.fork`` on Linux). Whatever that pool
process has imported and loaded, a task starts with: the modules, and the models in
:mod:`crlib.registry.serving`'s per-process cache (and ``crlib.model.weights``' shipped ones).
:func:`warm_inference_process` fills them once per pool process, from the Celery
``worker_process_init`` signal (``crlib_airflow.celery_config``), so the infer task of every
exposure skips the imports and the model load that a cold task pays (docs/scaling.md, "Warm
workers").

What stays per task: the fork, Airflow's task runner and DAG parse, asking the registry which
version ``champion`` points at (a promotion is picked up by the next task), and, when that
version is not the one the pool process loaded, loading it (until the worker restarts).

Fork safety: nothing here runs a network or starts torch's intra-op thread pool; weights are
loaded with one torch thread and the thread count is put back, so a forked task starts its own
pool with the threads it asks for.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crlib.errors import CrlibError

if TYPE_CHECKING:
    from crlib.config import Settings

log = logging.getLogger(__name__)

#: What an infer task imports; imported by :func:`warm_inference_process`.
INFERENCE_MODULES = (
    "torch",
    "astropy.io.fits",
    "mlflow",
    "crlib.model.inference",
    "crlib.model.exposure",
    "crlib.registry.serving",
    "crlib.pipeline.stages",
)


@dataclass(frozen=True, slots=True)
class WarmState:
    """What :func:`warm_inference_process` prepared.

    Attributes
    ----------
    modules
        Modules imported.
    models
        ``<name>:<version>`` of every model loaded, in the order resolved.
    problems
        Models that could not be resolved or loaded (the tasks will try again themselves).
    seconds
        Wall time of the warm-up, seconds.
    """

    modules: tuple[str, ...]
    models: tuple[str, ...]
    problems: tuple[str, ...]
    seconds: float


def warm_inference_process(settings: Settings, *, filters: Sequence[str | None] | None = None) -> WarmState:
    """Import the inference stack and load the models the infer stage resolves for ``filters``.

    Parameters
    ----------
    settings
        The worker's settings (instrument, ``inference_model``, tracking URI, data root).
    filters
        Filters whose model to load (``None`` in the list: the global model). Default: the global
        model and every filter the instrument has a shipped per-filter model for.

    Returns
    -------
    WarmState
        A model that cannot be resolved or loaded is a problem in the result, not an exception:
        the task that needs it resolves it again and fails on its own if it must.
    """
    import torch

    from crlib.profiles import get_profile
    from crlib.registry.serving import load_inference_model, resolve_model_reference

    start = time.perf_counter()
    for name in INFERENCE_MODULES:
        importlib.import_module(name)
    profile = get_profile(settings.instrument)
    wanted = list(filters) if filters is not None else [None, *sorted(profile.deepcr_filter_models)]
    models: list[str] = []
    problems: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # no intra-op thread pool in a process that tasks fork from
    try:
        for filter_name in wanted:
            try:
                reference = resolve_model_reference(settings, None, filter_name=filter_name)
                load_inference_model(settings, reference)
            except CrlibError as exc:
                problems.append(f"{filter_name or 'global'}: {exc}")
                continue
            if reference.label not in models:
                models.append(reference.label)
    finally:
        torch.set_num_threads(threads)
    state = WarmState(
        modules=INFERENCE_MODULES,
        models=tuple(models),
        problems=tuple(problems),
        seconds=time.perf_counter() - start,
    )
    log.info(
        "warm inference process: %d modules, models %s in %.1f s%s",
        len(state.modules),
        ", ".join(state.models) or "none",
        state.seconds,
        f"; problems: {'; '.join(state.problems)}" if state.problems else "",
    )
    return state
