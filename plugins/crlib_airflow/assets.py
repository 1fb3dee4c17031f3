"""Airflow Assets crlib DAGs produce and consume."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias

#: Updated whenever a run records new ground truth; schedules retraining.
TRUTH_ASSET = Asset("crlib://results/truth", group="crlib")

#: Ingestion and reprocessing runs add a TRUTH_ASSET event through this alias only when they recorded
#: new truth (extra: ``run_id``, ``new_truth``), so runs that found nothing new trigger no retraining.
NEW_TRUTH = AssetAlias("crlib_new_truth")


def announce_new_truth(summary: dict[str, Any], context: Any) -> None:
    """Add a TRUTH_ASSET event through NEW_TRUTH when the run's summary counts new truth.

    Call from a task declaring ``outlets=[NEW_TRUTH]``; ``summary`` is ``finish_run``'s result.
    """
    if summary["truth_new"]:
        context["outlet_events"][NEW_TRUTH].add(
            TRUTH_ASSET, extra={"run_id": str(context["run_id"]), "new_truth": int(summary["truth_new"])}
        )
