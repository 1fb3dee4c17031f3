"""Visit splits: by visit, stratified, and fixed as the archive grows."""

from __future__ import annotations

from crlib.training.sources import TrainingExposure
from crlib.training.splits import SplitFractions, assign_splits


def _exposures(visits: range, field_type: str, filter_name: str = "F606W") -> list[TrainingExposure]:
    return [
        TrainingExposure(
            f"v{field_type[:2]}{n:03d}{k}q",
            f"v{field_type[:2]}{n:03d}",
            field_type,
            filter_name,
            500.0,
            "f",
            "t",
        )
        for n in visits
        for k in range(2)
    ]


def test_every_stratum_gets_test_visits_and_exposures_of_a_visit_stay_together() -> None:
    exposures = _exposures(range(10), "globular_cluster") + _exposures(range(10), "extragalactic", "F814W")
    splits = assign_splits(exposures, seed=1)
    for stratum in ("globular_cluster/F606W", "extragalactic/F814W"):
        counts = {
            s: sum(1 for v in splits.values() if v["stratum"] == stratum and v["split"] == s)
            for s in ("train", "validation", "test")
        }
        assert counts == {"train": 7, "validation": 1, "test": 2} or counts == {
            "train": 7,
            "validation": 2,
            "test": 1,
        }
    assert len(splits) == 20  # one entry per visit, so both exposures share it


def test_existing_assignments_never_move_when_visits_are_added() -> None:
    first = assign_splits(_exposures(range(4), "resolved_galaxy"), seed=3)
    grown = assign_splits(_exposures(range(12), "resolved_galaxy"), existing=first, seed=3)
    assert all(grown[v] == first[v] for v in first)
    assert sum(v["split"] == "test" for v in grown.values()) >= 2


def test_fractions_are_respected_in_a_small_stratum() -> None:
    splits = assign_splits(_exposures(range(2), "extragalactic"), fractions=SplitFractions(0.5, 0.0, 0.5))
    assert sorted(v["split"] for v in splits.values()) == ["test", "train"]
