"""Models, their versions (deepCR package or MLflow) and the history of their aliases."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased

from crlib.db.atomic import stage_transaction
from crlib.db.orm import (
    Model,
    ModelAliasEvent,
    ModelVersion,
    PredictionRow,
    PromotionDecisionRow,
    table_of,
)
from crlib.db.validation import check_row, json_safe, one_of, within
from crlib.db.vocabulary import MODEL_SOURCES


def model_version_id(session: Session, model_name: str, version: str) -> int:
    """Id of ``model_name`` version ``version``, registering both (source unknown) if new."""
    check_row(table_of(Model), {"name": model_name}, record=f"model {model_name!r}")
    check_row(table_of(ModelVersion), {"version": version}, record=f"model {model_name!r} version")
    session.execute(
        insert(table_of(Model)).values(name=model_name).on_conflict_do_nothing(index_elements=["name"])
    )
    model_id = session.scalars(select(Model.id).where(Model.name == model_name)).one()
    session.execute(
        insert(table_of(ModelVersion))
        .values(model_id=model_id, version=version)
        .on_conflict_do_nothing(index_elements=["model_id", "version"])
    )
    return session.scalars(
        select(ModelVersion.id).where(ModelVersion.model_id == model_id, ModelVersion.version == version)
    ).one()


def record_model_version(
    session: Session,
    *,
    model_name: str,
    version: str,
    source: str,
    uri: str | None = None,
    mlflow_run_id: str | None = None,
    description: str | None = None,
) -> int:
    """Register (or update) a model version; ``source`` is ``deepcr_package`` or ``mlflow``.

    Optional values given as ``None`` leave what is recorded unchanged (a caller that does not
    know the MLflow run never erases it).

    Returns
    -------
    int
        The version's id.
    """
    row = {"source": source, "uri": uri, "mlflow_run_id": mlflow_run_id, "description": description}
    check_row(
        table_of(ModelVersion),
        row,
        record=f"model {model_name} version {version}",
        checks={"source": one_of(MODEL_SOURCES)},
    )
    with stage_transaction(session, f"model {model_name} version {version}"):
        version_id = model_version_id(session, model_name, version)
        updates = {k: v for k, v in row.items() if v is not None}
        session.execute(
            table_of(ModelVersion).update().where(ModelVersion.id == version_id).values(**updates)
        )
    return version_id


def record_alias(
    session: Session, *, model_name: str, alias: str, version: str | None, reason: str | None = None
) -> bool:
    """Point ``alias`` of ``model_name`` at ``version`` (``None`` removes it), keeping the history.

    Returns
    -------
    bool
        Whether the alias changed (assigning the current target again adds no history row).
    """
    check_row(table_of(ModelAliasEvent), {"alias": alias, "reason": reason}, record=f"alias of {model_name}")
    with stage_transaction(session, f"alias {alias} of model {model_name}"):
        version_id = model_version_id(session, model_name, version) if version is not None else None
        model_id = session.scalars(select(Model.id).where(Model.name == model_name)).one_or_none()
        if model_id is None:  # removing an alias of a model never seen
            return False
        # Serialise concurrent promotions of the same model.
        session.execute(select(Model.id).where(Model.id == model_id).with_for_update())
        current = session.execute(
            select(ModelAliasEvent.model_version_id)
            .where(ModelAliasEvent.model_id == model_id, ModelAliasEvent.alias == alias)
            .order_by(ModelAliasEvent.id.desc())
            .limit(1)
        ).first()
        if (current is None and version_id is None) or (current is not None and current[0] == version_id):
            return False
        session.execute(
            insert(table_of(ModelAliasEvent)).values(
                model_id=model_id, alias=alias, model_version_id=version_id, reason=reason
            )
        )
    return True


def current_aliases(session: Session, model_name: str) -> dict[str, str]:
    """``{alias: version}`` currently assigned for ``model_name``."""
    rows = session.execute(
        text(
            "SELECT alias, version FROM current_model_aliases "
            "WHERE model_name = :name AND version IS NOT NULL"
        ),
        {"name": model_name},
    ).all()
    return {alias: version for alias, version in rows}


@dataclass(frozen=True)
class RecordedDecision:
    """One row of ``promotion_decisions`` as :func:`decision_history` returns it.

    Attributes
    ----------
    id
        Row id.
    model_name, challenger_version, champion_version
        What was compared.
    decided_at
        When the gate decided (UTC).
    promoted, applied, dry_run
        Whether the gate passed, whether the champion alias moved, whether it was a dry run.
    mean_delta_points
        Mean challenger - champion difference, percentage points (``None``: nothing compared).
    max_drop_points, min_mean_gain_points
        Gate thresholds used.
    reasons
        Why it was refused (empty when promoted).
    comparisons
        Every compared number (dicts with ``group``, ``fpr``, ``dilated``, ``champion_percent``,
        ``challenger_percent``, ``delta_points``, ``failed``).
    dataset_id
        Patch dataset whose test split was scored.
    run_id
        The Airflow or CLI run that asked for the decision.
    """

    id: int
    model_name: str
    challenger_version: str
    champion_version: str
    decided_at: dt.datetime
    promoted: bool
    applied: bool
    dry_run: bool
    mean_delta_points: float | None
    max_drop_points: float
    min_mean_gain_points: float
    reasons: tuple[str, ...]
    comparisons: tuple[dict[str, Any], ...]
    dataset_id: str
    run_id: str | None

    @property
    def outcome(self) -> str:
        """``promoted``, ``refused``, ``would promote (dry run)`` or ``refused (dry run)``."""
        if self.dry_run:
            return "would promote (dry run)" if self.promoted else "refused (dry run)"
        return "promoted" if self.applied else "refused"


def record_promotion_decision(
    session: Session,
    *,
    model_name: str,
    challenger_version: str,
    champion_version: str,
    decided_at: dt.datetime,
    promoted: bool,
    applied: bool,
    dry_run: bool,
    mean_delta_points: float | None,
    max_drop_points: float,
    min_mean_gain_points: float,
    reasons: Sequence[str],
    comparisons: Sequence[Mapping[str, Any]],
    dataset_id: str,
    run_id: str | None = None,
) -> int:
    """Record one promotion-gate decision (idempotent per model, challenger and decision time).

    Both versions are registered in ``model_versions`` if new (source unknown); recording the same
    decision again updates its row instead of adding one.

    Parameters
    ----------
    session
        Results-database session.
    model_name, challenger_version, champion_version
        What was compared.
    decided_at
        When the gate decided (timezone-aware).
    promoted, applied, dry_run
        Gate passed / champion alias moved / dry run. ``applied`` requires ``promoted`` and not
        ``dry_run``.
    mean_delta_points
        Mean difference in points; ``None`` or NaN when nothing was compared.
    max_drop_points, min_mean_gain_points
        Gate thresholds.
    reasons
        Why it was refused.
    comparisons
        Every compared number as a JSON-friendly mapping.
    dataset_id
        Patch dataset of the fixed test split.
    run_id
        Airflow/CLI run id.

    Returns
    -------
    int
        The decision's row id.

    Raises
    ------
    DatabaseError
        Naming the field, for an invalid value (nothing is stored).
    """
    mean = None if mean_delta_points is None or math.isnan(mean_delta_points) else float(mean_delta_points)
    row: dict[str, Any] = {
        "decided_at": decided_at,
        "promoted": bool(promoted),
        "applied": bool(applied),
        "dry_run": bool(dry_run),
        "mean_delta_points": mean,
        "max_drop_points": float(max_drop_points),
        "min_mean_gain_points": float(min_mean_gain_points),
        "reasons": [str(r) for r in reasons],
        "comparisons": json_safe([dict(c) for c in comparisons]),
        "dataset_id": dataset_id,
        "run_id": run_id,
    }
    record = f"promotion decision for {model_name} v{challenger_version}"
    check_row(
        table_of(PromotionDecisionRow),
        row,
        record=record,
        checks={"max_drop_points": within(0.0), "dataset_id": _non_empty},
    )
    if applied and (not promoted or dry_run):
        from crlib.errors import DatabaseError

        raise DatabaseError(
            f"promotion_decisions.applied of {record} is true for a refused or dry-run decision; "
            "nothing was stored"
        )
    with stage_transaction(session, record):
        challenger_id = model_version_id(session, model_name, challenger_version)
        champion_id = model_version_id(session, model_name, champion_version)
        model_id = session.scalars(select(Model.id).where(Model.name == model_name)).one()
        keys = {"model_id": model_id, "challenger_version_id": challenger_id, "decided_at": decided_at}
        statement = insert(table_of(PromotionDecisionRow)).values(
            **(row | keys), champion_version_id=champion_id
        )
        upsert = statement.on_conflict_do_update(
            constraint="uq_promotion_decisions_decision",
            set_={k: statement.excluded[k] for k in (*row, "champion_version_id") if k not in keys},
        ).returning(table_of(PromotionDecisionRow).c.id)
        decision_id = int(session.execute(upsert).scalar_one())
    return decision_id


def _non_empty(value: Any) -> str | None:
    return None if str(value or "").strip() else "is empty"


def decision_history(
    session: Session, model_name: str | None = None, *, limit: int | None = 10
) -> list[RecordedDecision]:
    """Recorded promotion decisions, newest first.

    Parameters
    ----------
    session
        Results-database session.
    model_name
        Only this registered model (default: every model).
    limit
        At most this many (``None``: all).
    """
    challenger = aliased(ModelVersion)
    champion = aliased(ModelVersion)
    statement = (
        select(PromotionDecisionRow, Model.name, challenger.version, champion.version)
        .join(Model, Model.id == PromotionDecisionRow.model_id)
        .join(challenger, challenger.id == PromotionDecisionRow.challenger_version_id)
        .join(champion, champion.id == PromotionDecisionRow.champion_version_id)
        .order_by(PromotionDecisionRow.decided_at.desc(), PromotionDecisionRow.id.desc())
    )
    if model_name is not None:
        statement = statement.where(Model.name == model_name)
    if limit is not None:
        statement = statement.limit(limit)
    return [
        RecordedDecision(
            id=row.id,
            model_name=name,
            challenger_version=challenger_version,
            champion_version=champion_version,
            decided_at=row.decided_at,
            promoted=row.promoted,
            applied=row.applied,
            dry_run=row.dry_run,
            mean_delta_points=row.mean_delta_points,
            max_drop_points=row.max_drop_points,
            min_mean_gain_points=row.min_mean_gain_points,
            reasons=tuple(row.reasons or ()),
            comparisons=tuple(row.comparisons or ()),
            dataset_id=row.dataset_id,
            run_id=row.run_id,
        )
        for row, name, challenger_version, champion_version in session.execute(statement).all()
    ]


def has_prediction(
    session: Session, *, rootname: str, model_name: str, model_version: str, code_version: str
) -> bool:
    """Whether a prediction of ``rootname`` by that model version and code version is recorded."""
    found = session.execute(
        select(PredictionRow.rootname)
        .join(ModelVersion, ModelVersion.id == PredictionRow.model_version_id)
        .join(Model, Model.id == ModelVersion.model_id)
        .where(
            PredictionRow.rootname == rootname.strip().lower(),
            Model.name == model_name,
            ModelVersion.version == model_version,
            PredictionRow.code_version == code_version,
        )
        .limit(1)
    ).first()
    return found is not None
