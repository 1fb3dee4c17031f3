"""Airflow glue reused by several crlib DAGs.

- :mod:`crlib_airflow.connections`: crlib settings built from Airflow Connections (``crlib_db``,
  ``crlib_mlflow``, ``mast``), so secrets live in Airflow's secrets backend.
- :mod:`crlib_airflow.listener`: records every crlib DAG run's state in the results database.
- :mod:`crlib_airflow.defaults`: default task arguments and tags shared by the DAGs.
"""
