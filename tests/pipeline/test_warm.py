"""Warm inference workers: the pool process loads the models once; a forked task uses them safely."""

from __future__ import annotations

import logging
import multiprocessing
import sys

import numpy as np
import pytest
import torch

from crlib.config import load_settings
from crlib.model.weights import load_shipped_model
from crlib.pipeline.warm import INFERENCE_MODULES, warm_inference_process


def _predict_in_forked_child(queue: multiprocessing.Queue) -> None:
    """What an Airflow task forked from a warm pool process does: use the cached model."""
    from crlib.model.inference import MaskEngine
    from crlib.registry.serving import resolve_inference_model

    loaded = resolve_inference_model(load_settings(), filter_name="F606W")
    engine = MaskEngine(loaded, device="cpu", precision="fp32", threads=2)
    image = np.random.default_rng(0).normal(50.0, 5.0, (64, 64)).astype(np.float32)
    image[30, 30] = 5000.0
    result = engine.predict_chip(image)
    queue.put((loaded.name, bool(result.probability[30, 30] > 0.5), load_shipped_model.cache_info().misses))


def test_warm_process_loads_the_models_and_a_forked_task_predicts_with_them(caplog):
    load_shipped_model.cache_clear()
    threads = torch.get_num_threads()
    with caplog.at_level(logging.INFO, logger="crlib.pipeline.warm"):
        state = warm_inference_process(load_settings())
    # the global model and every shipped per-filter model of ACS/WFC, no problem, nothing left changed
    assert state.models[0].startswith("ACS-WFC:") and len(state.models) >= 2
    assert any(label.startswith("ACS-WFC-F606W:") for label in state.models)
    assert not state.problems and state.seconds > 0
    assert all(name in sys.modules for name in INFERENCE_MODULES)
    assert torch.get_num_threads() == threads
    assert "warm inference process" in caplog.text
    loaded_before_fork = load_shipped_model.cache_info().misses

    # a task forked from the warm process (as Airflow's supervisor forks it) predicts without
    # loading anything again and without hanging on the parent's thread state
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_predict_in_forked_child, args=(queue,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0
    name, flagged, misses = queue.get(timeout=5)
    assert name == "ACS-WFC-F606W" and flagged
    assert misses == loaded_before_fork


def test_a_model_that_cannot_be_resolved_is_a_problem_not_a_crash(monkeypatch):
    monkeypatch.setenv("CRLIB_INFERENCE_MODEL", "registry")  # nothing is registered in this store
    state = warm_inference_process(load_settings(), filters=[None])
    assert state.models == ()
    assert len(state.problems) == 1 and "CRLIB_INFERENCE_MODEL=registry" in state.problems[0]


@pytest.mark.parametrize("enabled", [True, False])
def test_celery_pool_processes_warm_up_unless_turned_off(monkeypatch, enabled):
    from celery.signals import worker_process_init

    import crlib.pipeline.warm as warm
    import crlib_airflow.celery_config as celery_config

    calls: list[object] = []
    monkeypatch.setattr(warm, "warm_inference_process", lambda settings: calls.append(settings))
    monkeypatch.setenv("CRLIB_WARM_WORKERS", str(enabled).lower())
    worker_process_init.send(sender=None)  # what Celery sends in each new pool process
    assert len(calls) == (1 if enabled else 0)
    assert celery_config.CELERY_CONFIG["task_default_queue"]  # Airflow's own configuration ...
    assert celery_config.CELERY_CONFIG["worker_proc_alive_timeout"] >= 60  # ... and time to warm up


def test_a_failing_warm_up_never_stops_the_pool_process(monkeypatch, caplog):
    import crlib.pipeline.warm as warm
    from crlib_airflow.celery_config import warm_pool_process

    def broken(settings: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(warm, "warm_inference_process", broken)
    with caplog.at_level(logging.ERROR):
        warm_pool_process()
    assert "tasks start cold" in caplog.text and "disk full" in caplog.text
