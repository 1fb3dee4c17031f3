"""Airflow Assets crlib DAGs produce and consume."""

from __future__ import annotations

from airflow.sdk import Asset

#: Updated whenever a run records new ground truth; schedules retraining.
TRUTH_ASSET = Asset("crlib://results/truth", group="crlib")
