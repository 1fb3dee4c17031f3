"""Registry: bootstrap from deepCR's weights, aliases and their history, loading by URI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crlib.errors import ModelError
from crlib.registry.versions import (
    CHALLENGER,
    CHAMPION,
    alias_history,
    bootstrap_registry,
    get_version,
    list_versions,
    load_registered_model,
    set_alias,
)


def test_bootstrap_registers_deepcr_as_champion_once(tracking_uri: str) -> None:
    from crlib.model.weights import load_shipped_model

    first = bootstrap_registry(tracking_uri)
    again = bootstrap_registry(tracking_uri)
    assert (first.name, first.version, first.aliases) == ("deepcr-acs-wfc", "1", (CHAMPION,))
    assert again.version == "1" and len(list_versions(tracking_uri, "deepcr-acs-wfc")) == 1
    # deepCR's training visits are not known to crlib: recorded as external, not as none
    assert first.tags["crlib.training_manifest"].startswith("external: deepCR's shipped weights")
    assert first.tags["crlib.truth_source"] == "real"

    network, version = load_registered_model("models:/deepcr-acs-wfc@champion", tracking_uri=tracking_uri)
    assert version.label == "deepcr-acs-wfc/1"
    assert version.metadata is not None and version.metadata.architecture == "unet2-batchnorm"
    image = torch.from_numpy(np.random.default_rng(1).normal(120, 12, (1, 1, 64, 64)).astype(np.float32))
    with torch.inference_mode():
        assert torch.equal(network(image), load_shipped_model("ACS-WFC").network(image))


def test_pyfunc_model_accepts_any_size_and_stores_no_pickle(tracking_uri: str, tmp_path: Path) -> None:
    import mlflow

    bootstrap_registry(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model("models:/deepcr-acs-wfc/1")
        for shape in ((1, 1, 64, 96), (2, 1, 128, 32)):
            out = model.predict(np.full(shape, 100.0, np.float32))
            assert out.shape == shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        local = Path(mlflow.artifacts.download_artifacts("models:/deepcr-acs-wfc/1", dst_path=str(tmp_path)))
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    files = {p.name for p in local.rglob("*") if p.is_file()}
    assert {"MLmodel", "state_dict.pt", "crlib_model.json"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt2", ".py"))]
    assert "loader_module: crlib.registry.pyfunc_flavor" in (local / "MLmodel").read_text()


def test_alias_moves_are_kept_in_history(tracking_uri: str) -> None:
    bootstrap_registry(tracking_uri)
    set_alias(tracking_uri, "deepcr-acs-wfc", CHALLENGER, "1", reason="test")
    set_alias(tracking_uri, "deepcr-acs-wfc", CHAMPION, "1", reason="again")
    events = alias_history(tracking_uri, "deepcr-acs-wfc")
    assert [(e.alias, e.version, e.reason) for e in events] == [
        (CHAMPION, "1", "bootstrap from deepCR ACS-WFC"),
        (CHALLENGER, "1", "test"),
        (CHAMPION, "1", "again"),
    ]
    assert events[2].previous_version == "1" and events[0].previous_version is None


def test_embedded_file_store_from_settings_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crlib.config import load_settings

    monkeypatch.chdir(tmp_path)
    uri = load_settings().resolved_mlflow_uri()
    assert uri.startswith("file:")
    assert bootstrap_registry(uri).aliases == (CHAMPION,)
    assert get_version(uri, "deepcr-acs-wfc", CHAMPION).version == "1"
    # MLflow's file registry looks logged models up through the process-wide URI: never ./mlflow.db
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("deepcr-acs-wfc@champion", "is not models:/"),
        ("models:/deepcr-acs-wfc@nobody", "no version or alias"),
    ],
)
def test_bad_model_uris_are_explained(tracking_uri: str, uri: str, message: str) -> None:
    bootstrap_registry(tracking_uri)
    with pytest.raises(ModelError, match=message):
        load_registered_model(uri, tracking_uri=tracking_uri)


def test_missing_model_says_how_to_bootstrap(tracking_uri: str) -> None:
    with pytest.raises(ModelError, match="bootstrap"):
        load_registered_model("models:/deepcr-acs-wfc@champion", tracking_uri=tracking_uri)


def test_provenance_of_versions_without_tags_is_read_from_their_source(tracking_uri: str) -> None:
    """Versions registered before the manifest tags existed: deepCR's are external, others unknown."""
    from crlib.registry.provenance import leakage_reasons, version_provenance
    from crlib.registry.versions import RegisteredVersion

    old_bootstrap = RegisteredVersion("deepcr-acs-wfc", "1", None, tags={"crlib.source": "deepcr"})
    found = version_provenance(tracking_uri, old_bootstrap)
    assert (found.status, found.truth_source, found.visits) == ("external", "real", frozenset())
    assert "deepCR-ACS/WFC paper's training set" in found.notes[0]
    manual = version_provenance(tracking_uri, RegisteredVersion("deepcr-acs-wfc", "7", None))
    assert (manual.status, manual.truth_source) == ("unknown", "unknown")
    lost = RegisteredVersion("deepcr-acs-wfc", "8", "0123abcd", tags={"crlib.source": "training"})
    unreadable = version_provenance(tracking_uri, lost)
    assert unreadable.status == "unreadable" and "runs:/0123abcd/dataset/manifest.json" in unreadable.notes[0]
    # the gate cannot check a crlib training run whose manifest is gone: that is a refusal
    (reason,) = leakage_reasons("challenger", unreadable, {"jtst01": "1:A"})
    assert "its training manifest cannot be read" in reason
    assert leakage_reasons("champion", manual, {"jtst01": "1:A"}) == []


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on exit: nothing listens there


