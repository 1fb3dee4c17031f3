"""The CLI as a user meets it: a real subprocess, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "crlib", *args], capture_output=True, text=True, env=full_env, timeout=300
    )


def test_help_lists_stages() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for command in ("config", "demo", "simulate", "bench"):
        assert command in result.stdout


def test_config_json_masks_secrets() -> None:
    result = run_cli(
        "config", "--json", env={"CRLIB_DATABASE_URL": "postgresql://u:hunter2@h/db", "CRLIB_DEVICE": "cpu"}
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["device"] == "cpu"
    assert "hunter2" not in result.stdout


def test_bad_configuration_is_one_line_without_traceback() -> None:
    result = run_cli("config", env={"CRLIB_DEVICE": "tpu"})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "CRLIB_DEVICE" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "--out", "{tmp}/a", "--field-type", "spiral_arm"],
        ["simulate", "--out", "{tmp}/a", "--visits", "-2"],
        ["simulate", "--out", "{tmp}/a", "--exposures", "0"],
        ["simulate", "--out", "/proc/crlib-cannot-write-here"],
    ],
)
def test_simulate_bad_input_is_one_line_error(tmp_path: Path, args: list[str]) -> None:
    result = run_cli(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    "args", [["simulate", "--visits", "abc"], ["config", "--no-such-option"], ["no-such-command"]]
)
def test_usage_errors_are_one_line(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_libraries_speak_only_from_warnings_up_whatever_level_they_set(capsys) -> None:
    """tweakwcs sets its loggers to DEBUG on import; its INFO report must not reach the terminal."""
    import logging

    from crlib.cli.app import configure_logging

    chatty = logging.getLogger("tweakwcs.imalign")
    previous = chatty.level
    chatty.setLevel(logging.DEBUG)  # what tweakwcs does on import
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("crlib").level
    try:
        for level in (logging.WARNING, logging.INFO):  # -q, then the default
            configure_logging(level)
            chatty.info("Found 813 matches for 'GROUP ID: j86b0202q'")
            chatty.warning("fit failed for GROUP ID: j86b0203q")
            logging.getLogger("crlib.align.visit").info("visit j86b02: aligned, rms 0.011 px")
            err = capsys.readouterr().err
            assert "Found 813 matches" not in err and "fit failed" in err
            assert ("aligned, rms 0.011 px" in err) == (level == logging.INFO)
    finally:
        chatty.setLevel(previous)
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("crlib").setLevel(saved[2])
