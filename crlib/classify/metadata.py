"""Field type from archive metadata: CAOM ``target_classification``, ``target_name``, title, pointing.

Rules over a vocabulary (:mod:`crlib.classify.vocabulary`), never per-observation answers. Each
source gives evidence for a field type (or for :data:`~crlib.classify.vocabulary.OTHER`, a target
that is none of them) with a weight:

==================  ========================================================================
source              evidence
==================  ========================================================================
classification      HST Phase II categories/keywords (``GLOBULAR CLUSTER`` 0.9, ``CLUSTER OF
                    GALAXIES`` 0.9, ``EXT-STAR``/``EXT-CLUSTER`` 0.65, ``PARALLEL`` 0.5, a bare
                    Galactic ``STAR`` 0.3 for *other*, ...); ``GALAXY`` alone decides nothing
                    (a galaxy's distance is in its name, not in its category)
name                Galactic globular clusters (NGC/IC/Messier numbers, Palomar, Terzan, 47 Tuc
                    ...) 0.85; nearby resolved galaxies (M31, NGC 300, IC 1613, LMC ...) 0.75;
                    deep fields and galaxy clusters (HUDF, GOODS, COSMOS, Abell, MACS ...) 0.85
title               proposal title keywords, 0.35 (never decisive alone)
position            pointing inside the optical extent of a large nearby galaxy, 0.75
==================  ========================================================================

Within a source the strongest item per label counts; across sources the evidence combines as
``1 - prod(1 - w)``. The label is the strongest field type when it reaches ``min_confidence``
after discounting the strongest competing label (``c * (1 - competitor / 2)``); it is ``unknown``
when the metadata is missing, weak, contradictory (a competitor at ``conflict`` or more), names a
calibration or solar-system target, describes a target that is none of the three types, or gives
``extragalactic`` at low Galactic latitude (a Milky Way star field, whatever the target).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from crlib.classify import vocabulary as vocab
from crlib.classify.labels import FieldTypeLabel, unknown_label
from crlib.profiles import FIELD_TYPES

log = logging.getLogger(__name__)

#: CAOM column the simulator writes (never present in real MAST rows).
SIMULATOR_COLUMN = "crlib_field_type"

#: ICRS (J2000) to Galactic rotation (rows: Galactic x, y, z axes in equatorial coordinates).
_TO_GALACTIC = (
    (-0.0548755604162154, -0.8734370902348850, -0.4838350155487132),
    (0.4941094278755837, -0.4448296299600112, 0.7469822444972189),
    (-0.8676661490190047, -0.1980763734312015, 0.4559837761750669),
)


@dataclass(frozen=True, slots=True)
class Evidence:
    """One piece of evidence for a label.

    Attributes
    ----------
    source
        ``classification``, ``name``, ``title`` or ``position``.
    label
        A field type or ``other``.
    weight
        Strength in [0, 1].
    text
        What was recognised.
    """

    source: str
    label: str
    weight: float
    text: str


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = str(value).strip()
    return "" if text in {"--", "None", "nan", "null"} else text


def classification_words(classification: str) -> frozenset[str]:
    """Normalised words of a target classification (``;``/``|``/``,``/blank separated, any order).

    ESA's copy of the same field prefixes ``BROAD_CATEGORY=``/``TARGET_DESCRIP=`` and sometimes
    shuffles the words of a phrase; plurals (``GALAXIES``, ``CLUSTERS``) become singular.
    """
    text = _text(classification).upper().replace("BROAD_CATEGORY=", " ").replace("TARGET_DESCRIP=", " ")
    words = (word.strip("-.()") for word in re.split(r"[;|,=\s]+", text))
    return frozenset(vocab.WORD_FORMS.get(word, word) for word in words if word)


def normalise_name(name: str) -> str:
    """Target name in HST form: upper case, blanks and underscores as hyphens."""
    return re.sub(r"[\s_]+", "-", _text(name).upper())


def galactic_latitude(ra_deg: float, dec_deg: float) -> float:
    """Galactic latitude (degrees) of an ICRS position (degrees)."""
    ra, dec = math.radians(ra_deg), math.radians(dec_deg)
    vector = (math.cos(dec) * math.cos(ra), math.cos(dec) * math.sin(ra), math.sin(dec))
    z = sum(a * b for a, b in zip(_TO_GALACTIC[2], vector, strict=True))
    return math.degrees(math.asin(max(-1.0, min(1.0, z))))


def inside_extent(extent: vocab.GalaxyExtent, ra_deg: float, dec_deg: float) -> bool:
    """True when a position lies inside a galaxy's D25 ellipse (tangent-plane approximation)."""
    dec0 = math.radians(extent.dec_deg)
    d_ra = (ra_deg - extent.ra_deg + 180.0) % 360.0 - 180.0
    east = d_ra * math.cos(dec0) * 60.0
    north = (dec_deg - extent.dec_deg) * 60.0
    pa = math.radians(extent.pa_deg)
    major = east * math.sin(pa) + north * math.cos(pa)
    minor = east * math.cos(pa) - north * math.sin(pa)
    a = extent.semi_major_arcmin
    return (major / a) ** 2 + (minor / (a * extent.axis_ratio)) ** 2 <= 1.0


