"""A fixed train/validation/test split by visit, stratified by field type and filter.

Patches of one visit never land in two splits (exposures of a visit share their sky, so a split by
patch would leak). Assignments are *persistent*: a visit keeps its split forever (stored in a JSON
file beside the datasets), so the held-out test set stays held out as the archive grows and no
champion is ever scored on visits it was trained on. A new visit joins the split of its stratum
(field type, filter) that is furthest below its target fraction; ties go to test, then
validation, then train, and new visits are taken in a seeded hash order.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from crlib.errors import ConfigError, InputDataError
from crlib.training.sources import TrainingExposure

log = logging.getLogger(__name__)

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")
_TIE_ORDER: tuple[SplitName, ...] = ("test", "validation", "train")


@dataclass(frozen=True, slots=True)
class SplitFractions:
    """Target fractions of visits per split in each stratum (they must sum to 1)."""

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


def stratum_of(exposures: Iterable[TrainingExposure]) -> str:
    """Stratum key of a visit: ``<field type>/<filters joined by +>``."""
    exposures = list(exposures)
    field_types = sorted({e.field_type for e in exposures})
    filters = sorted({e.filter for e in exposures})
    return f"{'+'.join(field_types)}/{'+'.join(filters)}"


def assign_splits(
    exposures: Iterable[TrainingExposure],
    *,
    existing: dict[str, dict[str, str]] | None = None,
    fractions: SplitFractions | None = None,
    seed: int = 0,
) -> dict[str, dict[str, str]]:
    """Assign every visit of ``exposures`` to a split, keeping existing assignments.

    Parameters
    ----------
    exposures
        Training exposures (grouped here by ``visit``).
    existing
        Earlier assignments ``{visit: {"split": ..., "stratum": ...}}`` (never changed).
    fractions
        Target fraction per split within each stratum.
    seed
        Seeds the order in which new visits are placed.

    Returns
    -------
    dict
        ``{visit: {"split": "train"|"validation"|"test", "stratum": "<field>/<filter>"}}`` for
        every known visit (existing ones included).
    """
    fractions = fractions or SplitFractions()
    assigned: dict[str, dict[str, str]] = {k: dict(v) for k, v in (existing or {}).items()}
    by_visit: dict[str, list[TrainingExposure]] = {}
    for exposure in exposures:
        by_visit.setdefault(exposure.visit, []).append(exposure)
    new_visits = sorted(
        (v for v in by_visit if v not in assigned),
        key=lambda v: hashlib.sha256(f"{seed}:{v}".encode()).hexdigest(),
    )
    for visit in new_visits:
        stratum = stratum_of(by_visit[visit])
        counts = {s: 0 for s in SPLITS}
        for other in assigned.values():
            if other["stratum"] == stratum:
                counts[other["split"]] += 1  # type: ignore[index]
        total = sum(counts.values()) + 1
        deficits = {s: fractions.of(s) * total - counts[s] for s in _TIE_ORDER if fractions.of(s) > 0}
        best = max(deficits.values())
        split = next(s for s in _TIE_ORDER if s in deficits and deficits[s] >= best - 1e-9)
        assigned[visit] = {"split": split, "stratum": stratum}
    return assigned


def load_split_file(path: Path) -> dict[str, dict[str, str]]:
    """Read persisted assignments (empty when the file does not exist yet).

    Raises
    ------
    InputDataError
        If the file exists but is not a split file.
    """
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        visits = data["visits"]
        if not all(v.get("split") in SPLITS for v in visits.values()):
            raise ValueError("unknown split name")
        return {str(k): {"split": str(v["split"]), "stratum": str(v["stratum"])} for k, v in visits.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputDataError(
            path, f"not a crlib split file ({exc})", fix="restore it from backup; never edit it"
        ) from None


def save_split_file(path: Path, assignments: dict[str, dict[str, str]]) -> None:
    """Write assignments atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"schema": "crlib-visit-splits/1", "visits": assignments}, indent=1, sort_keys=True)
    )
    tmp.replace(path)
