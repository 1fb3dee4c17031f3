"""Header screening: drizzlepac single-visit rules, calibration state, profile match, training rules.

Rules are data (:mod:`crlib.screening.rules`); :mod:`crlib.screening.screen` reads headers and
returns :class:`~crlib.records.ScreeningVerdict` records, and groups them into drizzle sets.
"""

from __future__ import annotations

from crlib.screening.rules import (
    SCREENING_PROFILES,
    HeaderRule,
    ScreeningProfile,
    get_screening_profile,
)
from crlib.screening.screen import (
    ScreeningSet,
    group_verdicts,
    read_snapshot,
    science_filter,
    screen_file,
    screen_files,
)

__all__ = [
    "SCREENING_PROFILES",
    "HeaderRule",
    "ScreeningProfile",
    "ScreeningSet",
    "get_screening_profile",
    "group_verdicts",
    "read_snapshot",
    "science_filter",
    "screen_file",
    "screen_files",
]
