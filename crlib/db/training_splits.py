"""Training manifests of model versions: which split each visit was in, and the split of each score.

A model version learnt from the visits of its ``train`` split and was selected on ``validation``;
its ``test`` visits and every visit not in its manifest (``unseen``) are data it never learnt
from. :func:`record_training_splits` records a version's manifest when it is registered (and
moves the split of its recorded scores); :func:`crlib.db.metric_store.record_metrics` gives each
new score the split of its visit; :func:`split_of` answers one visit; :func:`training_splits`
says what is known per version (for the notes of ``crlib stats performance``).

"unseen" is by crlib's knowledge: weights crlib did not train (deepCR's shipped models, recorded
with ``dataset_id=EXTERNAL_TRAINING``) were trained on the paper's visits, which crlib does not
know; a version registered without a recorded manifest counts every visit as unseen too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from crlib.db.atomic import stage_transaction
from crlib.db.model_registry import model_version_id
from crlib.db.orm import ModelVersion, ModelVersionSplit, table_of
from crlib.db.validation import check_row, one_of
from crlib.db.vocabulary import EXTERNAL_TRAINING, MANIFEST_SPLITS
from crlib.errors import DatabaseError

log = logging.getLogger(__name__)

__all__ = ["TrainingSplits", "record_training_splits", "split_of", "training_splits"]


@dataclass(frozen=True, slots=True)
class TrainingSplits:
    """What the results database knows about one model version's training data.

    Attributes
    ----------
    model_name, version
        The model version.
    source
        ``deepcr_package``, ``mlflow`` or ``None`` (known only from its predictions).
    training_dataset
        Dataset whose manifest gave the splits; :data:`~crlib.db.vocabulary.EXTERNAL_TRAINING` for
        weights crlib did not train; ``None`` when nothing was recorded.
    visits
        Visits per split of the recorded manifest, ``{"train": n, "validation": n, "test": n}``.
    """

    model_name: str
    version: str
    source: str | None
    training_dataset: str | None
    visits: dict[str, int]

    @property
    def recorded(self) -> bool:
        """Whether the version's training data is known (a manifest, or ``external``)."""
        return self.training_dataset is not None

    def describe(self) -> str:
        """One line for users."""
        label = f"{self.model_name}:{self.version}"
        if self.training_dataset == EXTERNAL_TRAINING or (
            self.training_dataset is None and self.source == "deepcr_package"
        ):
            return (
                f"{label}: weights crlib did not train (deepCR's shipped models): every visit counts as "
                "unseen; the paper's training visits are not known to crlib"
            )
        if self.training_dataset is None:
            return (
                f"{label}: no training manifest recorded: every visit counts as unseen, which is only true "
                "if it was not trained on this archive (record it: crlib stats training-splits)"
            )
        counts = ", ".join(f"{n} {split}" for split, n in self.visits.items())
        return f"{label}: training manifest of dataset {self.training_dataset} ({counts} visits)"


