"""Python and numpy values as JSON-compatible data, with one declared rule for NaN and infinities.

Two rules exist because the values mean different things: in a descriptive payload (a header
summary, a rule's value, parameters) a ``NaN`` is information and is kept as the string ``"nan"``;
in a measurement report a non-finite number is "not measured" and becomes ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

__all__ = ["json_compatible"]


def json_compatible(value: Any, *, non_finite: Literal["null", "string"]) -> Any:
    """``value`` as data :func:`json.dumps` accepts with ``allow_nan=False``.

    Parameters
    ----------
    value
        Nested mappings, sequences, sets, numpy arrays and scalars, bytes, and plain scalars.
        Mapping keys become strings; anything else unknown becomes ``str(value)``.
    non_finite
        ``"null"``: NaN and infinities become ``None`` (measurements: not measured).
        ``"string"``: they become ``"nan"``, ``"inf"``, ``"-inf"`` (descriptive payloads).
    """
    if isinstance(value, Mapping):
        return {str(k): json_compatible(v, non_finite=non_finite) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_compatible(v, non_finite=non_finite) for v in value]
    if isinstance(value, np.ndarray):
        return [json_compatible(v, non_finite=non_finite) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if non_finite == "null" else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
