"""Celery configuration of crlib's Airflow workers: Airflow's defaults, plus warm pool processes.

Set ``[celery] celery_config_options = crlib_airflow.celery_config.CELERY_CONFIG`` (the compose
file and ``crlib cluster`` do). Importing this module connects a Celery ``worker_process_init``
handler: each pool process of a worker imports the inference stack and loads the models the
infer stage will use (:func:`crlib.pipeline.warm.warm_inference_process`) before it takes a
task, and every task Airflow forks from it starts with them (docs/scaling.md, "Warm workers").
``CRLIB_WARM_WORKERS=false`` turns it off. A warm-up that fails is logged and the worker goes on
cold: it must never keep a worker from serving.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_process_init

log = logging.getLogger(__name__)

#: Airflow's own Celery configuration, and time for the warm-up: Celery gives a new pool process
#: 4 s (``worker_proc_alive_timeout``) to report for work, after which it kills it and starts
#: another; importing torch and MLflow and loading the models takes longer than that.
WARM_UP_TIMEOUT_S = 180.0
CELERY_CONFIG: dict[str, Any] = {**DEFAULT_CELERY_CONFIG, "worker_proc_alive_timeout": WARM_UP_TIMEOUT_S}


def warm_pool_process(**_: Any) -> None:
    """Warm this Celery pool process (see the module docstring)."""
    try:
        from crlib.pipeline.warm import warm_inference_process
        from crlib_airflow.connections import task_settings

        settings = task_settings()
        if settings.warm_workers:
            warm_inference_process(settings)
    except Exception:  # a cold worker still serves; the tasks load what they need themselves
        log.exception("warming the Celery pool process failed; its tasks start cold")


# Airflow's plugin manager imports the files of the plugins folder again under other module names:
# one receiver whatever the number of imports, or each pool process would warm up once per import.
worker_process_init.connect(warm_pool_process, weak=False, dispatch_uid="crlib-warm-pool-process")
