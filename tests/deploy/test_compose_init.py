"""The deployment's init pieces, run for real without Docker.

- ``docker/write_init_files.py``: the Connections it writes give the tasks' own code
  (``crlib_airflow.connections.task_settings``) the writer login, MLflow and MAST;
- ``docker/postgres-init.sql`` through psql, as the postgres image runs it, on a private
  PostgreSQL 16 (private because it creates cluster-wide roles);
- ``docker/crlib-init.sh`` twice against it (Airflow metadata migration, crlib schema and roles,
  pool, connections, API login), with the compose file's environment for the init service;
- ``mlflow server`` with the compose file's command and environment.
Nothing may print a secret.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest


def _helpers() -> Any:
    """tests/deploy/compose_files.py, imported by path (the test tree is not a package)."""
    path = Path(__file__).with_name("compose_files.py")
    spec = importlib.util.spec_from_file_location("crlib_tests_compose_files", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules.setdefault("crlib_tests_compose_files", module)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


cf = _helpers()
#: The login each compose service uses, and the env.example variable holding its password.
LOGINS = {
    "postgres": "POSTGRES_PASSWORD",
    "airflow": "AIRFLOW_DB_PASSWORD",
    "crlib": "CRLIB_DB_OWNER_PASSWORD",
    "crlib_writer": "CRLIB_WRITER_PASSWORD",
    "mlflow": "MLFLOW_DB_PASSWORD",
}


# ---------------------------------------------------------------- docker/write_init_files.py
def test_init_creates_the_pool_and_connections_the_dags_use(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "crlib_deploy_defaults", cf.REPO / "plugins/crlib_airflow/defaults.py"
    )
    defaults = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(defaults)  # type: ignore[union-attr]
    init_script = (cf.DOCKER / "crlib-init.sh").read_text()
    assert f"airflow pools set {defaults.INFERENCE_POOL} " in init_script
    assert f"airflow pools set {defaults.MAST_POOL} " in init_script
    used = set(
        re.findall(r'_connection\("(\w+)"\)', (cf.REPO / "plugins/crlib_airflow/connections.py").read_text())
    )
    written = json.loads(cf.run_helper("connections", {"CRLIB_WRITER_PASSWORD": "x"}, tmp_path).read_text())
    assert set(written) == used == {"crlib_db", "crlib_mlflow", "mast"}


def test_init_connections_give_tasks_the_writer_login_mlflow_and_mast(tmp_path: Path) -> None:
    password, token = "p@ss:w/rd%'\"x", "mast-token-123"
    env = {"CRLIB_WRITER_PASSWORD": password, "CRLIB_MAST_TOKEN": token, "AIRFLOW_ADMIN_PASSWORD": "adm1n-pw"}
    conns = cf.run_helper("connections", env, tmp_path)
    users = cf.run_helper("api-users", env, tmp_path)
    assert stat.S_IMODE(conns.stat().st_mode) == 0o600 == stat.S_IMODE(users.stat().st_mode)
    assert json.loads(users.read_text()) == {"admin": "adm1n-pw"}
    (tmp_path / "api-users.json").unlink()
    assert not cf.run_helper("api-users", {}, tmp_path, expect=2).exists()
    # The tasks' own code path: Airflow Connections -> crlib_airflow.connections.task_settings().
    probe = (
        "from crlib_airflow.connections import task_settings\n"
        "from crlib.database_url import sqlalchemy_url\nfrom sqlalchemy.engine import make_url\nimport json\n"
        "s = task_settings(); u = make_url(sqlalchemy_url(s.database_url.get_secret_value()))\n"
        "print(json.dumps([u.username, u.password, u.host, u.port, u.database, s.mlflow_tracking_uri,"
        " s.mast_server, s.mast_token.get_secret_value()]))\n"
    )
    conn_env = {f"AIRFLOW_CONN_{k.upper()}": json.dumps(v) for k, v in json.loads(conns.read_text()).items()}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(cf.REPO / "plugins"),
            "AIRFLOW_HOME": str(tmp_path),
            **conn_env,
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        "crlib_writer",
        password,
        "postgres",
        5432,
        "crlib",
        "http://mlflow:5000",
        "https://mast.stsci.edu",
        token,
    ]


# ------------------------------------------- the init pieces, run for real (private PostgreSQL)
@pytest.fixture(scope="module")
def compose_postgres(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A private PostgreSQL 16 initialised by docker/postgres-init.sql as the postgres image does it.

    Private because the script creates cluster-wide roles (airflow, crlib, mlflow).
    """
    import secrets
    from types import SimpleNamespace

    from crlib.db.embedded import ensure_runtime_dir

    ensure_runtime_dir()  # before pgserver's import (it reads XDG_RUNTIME_DIR)
    import pgserver
    from cryptography.fernet import Fernet
    from sqlalchemy import create_engine
    from sqlalchemy.engine import URL, make_url

    pgdata = tmp_path_factory.mktemp("compose-pg")
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        socket_dir = str(make_url(server.get_uri("postgres")).query["host"])
        secret_names = [k for k in cf.env_example() if cf.SECRET_NAME.search(k)]
        env = {k: f"{k[:6].lower()}-{secrets.token_hex(6)}" for k in secret_names}
        # Quotes and a comment marker: the SQL must quote what it reads with \getenv.
        env.update(AIRFLOW_DB_PASSWORD=f"a'b\"c;--{secrets.token_hex(4)}", CRLIB_MAST_TOKEN="")
        env["AIRFLOW_FERNET_KEY"] = Fernet.generate_key().decode()
        psql = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
        sql_env = {
            "PATH": os.environ["PATH"],
            **{
                k: env[k]
                for k in re.findall(r"\\getenv \w+ (\w+)", (cf.DOCKER / "postgres-init.sql").read_text())
            },
        }
        flags = "-v ON_ERROR_STOP=1 --username postgres --no-password --no-psqlrc --dbname postgres"
        result = subprocess.run(  # the flags docker-entrypoint.sh uses for initdb.d/*.sql
            [str(psql), *flags.split(), "--host", socket_dir, "-f", str(cf.DOCKER / "postgres-init.sql")],
            env=sql_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr

        def url(user: str, database: str) -> str:
            """The login's URL over the socket, password included (so a leak would show)."""
            return URL.create(
                "postgresql+psycopg2",
                username=user,
                password=env.get(LOGINS.get(user, "")),
                database=database,
                query={"host": socket_dir},
            ).render_as_string(hide_password=False)

        admin = create_engine(url("postgres", "postgres"), isolation_level="AUTOCOMMIT")
        yield SimpleNamespace(
            env=env, url=url, admin=admin, pgdata=pgdata, psql_output=result.stdout + result.stderr
        )
        admin.dispose()
    finally:
        server.cleanup()


def test_postgres_init_creates_databases_owners_and_passwords(compose_postgres: Any) -> None:
    from sqlalchemy import text

    pg, env = compose_postgres, compose_postgres.env
    with pg.admin.connect() as c:
        roles = {
            r[0]: r[1:]
            for r in c.execute(
                text(
                    "SELECT rolname, rolcanlogin, rolcreaterole, rolsuper, rolpassword FROM pg_authid "
                    "WHERE rolname IN ('airflow', 'crlib', 'mlflow')"
                )
            )
        }
        owners = dict(c.execute(text("SELECT datname, pg_get_userbyid(datdba) FROM pg_database")).all())
    assert {k: v[:3] for k, v in roles.items()} == {
        "airflow": (True, False, False),
        "crlib": (True, True, False),
        "mlflow": (True, False, False),
    }
    for role in ("airflow", "crlib", "mlflow"):
        var = LOGINS[role]
        assert cf.scram_matches(roles[role][3], env[var]), f"{role}'s password is not {var}"
        assert owners[role] == role
    logs = [p.read_text(errors="replace") for p in pg.pgdata.rglob("*log*") if p.is_file()]
    assert not any(
        env[v] in text_
        for text_ in [pg.psql_output, *logs]
        for v in ("AIRFLOW_DB_PASSWORD", "CRLIB_DB_OWNER_PASSWORD")
    )


@pytest.mark.slow
def test_crlib_init_script_initialises_everything_twice_without_printing_a_secret(
    compose_postgres: Any, tmp_path: Path
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ProgrammingError

    from crlib.db.migrate import head_revision, upgrade

    pg, env = compose_postgres, compose_postgres.env
    service_env = cf.load("compose.yaml", {**cf.env_example(), **env})["services"][cf.INIT]["environment"]
    run_env = {
        **{k: str(v) for k, v in service_env.items()},
        # Same logins and databases as compose.yaml, over the private server's socket.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url("airflow", "airflow"),
        "CRLIB_DATABASE_URL": pg.url("crlib", "crlib"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "auth" / "passwords.json"),
        "CRLIB_INIT_HELPER": str(cf.DOCKER / "write_init_files.py"),
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "CRLIB_DATA_ROOT": str(tmp_path / "crlib"),
        "PYTHONPATH": str(cf.REPO / "plugins"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    assert cf.make_url_user(service_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]) == ("airflow", "airflow")
    assert cf.make_url_user(service_env["CRLIB_DATABASE_URL"]) == ("crlib", "crlib")
    for attempt in (1, 2):  # idempotent: every `docker compose up` runs it again
        script = ["bash", str(cf.DOCKER / "crlib-init.sh")]
        result = subprocess.run(script, env=run_env, capture_output=True, text=True, timeout=900)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"run {attempt}: {output[-3000:]}"
        assert "crlib-init: done" in result.stdout
        leaked = [k for k, v in env.items() if v and v in output]
        assert leaked == [], f"run {attempt} printed {leaked}"
    with create_engine(pg.url("postgres", "airflow")).connect() as c:
        assert c.execute(
            text("SELECT slots FROM slot_pool WHERE pool = 'crlib_inference'")
        ).scalar_one() == int(service_env["CRLIB_INFERENCE_POOL_SLOTS"])
        assert c.execute(text("SELECT slots FROM slot_pool WHERE pool = 'crlib_mast'")).scalar_one() == int(
            service_env["CRLIB_MAST_POOL_SLOTS"]
        )
        rows = c.execute(
            text(
                "SELECT conn_id, conn_type, host, login, schema, port, is_encrypted, password FROM connection"
            )
        ).all()
    conns = {r[0]: r[1:] for r in rows}
    assert conns["crlib_db"][:6] == ("postgres", "postgres", "crlib_writer", "crlib", 5432, True)
    assert conns["crlib_db"][6] != env["CRLIB_WRITER_PASSWORD"]  # Fernet-encrypted
    assert conns["crlib_mlflow"][:5] == ("http", "mlflow", None, None, 5000)
    assert conns["mast"][:2] == ("https", "mast.stsci.edu")
    with pg.admin.connect() as c:
        verifiers = dict(
            c.execute(text("SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'crlib_%'")).all()
        )
    assert cf.scram_matches(verifiers["crlib_writer"], env["CRLIB_WRITER_PASSWORD"])
    assert cf.scram_matches(verifiers["crlib_reader"], env["CRLIB_READER_PASSWORD"])
    writer = create_engine(pg.url("crlib_writer", "crlib"))
    try:
        assert upgrade(writer) == head_revision()  # what every task does first: a no-op at head
        with pytest.raises(ProgrammingError, match="permission denied"), writer.begin() as c:
            c.execute(text("CREATE TABLE not_allowed (i int)"))
    finally:
        writer.dispose()
    users = tmp_path / "auth" / "passwords.json"
    assert json.loads(users.read_text()) == {"admin": env["AIRFLOW_ADMIN_PASSWORD"]}
    assert stat.S_IMODE(users.stat().st_mode) == 0o600


@pytest.mark.slow
def test_mlflow_server_runs_as_configured_and_accepts_the_service_name(
    compose_postgres: Any, tmp_path: Path
) -> None:
    import requests

    pg = compose_postgres
    service = cf.load("compose.yaml", {**cf.env_example(), **pg.env})["services"]["mlflow"]
    assert cf.make_url_user(service["environment"]["MLFLOW_BACKEND_STORE_URI"]) == ("mlflow", "mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = cf.command(service)
    cmd[cmd.index("--host") + 1], cmd[cmd.index("--port") + 1] = "127.0.0.1", str(port)
    env = {
        **{k: str(v) for k, v in service["environment"].items()},
        "MLFLOW_BACKEND_STORE_URI": pg.url("mlflow", "mlflow"),
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    log = (tmp_path / "mlflow.log").open("w")
    process = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path
    )
    try:
        base, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        else:
            pytest.fail(f"mlflow server did not come up: {(tmp_path / 'mlflow.log').read_text()[-3000:]}")
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=5"
        assert requests.get(search, headers={"Host": "mlflow:5000"}, timeout=30).status_code == 200
        assert requests.get(search, headers={"Host": "attacker.example"}, timeout=30).status_code == 403
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=60)
        log.close()
    assert pg.env["MLFLOW_DB_PASSWORD"] not in (tmp_path / "mlflow.log").read_text()
