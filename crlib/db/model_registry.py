"""Models, their versions (deepCR package or MLflow) and the history of their aliases."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from crlib.db.atomic import stage_transaction
from crlib.db.orm import Model, ModelAliasEvent, ModelVersion, table_of
from crlib.db.validation import check_row, one_of
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
        session.execute(table_of(ModelVersion).update().where(ModelVersion.id == version_id).values(**row))
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
