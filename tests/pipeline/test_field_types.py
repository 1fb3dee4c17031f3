"""Field type on archive metadata that does not give one: the screening stage labels it from the pixels.

Real MAST rows never carry the simulator's ``crlib_field_type`` column, and many have no target
classification and a target name no rule knows. Here the session's small simulated archive is
copied with its metadata made real-like in exactly that way, then polled, fetched and screened by
the real stages against a real PostgreSQL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest


def _real_like_copy(archive: Any, root: Path) -> Path:
    """The archive with no simulator column, no target classification and unknown target names."""
    shutil.copytree(archive.root, root)
    listing = root / "observations.json"
    document = json.loads(listing.read_text())
    for row in document["observations"]:
        row.pop("crlib_field_type", None)
        row.pop("target_classification", None)
        row["target_name"] = "FIELD-" + row["obs_id"][:6].upper()
    listing.write_text(json.dumps(document))
    return root


def _exposures(database_url: str, visit: str) -> dict[str, tuple[Any, Any]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT rootname, field_type, field_type_method FROM exposures WHERE visit = :v"),
            {"v": visit},
        ).all()
    engine.dispose()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_screening_labels_exposures_the_metadata_cannot_place_from_their_pixels(
    small_archive, database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from crlib.config import load_settings
    from crlib.db.engine import make_engine
    from crlib.db.repo import record_observations
    from crlib.pipeline.ledger import RunLedger
    from crlib.pipeline.stages import fetch_visit, poll_visits, screen_visit
    from crlib.pipeline.stages.support import observations as _observations

    visit = next(v for v in small_archive.visits if v.field_type == "globular_cluster")
    root = _real_like_copy(small_archive, tmp_path / "archive")
    monkeypatch.setenv("CRLIB_DATABASE_URL", database_url)
    monkeypatch.setenv("CRLIB_ARCHIVE", f"local:{root}")
    settings = load_settings()

    polled = poll_visits(
        settings, run_id="labels", dag_id="crlib_cli_run", proposal_id=visit.proposal_id, visits=[visit.visit]
    )
    assert polled == [visit.visit]
    # the metadata could not place the exposures, and says so
    assert set(_exposures(database_url, visit.visit).values()) == {(None, "unknown")}

    fetch_visit(settings, run_id="labels", visit=visit.visit)
    screen_visit(settings, run_id="labels", visit=visit.visit)
    labels = _exposures(database_url, visit.visit)
    assert set(labels.values()) == {("globular_cluster", "image")}, labels
    entry = RunLedger(settings.data_root, "labels").visit(visit.visit).image_field_type
    assert entry["field_type"] == "globular_cluster" and entry["method"] == "image"
    assert sorted(entry["exposures"]) == sorted(labels) and entry["reasons"]

    # polling the same metadata again does not erase the image's label ...
    engine = make_engine(database_url)
    try:
        from sqlalchemy.orm import Session

        with Session(engine) as session:
            record_observations(session, _observations(RunLedger(settings.data_root, "labels"), visit.visit))
        assert _exposures(database_url, visit.visit) == labels
        # ... and a label from the metadata, when it comes, replaces it
        from dataclasses import replace

        with Session(engine) as session:
            record_observations(
                session,
                [
                    replace(o, field_type="extragalactic", field_type_method="metadata")
                    for o in _observations(RunLedger(settings.data_root, "labels"), visit.visit)
                ],
            )
        assert set(_exposures(database_url, visit.visit).values()) == {("extragalactic", "metadata")}
    finally:
        engine.dispose()


def test_the_visit_label_is_kept_and_reused_while_the_files_are_unchanged(
    small_archive, tmp_path: Path
) -> None:
    from crlib.pipeline.field_types import MAX_CLASSIFIED_FILES, classify_visit_pixels

    visit = next(v for v in small_archive.visits if v.field_type == "extragalactic")
    files = {
        p.name[:9]: str(shutil.copy(p, tmp_path / p.name))
        for p in sorted((small_archive.root / visit.visit).glob("*_flc.fits"))
    }
    accepted = sorted(files)
    label, reused = classify_visit_pixels(files, accepted, data_root=tmp_path / "data", visit=visit.visit)
    assert not reused and label.method in ("image", "unknown")
    assert label.field_type in ("extragalactic", "unknown"), label.describe()
    again, reused = classify_visit_pixels(
        files, accepted, data_root=tmp_path / "data", visit=visit.visit, redo=False
    )
    assert reused and again == label
    # a changed file is classified again
    Path(files[accepted[0]]).touch()
    _, reused = classify_visit_pixels(
        files, accepted, data_root=tmp_path / "data", visit=visit.visit, redo=False
    )
    assert not reused
    assert MAX_CLASSIFIED_FILES >= 1
    # nothing accepted: unknown, with the reason
    none, _ = classify_visit_pixels(files, [], data_root=tmp_path / "data", visit=visit.visit)
    assert none.method == "unknown" and "no accepted file" in none.reasons[0]
