"""Defaults shared by every crlib DAG (owner, retries, tags)."""

from __future__ import annotations

from datetime import timedelta

OWNER = "crlib"

DEFAULT_ARGS = {
    "owner": OWNER,
    "retries": 1,
    "retry_delay": timedelta(seconds=30),
}

#: Archive tasks talk to MAST: more retries with exponential backoff.
ARCHIVE_TASK_ARGS = {
    "retries": 4,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}

#: Pool that bounds concurrent model inference (size it to the CPU cores / GPUs of the workers).
INFERENCE_POOL = "crlib_inference"

TAGS = ["crlib"]
