"""The Docker Compose deployment (``docker/``), checked without a Docker engine.

``compose.yaml`` and the CPU-only override against the compose-spec JSON schema, and through
``docker-compose config -q`` where a Compose implementation is installed (``DOCKER_COMPOSE`` may
name one); then what a reviewer checks by hand: variables vs ``env.example``, no secret in files
or images, queue routing, GPU reservation, settings every Airflow component must share, start-up
order, the Dockerfiles' install steps vs the Makefile's. The init pieces run for real in
``test_compose_init.py``.

The schema ``tests/deploy/compose-spec.json`` is vendored unchanged from the Compose
Specification project: https://github.com/compose-spec/compose-spec/blob/
00655e2222608fa6eaecdf12ac5195889ca2244a/schema/compose-spec.json (``schema/compose-spec.json``
at commit 00655e2222608fa6eaecdf12ac5195889ca2244a, 74,133 bytes, JSON Schema draft-07).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    """docker/env.example."""
    return cf.env_example()


@pytest.fixture(scope="module")
def compose(example: dict[str, str]) -> dict[str, Any]:
    """compose.yaml with env.example's values filled in."""
    return cf.load("compose.yaml", example)


@pytest.fixture(scope="module")
def schema_validator() -> Any:
    """A draft-07 validator of the vendored compose-spec schema (itself checked first)."""
    import jsonschema

    schema = json.loads(cf.SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


# --------------------------------------------------------------------- schema and compose tool
@pytest.mark.parametrize("name", cf.COMPOSE_FILES)
def test_compose_files_validate_against_the_compose_spec(
    name: str, schema_validator: Any, example: dict
) -> None:
    for data in (cf.load(name), cf.load(name, example)):  # as written, and with env.example's values
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in schema_validator.iter_errors(data)
        ]
        assert not errors, f"{name} violates the compose spec:\n" + "\n".join(errors)


def test_the_schema_rejects_what_compose_rejects(schema_validator: Any) -> None:
    def broken(path: tuple[str | int, ...], key: str, value: object) -> list[str]:
        data = json.loads(json.dumps(cf.load("compose.yaml")))  # unshare YAML aliases
        node = data
        for part in path:
            node = node[part]
        if value is None:
            node.pop(key)
        else:
            node[key] = value
        return ["/".join(map(str, e.absolute_path)) for e in schema_validator.iter_errors(data)]

    scheduler = ("services", "airflow-scheduler")
    assert broken((*scheduler, "depends_on", "crlib-init"), "condition", "service_finished") == [
        "services/airflow-scheduler/depends_on"
    ]
    gpu = ("services", "airflow-worker-gpu", "deploy", "resources", "reservations", "devices", 0)
    assert broken(gpu, "capabilities", None) == [
        "services/airflow-worker-gpu/deploy/resources/reservations/devices/0"
    ]
    assert broken(("services", "redis"), "restart_policy", "always") == ["services/redis"]
    assert broken(("services", "redis", "healthcheck"), "retries", [3]) == [
        "services/redis/healthcheck/retries"
    ]


