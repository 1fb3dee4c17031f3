"""Deterministic train/validation/test splits by *field*: a hash of (proposal, target).

Patches of one visit never land in two splits (exposures of a visit share their sky, so a split by
patch would leak), and neither do the visits of one field: repeat visits of a target within a
proposal share their sky too. Every visit is therefore keyed by its **field**
(:func:`field_key`: the proposal id and the normalised target name) and the field's split is a
pure function of that key, so any data root, a lost split file or a re-run reproduces the same
split, and a field keeps its split as the archive grows:

1. ``u = sha256("crlib-visit-split/1|<field key>")`` read as a number in ``[0, 1)``.
2. ``u < test`` -> test, ``u < test + validation`` -> validation, else train (the configured
   fractions, ``CRLIB_TRAIN_TEST_FRACTION`` / ``CRLIB_TRAIN_VALIDATION_FRACTION``). Over many
   fields each stratum (field type, filters) gets its fractions up to binomial noise
   (``sqrt(n f (1 - f))`` fields); the training seed plays no part, so models trained with
   different seeds share one test set.
3. Small strata: a stratum without a field below the test threshold holds out its field of
   smallest ``u`` for test (when the test fraction is above 0), *even a stratum of one field*; a
   stratum of at least 3 fields without a validation field moves its train field of smallest
   ``u`` to validation. So every stratum has test data, and as the archive grows **no field
   ever moves from train or validation into test**: the held-out field of a stratum changes only
   to a newly added field of smaller ``u`` (the old one returns to train) or, once a field falls
   below the threshold, the rule stops applying (the held-out field returns to train). Moving
   out of test never leaks into the gate. (Holding out a stratum's first field, rather than
   waiting for a second, is what makes this hold: choosing between two fields later could move
   a field a model already trained on into test.) Small strata therefore hold out more than the
   test fraction; the fractions hold from a few tens of fields on. A field removed from the
   data can change a stratum's smallest ``u``; the gate's manifest check
   (:mod:`crlib.registry.provenance`) refuses to score on a test field a model trained on.
4. Tiny datasets: when no field at all is left for training (a handful of fields that all hashed
   below the thresholds), the field of largest ``u`` among strata that keep another test field
   trains. This is the one rule that can later move a field back into test (when the dataset
   grows a training field of its own); the gate's manifest check catches it.

A field's *stratum* is the union of its visits' field types and filters (``<types>/<filters>``).
Exposures without a proposal id or target name (old records) are keyed by their visit alone.
The split file ``splits.json`` beside the datasets is a record of the last assignment, no longer
the source of truth: a visit whose recorded split differs is logged and follows the hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from crlib.errors import ConfigError
from crlib.training.sources import TrainingExposure

log = logging.getLogger(__name__)

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")
#: Salt of the split hash; changing it re-splits every field (never do that silently).
SPLIT_SALT = "crlib-visit-split/1"
SPLIT_FILE_SCHEMA = "crlib-visit-splits/2"
_KNOWN_SCHEMAS = ("crlib-visit-splits/1", SPLIT_FILE_SCHEMA)
_NOT_ALNUM = re.compile(r"[^A-Z0-9]+")


@dataclass(frozen=True, slots=True)
class SplitFractions:
    """Target fractions of fields per split in each stratum (they must sum to 1)."""

    train: float = 0.7
    validation: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        values = (self.train, self.validation, self.test)
        if min(values) < 0 or abs(sum(values) - 1.0) > 1e-6:
            raise ConfigError(f"split fractions {values} must be >= 0 and sum to 1")

    def of(self, split: SplitName) -> float:
        """Target fraction of ``split``."""
        return float(getattr(self, split))


def normalise_target(name: str) -> str:
    """Upper case, letters and digits only: ``"ngc 104"``, ``"NGC-104"`` -> ``"NGC104"``."""
    return _NOT_ALNUM.sub("", str(name).upper())


def normalise_proposal(proposal_id: object) -> str:
    """A proposal id as digits without leading zeros (``"09442"`` -> ``"9442"``); other text as is."""
    text = str(proposal_id or "").strip()
    return str(int(text)) if text.isdigit() else text.upper()


def field_key(*, proposal_id: object, target_name: str, visit: str) -> str:
    """The key a visit is split by: ``"<proposal>:<target>"``, or ``"visit:<visit>"`` if either is unknown."""
    proposal = normalise_proposal(proposal_id)
    target = normalise_target(target_name)
    if proposal and target:
        return f"{proposal}:{target}"
    return f"visit:{visit.lower()}"


def exposure_field(exposure: TrainingExposure) -> str:
    """:func:`field_key` of an exposure."""
    return field_key(proposal_id=exposure.proposal_id, target_name=exposure.target_name, visit=exposure.visit)


def field_position(key: str) -> float:
    """Where a field key falls in ``[0, 1)``: the first 64 bits of ``sha256(SPLIT_SALT|key)``."""
    digest = hashlib.sha256(f"{SPLIT_SALT}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def natural_split(position: float, fractions: SplitFractions) -> SplitName:
    """The split of a field at ``position`` before the small-stratum minimums."""
    if position < fractions.test:
        return "test"
    if position < fractions.test + fractions.validation:
        return "validation"
    return "train"


def stratum_of(exposures: Iterable[TrainingExposure]) -> str:
    """Stratum key of a visit or field: ``<field types joined by +>/<filters joined by +>``."""
    exposures = list(exposures)
    field_types = sorted({e.field_type for e in exposures})
    filters = sorted({e.filter for e in exposures})
    return f"{'+'.join(field_types)}/{'+'.join(filters)}"


def assign_fields(
    strata: Mapping[str, str], *, fractions: SplitFractions | None = None
) -> dict[str, SplitName]:
    """Split of every field from its key and stratum (steps 2 and 3 of the module docstring).

    Parameters
    ----------
    strata
        ``{field key: stratum}``.
    fractions
        Target fraction per split.

    Returns
    -------
    dict
        ``{field key: split}``.
    """
    fractions = fractions or SplitFractions()
    position = {key: field_position(key) for key in strata}
    split: dict[str, SplitName] = {key: natural_split(position[key], fractions) for key in strata}
    members: dict[str, list[str]] = {}
    for key, stratum in strata.items():
        members.setdefault(stratum, []).append(key)
    for keys in members.values():
        keys.sort(key=lambda k: (position[k], k))
        if fractions.test > 0 and not any(split[k] == "test" for k in keys):
            split[keys[0]] = "test"
        train = [k for k in keys if split[k] == "train"]
        if (
            fractions.validation > 0
            and len(keys) >= 3
            and len(train) >= 2
            and not any(split[k] == "validation" for k in keys)
        ):
            split[train[0]] = "validation"
    if fractions.train > 0 and "train" not in split.values():
        tests = {stratum: [k for k in keys if split[k] == "test"] for stratum, keys in members.items()}
        spare = [k for keys in tests.values() if len(keys) >= 2 for k in keys]
        if spare:
            split[max(spare, key=lambda k: (position[k], k))] = "train"
    return split


def assign_splits(
    exposures: Iterable[TrainingExposure],
    *,
    existing: Mapping[str, Mapping[str, str]] | None = None,
    fractions: SplitFractions | None = None,
    seed: int = 0,
) -> dict[str, dict[str, str]]:
    """Assign every visit of ``exposures`` to the split of its field.

    Parameters
    ----------
    exposures
        Training exposures (grouped here by field and visit).
    existing
        Assignments read from an older split file: no longer followed; a visit whose recorded
        split differs is logged (kept for backwards compatibility of the call).
    fractions
        Target fraction per split within each stratum.
    seed
        Ignored: the split must not depend on the training seed (kept for compatibility).

    Returns
    -------
    dict
        ``{visit: {"split": ..., "stratum": "<field types>/<filters>", "field": "<proposal>:<target>"}}``
        for every visit of ``exposures``; ``stratum`` is the field's.
    """
    del seed
    by_field: dict[str, list[TrainingExposure]] = {}
    visit_field: dict[str, str] = {}
    for exposure in exposures:
        key = exposure_field(exposure)
        previous = visit_field.setdefault(exposure.visit, key)
        if previous != key:
            log.warning(
                "visit %s has exposures of fields %s and %s; splitting it with %s",
                exposure.visit,
                previous,
                key,
                previous,
            )
            key = previous
        by_field.setdefault(key, []).append(exposure)
    strata = {key: stratum_of(members) for key, members in by_field.items()}
    split = assign_fields(strata, fractions=fractions)
    assigned = {
        visit: {"split": split[key], "stratum": strata[key], "field": key}
        for visit, key in sorted(visit_field.items())
    }
    recorded = existing or {}
    moved = sorted(
        visit
        for visit, entry in recorded.items()
        if visit in assigned and entry.get("split") != assigned[visit]["split"]
    )
    if moved:
        log.warning(
            "%d visit(s) move from the split recorded in the old split file to their field's hashed "
            "split (the file is no longer the source of truth): %s",
            len(moved),
            ", ".join(f"{v} {recorded[v].get('split')}->{assigned[v]['split']}" for v in moved[:20])
            + (" ..." if len(moved) > 20 else ""),
        )
    return assigned


def split_counts(assignments: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, int]]:
    """Fields per split in each stratum: ``{stratum: {"train": n, "validation": n, "test": n}}``."""
    fields: dict[str, tuple[str, str]] = {}
    for visit, entry in assignments.items():
        fields[entry.get("field", f"visit:{visit}")] = (entry["stratum"], entry["split"])
    counts: dict[str, dict[str, int]] = {}
    for stratum, split in fields.values():
        counts.setdefault(stratum, {s: 0 for s in SPLITS})[split] += 1
    return counts


def load_split_file(path: Path) -> dict[str, dict[str, str]]:
    """Read a recorded assignment (empty when missing or unreadable: it is only a record)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("schema", _KNOWN_SCHEMAS[0]) not in _KNOWN_SCHEMAS:
            raise ValueError(f"schema {data.get('schema')!r}")
        visits = data["visits"]
        return {str(k): {str(a): str(b) for a, b in v.items()} for k, v in visits.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s: not a crlib split file (%s); ignored (splits come from field hashes)", path, exc)
        return {}


def save_split_file(path: Path, assignments: Mapping[str, Mapping[str, str]]) -> None:
    """Write the assignment atomically, as a record (splits are recomputed from field hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "schema": SPLIT_FILE_SCHEMA,
                "rule": f"sha256('{SPLIT_SALT}|<proposal>:<target>') per field; see crlib.training.splits",
                "visits": {k: dict(v) for k, v in assignments.items()},
            },
            indent=1,
            sort_keys=True,
        )
    )
    tmp.replace(path)