def _champion_state(tracking_uri: str) -> tuple[list[str], str, list[tuple[str, str]]]:

    return (
        [v.version for v in list_versions(tracking_uri, "deepcr-acs-wfc")],
        get_version(tracking_uri, "deepcr-acs-wfc", CHAMPION).version,
        [(e.alias, e.version) for e in alias_history(tracking_uri, "deepcr-acs-wfc")],
    )


@pytest.mark.parametrize(
    "failing", ["get_registered_model", "get_model_version", "get_model_version_by_alias"]
)
def test_a_transient_registry_error_never_moves_the_champion(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A registry that fails to answer is not a registry without a champion (bootstrap must not run)."""
    from mlflow.exceptions import MlflowException

    from crlib.registry.serving import resolve_model_reference
    from mlflow import MlflowClient

    bootstrap_registry(tracking_uri)
    set_alias(tracking_uri, "deepcr-acs-wfc", CHALLENGER, "1", reason="test")
    before = _champion_state(tracking_uri)
    assert before == (["1"], "1", [(CHAMPION, "1"), (CHALLENGER, "1")])

    calls: list[str] = []

    def unavailable(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(failing)
        raise MlflowException(
            "API request to http://mlflow:5000 failed: 503 Service Unavailable (Registered Model not found "
            "in cache)",
            error_code="TEMPORARILY_UNAVAILABLE",
        )

    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, failing, unavailable)
        if failing == "get_model_version_by_alias":  # not asked: aliases come with the registered model
            assert bootstrap_registry(tracking_uri).version == "1"
        else:
            with pytest.raises(ModelError, match="cannot r"):
                bootstrap_registry(tracking_uri)
        if failing == "get_registered_model":
            with pytest.raises(ModelError, match="cannot reach"):
                set_alias(tracking_uri, "deepcr-acs-wfc", CHAMPION, "1", reason="must not be recorded")
        # inference neither falls back to deepCR's shipped weights nor sees a missing model
        from crlib.config import load_settings

        monkeypatch.setenv("CRLIB_MLFLOW_TRACKING_URI", tracking_uri)
        if failing == "get_model_version_by_alias":
            assert resolve_model_reference(load_settings(), "champion").version == "1"
        else:
            with pytest.raises(ModelError, match="cannot r"):
                resolve_model_reference(load_settings(), "champion")
    assert calls or failing == "get_model_version_by_alias"
    assert _champion_state(tracking_uri) == before


def test_an_unreachable_tracking_server_is_an_error_not_an_empty_registry(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crlib.config import load_settings
    from crlib.registry.serving import resolve_model_reference
    from crlib.registry.versions import registered_model_exists

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    bootstrap_registry(tracking_uri)
    before = _champion_state(tracking_uri)
    closed = f"http://127.0.0.1:{_closed_port()}"
    for attempt in (
        lambda: bootstrap_registry(closed),
        lambda: registered_model_exists(closed, "deepcr-acs-wfc"),
        lambda: set_alias(closed, "deepcr-acs-wfc", CHAMPION, "2", reason="must not move"),
    ):
        with pytest.raises(
            ModelError, match=r"cannot reach the MLflow model registry at http://127\.0\.0\.1"
        ):
            attempt()
    monkeypatch.setenv("CRLIB_MLFLOW_TRACKING_URI", closed)
    with pytest.raises(ModelError, match="cannot reach"):  # no silent fallback to the shipped weights
        resolve_model_reference(load_settings(), None)
    assert _champion_state(tracking_uri) == before
