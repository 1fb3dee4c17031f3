"""Recording promotion decisions in the results database.

Uses the database helper's repository functions (:mod:`crlib.db.model_registry`): both versions
are recorded as ``mlflow`` model versions and, when the champion alias moved, the move is added
to ``model_alias_history`` with the gate numbers in its reason. The full decision (every compared
number) is returned as JSON for a dedicated table once the schema has one; until then it lives in
MLflow (version tags ``crlib.gate.*`` and the gate run's ``gate_decision.json``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from crlib.registry.promotion import PromotionDecision
from crlib.registry.versions import CHAMPION

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


def decision_summary(decision: PromotionDecision) -> str:
    """One line with the outcome and the numbers that decided it."""
    outcome = "promoted" if decision.applied else "refused"
    text = (
        f"gate {outcome}: v{decision.challenger_version} vs champion v{decision.champion_version}, "
        f"mean {decision.mean_delta_points:+.3f} points on test set {decision.dataset_id}"
    )
    if decision.reasons:
        text += "; " + "; ".join(decision.reasons)
    return text[:4000]


def record_decision(session: Session, decision: PromotionDecision, *, tracking_uri: str) -> None:
    """Record both versions and, if the champion moved, the alias change with the gate numbers.

    Parameters
    ----------
    session
        Results-database session (schema current).
    decision
        The gate's decision.
    tracking_uri
        Tracking URI, stored in the versions' ``uri`` column.
    """
    from crlib.db.model_registry import record_alias, record_model_version

    for version in (decision.champion_version, decision.challenger_version):
        record_model_version(
            session,
            model_name=decision.model_name,
            version=version,
            source="mlflow",
            uri=f"models:/{decision.model_name}/{version} @ {tracking_uri}"[:1024],
        )
    if decision.applied:
        record_alias(
            session,
            model_name=decision.model_name,
            alias=CHAMPION,
            version=decision.challenger_version,
            reason=decision_summary(decision),
        )
    session.commit()
    log.info(
        "recorded gate decision for %s v%s in the results database",
        decision.model_name,
        decision.challenger_version,
    )


def database_recorder(factory: sessionmaker[Session], *, tracking_uri: str):  # type: ignore[no-untyped-def]
    """A recorder for :func:`crlib.registry.promotion.promote` writing with ``factory`` sessions."""

    def record(decision: PromotionDecision) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        from crlib.errors import DatabaseError

        try:
            with factory() as session:
                record_decision(session, decision, tracking_uri=tracking_uri)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise DatabaseError(
                f"gate decision for {decision.model_name} v{decision.challenger_version} is in MLflow "
                f"but could not be recorded in the results database ({reason}); "
                "run `crlib db upgrade` and retry"
            ) from None

    return record
