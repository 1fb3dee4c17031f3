"""Recording promotion decisions in the results database.

Every decision of the gate is stored, promoted, refused or dry run: a row in
``promotion_decisions`` with its reasons and every compared number
(:func:`crlib.db.model_registry.record_promotion_decision`). The ``comparisons`` array ends with
one gate-wide entry, ``{"kind": "gate_summary", ...}``
(:meth:`~crlib.registry.gate_decision.PromotionDecision.summary_entry`): the bootstrap confidence
interval of the mean gain, the number of test fields and visits, the notes (external or unknown
training manifests, ``--allow-simulated``) and both models' training provenance. Per-number
entries have no ``kind``; select them with ``comparisons -> ... ->> 'kind' IS NULL`` in SQL.
Both versions are recorded as ``mlflow`` model versions and, when the champion alias moved, the
move is added to ``model_alias_history`` with the gate numbers in its reason. Both versions' training
splits are recorded too (``model_version_splits``, :func:`record_version_splits`), read from their
MLflow manifests through their chain of starting versions: a champion promoted from a training run
that did not write to this results database (``crlib train --archive``) still has its own
training visits labelled ``train`` when they are reprocessed, so statistics leave them out by
default. MLflow holds the
same numbers (version tags ``crlib.gate.*`` and the gate run's ``gate_decision.json``) for
decisions that are not dry runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from crlib.registry.gate_decision import DecisionRecorder, PromotionDecision
from crlib.registry.provenance import VersionSplits, version_splits
from crlib.registry.versions import CHAMPION, ModelNotFoundError, get_version

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)


def decision_summary(decision: PromotionDecision) -> str:
    """One line with the outcome and the numbers that decided it."""
    outcome = decision.outcome
    text = (
        f"gate {outcome}: v{decision.challenger_version} vs champion v{decision.champion_version}, "
        f"{decision.interval_text()} on test set {decision.dataset_id}"
    )
    if decision.reasons:
        text += "; " + "; ".join(decision.reasons)
    return text[:4000]


def decision_splits(tracking_uri: str, decision: PromotionDecision) -> dict[str, VersionSplits | None]:
    """The training splits of both versions of a decision, from MLflow (``None``: none to record).

    A version the registry does not know (deleted since) gives ``None``.

    Raises
    ------
    ModelError
        If the registry cannot be reached.
    """
    found: dict[str, VersionSplits | None] = {}
    for number in (decision.champion_version, decision.challenger_version):
        try:
            version = get_version(tracking_uri, decision.model_name, number)
        except ModelNotFoundError as exc:
            log.warning("%s: training splits not recorded: %s", decision.model_name, exc)
            found[number] = None
            continue
        found[number] = version_splits(tracking_uri, version)
    return found


def record_version_splits(session: Session, model_name: str, version: str, splits: VersionSplits) -> int:
    """Record one version's training splits in ``model_version_splits`` (see :func:`version_splits`).

    The recorded set is replaced, and the ``split`` of the version's already recorded scores is
    updated with it (:func:`crlib.db.training_splits.record_training_splits`).

    Returns
    -------
    int
        Visits recorded (0 for external weights).
    """
    from crlib.db.training_splits import record_training_splits

    return record_training_splits(
        session, model_name=model_name, version=version, splits=splits.splits, dataset_id=splits.dataset_id
    )


def sync_training_splits(
    session: Session, tracking_uri: str, model_name: str, *, version: str | None = None
) -> dict[str, VersionSplits | None]:
    """Record the training splits of every registered version (or one) from MLflow.

    For versions registered before the results database knew them, or trained without writing to
    it (``crlib train --archive``); deepCR's shipped weights registered by ``crlib models
    --bootstrap`` are recorded as ``external``. Versions with an unknown or unreadable manifest are
    left as they are (``None`` in the answer).

    Parameters
    ----------
    session
        Results-database session (schema current).
    tracking_uri
        Tracking/registry URI.
    model_name
        Registered model, e.g. ``deepcr-acs-wfc``.
    version
        Only this version (number or alias).

    Returns
    -------
    dict
        ``{version: VersionSplits or None}``.

    Raises
    ------
    ModelError
        If the registry cannot be reached, or ``version`` does not exist.
    """
    from crlib.db.model_registry import record_model_version
    from crlib.registry.versions import list_versions

    versions = (
        [get_version(tracking_uri, model_name, version)]
        if version is not None
        else list_versions(tracking_uri, model_name)
    )
    found: dict[str, VersionSplits | None] = {}
    for registered in versions:
        splits = version_splits(tracking_uri, registered)
        found[registered.version] = splits
        if splits is None:
            continue
        record_model_version(
            session,
            model_name=model_name,
            version=registered.version,
            source="mlflow",
            uri=f"{registered.uri} @ {tracking_uri}"[:1024],
            mlflow_run_id=registered.run_id,
        )
        record_version_splits(session, model_name, registered.version, splits)
    session.commit()
    return found


def record_decision(
    session: Session,
    decision: PromotionDecision,
    *,
    tracking_uri: str,
    run_id: str | None = None,
    training_splits: Mapping[str, VersionSplits | None] | None = None,
) -> int:
    """Record the decision, both versions (with their training splits) and, if the champion moved,
    the alias change.

    Parameters
    ----------
    session
        Results-database session (schema current).
    decision
        The gate's decision (promoted, refused or dry run).
    tracking_uri
        Tracking URI, stored in the versions' ``uri`` column.
    run_id
        The Airflow or CLI run that asked for the decision.
    training_splits
        ``{version: VersionSplits or None}`` (:func:`decision_splits`): recorded for the versions
        that have them; versions left out (or ``None``) keep what is recorded.

    Returns
    -------
    int
        The ``promotion_decisions`` row id.
    """
    import datetime as dt
    from dataclasses import asdict

    from crlib.db.model_registry import record_alias, record_model_version, record_promotion_decision

    for version in (decision.champion_version, decision.challenger_version):
        record_model_version(
            session,
            model_name=decision.model_name,
            version=version,
            source="mlflow",
            uri=f"models:/{decision.model_name}/{version} @ {tracking_uri}"[:1024],
        )
        splits = (training_splits or {}).get(version)
        if splits is not None:
            record_version_splits(session, decision.model_name, version, splits)
    decision_id = record_promotion_decision(
        session,
        model_name=decision.model_name,
        challenger_version=decision.challenger_version,
        champion_version=decision.champion_version,
        decided_at=dt.datetime.fromtimestamp(decision.decided_at_ms / 1000.0, tz=dt.UTC),
        promoted=decision.promoted,
        applied=decision.applied,
        dry_run=decision.dry_run,
        mean_delta_points=decision.mean_delta_points,
        max_drop_points=decision.thresholds.max_drop_points,
        min_mean_gain_points=decision.thresholds.min_mean_gain_points,
        reasons=decision.reasons,
        comparisons=[asdict(c) for c in decision.comparisons] + [decision.summary_entry()],
        dataset_id=decision.dataset_id,
        run_id=run_id,
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
        "recorded gate decision %d for %s v%s (%s) in the results database",
        decision_id,
        decision.model_name,
        decision.challenger_version,
        "dry run" if decision.dry_run else ("promoted" if decision.applied else "refused"),
    )
    return decision_id


def database_recorder(
    factory: sessionmaker[Session], *, tracking_uri: str, run_id: str | None = None
) -> DecisionRecorder:
    """A recorder for :func:`crlib.registry.promotion.promote` writing with ``factory`` sessions.

    Besides the decision it records both versions' training splits, read from MLflow
    (:func:`decision_splits`). The recorder raises :class:`~crlib.errors.DatabaseError` when the
    decision cannot be written (it is in MLflow already), naming what to run.
    """

    def record(decision: PromotionDecision) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        from crlib.errors import DatabaseError

        splits = decision_splits(tracking_uri, decision)
        try:
            with factory() as session:
                record_decision(
                    session, decision, tracking_uri=tracking_uri, run_id=run_id, training_splits=splits
                )
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise DatabaseError(
                f"gate decision for {decision.model_name} v{decision.challenger_version} is in MLflow "
                f"but could not be recorded in the results database ({reason}); "
                "run `crlib db upgrade` and retry"
            ) from None

    return record
