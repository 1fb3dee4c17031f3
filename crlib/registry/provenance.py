"""What a registered version was trained on: visits and fields seen, and where its truth came from.

The promotion gate (:mod:`crlib.registry.promotion`) uses this to refuse scoring on a test split
that either model saw in training, and to keep models trained on simulator data away from the
champion of the real-data model.

Where crlib records it
----------------------
* A version registered by :func:`crlib.registry.retraining.run_training` carries the tags
  ``crlib.training_manifest = runs:/<run id>/dataset/manifest.json`` (the dataset manifest the
  training run logged: every exposure and ``{visit: {split, stratum, field}}``),
  ``crlib.initial`` (what training started from: ``deepcr-acs-wfc/3``, ``deepCR ACS-WFC`` or
  ``scratch``) and ``crlib.truth_source`` (``real``, ``simulator`` or ``mixed``, decided from the
  files: :func:`crlib.training.sources.is_simulated_exposure`). Versions registered before these
  tags existed are read the same way from ``crlib.source = training`` and the version's run id.
* deepCR's shipped weights (``crlib models --bootstrap``, tag ``crlib.source = deepcr``) were
  trained outside crlib on real HST ACS/WFC visits (the deepCR-ACS/WFC paper's training set),
  which crlib cannot list: their manifest is **external**, and the gate says so in every
  decision instead of pretending to have checked it.
* Anything else registered without these tags has an **unknown** manifest (also said so).

A fine-tuned model has seen everything its starting model saw: the seen visits and fields are the
union over the chain of ``crlib.initial`` versions. A visit counts as seen when it was in the
``train`` or ``validation`` split (validation picked the registered epoch).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from crlib.registry.versions import (
    DEEPCR_EXTERNAL,
    MANIFEST_TAG,
    TRUTH_SOURCE_TAG,
    ModelNotFoundError,
    RegisteredVersion,
    get_version,
)
from crlib.training.splits import field_key

log = logging.getLogger(__name__)

SIMULATED_EXPOSURES_TAG = "crlib.simulated_exposures"
INITIAL_TAG = "crlib.initial"
EXTERNAL = "external"
SEEN_SPLITS = ("train", "validation")
_LABEL = re.compile(r"^(?P<name>[\w.-]+)/(?P<version>\d+)$")

ManifestStatus = Literal["recorded", "external", "unknown", "unreadable"]


@dataclass(frozen=True)
class TrainingProvenance:
    """What a version (and the chain of versions it was fine-tuned from) was trained on.

    Attributes
    ----------
    label
        ``<name>/<version>``.
    status
        ``recorded`` (every manifest in the chain read), ``external`` (some training crlib
        cannot list, e.g. deepCR's shipped weights), ``unknown`` (no manifest recorded) or
        ``unreadable`` (a crlib training run whose manifest could not be read).
    visits, fields
        Visits and fields (``<proposal>:<target>``) seen in training across the chain.
    truth_source
        ``real``, ``simulator``, ``mixed`` or ``unknown`` over the whole chain: deepCR's shipped
        weights count as ``real``, so fine-tuning them on simulator data gives ``mixed``.
    manifests
        Where the recorded manifests are (``runs:/...``), own first.
    notes
        Plain-language remarks: external/unknown/unreadable parts of the chain.
    """

    label: str
    status: ManifestStatus
    visits: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset()
    truth_source: str = "unknown"
    manifests: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """Summary for decisions (counts, not the visit lists)."""
        return {
            "label": self.label,
            "manifest": self.status,
            "manifests": list(self.manifests),
            "seen_visits": len(self.visits),
            "seen_fields": len(self.fields),
            "truth_source": self.truth_source,
            "notes": list(self.notes),
        }


def manifest_seen(manifest: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """``(visits, fields)`` of a dataset manifest's ``train`` and ``validation`` splits.

    Fields come from the manifest's ``visits`` entries (``field``) or, for manifests written
    before fields were recorded, from the exposures' proposal id and target name when present.
    """
    visits: set[str] = set()
    fields: set[str] = set()
    entries = manifest.get("visits", {}) or {}
    by_visit = _fields_from_exposures(manifest.get("exposures", []))
    for visit, entry in entries.items():
        if entry.get("split") in SEEN_SPLITS:
            visits.add(str(visit))
            key = entry.get("field") or by_visit.get(str(visit))
            if key:
                fields.add(str(key))
    return visits, fields


def dataset_test_fields(manifest: Mapping[str, Any], index: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """``{visit: field}`` of the patches in a dataset's ``test`` split (field ``visit:<v>`` if unknown)."""
    entries = manifest.get("visits", {}) or {}
    by_visit = _fields_from_exposures(manifest.get("exposures", []))
    test = sorted({str(row["visit"]) for row in index if row.get("split") == "test"})
    return {v: str((entries.get(v) or {}).get("field") or by_visit.get(v) or f"visit:{v}") for v in test}


def combine_truth_sources(sources: Iterable[str]) -> str:
    """``real``/``simulator`` when every known source agrees, ``mixed`` otherwise (unknowns ignored)."""
    known = {s for s in sources if s in ("real", "simulator", "mixed")}
    if not known:
        return "unknown"
    return known.pop() if len(known) == 1 else "mixed"


def version_provenance(tracking_uri: str, version: RegisteredVersion) -> TrainingProvenance:
    """Resolve a version's training manifest and truth source through its ``crlib.initial`` chain.

    Parameters
    ----------
    tracking_uri
        Tracking/registry URI.
    version
        The registered version (with its tags).

    Returns
    -------
    TrainingProvenance
        Missing or unreadable records become the status and a note (an unreadable manifest makes
        the gate refuse).

    Raises
    ------
    ModelError
        If the registry cannot be reached while following the chain: a registry that fails to
        answer is not a deleted starting version.
    """
    visits: set[str] = set()
    fields: set[str] = set()
    statuses: list[ManifestStatus] = []
    truths: list[str] = []
    manifests: list[str] = []
    notes: list[str] = []
    seen_labels: set[str] = set()
    current: RegisteredVersion | None = version
    while current is not None and current.label not in seen_labels:
        seen_labels.add(current.label)
        who = "" if current is version else f"{current.label}: "
        status, location, manifest, note = _own_manifest(tracking_uri, current)
        statuses.append(status)
        if note:
            notes.append(who + note)
        if manifest is not None:
            manifests.append(location)
            more_visits, more_fields = manifest_seen(manifest)
            visits |= more_visits
            fields |= more_fields
        truths.append(_own_truth_source(current, manifest))
        current, start = _initial_version(tracking_uri, current)
        if start is not None:
            status, truth, note = start
            statuses.append(status)
            truths.append(truth)
            notes.append(f"{who}fine-tuned from {note}")
    worst_first: tuple[ManifestStatus, ...] = ("unreadable", "unknown", "external")
    overall: ManifestStatus = next((p for p in worst_first if p in statuses), "recorded")
    return TrainingProvenance(
        label=version.label,
        status=overall,
        visits=frozenset(visits),
        fields=frozenset(fields),
        truth_source=combine_truth_sources(truths),
        manifests=tuple(manifests),
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class VersionSplits:
    """The split of every visit a version's training chain was given, for the results database.

    Attributes
    ----------
    label
        ``<name>/<version>``.
    status
        The version's own manifest status (``recorded`` or ``external``; unknown and unreadable
        manifests give no :class:`VersionSplits`).
    splits
        ``{visit: split}`` over the chain of ``crlib.initial`` versions: a visit any model of the
        chain saw in ``train`` (or ``validation``) is ``train`` (``validation``) for this version
        even where its own manifest put it in ``test``; empty for external weights.
    dataset_id
        The version's ``crlib.dataset_id`` (joined with its starting versions' with ``+``), or
        ``external`` for weights crlib did not train.
    notes
        Parts of the chain crlib cannot list (external or unknown).
    """

    label: str
    status: ManifestStatus
    splits: dict[str, str]
    dataset_id: str
    notes: tuple[str, ...] = ()


#: Which split a visit counts in when the chain disagrees: having been trained on wins.
_SPLIT_RANK = {"test": 0, "validation": 1, "train": 2}


def version_splits(tracking_uri: str, version: RegisteredVersion) -> VersionSplits | None:
    """What the results database should record as ``version``'s training splits.

    Statistics label each score with the split of its visit for the predicting version
    (``model_version_splits``); a fine-tuned version has seen what the versions it started from
    saw, so the splits are combined over the ``crlib.initial`` chain (seen splits win).

    Parameters
    ----------
    tracking_uri
        Tracking/registry URI.
    version
        The registered version.

    Returns
    -------
    VersionSplits or None
        ``None`` when the version's own manifest is unknown or unreadable (nothing reliable to
        record: its scores stay ``unseen`` and ``crlib stats performance`` says the manifest is
        not recorded). External weights (deepCR's shipped models) give ``dataset_id="external"``
        and no visits.

    Raises
    ------
    ModelError
        If the registry cannot be reached while following the chain.
    """
    splits: dict[str, str] = {}
    datasets: list[str] = []
    notes: list[str] = []
    own: ManifestStatus | None = None
    seen_labels: set[str] = set()
    current: RegisteredVersion | None = version
    while current is not None and current.label not in seen_labels:
        seen_labels.add(current.label)
        status, location, manifest, note = _own_manifest(tracking_uri, current)
        if own is None:
            own = status
            if status in ("unknown", "unreadable"):
                log.warning("%s: %s; its training splits are not recorded", version.label, note)
                return None
        if manifest is None:
            notes.append(f"{current.label}: {note}")
        else:
            datasets.append(current.tags.get("crlib.dataset_id") or location)
            for visit, entry in (manifest.get("visits") or {}).items():
                split = str((entry or {}).get("split"))
                if split in _SPLIT_RANK:
                    held = splits.get(str(visit))
                    if held is None or _SPLIT_RANK[split] > _SPLIT_RANK[held]:
                        splits[str(visit)] = split
        current, start = _initial_version(tracking_uri, current)
        if start is not None:
            notes.append(f"fine-tuned from {start[2]}")
    assert own is not None
    if own == EXTERNAL:
        return VersionSplits(version.label, own, {}, EXTERNAL, tuple(notes))
    dataset_id = "+".join(datasets)
    if len(dataset_id) > 128:
        dataset_id = dataset_id[:120] + f"+{len(datasets)}sets"
    return VersionSplits(version.label, own, splits, dataset_id, tuple(notes))


def leakage_reasons(role: str, provenance: TrainingProvenance, test_fields: Mapping[str, str]) -> list[str]:
    """Why the test split is not held out for one model (empty when it is, as far as recorded).

    Parameters
    ----------
    role
        ``champion`` or ``challenger`` (named in the reasons).
    provenance
        The model's :func:`version_provenance`.
    test_fields
        ``{visit: field}`` of the test split (:func:`dataset_test_fields`).
    """
    reasons = []
    visits = sorted(set(test_fields) & provenance.visits)
    if visits:
        reasons.append(
            f"{role} {provenance.label} was trained on {len(visits)} test visit(s) of this dataset "
            f"({_listed(visits)}; training manifest {', '.join(provenance.manifests) or 'recorded'}): "
            "the test split is not held out for it; score on a dataset whose test split neither model "
            "saw (crlib promote --dataset), or only on the test fields neither saw (--exclude-seen)"
        )
    fields = sorted({f for v, f in test_fields.items() if v not in provenance.visits} & provenance.fields)
    if fields:
        reasons.append(
            f"{role} {provenance.label} was trained on other visits of {len(fields)} test field(s) "
            f"({_listed(fields)}): repeat visits of a field share their sky, so the test split is not "
            "held out for it"
        )
    if provenance.status == "unreadable":
        reasons.append(
            f"{role} {provenance.label}: its training manifest cannot be read "
            f"({'; '.join(provenance.notes)}), so the test split cannot be checked for leakage"
        )
    return reasons


def seen_test_fields(provenance: TrainingProvenance, test_fields: Mapping[str, str]) -> set[str]:
    """Test fields a model saw: a test visit, or another visit of the field, is in its manifest."""
    return {f for v, f in test_fields.items() if v in provenance.visits or f in provenance.fields}


# ----------------------------------------------------------------------------- internals
def _listed(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _fields_from_exposures(exposures: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for exposure in exposures:
        if exposure.get("proposal_id") and exposure.get("target_name"):
            visit = str(exposure["visit"])
            found.setdefault(
                visit,
                field_key(
                    proposal_id=exposure["proposal_id"], target_name=exposure["target_name"], visit=visit
                ),
            )
    return found


def _own_manifest(
    tracking_uri: str, version: RegisteredVersion
) -> tuple[ManifestStatus, str, dict[str, Any] | None, str | None]:
    """``(status, location, manifest, note)`` of one version, not following ``crlib.initial``."""
    tag = version.tags.get(MANIFEST_TAG, "")
    source = version.tags.get("crlib.source", "")
    if tag.startswith(EXTERNAL) or (not tag and source == "deepcr"):
        return "external", "", None, f"training manifest {tag or DEEPCR_EXTERNAL}"
    if not tag and source == "training" and version.run_id:
        tag = f"runs:/{version.run_id}/dataset/manifest.json"
    if not tag:
        return (
            "unknown",
            "",
            None,
            f"no training manifest recorded (registered outside crlib training, tag {MANIFEST_TAG} "
            "absent): its training visits are unknown",
        )
    try:
        import mlflow
        from crlib.registry.tracking import active_tracking

        with active_tracking(tracking_uri):
            manifest = mlflow.artifacts.load_dict(tag)
        if not isinstance(manifest, dict) or "visits" not in manifest:
            raise ValueError("not a crlib dataset manifest")
    except Exception as exc:  # missing artifact, unreachable store, bad JSON: reported, not raised
        log.warning("%s: training manifest %s unreadable: %s", version.label, tag, exc)
        return "unreadable", tag, None, f"training manifest {tag} unreadable ({exc})"
    return "recorded", tag, manifest, None


def _own_truth_source(version: RegisteredVersion, manifest: Mapping[str, Any] | None) -> str:
    tag = version.tags.get(TRUTH_SOURCE_TAG)
    if tag:
        return tag
    if version.tags.get("crlib.source") == "deepcr":
        return "real"
    if manifest is None:
        return "unknown"
    flags = []
    for exposure in manifest.get("exposures", []):
        if "simulated" in exposure:
            flags.append(bool(exposure["simulated"]))
        else:  # manifests before the flag: the simulator's truth files are named _simtruth.fits
            flags.append(str(exposure.get("truth_path", "")).endswith("_simtruth.fits"))
    if not flags:
        return "unknown"
    return "simulator" if all(flags) else ("mixed" if any(flags) else "real")


def _initial_version(
    tracking_uri: str, version: RegisteredVersion
) -> tuple[RegisteredVersion | None, tuple[ManifestStatus, str, str] | None]:
    """The registered version ``version`` was fine-tuned from, or what else it started from.

    Returns
    -------
    (RegisteredVersion or None, (status, truth source, note) or None)
        The second item describes a starting point that is not a registered version (deepCR's
        shipped weights, a deleted version); both are ``None`` for a model trained from scratch.
    """
    initial = version.tags.get(INITIAL_TAG, "")
    match = _LABEL.match(initial)
    if match is not None:
        try:
            return get_version(tracking_uri, match["name"], match["version"]), None
        except ModelNotFoundError as exc:  # a deleted version: what it was trained on cannot be listed
            log.warning("%s: starting version %s not found (%s)", version.label, initial, exc)
            return None, ("unknown", "unknown", f"{initial}, no longer registered: its training is unknown")
    if initial.startswith("deepCR"):
        return None, ("external", "real", f"{initial}, training manifest {DEEPCR_EXTERNAL}")
    return None, None
