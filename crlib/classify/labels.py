"""The field-type label every classifier returns, and how labels from several methods combine.

A label is one of :data:`crlib.profiles.FIELD_TYPES` or ``"unknown"``, together with the method that
produced it (``simulator``, ``metadata``, ``image`` or ``unknown``), a confidence in [0, 1] and the
reasons, so a stored label can always be traced to its evidence. No classifier guesses: when the
evidence is missing, weak or contradictory, the label is ``unknown`` and the reasons say why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

from crlib.profiles import FIELD_TYPES

log = logging.getLogger(__name__)

#: The label of an exposure no classifier could place.
UNKNOWN = "unknown"

#: Where a label came from (stored beside the label as ``field_type_method``).
FieldTypeMethod = Literal["simulator", "metadata", "image", "unknown"]
METHODS: tuple[str, ...] = ("simulator", "metadata", "image", "unknown")


@dataclass(frozen=True, slots=True)
class FieldTypeLabel:
    """A field type and the evidence for it.

    Attributes
    ----------
    field_type
        One of :data:`crlib.profiles.FIELD_TYPES`, or ``"unknown"``.
    method
        ``simulator`` (the simulator's own column), ``metadata`` (target classification and name
        rules), ``image`` (pixel statistics) or ``unknown`` (no method could decide).
    confidence
        Strength of the evidence in [0, 1]; 0 for ``unknown``.
    reasons
        Human-readable evidence, first the decisive item.
    """

    field_type: str
    method: FieldTypeMethod
    confidence: float = 0.0
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.field_type not in (*FIELD_TYPES, UNKNOWN):
            raise ValueError(f"field type {self.field_type!r} is not one of {(*FIELD_TYPES, UNKNOWN)}")
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} is not one of {METHODS}")
        if (self.field_type == UNKNOWN) != (self.method == "unknown"):
            raise ValueError("an unknown field type goes with method 'unknown' and only with it")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence} is outside [0, 1]")

    @property
    def known(self) -> bool:
        """True when the label is one of the paper's field types."""
        return self.field_type != UNKNOWN

    @property
    def column_value(self) -> str | None:
        """The value for ``Observation.field_type`` / ``exposures.field_type``: ``None`` if unknown."""
        return self.field_type if self.known else None

    def describe(self) -> str:
        """One line: ``label (method, confidence): first reason``."""
        first = self.reasons[0] if self.reasons else "no evidence"
        return f"{self.field_type} ({self.method}, {self.confidence:.2f}): {first}"


def unknown_label(*reasons: str) -> FieldTypeLabel:
    """The ``unknown`` label with its reasons."""
    return FieldTypeLabel(UNKNOWN, "unknown", 0.0, tuple(reasons))


def choose_label(*labels: FieldTypeLabel) -> FieldTypeLabel:
    """The first known label in priority order, noting any disagreement with the later ones.

    Pass labels in priority order, e.g. ``choose_label(simulator, metadata, image)``. A later known
    label that disagrees does not override the chosen one, but the disagreement is logged and added
    to the chosen label's reasons (so it is stored, never silent). When no label is known the result
    is ``unknown`` with every method's reasons.

    Parameters
    ----------
    *labels
        Labels in priority order.

    Returns
    -------
    FieldTypeLabel
    """
    known = [label for label in labels if label.known]
    if not known:
        reasons = tuple(reason for label in labels for reason in label.reasons)
        return unknown_label(*reasons) if reasons else unknown_label("no classifier was run")
    chosen = known[0]
    disagree = [label for label in known[1:] if label.field_type != chosen.field_type]
    if not disagree:
        return chosen
    notes = tuple(f"{label.method} says {label.field_type} ({label.confidence:.2f})" for label in disagree)
    log.warning("field type %s by %s disagrees with %s", chosen.field_type, chosen.method, "; ".join(notes))
    return replace(chosen, reasons=(*chosen.reasons, *(f"disagreement: {note}" for note in notes)))
