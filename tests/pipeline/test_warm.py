"""Warm inference workers: the pool process loads the models once; a forked task uses them safely."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from crlib.config import load_settings
from crlib.pipeline.warm import warm_inference_process

#: What a Celery pool process and the Airflow task forked from it do, in a fresh interpreter (as a
#: pool process is): warm up, fork, predict in the child with the inherited model. A fresh process
#: matters: the pytest process has run torch's thread pools in earlier tests, and a child forked
#: from such a process may hang in its first parallel region; a pool process never computes.
FORKED_TASK = """
import json, multiprocessing, sys
import numpy as np
import torch
from crlib.config import load_settings
from crlib.model.weights import load_shipped_model
from crlib.pipeline.warm import INFERENCE_MODULES, warm_inference_process

threads = torch.get_num_threads()
state = warm_inference_process(load_settings())
loaded = load_shipped_model.cache_info().misses

def task(queue):
    from crlib.model.inference import MaskEngine
    from crlib.registry.serving import resolve_inference_model

    model = resolve_inference_model(load_settings(), filter_name="F606W")
    engine = MaskEngine(model, device="cpu", precision="fp32", threads=2)
    image = np.random.default_rng(0).normal(50.0, 5.0, (64, 64)).astype(np.float32)
    image[30, 30] = 5000.0
    flagged = bool(engine.predict_chip(image).probability[30, 30] > 0.5)
    queue.put([model.name, flagged, load_shipped_model.cache_info().misses])

context = multiprocessing.get_context("fork")
queue = context.Queue()
child = context.Process(target=task, args=(queue,), daemon=True)
child.start()
child.join(timeout=120)
if child.exitcode is None:  # hung: report it instead of waiting for it at exit
    child.kill()
    child.join(timeout=10)
    print(json.dumps({"child_exitcode": None, "hung": True}))
    sys.exit(0)
print(json.dumps({
    "models": list(state.models),
    "problems": list(state.problems),
    "modules_loaded": all(name in sys.modules for name in INFERENCE_MODULES),
    "threads_restored": torch.get_num_threads() == threads,
    "loaded_before_fork": loaded,
    "child_exitcode": child.exitcode,
    "child": queue.get(timeout=5) if child.exitcode == 0 else None,
}))
"""


def test_warm_process_loads_the_models_and_a_forked_task_predicts_with_them():
    done = subprocess.run(
        [sys.executable, "-c", FORKED_TASK], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report.get("hung"), "the task forked from the warm process hung"
    # the global model and every shipped per-filter model of ACS/WFC, no problem, nothing left changed
    assert report["models"][0].startswith("ACS-WFC:") and len(report["models"]) >= 2
    assert any(label.startswith("ACS-WFC-F606W:") for label in report["models"])
    assert report["problems"] == [] and report["modules_loaded"] and report["threads_restored"]
    # the forked task predicted (no hang), with the model the parent loaded (no load of its own)
    assert report["child_exitcode"] == 0
    name, flagged, misses = report["child"]
    assert name == "ACS-WFC-F606W" and flagged
    assert misses == report["loaded_before_fork"]


def test_warm_up_logs_what_it_loaded(caplog):
    with caplog.at_level(logging.INFO, logger="crlib.pipeline.warm"):
        state = warm_inference_process(load_settings(), filters=["F606W"])
    assert [label.split(":")[0] for label in state.models] == ["ACS-WFC-F606W"]
    assert "warm inference process" in caplog.text and "ACS-WFC-F606W" in caplog.text


def test_a_model_that_cannot_be_resolved_is_a_problem_not_a_crash(monkeypatch):
    monkeypatch.setenv("CRLIB_INFERENCE_MODEL", "registry")  # nothing is registered in this store
    state = warm_inference_process(load_settings(), filters=[None])
    assert state.models == ()
    assert len(state.problems) == 1 and "CRLIB_INFERENCE_MODEL=registry" in state.problems[0]


@pytest.mark.parametrize("enabled", [True, False])
def test_celery_pool_processes_warm_up_unless_turned_off(monkeypatch, enabled):
    from celery.signals import worker_process_init

    import crlib.pipeline.warm as warm

    # the plugins folder is on sys.path under Airflow; here it is put there for this test alone
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "plugins"))
    import crlib_airflow.celery_config as celery_config

    # Airflow's plugin manager imports the plugins folder's files again under other names
    spec = importlib.util.spec_from_file_location("plugin_copy_of_celery_config", celery_config.__file__)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(importlib.util.module_from_spec(spec))

    calls: list[object] = []
    monkeypatch.setattr(warm, "warm_inference_process", lambda settings: calls.append(settings))
    monkeypatch.setenv("CRLIB_WARM_WORKERS", str(enabled).lower())
    worker_process_init.send(sender=None)  # what Celery sends in each new pool process: one warm-up
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
