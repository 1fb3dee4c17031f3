"""The run ledger's typed state: every key declared, one JSON path, misspelt keys fail at once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import get_type_hints

import pytest

from crlib.pipeline.ledger import RunLedger
from crlib.pipeline.state import ExposureChanges, ExposureState, VisitChanges, VisitState


@pytest.mark.parametrize(("state", "changes"), [(VisitState, VisitChanges), (ExposureState, ExposureChanges)])
def test_changes_declare_every_field_but_the_id(state: type, changes: type) -> None:
    fields = {f.name: f.type for f in dataclasses.fields(state)}
    identity = next(iter(fields))
    hints = get_type_hints(changes)
    assert set(hints) == set(fields) - {identity}
    state_hints = get_type_hints(state)
    assert all(hints[name] == state_hints[name] for name in hints)


def test_a_misspelt_or_identifying_key_is_an_immediate_error(tmp_path: Path) -> None:
    ledger = RunLedger(tmp_path, "run")
    with pytest.raises(TypeError, match="truth_staus"):
        ledger.update_visit("j8ab01", truth_staus={"j8ab01aaq": "ok"})  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="rootname"):
        ledger.update_exposure("j8ab01aaq", rootname="other")  # type: ignore[call-arg]
    assert not (ledger.root / "visits").exists() and not (ledger.root / "exposures").exists()


def test_updates_merge_and_round_trip_through_one_json_path(tmp_path: Path) -> None:
    ledger = RunLedger(tmp_path, "run")
    assert ledger.visit("j8ab01") == VisitState("j8ab01") and not ledger.visit("j8ab01").screened
    ledger.update_visit("j8ab01", files={"j8ab01aaq": "/a.fits"}, fetch_reused=["j8ab01aaq"])
    state = ledger.update_visit("j8ab01", accepted=["j8ab01aaq"], truth_status={"j8ab01aaq": "ok"})
    assert state.files == {"j8ab01aaq": "/a.fits"} and state.screened
    assert ledger.visit("j8ab01") == state and dict(ledger.visits()) == {"j8ab01": state}
    assert VisitState.from_json(json.loads(json.dumps(state.to_json()))) == state
    exposure = ledger.update_exposure("j8ab01aaq", scored=True, tpr_at_fpr={"0.0005": 0.5})
    assert ledger.exposure("j8ab01aaq") == exposure and exposure.scored is True
    assert dict(ledger.exposures()) == {"j8ab01aaq": exposure}


def test_reads_a_ledger_written_with_only_the_keys_a_stage_set(tmp_path: Path) -> None:
    """Files of an older crlib (only the keys set so far) read with defaults for the rest."""
    ledger = RunLedger(tmp_path, "run")
    (ledger.root / "visits").mkdir(parents=True)
    (ledger.root / "visits" / "j8ab01.json").write_text(
        json.dumps({"visit": "j8ab01", "files": {"j8ab01aaq": "/a.fits"}, "fetch_failed": {}})
    )
    (ledger.root / "exposures").mkdir(parents=True)
    (ledger.root / "exposures" / "j8ab01aaq.json").write_text(
        json.dumps({"rootname": "j8ab01aaq", "prediction": None, "prediction_error": "bad"})
    )
    visit = ledger.visit("j8ab01")
    assert visit.files == {"j8ab01aaq": "/a.fits"} and visit.accepted is None and visit.truth == {}
    exposure = ledger.exposure("j8ab01aaq")
    assert exposure.prediction_error == "bad" and exposure.scored is None and not exposure.score_failed
