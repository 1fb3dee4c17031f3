"""The promotion gate: worse challengers are refused with the failing numbers, better ones promoted."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import mlflow
from crlib.registry.package import ModelMetadata, write_package
from crlib.registry.promotion import GateThresholds, compare_reports, promote
from crlib.registry.tracking import REGISTRY_EXPERIMENT, active_tracking, experiment_id, mlflow_client
from crlib.registry.versions import (
    CHALLENGER,
    CHAMPION,
    alias_history,
    bootstrap_registry,
    get_version,
    load_registered_model,
    log_model_package,
    register_version,
)
from crlib.training.evaluation import EvaluationReport, GroupScore


def _report(values: dict[str, tuple[float, float, float, float]]) -> EvaluationReport:
    empty = np.zeros(3, np.int64)
    groups = tuple(
        GroupScore(
            field_type=key.split("/")[0],
            filter=key.split("/")[1],
            tpr={"0.0005": a, "0.005": b},
            tpr_dilated={"0.0005": c, "0.005": d},
            n_cr=100,
            n_noncr=10000,
            patches=1,
            hist_cr=empty,
            hist_noncr=empty,
            hist_cr_dilated=empty,
            hist_noncr_dilated=empty,
        )
        for key, (a, b, c, d) in values.items()
    )
    return EvaluationReport(model_label="x", split="test", dataset_id="d", groups=groups)


def test_gate_refuses_a_drop_beyond_half_a_point_even_if_better_on_average() -> None:
    champion = _report(
        {"globular_cluster/F606W": (0.80, 0.95, 0.90, 0.97), "extragalactic/F606W": (0.85, 0.99, 0.95, 0.99)}
    )
    challenger = _report(
        {"globular_cluster/F606W": (0.90, 0.97, 0.95, 0.98), "extragalactic/F606W": (0.844, 0.99, 0.95, 0.99)}
    )
    passed, comparisons, mean, reasons = compare_reports(champion, challenger, GateThresholds())
    assert not passed and mean > 0
    assert len(comparisons) == 8 and [c.group for c in comparisons if c.failed] == ["extragalactic/F606W"]
    assert "extragalactic/F606W TPR@FPR=0.05%: 84.40% vs champion 85.00%" in reasons[0]
    # a looser threshold lets it through
    assert compare_reports(champion, challenger, GateThresholds(max_drop_points=1.0))[0]


def test_gate_requires_a_gain_on_average() -> None:
    same = _report({"resolved_galaxy/F814W": (0.6, 0.8, 0.7, 0.9)})
    passed, _, mean, reasons = compare_reports(same, same, GateThresholds())
    assert not passed and mean == 0 and "not above" in reasons[0]


def _register_degraded_champion(tracking_uri: str) -> None:
    """Version 1 = deepCR's weights with noise on the first convolution (a worse ranking), champion."""
    from crlib.model.weights import load_shipped_model

    state = {k: v.clone() for k, v in load_shipped_model("ACS-WFC").network.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    weight = state["inc.conv.conv.0.weight"]
    state["inc.conv.conv.0.weight"] = weight + 2.0 * weight.std() * torch.randn(
        weight.shape, generator=generator
    )
    metadata = ModelMetadata("unet2-batchnorm", source="degraded deepCR for tests")
    client = mlflow_client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, active_tracking(tracking_uri):
        written = write_package(Path(tmp) / "pkg", state, metadata)
        with mlflow.start_run(experiment_id=experiment_id(client, REGISTRY_EXPERIMENT)) as run:
            uri = log_model_package(Path(tmp) / "pkg", written)
    register_version(
        tracking_uri, model_uri=uri, model_name="deepcr-acs-wfc", run_id=run.info.run_id, alias=CHAMPION
    )


def test_worse_challenger_refused_then_better_promoted_and_used(
    tracking_uri: str, test_dataset, database_url: str
) -> None:
    from crlib.db.engine import make_engine

    engine = make_engine(database_url)
    try:
        _scenario(engine, tracking_uri, test_dataset)
    finally:
        engine.dispose()


def _scenario(engine, tracking_uri: str, test_dataset) -> None:  # type: ignore[no-untyped-def]
    from crlib.db.engine import session_factory
    from crlib.db.migrate import upgrade
    from crlib.db.model_registry import current_aliases
    from crlib.registry.decisions import database_recorder

    upgrade(engine)
    recorder = database_recorder(session_factory(engine), tracking_uri=tracking_uri)

    _register_degraded_champion(tracking_uri)  # v1 champion (bad)
    bootstrap_registry(tracking_uri)  # champion exists: no-op
    # v2: deepCR's real weights as challenger -> better than the degraded champion
    from crlib.model.weights import load_shipped_model

    with tempfile.TemporaryDirectory() as tmp, active_tracking(tracking_uri):
        written = write_package(
            Path(tmp) / "p",
            load_shipped_model("ACS-WFC").network.state_dict(),
            ModelMetadata("unet2-batchnorm"),
        )
        with mlflow.start_run(
            experiment_id=experiment_id(mlflow_client(tracking_uri), REGISTRY_EXPERIMENT)
        ) as run:
            uri = log_model_package(Path(tmp) / "p", written)
    register_version(
        tracking_uri, model_uri=uri, model_name="deepcr-acs-wfc", run_id=run.info.run_id, alias=CHALLENGER
    )

    dry = promote(
        tracking_uri, model_name="deepcr-acs-wfc", dataset=test_dataset, dry_run=True, recorder=recorder
    )
    assert dry.promoted and not dry.applied, dry.reasons
    assert get_version(tracking_uri, "deepcr-acs-wfc", CHAMPION).version == "1"

    decision = promote(tracking_uri, model_name="deepcr-acs-wfc", dataset=test_dataset, recorder=recorder)
    assert decision.applied and decision.mean_delta_points > 0.5
    _, champion = load_registered_model("models:/deepcr-acs-wfc@champion", tracking_uri=tracking_uri)
    assert champion.version == "2"  # the next inference run loads the promoted weights
    assert get_version(tracking_uri, "deepcr-acs-wfc", "2").tags["crlib.gate.outcome"] == "promoted"
    assert [(e.alias, e.version) for e in alias_history(tracking_uri, "deepcr-acs-wfc", alias=CHAMPION)] == [
        (CHAMPION, "1"),
        (CHAMPION, "2"),
    ]
    with session_factory(engine)() as session:
        assert current_aliases(session, "deepcr-acs-wfc") == {CHAMPION: "2"}

    # now the degraded v1 challenges the real weights: refused with the numbers that failed
    from crlib.registry.versions import set_alias

    set_alias(tracking_uri, "deepcr-acs-wfc", CHALLENGER, "1", reason="test")
    refused = promote(tracking_uri, model_name="deepcr-acs-wfc", dataset=test_dataset, recorder=recorder)
    assert not refused.applied and refused.failed()
    assert any("vs champion" in r for r in refused.reasons)
    assert get_version(tracking_uri, "deepcr-acs-wfc", CHAMPION).version == "2"
    assert get_version(tracking_uri, "deepcr-acs-wfc", "1").tags["crlib.gate.outcome"] == "refused"


def test_the_champion_cannot_challenge_itself(tracking_uri: str, test_dataset) -> None:
    bootstrap_registry(tracking_uri)
    decision = promote(tracking_uri, model_name="deepcr-acs-wfc", dataset=test_dataset, challenger="1")
    assert not decision.promoted and "already the champion" in decision.reasons[0]


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    torch.set_num_threads(2)
