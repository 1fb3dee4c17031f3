"""The typed state a run keeps per visit and per exposure (what the run ledger stores).

Every key a stage hands to a later one is a declared field here: :class:`VisitState` (written by
fetch, screen and truth) and :class:`ExposureState` (written by infer and score). Both are frozen
dataclasses; a stage changes them through :meth:`RunLedger.update_visit
<crlib.pipeline.ledger.RunLedger.update_visit>` / ``update_exposure`` with keyword arguments typed
by :class:`VisitChanges` / :class:`ExposureChanges`, so a misspelt key is a type error (mypy) and,
at run time, an immediate :class:`TypeError`.

On disk each state is one JSON object (:meth:`VisitState.to_json` / :meth:`VisitState.from_json`,
the only (de)serialisation path). Keys missing from a file (written before a stage ran, or by an
older crlib that wrote only the keys a stage set) read as the field's default; unknown keys are
dropped with a warning.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

log = logging.getLogger(__name__)

_State = TypeVar("_State", "VisitState", "ExposureState")


@dataclass(frozen=True)
class VisitState:
    """What the run knows about one visit, stage by stage."""

    visit: str
    """Visit id (``ipppss``)."""

    # ----------------------------------------------------------------- fetch
    files: dict[str, str] = field(default_factory=dict)
    """``{rootname: path}`` of the downloaded (or kept) calibrated products."""
    checksums: dict[str, str] = field(default_factory=dict)
    """``{rootname: md5}`` the download verified against the archive's listing."""
    fetch_failed: dict[str, str | None] = field(default_factory=dict)
    """``{rootname: reason}`` of the downloads that failed."""
    fetch_retries: int = 0
    """How many download attempts were retried."""
    fetch_reused: list[str] = field(default_factory=list)
    """Rootnames whose file was already there with the archive's size and checksum (not downloaded)."""

    # ----------------------------------------------------------------- screen
    accepted: list[str] | None = None
    """Rootnames screening accepted, sorted; ``None`` until the visit reached screening."""
    rejected: dict[str, list[str]] = field(default_factory=dict)
    """``{rootname: [reject reasons]}`` of the rejected exposures (damaged files included)."""
    quarantined: dict[str, str] = field(default_factory=dict)
    """``{rootname: one-line reason}`` of the damaged files (rules ``file.*``, ``data.*``)."""
    notes: dict[str, list[str]] = field(default_factory=dict)
    """``{rootname: [non-rejecting notes]}`` of accepted exposures with screening notes."""
    training_usable: list[str] = field(default_factory=list)
    """Rootnames screening found usable for training, sorted."""
    truth_sets: list[list[str]] = field(default_factory=list)
    """The groups of accepted exposures that get truth together (one alignment and drizzle each)."""
    no_truth_notes: list[str] = field(default_factory=list)
    """Why groups of accepted exposures get no truth."""
    image_field_type: dict[str, Any] | None = None
    """The field type read from the pixels for exposures the metadata left unlabelled
    (:func:`crlib.pipeline.field_types.ledger_entry`), ``None`` when none needed it."""
    screen_reused: bool = False
    """Whether the recorded verdicts of an earlier run were reused."""

    # ----------------------------------------------------------------- truth
    truth: dict[str, str] = field(default_factory=dict)
    """``{rootname: path}`` of the usable truth products (status not ``failed``)."""
    truth_status: dict[str, str] = field(default_factory=dict)
    """``{rootname: status}`` of every exposure the truth stage handled (``ok``, ``suspect``, ``failed``)."""
    truth_reused: list[str] = field(default_factory=list)
    """Rootnames whose truth was reused from an earlier run rather than made by this one, sorted."""

    @property
    def screened(self) -> bool:
        """Whether the visit reached screening (its verdicts are recorded)."""
        return self.accepted is not None

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON object (what the ledger writes)."""
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, visit: str | None = None) -> VisitState:
        """A state from its JSON object; ``visit`` fills the id when the object has none."""
        return _from_json(cls, data, key="visit", value=visit)


@dataclass(frozen=True)
class ExposureState:
    """What the run knows about one accepted exposure, stage by stage."""

    rootname: str
    """Exposure rootname (its first six characters are the visit id)."""

    # ----------------------------------------------------------------- infer
    prediction: str | None = None
    """Path of the ``_crpred.fits`` product; ``None`` when there is no prediction."""
    prediction_error: str | None = None
    """Why there is no prediction (one line), ``None`` when there is one or none was tried."""
    model: str | None = None
    """``name:version`` of the model that predicted."""
    model_source: str | None = None
    """Where the model came from (``mlflow``, ``shipped`` ...)."""
    model_fallback: str | None = None
    """Why shipped weights were used instead of a registered model, ``None`` when they were not."""
    reused_prediction: bool = False
    """Whether an earlier prediction file by the same model version was reused."""
    seconds: float | None = None
    """Seconds the prediction took."""

    # ----------------------------------------------------------------- score
    scored: bool | None = None
    """Whether the exposure was scored; ``None`` until the score stage ran."""
    score_note: str | None = None
    """Why it was not scored (``no prediction``, ``no truth``, the error)."""
    score_failed: bool = False
    """Whether scoring failed on the exposure's files (a failure of the run, unlike a missing truth)."""
    tpr_at_fpr: dict[str, float] | None = None
    """The exposure's TPR at the reference false-positive rates (as recorded with its metrics)."""
    field_type: str | None = None
    """The field type the metrics were recorded under."""
    score_reused: bool = False
    """Whether the metrics recorded by an earlier run were reused."""
    scored_model: str | None = None
    """``name:version`` of the model the metrics are for (from the prediction file)."""
    score_truth_status: str | None = None
    """The truth status recorded with the metrics (``ok``, ``suspect``; ``None`` otherwise)."""

    def to_json(self) -> dict[str, Any]:
        """The state as a JSON object (what the ledger writes)."""
        return _to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, rootname: str | None = None) -> ExposureState:
        """A state from its JSON object; ``rootname`` fills the id when the object has none."""
        return _from_json(cls, data, key="rootname", value=rootname)