def classification_evidence(classification: str) -> list[Evidence]:
    """Evidence from CAOM ``target_classification`` (see :data:`vocabulary.CLASSIFICATION_RULES`)."""
    words = classification_words(classification)
    return [
        Evidence("classification", rule.label, rule.weight, f"classification says {rule.text}")
        for rule in vocab.CLASSIFICATION_RULES
        if rule.words <= words and not (rule.unless & words)
    ]


def name_evidence(name: str) -> list[Evidence]:
    """Evidence from ``target_name``: catalogue numbers and the name rules of the vocabulary."""
    upper = normalise_name(name)
    found: list[Evidence] = []
    match = vocab.CATALOGUE_NAME.match(upper)
    if match:
        catalogue, number = match.group("cat"), int(match.group("num"))
        catalogue = "M" if catalogue == "MESSIER" else catalogue
        clusters = {"NGC": vocab.GC_NGC, "IC": vocab.GC_IC, "M": vocab.GC_MESSIER}[catalogue]
        galaxies = {"NGC": vocab.NEARBY_NGC, "IC": vocab.NEARBY_IC, "M": vocab.NEARBY_MESSIER}[catalogue]
        if number in clusters:
            found.append(
                Evidence("name", "globular_cluster", 0.85, f"{upper} is a Galactic globular cluster")
            )
        elif number in galaxies:
            found.append(Evidence("name", "resolved_galaxy", 0.75, f"{upper} is in a nearby galaxy"))
    for rule in vocab.NAME_RULES:
        if rule.pattern.search(upper):
            found.append(Evidence("name", rule.label, rule.weight, f"{upper} is {rule.text}"))
    return found


def title_evidence(title: str) -> list[Evidence]:
    """Weak evidence from the proposal title (CAOM ``obs_title``)."""
    upper = _text(title).upper()
    return [
        Evidence("title", rule.label, rule.weight, rule.text)
        for rule in vocab.TITLE_RULES
        if rule.pattern.search(upper)
    ]


def position_evidence(ra_deg: float | None, dec_deg: float | None) -> list[Evidence]:
    """Evidence from the pointing: inside the optical extent of a large nearby galaxy."""
    if ra_deg is None or dec_deg is None or not (math.isfinite(ra_deg) and math.isfinite(dec_deg)):
        return []
    return [
        Evidence("position", "resolved_galaxy", 0.75, f"pointing is inside the optical disk of {extent.name}")
        for extent in vocab.NEARBY_GALAXY_EXTENTS
        if inside_extent(extent, ra_deg, dec_deg)
    ][:1]


