"""Check the image classifier on simulated visits of every field type: confusion tables.

:func:`evaluate_simulated` writes simulated archives (:func:`crlib.simulate.simulate_archive`,
``field_type="mixed"``) for several seeds, classifies every exposure and every visit (median of its
exposures' features) from the pixels alone, and counts true vs predicted field types. The numbers
in ``docs/field_types.md`` come from it::

    from crlib.bench.classifier import evaluate_simulated
    result = evaluate_simulated(Path("/tmp/ft"), seeds=range(1, 9), size="small")
    print(result.per_exposure.as_markdown())

``effects=SimEffects.realistic()`` simulates with every archive effect (real PSFs, CTE, hot pixels,
prior-drizzle DQ, satellites, roll/scale errors) for the realistic tables.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crlib.classify.features import ImageFeatures, combine_features, measure_features
from crlib.classify.files import read_chips
from crlib.classify.image import DEFAULT_THRESHOLDS, ImageThresholds, decide
from crlib.classify.labels import UNKNOWN
from crlib.profiles import FIELD_TYPES

if TYPE_CHECKING:
    from crlib.simulate.effects import SimEffects

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Confusion:
    """Counts of (true, predicted) field types; predicted may be ``unknown``."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Confusion:
        """Count ``(true, predicted)`` pairs."""
        return cls(Counter(pairs))

    @property
    def total(self) -> int:
        """Number of items."""
        return sum(self.counts.values())

    @property
    def correct(self) -> int:
        """Items predicted as their true type."""
        return sum(n for (true, predicted), n in self.counts.items() if true == predicted)

    @property
    def unknown(self) -> int:
        """Items predicted ``unknown``."""
        return sum(n for (_, predicted), n in self.counts.items() if predicted == UNKNOWN)

    @property
    def wrong(self) -> int:
        """Items predicted as another field type (a confident mistake)."""
        return self.total - self.correct - self.unknown

    def as_markdown(self) -> str:
        """The table, rows = true type, columns = predicted type, with totals."""
        columns = (*FIELD_TYPES, UNKNOWN)
        lines = [
            "| true \\ predicted | " + " | ".join(columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for true in FIELD_TYPES:
            cells = " | ".join(str(self.counts.get((true, predicted), 0)) for predicted in columns)
            lines.append(f"| {true} | {cells} |")
        share = 100.0 * self.correct / self.total if self.total else 0.0
        summary = f"{self.correct}/{self.total} correct ({share:.1f}%)"
        lines.append(f"\n{summary}, {self.unknown} unknown, {self.wrong} wrong")
        return "\n".join(lines)


@dataclass(frozen=True)
class SimulatedCheck:
    """Outcome of :func:`evaluate_simulated`.

    Attributes
    ----------
    per_exposure, per_visit
        Confusion tables for single exposures and for visits (median features).
    rows
        One dict per exposure: seed, visit, rootname, true and predicted type, features.
    """

    per_exposure: Confusion
    per_visit: Confusion
    rows: list[dict[str, Any]]


def _effects_tag(effects: SimEffects) -> str:
    """A short directory tag for a set of simulator effects (stable for equal settings)."""
    import hashlib

    digest = hashlib.sha1(json.dumps(effects.as_dict(), sort_keys=True, default=str).encode()).hexdigest()
    return f"effects{digest[:8]}"


def classify_simulated_visit(
    visit_dir: Path, *, thresholds: ImageThresholds = DEFAULT_THRESHOLDS
) -> tuple[str, list[tuple[str, str, ImageFeatures]], str]:
    """True type, per-exposure ``(rootname, predicted, features)`` and the visit's prediction."""
    info = json.loads((visit_dir / "truth" / "visit.json").read_text())
    per_exposure: list[tuple[str, str, ImageFeatures]] = []
    for exposure in info["exposures"]:
        science, flags = read_chips(visit_dir / f"{exposure['rootname']}_flc.fits")
        features = measure_features(science, dq=flags)
        per_exposure.append(
            (exposure["rootname"], decide(features, thresholds=thresholds).field_type, features)
        )
    visit_label = decide(combine_features([f for _, _, f in per_exposure]), thresholds=thresholds)
    return str(info["field_type"]), per_exposure, visit_label.field_type


def evaluate_simulated(
    root: Path,
    *,
    seeds: Sequence[int],
    size: Literal["full", "small"] = "small",
    visits: int = 3,
    exposures: int = 2,
    filters: Sequence[str] = ("F435W", "F606W", "F814W"),
    exptime_s: float | None = None,
    thresholds: ImageThresholds = DEFAULT_THRESHOLDS,
    effects: SimEffects | None = None,
) -> SimulatedCheck:
    """Simulate mixed-field archives (one per seed under ``root``) and classify them from pixels.

    Parameters
    ----------
    root
        Scratch directory (an archive per seed is written below it; existing ones are reused).
    seeds
        Simulator seeds.
    size
        ``"small"`` (2 x 1024x512 crops) or ``"full"`` (2 x 4096x2048 chips).
    visits, exposures
        Visits per seed (``mixed`` cycles globular cluster, extragalactic, resolved galaxy) and
        exposures per visit.
    filters
        Filters, cycled over visits.
    exptime_s
        Exposure time, seconds (default: the simulator's typical values per field type).
    thresholds
        Decision limits.
    effects
        The simulator's archive effects (default: the simulator's, every effect on); archives simulated with
        effects go to ``root/<size>-effects<hash of the settings>-seed<seed>``, so archives of
        different settings never mix.

    Returns
    -------
    SimulatedCheck
    """
    from crlib.simulate import simulate_archive

    rows: list[dict[str, Any]] = []
    visit_pairs: list[tuple[str, str]] = []
    for seed in seeds:
        archive_dir = Path(root) / (
            f"{size}-{_effects_tag(effects)}-seed{seed}" if effects else f"{size}-seed{seed}"
        )
        if not (archive_dir / "observations.json").exists():
            simulate_archive(
                archive_dir,
                visits=visits,
                exposures=exposures,
                field_type="mixed",
                filters=tuple(filters),
                size=size,
                seed=seed,
                exptime_s=exptime_s,
                effects=effects,
            )
        for visit_json in sorted(archive_dir.glob("*/truth/visit.json")):
            true, exposures_found, visit_prediction = classify_simulated_visit(
                visit_json.parent.parent, thresholds=thresholds
            )
            visit_pairs.append((true, visit_prediction))
            for rootname, predicted, features in exposures_found:
                rows.append(
                    {
                        "seed": seed,
                        "visit": visit_json.parent.parent.name,
                        "rootname": rootname,
                        "true": true,
                        "predicted": predicted,
                        "features": features.as_dict(),
                    }
                )
            log.info("seed %d %s: %s -> %s", seed, visit_json.parent.parent.name, true, visit_prediction)
    exposure_pairs = ((row["true"], row["predicted"]) for row in rows)
    return SimulatedCheck(Confusion.of(exposure_pairs), Confusion.of(visit_pairs), rows)
