"""``crlib bench truth --timing process``: the child commands and where a child leaves its result."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from crlib.bench.truth_process import result_path, time_process, tool_command


def test_child_commands_carry_the_same_settings_for_both_tools(tmp_path: Path) -> None:
    kwargs = {"output_name": "v_truth", "engine": "inmemory", "num_cores": 2, "catalog_file": None}
    crlib = tool_command("crlib", tmp_path / "visit", tmp_path / "w", **kwargs)
    bare = tool_command("bare", tmp_path / "visit", tmp_path / "b", **kwargs)
    assert crlib[:4] == [sys.executable, "-m", "crlib.bench.truth_process", "crlib"]
    assert bare[3] == "bare"
    for command in (crlib, bare):
        assert command[command.index("--num-cores") + 1] == "2"
        assert command[command.index("--engine") + 1] == "inmemory"
        assert "--catalog-file" not in command
    with_catalog = tool_command(
        "crlib", tmp_path, tmp_path / "w", **{**kwargs, "catalog_file": tmp_path / "g.ecsv"}
    )
    assert with_catalog[-2:] == ["--catalog-file", str(tmp_path / "g.ecsv")]
    with pytest.raises(ValueError, match="tool must be"):
        tool_command("drizzle", tmp_path, tmp_path / "w", **kwargs)


def test_result_lies_in_the_work_dir_that_every_run_starts_without(tmp_path: Path) -> None:
    assert result_path(tmp_path / "truth" / "v1") == tmp_path / "truth" / "v1" / "visittruth.pickle"


def test_a_failing_child_is_an_error_with_its_stderr(tmp_path: Path) -> None:
    from crlib.errors import CrlibError

    command = [
        sys.executable,
        "-m",
        "crlib.bench.truth_process",
        "bare",
        str(tmp_path / "none"),
        str(tmp_path / "w"),
    ]
    with pytest.raises(CrlibError, match="failed"):
        time_process([*command, "--output-name", "x", "--engine", "inmemory"], logs_dir=tmp_path / "logs")
    assert (tmp_path / "logs" / "stderr.txt").read_text()