def _combine(evidence: list[Evidence]) -> dict[str, tuple[float, list[Evidence]]]:
    """Per label: ``1 - prod(1 - w)`` over sources of each source's strongest item, and the items."""
    strongest: dict[tuple[str, str], Evidence] = {}
    for item in evidence:
        key = (item.label, item.source)
        if key not in strongest or item.weight > strongest[key].weight:
            strongest[key] = item
    combined: dict[str, tuple[float, list[Evidence]]] = {}
    for (label, _), item in strongest.items():
        miss, items = combined.get(label, (1.0, []))
        combined[label] = (miss * (1.0 - item.weight), [*items, item])
    return {label: (1.0 - miss, items) for label, (miss, items) in combined.items()}


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def classify_metadata(
    *,
    target_classification: str | None = None,
    target_name: str | None = None,
    obs_title: str | None = None,
    ra_deg: float | None = None,
    dec_deg: float | None = None,
    min_confidence: float = 0.6,
    conflict: float = 0.5,
) -> FieldTypeLabel:
    """Field type of an observation from its archive metadata, or ``unknown``.

    Parameters
    ----------
    target_classification
        CAOM ``target_classification``, e.g. ``STAR CLUSTERS;GLOBULAR CLUSTERS``.
    target_name
        CAOM ``target_name``, e.g. ``NGC104``.
    obs_title
        CAOM ``obs_title`` (proposal title): weak evidence only.
    ra_deg, dec_deg
        Pointing (CAOM ``s_ra``/``s_dec``), degrees.
    min_confidence
        Smallest confidence that gives a label.
    conflict
        A competing label this strong makes the metadata contradictory (``unknown``).

    Returns
    -------
    FieldTypeLabel
        Method ``metadata`` or ``unknown``; the reasons list the evidence used.
    """
    classification, name = _text(target_classification), _text(target_name)
    words = classification_words(classification)
    for word, what in vocab.NOT_A_FIELD_WORDS.items():
        if word in words:
            return unknown_label(f"metadata: {what} ({classification})")
    upper_name = normalise_name(name)
    if upper_name and vocab.CALIBRATION_NAME.match(upper_name):
        return unknown_label(f"metadata: a calibration target ({upper_name})")
    evidence = [
        *classification_evidence(classification),
        *name_evidence(name),
        *title_evidence(_text(obs_title)),
        *position_evidence(ra_deg, dec_deg),
    ]
    shown = f"classification={classification or '-'!r}, name={name or '-'!r}"
    if not evidence:
        if vocab.GALAXY_WORD in words:
            return unknown_label(f"metadata: a galaxy of unknown distance ({shown})")
        return unknown_label(f"metadata: nothing recognised ({shown})")
    scores = _combine(evidence)
    ranked = sorted(scores.items(), key=lambda item: item[1][0], reverse=True)
    (best, (score, items)), rivals = ranked[0], ranked[1:]
    rival = rivals[0][1][0] if rivals else 0.0
    ordered = sorted(items, key=lambda item: -item.weight)
    reasons = tuple(f"metadata: {item.text} ({item.weight:.2f})" for item in ordered)
    if best == vocab.OTHER:
        return unknown_label(f"metadata: not one of the field types: {items[0].text} ({shown})")
    if rival >= conflict:
        against = "; ".join(f"{label} {value:.2f} ({items_[0].text})" for label, (value, items_) in rivals)
        return unknown_label(f"metadata: contradictory: {best} {score:.2f} vs {against}", *reasons)
    confidence = score * (1.0 - rival / 2.0)
    if best == "extragalactic":
        low = _low_latitude(name, _text(obs_title), ra_deg, dec_deg)
        if low:
            why = f"metadata: extragalactic evidence but {low}: a Milky Way star field"
            return unknown_label(why, *reasons)
    if confidence < min_confidence:
        why = f"metadata: weak evidence for {best} ({confidence:.2f} < {min_confidence})"
        return unknown_label(why, *reasons)
    return FieldTypeLabel(best, "metadata", round(min(confidence, 1.0), 3), reasons)


def _low_latitude(name: str, title: str, ra_deg: float | None, dec_deg: float | None) -> str:
    """Why the field is at low Galactic latitude, or ``""``."""
    if ra_deg is not None and dec_deg is not None and math.isfinite(ra_deg) and math.isfinite(dec_deg):
        latitude = galactic_latitude(ra_deg, dec_deg)
        if abs(latitude) < vocab.LOW_LATITUDE_DEG:
            return f"Galactic latitude b = {latitude:+.1f} deg"
    if vocab.LOW_LATITUDE_NAME.match(normalise_name(name)):
        return f"the target name {normalise_name(name)} says low latitude"
    if vocab.LOW_LATITUDE_TITLE.search(title.upper()):
        return "the proposal title says low Galactic latitude"
    return ""


def classify_caom_row(
    row: Mapping[str, Any],
    *,
    use_simulator_column: bool = True,
    min_confidence: float = 0.6,
) -> FieldTypeLabel:
    """Field type of one CAOM observation row.

    The simulator's own column (:data:`SIMULATOR_COLUMN`) is the truth for simulated archives and
    wins when present and valid (method ``simulator``); real MAST rows never have it. Otherwise the
    metadata rules decide (method ``metadata``) or the label is ``unknown``.

    Parameters
    ----------
    row
        CAOM observation row (``target_classification``, ``target_name``, ``obs_title``,
        ``s_ra``, ``s_dec``; optionally ``crlib_field_type``).
    use_simulator_column
        Take the simulator's column when present.
    min_confidence
        See :func:`classify_metadata`.

    Returns
    -------
    FieldTypeLabel
    """
    label = classify_metadata(
        target_classification=row.get("target_classification"),
        target_name=row.get("target_name"),
        obs_title=row.get("obs_title"),
        ra_deg=_float(row.get("s_ra")),
        dec_deg=_float(row.get("s_dec")),
        min_confidence=min_confidence,
    )
    simulated = _text(row.get(SIMULATOR_COLUMN))
    if not (use_simulator_column and simulated):
        return label
    if simulated not in FIELD_TYPES:
        log.warning("ignoring %s=%r (not one of %s)", SIMULATOR_COLUMN, simulated, ", ".join(FIELD_TYPES))
        return label
    note = f"metadata rules say {label.describe()}"
    if label.known and label.field_type != simulated:
        log.warning("%s: simulator says %s but %s", row.get("obs_id"), simulated, note)
    return FieldTypeLabel(simulated, "simulator", 1.0, (f"simulator column {SIMULATOR_COLUMN}", note))
