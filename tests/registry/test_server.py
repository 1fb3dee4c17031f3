"""A real `mlflow server` on 127.0.0.1 with a PostgreSQL backend store and local artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest

from crlib.errors import ConfigError
from crlib.registry.server import start_tracking_server
from crlib.registry.versions import CHAMPION, bootstrap_registry, load_registered_model


@pytest.mark.slow
def test_registry_through_a_tracking_server_on_postgres(database_url: str, tmp_path: Path) -> None:
    with start_tracking_server(backend_store=database_url, artifact_root=tmp_path / "artifacts") as server:
        assert server.uri.startswith("http://127.0.0.1:")
        version = bootstrap_registry(server.uri)
        assert version.aliases == (CHAMPION,)
        _, loaded = load_registered_model("models:/deepcr-acs-wfc@champion", tracking_uri=server.uri)
        assert loaded.label == "deepcr-acs-wfc/1"
    assert server.process.poll() is not None
    assert any((tmp_path / "artifacts").rglob("state_dict.pt"))  # artifacts proxied to the local root


def test_a_server_that_cannot_start_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Connection refused"):  # the server log's reason is quoted
        start_tracking_server(
            backend_store="postgresql://nobody@127.0.0.1:1/none",
            artifact_root=tmp_path / "a",
            startup_timeout_s=10,
        )
