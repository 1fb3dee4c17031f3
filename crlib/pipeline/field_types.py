"""Field types the archive's metadata cannot give: decided from a visit's pixels at screening.

Polling labels each exposure from its CAOM metadata (:mod:`crlib.classify.metadata`: target
classification and name rules, or the simulator's own column). On real archive data many
exposures come out ``unknown`` there (no classification, a name no rule knows). The screening
stage then runs the image classifier (:mod:`crlib.classify.image`: point-source density and
extended-light fraction) on a few of the visit's accepted files and records its label, with
method ``image``, on every exposure of the visit the metadata left unlabelled. The classifier
says ``unknown`` rather than guess; that is recorded too (method ``unknown``, field type NULL),
so a NULL field type in the database always says whether anything was tried.

The label is kept with the stage outputs (:class:`~crlib.pipeline.reuse.StageOutputs`, stage
``classify``) keyed by the files' fingerprints, so re-running the stage on unchanged files does
not classify again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crlib.classify.labels import FieldTypeLabel, unknown_label
from crlib.errors import InputDataError
from crlib.pipeline import reuse
from crlib.provenance import code_version
from crlib.records import Observation

log = logging.getLogger(__name__)

#: Files of a visit the image classifier reads (the first accepted ones by rootname): enough for a
#: stable label (the features' median), bounded in cost (~0.35 s per small, ~6 s per full-size
#: exposure on 2 cores).
MAX_CLASSIFIED_FILES = 3


def unlabelled(observations: Sequence[Observation], accepted: Sequence[str]) -> list[str]:
    """Rootnames of accepted exposures whose metadata gave no field type (sorted)."""
    wanted = set(accepted)
    return sorted(o.rootname for o in observations if o.rootname in wanted and o.field_type is None)


def classify_visit_pixels(
    files: Mapping[str, str],
    accepted: Sequence[str],
    *,
    data_root: Path,
    visit: str,
    redo: bool = True,
) -> tuple[FieldTypeLabel, bool]:
    """The image classifier's label for a visit, from up to :data:`MAX_CLASSIFIED_FILES` accepted files.

    Parameters
    ----------
    files
        Local file per rootname (the fetch stage's ``files``).
    accepted
        Rootnames screening accepted; only these files are read.
    data_root
        Where stage outputs are kept (the label is reused when the files are unchanged).
    visit
        Visit id (key of the kept label).
    redo
        ``True``: classify again even when a kept label matches.

    Returns
    -------
    label, reused
        The label (``unknown`` with the reason when the files cannot be read or the classifier
        cannot decide) and whether it was a kept one.
    """
    from crlib.classify.files import classify_files

    chosen = [files[r] for r in sorted(accepted) if r in files][:MAX_CLASSIFIED_FILES]
    if not chosen:
        return unknown_label("no accepted file to classify"), False
    outputs = reuse.StageOutputs(data_root)
    identity = {
        "files": {Path(p).name: reuse.file_fingerprint(p) for p in chosen},
        "code": code_version(),
    }
    kept = None if redo else outputs.matching("classify", visit, identity)
    if kept is not None:
        return _label_from_dict(kept["label"]), True
    try:
        label, features = classify_files([Path(p) for p in chosen])
        detail: dict[str, Any] = features.as_dict()
    except (InputDataError, ValueError) as exc:  # unreadable files, or pixels it cannot measure
        log.warning("visit %s: image classifier gave up: %s", visit, exc)
        label, detail = unknown_label(f"image classifier could not measure the visit's files: {exc}"), {}
    outputs.write("classify", visit, {**identity, "label": _label_to_dict(label), "features": detail})
    return label, False


def ledger_entry(label: FieldTypeLabel, rootnames: Sequence[str], *, reused: bool) -> dict[str, Any]:
    """What the run ledger keeps of a visit's image label (``image_field_type`` of the visit)."""
    return {
        **_label_to_dict(label),
        "field_type": label.column_value,
        "exposures": list(rootnames),
        "reused": reused,
    }


def _label_to_dict(label: FieldTypeLabel) -> dict[str, Any]:
    return {
        "label": label.field_type,
        "method": label.method,
        "confidence": round(float(label.confidence), 4),
        "reasons": list(label.reasons),
    }


def _label_from_dict(data: Mapping[str, Any]) -> FieldTypeLabel:
    return FieldTypeLabel(
        str(data["label"]), data["method"], float(data["confidence"]), tuple(data.get("reasons", ()))
    )
