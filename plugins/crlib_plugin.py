"""Registers crlib's Airflow listener."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from crlib_airflow import listener


class CrlibPlugin(AirflowPlugin):
    name = "crlib"
    listeners = [listener]
