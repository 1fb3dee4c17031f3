"""``crlib bench gpu --size small --device cpu``: the report's plumbing (the GPU numbers need a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from crlib.bench.gpu import PRECISIONS, TARGET_INFERENCE_MS, TARGET_TRAINING_PATCHES_PER_S
from crlib.cli.app import app, register_commands
from crlib.errors import ConfigError


def test_small_cpu_run_prints_one_report_with_mask_agreement(tmp_path: Path) -> None:
    register_commands()
    out = tmp_path / "report" / "gpu.json"
    argv = ["-q", "bench", "gpu", "--size", "small", "--device", "cpu", "--repeats", "1"]
    result = CliRunner().invoke(app, [*argv, "--train-steps", "1", "--threads", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads(out.read_text()) == report

    assert report["benchmark"] == "gpu" and report["device"] == "cpu" and report["size"] == "small"
    assert "plumbing check only" in report["note"]
    env = report["environment"]
    for key in ("device_name", "torch", "cuda", "cudnn", "torch_threads", "cpu_count", "bf16_native"):
        assert key in env, key
    assert isinstance(env["torch"], str) and env["torch_threads"] >= 1 and env["engine_cpu_workers"] == 1
    assert report["exposure"]["chips"] == {"1": [128, 256], "2": [128, 256]}
    assert report["exposure"]["megapixels"] > 0 and report["exposure"]["read_s"] >= 0

    inference = report["inference"]
    assert set(inference["precisions"]) == set(PRECISIONS)
    assert inference["reference"]["device"] == "cpu" and inference["reference"]["precision"] == "fp32"
    fp32 = inference["precisions"]["fp32"]
    for key in ("window", "batch", "margin", "windows_per_exposure"):
        assert isinstance(fp32[key], int) and fp32[key] > 0, key
    for key in ("ms_per_exposure", "ms_min", "network_only_ms", "megapixels_per_s", "peak_memory_mb"):
        assert isinstance(fp32[key], float) and fp32[key] > 0, key
    assert len(fp32["ms_samples"]) == 1 and fp32["peak_memory_kind"] == "process_peak_rss"
    agreement = fp32["agreement"]
    assert agreement["mask_agreement"] == 1.0 and agreement["max_abs_dprob"] == 0.0
    assert agreement["cr_pixels"] == agreement["reference_cr_pixels"] > 0
    assert "unsupported" in inference["precisions"]["fp16"]  # MaskEngine has no fp16
    for name in PRECISIONS:
        entry = inference["precisions"][name]
        assert ("unsupported" in entry) != ("agreement" in entry), name
        if "agreement" in entry:
            assert 0.0 <= entry["agreement"]["mask_agreement"] <= 1.0

    training = report["training"]
    assert training["patch"] == 64 and training["precision"] == "fp32"
    (run,) = training["runs"]
    assert run["batch"] == 2 and run["steps"] == 1
    assert run["patches_per_second"] > 0 and run["peak_memory_mb"] > 0
    assert training["best_patches_per_second"] == run["patches_per_second"]

    targets = report["targets"]
    infer_target = targets["inference_ms_per_exposure"]
    # The best timed precision: fp32 alone where the CPU has no native bf16, else fp32 or bf16.
    precisions = inference["precisions"]
    timed = {name: entry["ms_per_exposure"] for name, entry in precisions.items() if "agreement" in entry}
    assert infer_target["target"] == TARGET_INFERENCE_MS and infer_target["precision"] in timed
    assert infer_target["measured"] == timed[infer_target["precision"]] == min(timed.values())
    train_target = targets["training_patches_per_second"]
    assert train_target["target"] == TARGET_TRAINING_PATCHES_PER_S
    for target in (infer_target, train_target):
        assert isinstance(target["pass"], bool) and target["applicable"] is False
    assert report["elapsed_s"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: --device cuda would run")
def test_cuda_requested_without_a_device_is_a_config_error() -> None:
    register_commands()
    result = CliRunner().invoke(app, ["-q", "bench", "gpu", "--size", "small", "--device", "cuda"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "no CUDA device" in str(result.exception)
