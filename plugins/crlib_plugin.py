"""Registers crlib's Airflow listener."""

from __future__ import annotations

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from crlib_airflow import listener


class CrlibPlugin(AirflowPlugin):
    name = "crlib"
    listeners: ClassVar[list] = [listener]
