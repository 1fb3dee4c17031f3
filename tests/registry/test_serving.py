"""Which weights inference uses: registry champion/challenger/version, or deepCR's shipped weights."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from crlib.config import load_settings
from crlib.errors import ModelError
from crlib.registry import serving
from crlib.registry.serving import (
    cached_model_keys,
    clear_model_cache,
    load_inference_model,
    resolve_inference_model,
    resolve_model_reference,
)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_model_cache()
    torch.set_num_threads(2)
    yield
    clear_model_cache()


def _register(tracking_uri: str, state_dict: dict, *, alias: str) -> str:
    import mlflow
    from crlib.model.package import ModelMetadata, write_package
    from crlib.registry.tracking import REGISTRY_EXPERIMENT, active_tracking, experiment_id, mlflow_client
    from crlib.registry.versions import log_model_package, register_version

    client = mlflow_client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, active_tracking(tracking_uri):
        written = write_package(Path(tmp) / "pkg", state_dict, ModelMetadata("unet2-batchnorm"))
        with mlflow.start_run(experiment_id=experiment_id(client, REGISTRY_EXPERIMENT)) as run:
            uri = log_model_package(Path(tmp) / "pkg", written)
    return register_version(
        tracking_uri, model_uri=uri, model_name="deepcr-acs-wfc", run_id=run.info.run_id, alias=alias
    ).version


def test_auto_without_a_registered_model_uses_shipped_weights_and_says_why(tmp_path: Path, caplog) -> None:
    store = tmp_path / "nowhere" / "mlflow.db"
    settings = load_settings(mlflow_tracking_uri=f"sqlite:///{store}")
    with caplog.at_level(logging.INFO, logger="crlib.registry.serving"):
        per_filter = resolve_model_reference(settings, None, filter_name="F606W")
    assert (per_filter.source, per_filter.name) == ("deepcr_package", "ACS-WFC-F606W")
    assert per_filter.version.startswith("deepCR-0.3.1+") and Path(per_filter.uri).is_file()
    assert "not registered" in per_filter.reason and "not registered" in caplog.text
    assert resolve_model_reference(settings, "champion", filter_name="F475W").name == "ACS-WFC"
    assert not store.parent.exists()  # looking did not create a tracking store
    with pytest.raises(ModelError, match="CRLIB_INFERENCE_MODEL=registry"):
        resolve_model_reference(
            load_settings(mlflow_tracking_uri=f"sqlite:///{store}", inference_model="registry")
        )
    for spec in ("challenger", "2"):
        with pytest.raises(ModelError, match="does not exist"):
            resolve_model_reference(settings, spec)
    with pytest.raises(ModelError, match="unknown model 'latest'"):
        resolve_model_reference(settings, "latest")
    assert not store.parent.exists()


def test_a_missing_champion_is_a_visible_fallback_warned_once_per_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "_fallbacks_warned", set())
    store = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    settings = load_settings(mlflow_tracking_uri=store)
    with caplog.at_level(logging.DEBUG, logger="crlib.registry.serving"):
        fallbacks = [  # one per exposure, as the pipeline resolves them
            resolve_model_reference(settings, spec, filter_name=filter_name)
            for spec, filter_name in (
                (None, "F606W"),
                ("champion", "F814W"),
                (None, "F475W"),
                (None, "F606W"),
            )
        ]
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    assert "deepcr-acs-wfc is not registered" in warned[0].getMessage()
    assert "crlib models --bootstrap" in warned[0].getMessage()
    for reference in fallbacks:
        assert reference.source == "deepcr_package"
        assert reference.fallback is not None and "\n" not in reference.fallback
        assert "deepcr-acs-wfc is not registered" in reference.fallback
        assert reference.reason == reference.fallback  # the existing field says the same
    assert [r.name for r in fallbacks] == ["ACS-WFC-F606W", "ACS-WFC-F814W", "ACS-WFC", "ACS-WFC-F606W"]

    # weights chosen on purpose are no fallback
    deepcr_mode = load_settings(mlflow_tracking_uri=store, inference_model="deepcr")
    for chosen in (
        resolve_model_reference(settings, "deepcr"),
        resolve_model_reference(settings, "ACS-WFC"),
        resolve_model_reference(deepcr_mode, None),
    ):
        assert chosen.fallback is None

    # another store (or model) is another fallback: warned about once more
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crlib.registry.serving"):
        other = load_settings(mlflow_tracking_uri=f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}")
        assert resolve_model_reference(other).fallback is not None
        resolve_model_reference(other)
    assert len(caplog.records) == 1


def test_registry_champion_alias_moves_and_versions_load_once(tracking_uri: str, monkeypatch) -> None:
    from crlib.model.inference import MaskEngine
    from crlib.model.weights import load_shipped_model
    from crlib.registry.versions import CHALLENGER, CHAMPION, bootstrap_registry, set_alias

    settings = load_settings(mlflow_tracking_uri=tracking_uri)
    bootstrap_registry(tracking_uri)
    reference = resolve_model_reference(settings, None, filter_name="F606W")
    assert (reference.source, reference.name, reference.version) == ("mlflow", "deepcr-acs-wfc", "1")
    assert reference.record_uri == f"models:/deepcr-acs-wfc/1 @ {tracking_uri}"
    assert reference.fallback is None  # the champion asked for is the champion used
    champion = load_inference_model(settings, reference)
    assert (champion.name, champion.version) == ("deepcr-acs-wfc", "1")
    assert load_inference_model(settings, resolve_model_reference(settings, "champion")) is champion
    assert cached_model_keys() == [(tracking_uri, "deepcr-acs-wfc", "1")]

    # the bootstrap champion is deepCR's ACS-WFC weights: identical probabilities through the engine
    rng = np.random.default_rng(3)
    chip = rng.normal(80.0, 9.0, (256, 256)).astype(np.float32)
    chip[100:103, 40:90] += 900.0  # a CR track
    registry_probability = MaskEngine(champion, device="cpu", threads=1).predict_chip(chip).probability
    shipped_probability = (
        MaskEngine(load_shipped_model("ACS-WFC"), device="cpu", threads=1).predict_chip(chip).probability
    )
    np.testing.assert_allclose(registry_probability, shipped_probability, atol=1e-6)
    assert registry_probability[101, 60] > 0.5 > registry_probability[200, 200]

    # a second process finds the package in the disk cache and downloads nothing
    clear_model_cache()

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("downloaded again")

    monkeypatch.setattr("crlib.registry.versions._download", no_download)
    again = resolve_inference_model(settings, "1")
    assert again is not champion and again.version == "1"
    assert list((settings.data_root / "models").glob("*/deepcr-acs-wfc/1/data/state_dict.pt"))
    monkeypatch.undo()

    # a challenger, and then a promotion: the next resolution follows the alias
    state = {k: v.clone() for k, v in load_shipped_model("ACS-WFC").network.state_dict().items()}
    state["outc.conv.weight"] = state["outc.conv.weight"] * 1.5
    assert _register(tracking_uri, state, alias=CHALLENGER) == "2"
    assert resolve_model_reference(settings, "challenger").version == "2"
    assert resolve_model_reference(settings, None).version == "1"
    set_alias(tracking_uri, "deepcr-acs-wfc", CHAMPION, "2", reason="test promotion")
    promoted = resolve_inference_model(settings, None)
    assert promoted.version == "2" and promoted is not again
    np.testing.assert_allclose(
        promoted.network.state_dict()["outc.conv.weight"].numpy(), state["outc.conv.weight"].numpy()
    )
    assert resolve_model_reference(settings, "deepcr", filter_name="F814W").name == "ACS-WFC-F814W"
    assert resolve_model_reference(settings, "ACS-WFC").source == "deepcr_package"
    deepcr_only = load_settings(mlflow_tracking_uri=tracking_uri, inference_model="deepcr")
    assert resolve_model_reference(deepcr_only, None, filter_name="F606W").name == "ACS-WFC-F606W"


def test_the_process_cache_is_bounded(tracking_uri: str) -> None:
    from crlib.model.weights import load_shipped_model
    from crlib.registry.versions import CHALLENGER, bootstrap_registry

    settings = load_settings(mlflow_tracking_uri=tracking_uri)
    bootstrap_registry(tracking_uri)
    state = load_shipped_model("ACS-WFC").network.state_dict()
    for _ in range(serving.CACHE_SIZE):
        _register(tracking_uri, state, alias=CHALLENGER)
    for version in range(1, serving.CACHE_SIZE + 2):
        resolve_inference_model(settings, str(version))
    assert [key[2] for key in cached_model_keys()] == [str(v) for v in range(2, serving.CACHE_SIZE + 2)]


def test_crlib_infer_model_option_uses_the_same_resolver(
    tracking_uri: str, small_archive, tmp_path: Path, monkeypatch, capsys
) -> None:
    import json

    from crlib.cli.app import main
    from crlib.registry.versions import bootstrap_registry

    monkeypatch.setenv("CRLIB_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("CRLIB_THREADS", "2")
    bootstrap_registry(tracking_uri)
    flc = small_archive.visits[0].exposures[0].path

    def infer(*extra: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as done:
            main(["infer", str(flc), "--device", "cpu", "--out", str(tmp_path / "pred"), *extra])
        captured = capsys.readouterr()
        return int(done.value.code or 0), captured.out, captured.err

    code, out, _ = infer("--model", "champion", "--json")
    (record,) = json.loads(out)
    assert code == 0 and (record["model_name"], record["model_version"]) == ("deepcr-acs-wfc", "1")
    code, out, err = infer("--model", "deepcr")
    assert code == 0 and "ACS-WFC-F606W:deepCR-" in out and "requested deepcr" in err
    code, _, err = infer("--model", "7")
    assert code == 1 and "no version or alias '7'" in err and "versions: 1['champion']" in err
