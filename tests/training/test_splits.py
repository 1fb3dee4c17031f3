"""Visit splits keyed by field (proposal, target): deterministic, stratified, stable as data grows."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import pytest

from crlib.training.sources import TrainingExposure
from crlib.training.splits import (
    SplitFractions,
    assign_fields,
    assign_splits,
    field_key,
    load_split_file,
    normalise_target,
    save_split_file,
    split_counts,
)


def _exposures(
    fields: range,
    field_type: str,
    filter_name: str = "F606W",
    *,
    visits_per_field: int = 1,
    proposal: int = 10775,
) -> list[TrainingExposure]:
    """Two exposures per visit; visit ``j<field><repeat>`` of target ``T-<field>``."""
    return [
        TrainingExposure(
            rootname=f"j{field_type[:2]}{n:03d}{r}{k}q",
            visit=f"j{field_type[:2]}{n:03d}{r}",
            field_type=field_type,
            filter=filter_name,
            exptime_s=500.0,
            flc_path="f",
            truth_path="t",
            proposal_id=str(proposal),
            target_name=f"T-{field_type[:2]}-{n}",
        )
        for n in fields
        for r in range(visits_per_field)
        for k in range(2)
    ]


def test_repeat_visits_of_a_field_stay_together_and_any_order_or_seed_gives_the_same_split() -> None:
    exposures = _exposures(range(30), "globular_cluster", visits_per_field=3)
    splits = assign_splits(exposures, seed=1)
    assert len(splits) == 90  # one entry per visit; both exposures of a visit share it
    by_field: dict[str, set[str]] = {}
    for entry in splits.values():
        by_field.setdefault(entry["field"], set()).add(entry["split"])
    assert len(by_field) == 30 and all(len(s) == 1 for s in by_field.values())
    shuffled = exposures[:]
    random.Random(5).shuffle(shuffled)
    # another data root, another training seed, a stale split file: the same split
    stale = {visit: {"split": "train", "stratum": "x"} for visit in splits}
    assert assign_splits(shuffled, seed=99, existing=stale) == splits


def test_target_names_are_normalised_and_unknown_fields_fall_back_to_the_visit() -> None:
    assert normalise_target(" ngc 104 ") == normalise_target("NGC-104") == "NGC104"
    assert field_key(proposal_id="09442", target_name="ngc 104", visit="j8xi01") == "9442:NGC104"
    assert field_key(proposal_id=9442, target_name="NGC-104", visit="j8xi02") == "9442:NGC104"
    assert field_key(proposal_id="", target_name="NGC104", visit="J8XI01") == "visit:j8xi01"
    # exposures recorded before proposal and target were kept: split by visit, as before
    old = TrainingExposure("j8xi01aaq", "j8xi01", "globular_cluster", "F606W", 500.0, "f", "t")
    assert assign_splits([old])["j8xi01"]["field"] == "visit:j8xi01"


def test_fractions_per_stratum_are_kept_within_binomial_noise() -> None:
    fractions = SplitFractions(0.7, 0.15, 0.15)
    exposures = _exposures(range(400), "extragalactic") + _exposures(range(400), "resolved_galaxy", "F814W")
    counts = split_counts(assign_splits(exposures, fractions=fractions))
    assert set(counts) == {"extragalactic/F606W", "resolved_galaxy/F814W"}
    for per_split in counts.values():
        n = sum(per_split.values())
        for split in ("train", "validation", "test"):
            f = fractions.of(split)  # type: ignore[arg-type]
            assert abs(per_split[split] - n * f) < 4 * math.sqrt(n * f * (1 - f)), per_split


def test_small_strata_get_a_test_field_and_a_validation_field() -> None:
    two = assign_splits(_exposures(range(2), "extragalactic"), fractions=SplitFractions(0.5, 0.0, 0.5))
    assert sorted(v["split"] for v in two.values()) == ["test", "train"]
    for n in range(1, 8):
        counts = split_counts(assign_splits(_exposures(range(n), "globular_cluster", proposal=9442)))
        (per_split,) = counts.values()
        assert per_split["test"] >= 1 and (n < 2 or per_split["train"] >= 1), (n, per_split)
        assert n < 3 or per_split["validation"] >= 1, (n, per_split)
    # two fields that both hash below a test fraction of 0.5: one of them still trains
    both_low = {"12438:HUDFPAR2": "s", "13671:GOODSN": "s"}
    assert sorted(assign_fields(both_low, fractions=SplitFractions(0.5, 0.0, 0.5)).values()) == [
        "test",
        "train",
    ]
    # a stratum's first field is held out; no minimum where a fraction is 0
    assert assign_fields({"1:A": "s"}) == {"1:A": "test"}
    assert set(assign_fields({"1:A": "s", "1:B": "s"}, fractions=SplitFractions(1.0, 0.0, 0.0)).values()) == {
        "train"
    }


def test_a_growing_archive_never_moves_a_training_field_into_test() -> None:
    rng = random.Random(3)
    for trial in range(20):
        keys = [f"{rng.randint(9000, 16000)}:F{trial}-{i}" for i in range(40)]
        before: dict[str, str] = {}
        for size in range(1, len(keys) + 1):
            now = assign_fields({k: "s" for k in keys[:size]})
            for key, split in before.items():
                assert not (split in ("train", "validation") and now[key] == "test"), (trial, size, key)
            assert "test" in now.values()
            before = now


def test_the_split_file_is_a_record_not_the_source_of_truth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exposures = _exposures(range(6), "resolved_galaxy")
    splits = assign_splits(exposures)
    path = tmp_path / "splits.json"
    save_split_file(path, splits)
    assert load_split_file(path) == splits
    assert json.loads(path.read_text())["schema"] == "crlib-visit-splits/2"
    # an old file that put every visit in train: read, logged, not followed
    old = {
        "schema": "crlib-visit-splits/1",
        "visits": {v: {"split": "train", "stratum": "s"} for v in splits},
    }
    path.write_text(json.dumps(old))
    with caplog.at_level(logging.WARNING, logger="crlib.training.splits"):
        again = assign_splits(exposures, existing=load_split_file(path))
    assert again == splits
    assert "no longer the source of truth" in caplog.text
    # a damaged file is ignored with a warning instead of blocking training
    path.write_text("{not json")
    assert load_split_file(path) == {}
