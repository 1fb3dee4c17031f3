"""Reusing what an earlier run produced (``redo=False`` in :mod:`crlib.pipeline.stages`).

A stage that may be asked not to redo its work keeps, per visit or exposure, a record of its
results (as plain dicts) and of what identifies the inputs they came from, under
``<data_root>/outputs/<stage>/<key>.json`` (:class:`StageOutputs`). A later run reuses a record only
while it is still valid: the same input files (the md5 the fetch verified against the archive, or
size and modification time), the same instrument profile and crlib code version
(:func:`crlib.provenance.code_version`: package version plus source digest), and output files
unchanged since they were written (:func:`file_fingerprint`). Anything else is computed afresh.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crlib.pipeline.ledger import run_key, write_json_atomic
from crlib.pipeline.state import VisitState
from crlib.provenance import code_version
from crlib.records import (
    AlignmentResult,
    ChipTruth,
    CrStatistics,
    ExposureMetrics,
    ScreeningReason,
    ScreeningVerdict,
    TruthResult,
)


def file_fingerprint(path: Path | str) -> dict[str, int] | None:
    """``{"size": bytes, "mtime_ns": ...}`` of a file, ``None`` when it does not exist.

    Two equal fingerprints of a local output mean the file was not rewritten in between.
    """
    try:
        stat = Path(path).stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def input_identity(visit_state: VisitState) -> dict[str, Any]:
    """Per downloaded file of a visit (ledger state): the fetch's verified md5, else its fingerprint."""
    return {
        rootname: visit_state.checksums.get(rootname) or file_fingerprint(path)
        for rootname, path in sorted(visit_state.files.items())
    }


class StageOutputs:
    """What each stage last produced for a visit or exposure, kept across runs.

    Parameters
    ----------
    data_root
        crlib's data root; records live under ``<data_root>/outputs/<stage>/<key>.json``.
    """

    def __init__(self, data_root: Path) -> None:
        self.root = Path(data_root) / "outputs"

    def path(self, stage: str, key: str) -> Path:
        """Where the record of ``stage`` for ``key`` lives."""
        return self.root / run_key(stage) / f"{run_key(key)}.json"

    def read(self, stage: str, key: str) -> dict[str, Any] | None:
        """The record, or ``None`` when there is none or it cannot be parsed."""
        try:
            payload = json.loads(self.path(stage, key).read_text())
        except (OSError, ValueError):
            return None
        return payload if isinstance(payload, dict) else None

    def write(self, stage: str, key: str, payload: dict[str, Any]) -> Path:
        """Replace the record of ``stage`` for ``key`` atomically."""
        path = self.path(stage, key)
        write_json_atomic(path, payload)
        return path

    def matching(self, stage: str, key: str, identity: dict[str, Any]) -> dict[str, Any] | None:
        """The record if every item of ``identity`` equals the recorded one, else ``None``."""
        record = self.read(stage, key)
        if record is None or any(record.get(k) != v for k, v in identity.items()):
            return None
        return record


def reusable_truth_set(
    record: dict[str, Any] | None, *, members: list[str], inputs: dict[str, Any], profile: str
) -> dict[str, Any] | None:
    """A visit's recorded truth for one set of exposures, if made from these inputs with intact files.

    Parameters
    ----------
    record
        The truth stage's record of the visit (``{"sets": [...]}``), or ``None``.
    members
        Rootnames of the set.
    inputs
        :func:`input_identity` of the members.
    profile
        Instrument profile name.

    Returns
    -------
    dict or None
        The set's entry (``alignment``, ``results``, ``files`` ...), or ``None`` when it must be
        built again (no entry for these members, other inputs/profile/version, or a truth file
        missing or rewritten since).
    """
    for entry in (record or {}).get("sets", []):
        same = (
            entry.get("members") == sorted(members)
            and entry.get("inputs") == inputs
            and entry.get("profile") == profile
            and entry.get("code") == code_version()
        )
        if not same:
            continue
        intact = all(
            file_fingerprint(result["path"]) == entry.get("files", {}).get(result["rootname"])
            for result in entry.get("results", [])
            if result.get("path")
        )
        return entry if intact else None
    return None


# ----------------------------------------------------------------------------- records from JSON
def verdict_from_dict(row: dict[str, Any]) -> ScreeningVerdict:
    """A :class:`ScreeningVerdict` from :func:`crlib.records.to_dict`'s output."""
    reasons = tuple(ScreeningReason(**reason) for reason in row.get("reasons", ()))
    return ScreeningVerdict(**{**row, "reasons": reasons})


def alignment_from_dict(row: dict[str, Any] | None) -> AlignmentResult | None:
    """An :class:`AlignmentResult` from its dict (``None`` stays ``None``)."""
    return AlignmentResult(**row) if row else None


def truth_from_dict(row: dict[str, Any]) -> TruthResult:
    """A :class:`TruthResult` from its dict."""
    chips = tuple(ChipTruth(**chip) for chip in row.get("chips", ()))
    return TruthResult(**{**row, "chips": chips, "reasons": tuple(row.get("reasons", ()))})


def metrics_from_dict(row: dict[str, Any]) -> ExposureMetrics:
    """An :class:`ExposureMetrics` from its dict (histograms back to tuples)."""
    arrays = ("hist_cr", "hist_noncr", "hist_cr_dilated", "hist_noncr_dilated")
    return ExposureMetrics(**{**row, **{k: tuple(row.get(k, ())) for k in arrays}})


def statistics_from_dicts(rows: list[dict[str, Any]]) -> list[CrStatistics]:
    """:class:`CrStatistics` records from their dicts."""
    return [CrStatistics(**row) for row in rows]
