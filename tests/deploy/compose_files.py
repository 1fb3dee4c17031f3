"""Reading the deployment files in docker/ the way Compose and Docker do (shared by the deploy tests).

Loaded by ``tests/deploy/test_compose.py`` and ``test_compose_init.py`` through importlib (the test
tree is not a package). Nothing here needs a Docker engine.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
SCHEMA = Path(__file__).with_name("compose-spec.json")
COMPOSE_FILES = ("compose.yaml", "compose.cpu-only.yaml")
DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")
INIT = "crlib-init"
AIRFLOW_COMMANDS = {"api-server", "scheduler", "dag-processor", "triggerer", "celery"}
#: Settings that must be identical in every Airflow component (tokens, routing, shared stores).
SHARED_AIRFLOW_SETTINGS = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__OPERATORS__DEFAULT_QUEUE",
    "CRLIB_INFERENCE_QUEUE",
)
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY|_AUTH)$")
INTERPOLATION = re.compile(
    r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$\$|\$([A-Za-z_][A-Za-z0-9_]*)"
)


def env_example() -> dict[str, str]:
    """``docker/env.example`` as a mapping (comment and blank lines skipped)."""
    values = {}
    for line in (DOCKER / "env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose variable interpolation (``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?e}``, ``$$``)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1) or match.group(4), match.group(2), match.group(3)
        present = name in env and (env[name] != "" or op in (None, "-", "?"))
        if op in (":?", "?") and not present:
            raise KeyError(f"{name}: {arg}")
        return env[name] if present else (arg or "")

    return INTERPOLATION.sub(one, value)


def variables(text: str) -> set[str]:
    """Names of the variables ``text`` interpolates."""
    return {m.group(1) or m.group(4) for m in INTERPOLATION.finditer(text) if m.group(0) != "$$"}


def load(name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``docker/<name>`` parsed (YAML merge keys resolved), interpolated with ``env`` when given."""
    data = yaml.safe_load((DOCKER / name).read_text())
    return interpolate(data, env) if env is not None else data


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge of an override file: mappings merge, sequences and scalars replace."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def command(service: dict[str, Any]) -> list[str]:
    """A service's command as an argument list."""
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def airflow_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services running an Airflow component (and the init service, which runs Airflow's CLI)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if name == INIT or (command(svc)[:1] == ["airflow"] and command(svc)[1] in AIRFLOW_COMMANDS)
    }


def worker_queues(service: dict[str, Any]) -> list[str]:
    """The queues a ``celery worker`` service serves (its ``--queues``)."""
    cmd = command(service)
    return cmd[cmd.index("--queues") + 1].split(",")


def dockerfile(name: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / name).read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    return out


def dockerfile_env(name: str) -> dict[str, str]:
    """Every ``ENV`` of a Dockerfile."""
    env: dict[str, str] = {}
    for keyword, args in dockerfile(name):
        if keyword == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(args))  # type: ignore[misc]
    return env


def pip_steps(commands: list[str]) -> list[tuple[str, ...]]:
    """The requirement set of each ``pip install`` in ``commands``; index options and -q/-e ignored."""
    steps = []
    for cmd in commands:
        for part in re.split(r"&&|;", cmd):
            tokens = shlex.split(part)
            if "pip" not in tokens or "install" not in tokens:
                continue
            step: list[str] = []
            rest = iter(tokens[tokens.index("install") + 1 :])
            for token in rest:
                if token in ("-q", "--quiet", "-e", "--editable", "--no-cache-dir"):
                    continue
                if token in ("-U", "--upgrade"):
                    step.append("--upgrade")
                elif token in ("-i", "--index-url", "--extra-index-url", "-f", "--find-links"):
                    next(rest)
                elif token.startswith("-"):
                    raise AssertionError(f"pip option {token!r} changes the requirement set; handle it here")
                elif token.startswith((".", "/")):  # the project itself, by path: keep only its extras
                    extras = re.search(r"\[.*\]$", token)
                    step.append("<this project>" + (extras.group(0) if extras else ""))
                else:
                    step.append(token)
            steps.append(tuple(step))
    return steps


def makefile_install_commands() -> list[str]:
    """The ``pip install`` lines of the Makefile's setup recipe (``$(STAMP): pyproject.toml``)."""
    recipe = (REPO / "Makefile").read_text().split("$(STAMP): pyproject.toml", 1)[1]
    return [line.strip() for line in recipe.split("\n\n", 1)[0].splitlines() if "pip install" in line]


def secret_literals(text: str) -> list[str]:
    """Secret-looking literals in ``text`` (compose interpolations ``${...}`` are fine)."""
    text = re.sub(r"\$\{[^}]*\}", "${}", text)
    found = [
        f"credentials in URL: {m.group(0)}"
        for m in re.finditer(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]*:([^@\s'\"]*)@", text)
        if m.group(1) not in ("", "${}")
    ]
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", "--")))
    for m in re.finditer(r"\b([A-Za-z0-9_]+)\s*[:=]\s*[\"']?([^\s\"']+)", code):
        if SECRET_NAME.search(m.group(1).upper()) and m.group(2) not in ("${}", "''", '""'):
            found.append(f"{m.group(1)} set to a literal")
    for token in re.findall(r"[A-Za-z0-9+/_=-]{32,}", text):
        classes = sum(bool(re.search(p, token)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
        if re.fullmatch(r"[0-9a-f]{32,}", token) or classes == 3:
            found.append(f"high-entropy string {token[:6]}...")
    return found


def run_helper(kind: str, env: dict[str, str], out_dir: Path, *, expect: int = 0) -> Path:
    """Run ``docker/write_init_files.py`` as the init script does; it must never print a value."""
    out = out_dir / f"{kind}.json"
    result = subprocess.run(
        [sys.executable, str(DOCKER / "write_init_files.py"), kind, str(out)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == expect, result.stderr
    assert not any(v in result.stdout + result.stderr for v in env.values() if len(v) > 3)
    return out


def scram_matches(verifier: str, password: str) -> bool:
    """Whether a PostgreSQL ``SCRAM-SHA-256$iter:salt$stored:server`` verifier is for ``password``."""
    import base64
    import hashlib
    import hmac

    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return (
        method == "SCRAM-SHA-256"
        and base64.b64decode(keys.split(":")[0]) == hashlib.sha256(client_key).digest()
    )


def make_url_user(url: str) -> tuple[str | None, str | None]:
    """``(user, database)`` of a database URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return parsed.username, parsed.database