class VisitChanges(TypedDict, total=False):
    """Keyword arguments of :meth:`RunLedger.update_visit`: any :class:`VisitState` field but ``visit``."""

    files: dict[str, str]
    checksums: dict[str, str]
    fetch_failed: dict[str, str | None]
    fetch_retries: int
    fetch_reused: list[str]
    accepted: list[str] | None
    rejected: dict[str, list[str]]
    quarantined: dict[str, str]
    notes: dict[str, list[str]]
    training_usable: list[str]
    truth_sets: list[list[str]]
    no_truth_notes: list[str]
    image_field_type: dict[str, Any] | None
    screen_reused: bool
    truth: dict[str, str]
    truth_status: dict[str, str]
    truth_reused: list[str]


class ExposureChanges(TypedDict, total=False):
    """Keyword arguments of :meth:`RunLedger.update_exposure`: any ExposureState field but ``rootname``."""

    prediction: str | None
    prediction_error: str | None
    model: str | None
    model_source: str | None
    model_fallback: str | None
    reused_prediction: bool
    seconds: float | None
    scored: bool | None
    score_note: str | None
    score_failed: bool
    tpr_at_fpr: dict[str, float] | None
    field_type: str | None
    score_reused: bool
    scored_model: str | None
    score_truth_status: str | None


def apply(state: _State, changes: VisitChanges | ExposureChanges) -> _State:
    """``state`` with ``changes``; an unknown or identifying key raises :class:`TypeError` at once.

    Parameters
    ----------
    state
        A :class:`VisitState` or :class:`ExposureState`.
    changes
        Field values to set.

    Returns
    -------
    VisitState or ExposureState
        A new state (the old one is unchanged).

    Raises
    ------
    TypeError
        A key that is not a field of the state, or its id (``visit``, ``rootname``).
    """
    names = _field_names(type(state))
    identity = names[0]
    unknown = sorted(k for k in changes if k not in names or k == identity)
    if unknown:
        raise TypeError(f"{type(state).__name__} has no field(s) to update named {', '.join(unknown)}")
    return dataclasses.replace(state, **changes)


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _to_json(state: VisitState | ExposureState) -> dict[str, Any]:
    return {name: _plain(getattr(state, name)) for name in _field_names(type(state))}


def _plain(value: Any) -> Any:
    """A JSON-ready copy (the state's lists and dicts are not shared with the written object)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _from_json(cls: type[_State], data: dict[str, Any], *, key: str, value: str | None) -> _State:
    names = set(_field_names(cls))
    unknown = sorted(set(data) - names)
    if unknown:
        log.warning("%s: ignoring unknown key(s) %s", cls.__name__, ", ".join(unknown))
    fields = {name: data[name] for name in names if name in data and data[name] is not None}
    if value is not None:
        fields[key] = value
    if key not in fields:
        raise ValueError(f"{cls.__name__} needs {key!r}: {data!r}")
    return cls(**fields)
