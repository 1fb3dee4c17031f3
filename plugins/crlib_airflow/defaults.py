"""Defaults shared by every crlib DAG (start date, catch-up, owner, retries, tags)."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum

OWNER = "crlib"

DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
}

#: Pool that bounds concurrent archive tasks (MAST queries and downloads) across the cluster, so
#: that scaling out the workers does not open one MAST connection per worker slot.
MAST_POOL = "crlib_mast"

#: Archive tasks talk to MAST: more retries with exponential backoff, bounded by the MAST pool.
ARCHIVE_TASK_ARGS = {
    "pool": MAST_POOL,
    "retries": 4,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}

#: Pool that bounds concurrent model inference (size it to the CPU cores / GPUs of the workers).
INFERENCE_POOL = "crlib_inference"

#: Celery queue the inference tasks go to (e.g. ``gpu``, served by GPU workers), from
#: ``CRLIB_INFERENCE_QUEUE`` at parse time; unset: Airflow's default queue like every other task.
INFERENCE_QUEUE = os.environ.get("CRLIB_INFERENCE_QUEUE", "").strip() or None

#: Task arguments of the per-exposure inference tasks: bounded by the pool, routed to the queue.
INFERENCE_TASK_ARGS: dict[str, object] = {
    "pool": INFERENCE_POOL,
    **({"queue": INFERENCE_QUEUE} if INFERENCE_QUEUE else {}),
}

TAGS = ["crlib"]

#: ``@dag`` arguments every crlib DAG passes: one start date, and no catch-up runs for the past.
DAG_ARGS: dict[str, Any] = {
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
}
