"""Helpers of the model-lifecycle tests (pipeline and DAG tests): record an archive, register weights."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Literal


def record_archive(
    settings: Any, archive: Any, *, truth: dict[str, Literal["ok", "suspect", "failed"]] | None = None
) -> None:
    """Record the archive's observations and, per rootname in ``truth``, a truth result of that status."""
    from crlib.archive.local import LocalArchive
    from crlib.db.repo import record_observations, record_truth
    from crlib.db.session import open_results_db
    from crlib.records import TruthResult

    paths = {e.rootname: e.truth_path for v in archive.visits for e in v.exposures}
    engine, sessions = open_results_db(settings, upgrade=True, pool_size=1)
    try:
        with sessions() as session:
            record_observations(session, LocalArchive(archive.root).released_between(0.0, 1e6))
            for rootname, status in (truth or {}).items():
                record_truth(
                    session,
                    TruthResult(
                        rootname=rootname, method="drizzle", status=status, path=str(paths[rootname])
                    ),
                )
    finally:
        engine.dispose()


def register_weights(tracking_uri: str, state_dict: dict, *, alias: str, tags: dict[str, str]) -> str:
    """Register ``state_dict`` as a new ``deepcr-acs-wfc`` version; returns its number."""
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
        tracking_uri,
        model_uri=uri,
        model_name="deepcr-acs-wfc",
        run_id=run.info.run_id,
        alias=alias,
        tags=tags,
    ).version


def degraded_deepcr_state() -> dict:
    """deepCR's ACS-WFC weights with noise on the first convolution: a clearly worse model."""
    import torch

    from crlib.model.weights import load_shipped_model

    state = {k: v.clone() for k, v in load_shipped_model("ACS-WFC").network.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    weight = state["inc.conv.conv.0.weight"]
    state["inc.conv.conv.0.weight"] = weight + 2.0 * weight.std() * torch.randn(
        weight.shape, generator=generator
    )
    return state