def record_training_splits(
    session: Session,
    *,
    model_name: str,
    version: str,
    splits: Mapping[str, str],
    dataset_id: str,
) -> int:
    """Record the training manifest of a model version: the split of every visit it was given.

    Called when a version is registered (the manifest is the patch dataset's ``visits``, which the
    training run also logs to MLflow as ``dataset/manifest.json``). The version's splits are
    replaced as a set, and the ``split`` of its already recorded metrics is updated in the same
    transaction (their summary cells are logged by the update trigger), so statistics change at
    once. For weights crlib did not train (deepCR's shipped models) pass no splits and
    ``dataset_id=EXTERNAL_TRAINING``: every visit is then unseen by the version, as far as crlib
    knows.

    Parameters
    ----------
    session
        Session on the results database.
    model_name, version
        The model version (registered if new).
    splits
        ``{visit: "train" | "validation" | "test"}`` (visits are ``ipppss``).
    dataset_id
        The dataset the manifest belongs to (e.g. the patch dataset id), or ``external``.

    Returns
    -------
    int
        Visits recorded.

    Raises
    ------
    DatabaseError
        A bad visit, split or dataset id (nothing is stored).
    """
    rows = []
    record = f"training splits of {model_name} {version}"
    for visit, split in sorted(splits.items()):
        row = {"visit": str(visit).strip().lower(), "split": split}
        check_row(table_of(ModelVersionSplit), row, record=record, checks={"split": one_of(MANIFEST_SPLITS)})
        if len(row["visit"]) != 6 or not row["visit"].isalnum():
            raise DatabaseError(f"model_version_splits.visit {visit!r} of {record} is not an ipppss visit")
        rows.append(row)
    check_row(table_of(ModelVersion), {"training_dataset": dataset_id}, record=record)
    if not str(dataset_id or "").strip():
        raise DatabaseError(f"model_versions.training_dataset of {record} is empty; nothing was stored")
    if dataset_id == EXTERNAL_TRAINING and rows:
        raise DatabaseError(f"{record}: external weights have no crlib training manifest; nothing was stored")
    with stage_transaction(session, record):
        version_id = model_version_id(session, model_name, version)
        before = dict(
            session.execute(
                select(ModelVersionSplit.visit, ModelVersionSplit.split).where(
                    ModelVersionSplit.model_version_id == version_id
                )
            ).all()
        )
        after = {r["visit"]: r["split"] for r in rows}
        changed = sorted(v for v in set(before) | set(after) if before.get(v) != after.get(v))
        session.execute(delete(ModelVersionSplit).where(ModelVersionSplit.model_version_id == version_id))
        if rows:
            session.execute(
                insert(table_of(ModelVersionSplit)), [{**r, "model_version_id": version_id} for r in rows]
            )
        session.execute(
            table_of(ModelVersion)
            .update()
            .where(ModelVersion.id == version_id)
            .values(training_dataset=dataset_id)
        )
        updated = 0
        if changed:  # only the scores of visits whose split changed (none: no scan at all)
            updated = session.execute(
                text(
                    "UPDATE exposure_metrics m "
                    "SET split = COALESCE(CAST(:after AS jsonb) ->> left(m.rootname, 6), 'unseen') "
                    "WHERE m.model_version_id = :id AND left(m.rootname, 6) = ANY(CAST(:visits AS text[]))"
                ),
                {"id": version_id, "visits": changed, "after": json.dumps(after)},
            ).rowcount  # type: ignore[attr-defined]
    log.info(
        "%s: %d visits (dataset %s); %d metrics rows changed split", record, len(rows), dataset_id, updated
    )
    return len(rows)


def split_of(session: Session, visit: str, *, model_name: str, version: str) -> str:
    """Split of ``visit`` for a model version: ``train``, ``validation``, ``test`` or ``unseen``.

    ``unseen`` means not in the version's training manifest as recorded
    (:func:`record_training_splits`); see :class:`TrainingSplits` for whether one was recorded.
    """
    found = session.execute(
        text(
            "SELECT s.split FROM model_version_splits s JOIN model_versions v ON v.id = s.model_version_id "
            "JOIN models mo ON mo.id = v.model_id "
            "WHERE mo.name = :name AND v.version = :version AND s.visit = :visit"
        ),
        {"name": model_name, "version": version, "visit": visit.strip().lower()},
    ).scalar_one_or_none()
    return str(found) if found is not None else "unseen"


def training_splits(session: Session, *, model: str | None = None) -> list[TrainingSplits]:
    """What is recorded about the training data of every model version (or ``name[:version]``)."""
    clauses, params = [], {}
    if model:
        name, _, version = model.partition(":")
        clauses.append("mo.name = :name")
        params["name"] = name
        if version:
            clauses.append("v.version = :version")
            params["version"] = version
    rows = session.execute(
        text(
            "SELECT mo.name, v.version, v.source, v.training_dataset, "
            "count(*) FILTER (WHERE s.split = 'train'), count(*) FILTER (WHERE s.split = 'validation'), "
            "count(*) FILTER (WHERE s.split = 'test') "
            "FROM model_versions v JOIN models mo ON mo.id = v.model_id "
            "LEFT JOIN model_version_splits s ON s.model_version_id = v.id"
            + (" WHERE " + " AND ".join(clauses) if clauses else "")
            + " GROUP BY mo.name, v.version, v.source, v.training_dataset ORDER BY mo.name, v.version"
        ),
        params,
    ).all()
    return [
        TrainingSplits(
            model_name=r[0],
            version=r[1],
            source=r[2],
            training_dataset=r[3],
            visits={"train": int(r[4]), "validation": int(r[5]), "test": int(r[6])},
        )
        for r in rows
    ]
