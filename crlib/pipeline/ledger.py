"""The run ledger: small JSON files that hand paths and states from one task to the next.

XCom carries only ids (visit ids, rootnames); everything a later task needs to find (file paths,
which exposures were accepted, where the truth is) is written here, one file per visit and one per
exposure, so mapped tasks never write the same file. Writes are atomic (temp file + rename), so a
killed task leaves the previous version intact, and re-running a task overwrites its own entry.

Layout under ``<data_root>/runs/<run key>/``::

    observations.json             the poll's observation records
    summary.json                  the run's summary, once it finished
    errors/<visit or rootname>.json   unexpected exceptions (bugs) a stage hit, one line each
    visits/<visit>.json           per-visit state (files, verdicts, truth)
    exposures/<rootname>.json     per-exposure state (prediction, metrics)

The per-visit and per-exposure states are :class:`~crlib.pipeline.state.VisitState` and
:class:`~crlib.pipeline.state.ExposureState`: every key declared, typed and documented there.

What outlives a run (a stage's outputs kept for reuse by later runs) is
:mod:`crlib.pipeline.reuse`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Unpack

from crlib.pipeline.state import ExposureChanges, ExposureState, VisitChanges, VisitState, apply

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def run_key(run_id: str) -> str:
    """A filesystem-safe key for an Airflow run id (``manual__2026-11-21T00:31:28+00:00`` ...)."""
    key = _UNSAFE.sub("_", run_id).strip("._")
    if not key:
        raise ValueError(f"run id {run_id!r} has no usable characters")
    return key[:200]


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` via a temporary file and a rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=1, sort_keys=True, default=str)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class RunLedger:
    """Per-run state files under ``<data_root>/runs/<run key>``.

    Parameters
    ----------
    data_root
        crlib's data root.
    run_id
        The Airflow run id (or any id for CLI runs).
    """

    def __init__(self, data_root: Path, run_id: str) -> None:
        self.run_id = run_id
        self.data_root = Path(data_root)
        self.root = self.data_root / "runs" / run_key(run_id)

    # --------------------------------------------------------------- observations
    def write_observations(self, rows: list[dict[str, Any]], *, poll: dict[str, Any] | None = None) -> Path:
        """Store the poll's observation records (plain dicts) and what was polled (source, window)."""
        path = self.root / "observations.json"
        write_json_atomic(path, {"run_id": self.run_id, "observations": rows, "poll": poll or {}})
        return path

    def poll(self) -> dict[str, Any]:
        """What the poll asked for (``source``, ``until_mjd``, ``proposal_id``); empty before it ran."""
        path = self.root / "observations.json"
        return dict(json.loads(path.read_text()).get("poll", {})) if path.exists() else {}

    def observations(self) -> list[dict[str, Any]]:
        """The poll's observation records; empty if the poll has not run."""
        path = self.root / "observations.json"
        if not path.exists():
            return []
        return list(json.loads(path.read_text())["observations"])

    # --------------------------------------------------------------- summary
    def write_summary(self, summary: dict[str, Any]) -> Path:
        """Store the run's summary (what :func:`crlib.pipeline.stages.finish_run` returns)."""
        path = self.root / "summary.json"
        write_json_atomic(path, summary)
        return path

    def summary(self) -> dict[str, Any]:
        """The run's summary; empty before the run finished."""
        path = self.root / "summary.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    # --------------------------------------------------------------- visits
    def visit(self, visit: str) -> VisitState:
        """State of one visit (all defaults before any stage touched it)."""
        path = self._visit_path(visit)
        return VisitState.from_json(_read(path), visit=visit) if path.exists() else VisitState(visit)

    def update_visit(self, visit: str, **changes: Unpack[VisitChanges]) -> VisitState:
        """Set ``changes`` on a visit's state and write it atomically; returns the new state.

        Raises
        ------
        TypeError
            A keyword that is not a :class:`~crlib.pipeline.state.VisitState` field.
        """
        state = apply(self.visit(visit), changes)
        write_json_atomic(self._visit_path(visit), state.to_json())
        return state

    def visits(self) -> Iterator[tuple[str, VisitState]]:
        """Every visit with state, sorted by id."""
        folder = self.root / "visits"
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            data = _read(path)
            yield path.stem, VisitState.from_json(data, visit=None if "visit" in data else path.stem)

    # --------------------------------------------------------------- exposures
    def exposure(self, rootname: str) -> ExposureState:
        """State of one exposure (all defaults before any stage touched it)."""
        path = self._exposure_path(rootname)
        if not path.exists():
            return ExposureState(rootname)
        return ExposureState.from_json(_read(path), rootname=rootname)

    def update_exposure(self, rootname: str, **changes: Unpack[ExposureChanges]) -> ExposureState:
        """Set ``changes`` on an exposure's state and write it atomically; returns the new state.

        Raises
        ------
        TypeError
            A keyword that is not an :class:`~crlib.pipeline.state.ExposureState` field.
        """
        state = apply(self.exposure(rootname), changes)
        write_json_atomic(self._exposure_path(rootname), state.to_json())
        return state

    def exposures(self) -> Iterator[tuple[str, ExposureState]]:
        """Every exposure with state, sorted by rootname."""
        folder = self.root / "exposures"
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            data = _read(path)
            yield path.stem, ExposureState.from_json(data, rootname=None if "rootname" in data else path.stem)

    # --------------------------------------------------------------- errors
    def record_error(self, key: str, text: str) -> None:
        """Record an unexpected exception (a bug) hit while processing ``key`` (a visit or rootname).

        One file per key, so concurrent mapped tasks never write the same file; a later error
        for the same key replaces the earlier one.
        """
        write_json_atomic(self.root / "errors" / f"{run_key(key)}.json", {"key": key, "error": text})

    def errors(self) -> dict[str, str]:
        """Every recorded error, ``{visit or rootname: one-line text}``."""
        folder = self.root / "errors"
        found: dict[str, str] = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            row = json.loads(path.read_text())
            found[str(row["key"])] = str(row["error"])
        return found

    def _visit_path(self, visit: str) -> Path:
        return self.root / "visits" / f"{run_key(visit)}.json"

    def _exposure_path(self, rootname: str) -> Path:
        return self.root / "exposures" / f"{run_key(rootname)}.json"


def _read(path: Path) -> dict[str, Any]:
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return payload