def compose_tool() -> list[str] | None:
    """A Compose implementation: ``$DOCKER_COMPOSE``, ``docker-compose`` or ``docker compose``."""
    if configured := os.environ.get("DOCKER_COMPOSE"):
        return shlex.split(configured)
    if found := shutil.which("docker-compose"):
        return [found]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def test_docker_compose_config_accepts_the_files() -> None:
    tool = compose_tool()
    if tool is None:
        pytest.skip("no Compose implementation: no docker-compose binary and no `docker compose` plugin")
    for files in (["compose.yaml"], ["compose.yaml", "compose.cpu-only.yaml"]):
        args = [a for f in files for a in ("-f", str(cf.DOCKER / f))]
        result = subprocess.run(
            [*tool, *args, "--env-file", str(cf.DOCKER / "env.example"), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{tool} config rejected {files}: {result.stderr}"


# ------------------------------------------------------------------- env file and secrets
def test_every_variable_is_defined_in_env_example_and_none_is_stale(example: dict[str, str]) -> None:
    used = set().union(*(cf.variables((cf.DOCKER / f).read_text()) for f in cf.COMPOSE_FILES))
    assert used - set(example) == set(), "used in compose files but missing from docker/env.example"
    assert set(example) - used == set(), "defined in docker/env.example but used nowhere"


def test_env_files_and_secrets_come_only_from_the_uncommitted_env_file() -> None:
    for name in cf.COMPOSE_FILES:
        data = cf.load(name)
        for service, svc in data["services"].items():
            for entry in (
                [svc["env_file"]] if isinstance(svc.get("env_file"), str) else svc.get("env_file", [])
            ):
                path = entry if isinstance(entry, str) else entry["path"]
                assert (cf.DOCKER / path).resolve() == cf.DOCKER / ".env", f"{service} reads {path}"
        for secret, spec in data.get("secrets", {}).items():
            assert spec.get("environment") in cf.env_example(), f"secret {secret} must come from docker/.env"


def test_env_example_holds_placeholders_and_required_secrets_fail_fast(example: dict[str, str]) -> None:
    text = (cf.DOCKER / "compose.yaml").read_text()
    secrets = [k for k in example if cf.SECRET_NAME.search(k)]
    assert len(secrets) >= 11
    for key in secrets:
        assert example[key] == "" or example[key].startswith("change-me"), f"{key} holds a real value"
        optional = key == "CRLIB_MAST_TOKEN"
        for m in re.finditer(r"\$\{" + key + r"(:?[-?])?", text):
            assert (m.group(1) == ":-") if optional else (m.group(1) == ":?"), f"{m.group(0)} must fail fast"
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        cf.load("compose.yaml", {k: v for k, v in example.items() if k != "REDIS_PASSWORD"})


def test_the_docker_env_file_is_git_ignored() -> None:
    ignored = {line.strip() for line in (cf.REPO / ".gitignore").read_text().splitlines()}
    assert ignored & {"docker/.env", "/docker/.env", ".env", "**/.env"}, "add `docker/.env` to .gitignore"


def test_no_secret_literal_in_compose_files_dockerfiles_or_init_scripts() -> None:
    assert cf.secret_literals("DB: postgresql://u:hunter2@db/x\nREDIS_PASSWORD: hunter2") == [
        "credentials in URL: postgresql://u:hunter2@",
        "REDIS_PASSWORD set to a literal",
    ]
    assert cf.secret_literals("AIRFLOW__CORE__FERNET_KEY: 46BKJoQYlPPOexq0OhDZnIlNepKFf87WFwLbfzqDDho=")
    for name in (*cf.COMPOSE_FILES, *cf.DOCKERFILES, "crlib-init.sh"):
        assert cf.secret_literals((cf.DOCKER / name).read_text()) == [], name
    sql = (cf.DOCKER / "postgres-init.sql").read_text()
    assert re.findall(r"\bPASSWORD (\S+)", sql) == [
        ":'airflow_password';",
        ":'crlib_password';",
        ":'mlflow_password';",
    ]
    for name in cf.DOCKERFILES:
        for keyword, args in cf.dockerfile(name):
            if keyword in ("ARG", "ENV"):
                names = [t.split("=", 1)[0] for t in shlex.split(args)]
                assert not [n for n in names if cf.SECRET_NAME.search(n)], f"{name}: {keyword} {args}"


def test_init_scripts_never_print_a_variable() -> None:
    lines = (cf.DOCKER / "crlib-init.sh").read_text().splitlines()
    script = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert not re.search(r"set\s+-[a-z]*x|xtrace|bash\s+-x", script)
    for line in script.splitlines():
        if re.search(r"\b(echo|printf)\b", line):
            assert set(re.findall(r"\$\{?!?([A-Za-z0-9_]+)", line)) <= {"name", "1"}, line
        if line.strip().startswith("step "):
            assert "$" not in line, line
    sql = (cf.DOCKER / "postgres-init.sql").read_text()
    assert "\\echo" not in sql and "ECHO" not in sql and "log_min_error_statement = 'panic'" in sql


# ------------------------------------------------------------------------------ Dockerfiles
def test_dockerfile_install_steps_match_the_makefile() -> None:
    expected = cf.pip_steps(cf.makefile_install_commands())
    assert expected == [
        ("--upgrade", "pip", "setuptools", "wheel"),
        ("torch==2.13.0",),
        ("<this project>[dev]",),
    ]
    for name in cf.DOCKERFILES:
        runs = [args for keyword, args in cf.dockerfile(name) if keyword == "RUN"]
        assert cf.pip_steps(runs) == expected, f"{name} installs differently from the Makefile's setup target"
    pyproject = (cf.REPO / "pyproject.toml").read_text()
    assert re.search(r'"(torch==[^"]+)"', pyproject).group(1) == expected[1][0]  # type: ignore[union-attr]


def test_gpu_dockerfile_differs_only_in_the_torch_build() -> None:
    cpu, gpu = cf.dockerfile("Dockerfile"), cf.dockerfile("Dockerfile.gpu")
    assert [i for i in cpu if i[0] not in ("ARG", "ENV")] == [i for i in gpu if i[0] not in ("ARG", "ENV")]
    cpu_env, gpu_env = cf.dockerfile_env("Dockerfile"), cf.dockerfile_env("Dockerfile.gpu")
    assert {k: v for k, v in gpu_env.items() if k not in cpu_env} == {
        "CRLIB_DEVICE": "cuda",
        "NVIDIA_VISIBLE_DEVICES": "all",
        "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
    }
    assert {k: gpu_env[k] for k in cpu_env} == cpu_env
    cpu_index = dict(a.split("=", 1) for k, a in cpu if k == "ARG")["TORCH_INDEX_URL"]
    gpu_index = dict(a.split("=", 1) for k, a in gpu if k == "ARG")["TORCH_INDEX_URL"]
    assert cpu_index == "https://download.pytorch.org/whl/cpu"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d{3}", gpu_index)
    assert cf.env_example()["TORCH_CUDA_INDEX_URL"] == gpu_index


@pytest.mark.parametrize("name", cf.DOCKERFILES)
def test_dockerfile_ships_dags_plugins_and_init_where_they_are_used(name: str) -> None:
    instructions = cf.dockerfile(name)
    workdir = Path(next(a for k, a in instructions if k == "WORKDIR"))
    copies = {}
    for keyword, args in instructions:
        if keyword == "COPY":
            *sources, target = shlex.split(args)
            copies.update({s.rstrip("/"): target for s in sources})
    env = cf.dockerfile_env(name)
    assert workdir / copies["dags"] == Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
    assert workdir / copies["plugins"] == Path(env["AIRFLOW__CORE__PLUGINS_FOLDER"])
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] in env["PYTHONPATH"].split(":")  # crlib_airflow importable
    assert (
        copies["docker/crlib-init.sh"]
        == "/usr/local/bin/" + cf.command(cf.load("compose.yaml")["services"][cf.INIT])[0]
    )
    default_helper = re.search(r"CRLIB_INIT_HELPER:-([^}]+)\}", (cf.DOCKER / "crlib-init.sh").read_text())
    assert copies["docker/write_init_files.py"] == default_helper.group(1)  # type: ignore[union-attr]
    lines = (cf.DOCKER / f"{name}.dockerignore").read_text().splitlines()
    ignore = [line for line in lines if line and line[0] != "#"]
    allowed = [p[1:].rstrip("/") for p in ignore if p.startswith("!")]
    assert ignore[0] == "*" and "docker/.env" not in allowed
    for source in copies:
        assert any(source == p or source.startswith(p + "/") for p in allowed), (
            f"{source} is not in the context"
        )


# -------------------------------------------------------------------------- compose semantics
def test_the_stack_has_every_component(compose: dict[str, Any]) -> None:
    services = compose["services"]
    commands = {name: cf.command(svc) for name, svc in services.items()}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["redis"]["image"].startswith("redis:")
    assert commands["mlflow"][:2] == ["mlflow", "server"] and "--serve-artifacts" in commands["mlflow"]
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert "mlflow-artifacts:/mlflow/artifacts" in services["mlflow"]["volumes"]
    roles = sorted(cmd[1] for name, cmd in commands.items() if cmd[:1] == ["airflow"])
    assert roles == ["api-server", "celery", "celery", "dag-processor", "scheduler", "triggerer"]
    assert commands[cf.INIT] == ["crlib-init"]


def test_workers_serve_exactly_the_queues_the_dags_route_to(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = services["airflow-scheduler"]["environment"]
    default_queue = env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
    assert cf.worker_queues(services["airflow-worker-cpu"]) == [default_queue] == ["cpu"]
    assert cf.worker_queues(services["airflow-worker-gpu"]) == [env["CRLIB_INFERENCE_QUEUE"]] == ["gpu"]
    cpu_only = cf.merged(compose, cf.load("compose.cpu-only.yaml", cf.env_example()))
    assert sorted(cf.worker_queues(cpu_only["services"]["airflow-worker-cpu"])) == ["cpu", "gpu"]
    assert cpu_only["services"]["airflow-worker-gpu"]["profiles"] == ["gpu"]
    assert "profiles" not in cpu_only["services"]["airflow-worker-cpu"]


def test_only_the_gpu_worker_reserves_an_nvidia_gpu(compose: dict[str, Any]) -> None:
    services = compose["services"]
    devices = services["airflow-worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["airflow-worker-gpu"]["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert services["airflow-worker-gpu"]["environment"]["CRLIB_DEVICE"] == "cuda"
    others = [name for name, svc in services.items() if "deploy" in svc and name != "airflow-worker-gpu"]
    assert others == [] and services["airflow-worker-cpu"]["environment"]["CRLIB_DEVICE"] == "cpu"


def test_airflow_components_share_keys_queues_and_stores(compose: dict[str, Any]) -> None:
    components = cf.airflow_services(compose)
    assert len(components) == 7
    for key in cf.SHARED_AIRFLOW_SETTINGS:
        values = {name: svc["environment"].get(key) for name, svc in components.items()}
        assert None not in values.values() and len(set(values.values())) == 1, f"{key} differs: {values}"
    for name, svc in components.items():
        assert "airflow-logs:/opt/airflow/logs" in svc["volumes"], name
    for name in ("airflow-worker-cpu", "airflow-worker-gpu"):
        assert "crlib-data:/data/crlib" in compose["services"][name]["volumes"]


def test_workers_reach_the_execution_api_on_the_api_server(compose: dict[str, Any]) -> None:
    from urllib.parse import urlsplit

    url = urlsplit(
        compose["services"]["airflow-worker-cpu"]["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    )
    api = compose["services"][url.hostname or ""]
    assert cf.command(api)[:2] == ["airflow", "api-server"] and url.path == "/execution/"
    assert cf.command(api)[cf.command(api).index("--port") + 1] == str(url.port)
    assert any(p.endswith(f":{url.port}") for p in api["ports"])


def test_services_start_after_init_and_dependencies_are_satisfiable(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in cf.airflow_services(compose).items():
        if name != cf.INIT:
            assert svc["depends_on"][cf.INIT] == {"condition": "service_completed_successfully"}, name
    assert services[cf.INIT]["restart"] == "no" and "healthcheck" not in services[cf.INIT]
    assert services[cf.INIT]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name, svc in services.items():
        for target, spec in svc.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[target], (
                    f"{name} waits for {target}, which has no healthcheck"
                )
            if spec["condition"] == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} must be one-shot"
    seen: set[str] = set()
    order: list[str] = []
    while len(order) < len(services):  # a topological order exists: no cycle
        ready = [n for n in services if n not in seen and set(services[n].get("depends_on", {})) <= seen]
        assert ready, f"dependency cycle among {set(services) - seen}"
        seen.update(ready)
        order.extend(ready)


def test_database_logins_match_the_postgres_init_script(compose: dict[str, Any]) -> None:
    from sqlalchemy.engine import make_url

    raw = cf.load("compose.yaml")
    sql = (cf.DOCKER / "postgres-init.sql").read_text()
    getenv = dict(re.findall(r"\\getenv (\w+) (\w+)", sql))
    created = {
        role: getenv[var] for role, var in re.findall(r"CREATE ROLE (\w+) [^;]*PASSWORD :'(\w+)'", sql)
    }
    owners = dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+)", sql))
    urls = {
        "airflow": raw["x-airflow-env"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
        "crlib": raw["services"][cf.INIT]["environment"]["CRLIB_DATABASE_URL"],
        "mlflow": raw["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"],
    }
    postgres_env = raw["services"]["postgres"]["environment"]
    for database, url in urls.items():
        login = re.match(r"[^:]+://(\w+):\$\{(\w+)", url)
        assert login, url
        parsed = make_url(cf.interpolate(url, cf.env_example()))
        assert parsed.database == database and owners[database] == login.group(1) == parsed.username
        assert created[login.group(1)] == login.group(2), (
            f"{database}: URL and init script use different passwords"
        )
        assert cf.variables(postgres_env[login.group(2)]) == {login.group(2)}
        assert parsed.host == "postgres" and parsed.port == 5432
    assert (
        "./postgres-init.sql:/docker-entrypoint-initdb.d/10-crlib-databases.sql:ro"
        in raw["services"]["postgres"]["volumes"]
    )
