-- Runs once, when the PostgreSQL data volume is first initialised (mounted into
-- /docker-entrypoint-initdb.d by docker/compose.yaml; the image runs it with psql as the
-- superuser). Creates one database per consumer, each owned by its own login:
--   airflow  Airflow metadata (and the Celery result backend)
--   crlib    results database; `crlib` owns the schema and may create roles, so the init
--            service's `crlib db upgrade` / `crlib db roles` can create crlib_writer/crlib_reader
--   mlflow   MLflow tracking/registry backend store
-- Passwords are read from the container's environment with \getenv: they never appear in a
-- command line, and a failing statement is not written to the server log with its text.
\set ON_ERROR_STOP on
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET log_statement = 'none';
SET log_min_error_statement = 'panic';

\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv crlib_password CRLIB_DB_OWNER_PASSWORD
\getenv mlflow_password MLFLOW_DB_PASSWORD

CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;

CREATE ROLE crlib LOGIN CREATEROLE PASSWORD :'crlib_password';
CREATE DATABASE crlib OWNER crlib;

CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
