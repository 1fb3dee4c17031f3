"""Is the gate's test split really held out, and may the challenger be scored for promotion at all?

Before :func:`crlib.registry.promotion.promote` scores anything it checks both models' training
provenance (:mod:`crlib.registry.provenance`) against the dataset's test split:

* a test visit, or another visit of a test field (proposal, target), in either model's training
  manifest is a leak: the gate refuses to score, or with ``exclude_seen`` moves those test patches
  to the split :data:`EXCLUDED_SPLIT` and scores the remaining fields (noted);
* test patches cut under other scoring rules than the instrument profile's are refused the same way;
* a challenger trained on simulator data (``crlib.truth_source`` ``simulator`` or ``mixed``) is
  refused unless ``allow_simulated`` (noted);
* training the gate could not check (``external`` or ``unknown`` manifests) is said in the notes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from crlib.profiles import ScoringRules
from crlib.registry.provenance import (
    TrainingProvenance,
    leakage_reasons,
    seen_test_fields,
    version_provenance,
)
from crlib.registry.versions import RegisteredVersion
from crlib.training.patches import PatchDataset

#: Truth sources of a challenger trained (partly) on simulator data.
SIMULATED_SOURCES = ("simulator", "mixed")

#: Split name given to test patches of fields a model saw, when the gate is told to exclude them.
EXCLUDED_SPLIT = "test-excluded-seen"


@dataclass(frozen=True)
class HeldOutCheck:
    """What the gate found before scoring.

    Attributes
    ----------
    dataset, test_fields
        The dataset and its test visits -> fields to score (without excluded fields, if any).
    refusals
        Why the test split cannot be scored (leaks, other scoring rules); empty: score it.
    simulated
        Why the challenger cannot be promoted for its simulator training (empty when allowed).
    notes
        What could not be checked or was allowed (not reasons to refuse).
    provenance
        ``{"champion": ..., "challenger": ...}`` training provenance, plus
        ``excluded_test_visits`` when fields were excluded.
    """

    dataset: PatchDataset
    test_fields: dict[str, str]
    refusals: list[str]
    simulated: list[str]
    notes: list[str]
    provenance: dict[str, Any]


def check_held_out(
    tracking_uri: str,
    *,
    model_name: str,
    champion: RegisteredVersion,
    challenger: RegisteredVersion,
    dataset: PatchDataset,
    test_fields: dict[str, str],
    cut_under: ScoringRules,
    rules: ScoringRules,
    allow_simulated: bool,
    exclude_seen: bool,
) -> HeldOutCheck:
    """Check the test split against both models' training and the profile's scoring rules.

    Parameters
    ----------
    tracking_uri
        Tracking/registry URI (the versions' provenance tags and manifests).
    model_name
        Registered model, e.g. ``deepcr-acs-wfc``.
    champion, challenger
        The two versions the gate compares.
    dataset, test_fields
        Patch dataset and its test visits -> field (:func:`~crlib.registry.provenance.dataset_test_fields`).
    cut_under, rules
        The scoring rules the dataset was cut under, and the instrument profile's.
    allow_simulated
        Let a challenger trained on simulator data through (said in the notes).
    exclude_seen
        Exclude the test fields a model saw instead of refusing (when every manifest is readable).

    Returns
    -------
    HeldOutCheck
    """
    held_by = {"champion": champion, "challenger": challenger}
    provenances = {role: version_provenance(tracking_uri, v) for role, v in held_by.items()}
    provenance: dict[str, Any] = {role: p.to_json() for role, p in provenances.items()}
    notes = provenance_notes(provenances)
    leaks = [r for role, p in provenances.items() for r in leakage_reasons(role, p, test_fields)]
    simulated = truth_source_reasons(
        provenances["challenger"], model_name, allow_simulated=allow_simulated, notes=notes
    )
    if leaks and exclude_seen and all(p.status != "unreadable" for p in provenances.values()):
        dataset, test_fields = exclude_seen_fields(dataset, test_fields, provenances, leaks, notes)
        provenance["excluded_test_visits"] = sorted(
            {str(r["visit"]) for r in dataset.index if r["split"] == EXCLUDED_SPLIT}
        )
        leaks = []
    if cut_under != rules:
        leaks.append(
            f"the test patches of dataset {dataset.dataset_id} were cut under {cut_under.describe()}, "
            f"but {model_name} is scored under its instrument profile's rules ({rules.describe()}), "
            "as pipeline scoring and training count pixels: rebuild the dataset under the profile's "
            "rules (crlib train without --border)"
        )
    return HeldOutCheck(dataset, test_fields, leaks, simulated, notes, provenance)


def exclude_seen_fields(
    dataset: PatchDataset,
    test_fields: dict[str, str],
    provenances: dict[str, TrainingProvenance],
    leaks: list[str],
    notes: list[str],
) -> tuple[PatchDataset, dict[str, str]]:
    """The dataset without the test fields either model saw (``--exclude-seen``), noted in ``notes``."""
    seen = set().union(*(seen_test_fields(p, test_fields) for p in provenances.values()))
    dropped = {v for v, f in test_fields.items() if f in seen}
    notes.append(
        f"--exclude-seen: {len(dropped)} test visit(s) of {len(seen)} field(s) a model trained on are "
        f"not scored ({', '.join(sorted(seen)[:8])}{' ...' if len(seen) > 8 else ''}): " + "; ".join(leaks)
    )
    index = [
        row | {"split": EXCLUDED_SPLIT} if row.get("split") == "test" and row["visit"] in dropped else row
        for row in dataset.index
    ]
    remaining = {v: f for v, f in test_fields.items() if v not in dropped}
    return replace(dataset, index=index), remaining


def provenance_notes(provenances: dict[str, TrainingProvenance]) -> list[str]:
    """Say plainly which training the test split could not be checked against."""
    notes = []
    for role, p in provenances.items():
        if p.status in ("external", "unknown"):
            checked = (
                f"the test visits were checked against its {len(p.manifests)} recorded training "
                "manifest(s) only"
                if p.manifests
                else "the test visits could not be checked against its training"
            )
            notes.append(f"{role} {p.label}: {'; '.join(p.notes)}; {checked}")
        if p.truth_source == "unknown" and role == "challenger":
            notes.append(f"{role} {p.label}: truth source not recorded (tag crlib.truth_source absent)")
    return notes


def truth_source_reasons(
    challenger: TrainingProvenance, model_name: str, *, allow_simulated: bool, notes: list[str]
) -> list[str]:
    """Refuse a challenger trained on simulator data unless allowed (then say so in ``notes``)."""
    if challenger.truth_source not in SIMULATED_SOURCES:
        return []
    what = (
        f"challenger {challenger.label} was trained on simulator data "
        f"(crlib.truth_source={challenger.truth_source})"
    )
    if allow_simulated:
        notes.append(f"{what}; allowed by --allow-simulated")
        return []
    return [
        f"{what}: it cannot become champion of the real-data model {model_name} "
        "without an explicit override (crlib promote --allow-simulated)"
    ]
