"""Screening: file structure, a cheap pixel check, drizzlepac single-visit rules, calibration state.

Rules are data (:mod:`crlib.screening.rules`); :mod:`crlib.screening.datacheck` judges sampled SCI
pixels for damage (arrays only); :mod:`crlib.screening.screen` reads each file (headers, the
pixel sample), returns
:class:`~crlib.records.ScreeningVerdict` records; :mod:`crlib.screening.batch` keeps one file per
rootname and groups the verdicts into drizzle sets. :func:`is_damage` tells a damaged file
(``file.*``/``data.*`` rejects: the operator must fix it) from an ordinary science-rule rejection.
"""

from __future__ import annotations

from crlib.screening.batch import (
    DAMAGE_RULE_PREFIXES,
    DUPLICATE_RULE,
    ScreeningSet,
    group_verdicts,
    is_damage,
    is_damaged,
    is_duplicate,
    reject_duplicates,
    screen_files,
)
from crlib.screening.datacheck import ChipStats, chip_stats, judge_chip
from crlib.screening.rules import (
    SCREENING_PROFILES,
    HeaderRule,
    ScreeningProfile,
    get_screening_profile,
)
from crlib.screening.screen import check_data, read_snapshot, science_filter, screen_file

__all__ = [
    "DAMAGE_RULE_PREFIXES",
    "DUPLICATE_RULE",
    "SCREENING_PROFILES",
    "ChipStats",
    "HeaderRule",
    "ScreeningProfile",
    "ScreeningSet",
    "check_data",
    "chip_stats",
    "get_screening_profile",
    "group_verdicts",
    "is_damage",
    "is_damaged",
    "is_duplicate",
    "judge_chip",
    "read_snapshot",
    "reject_duplicates",
    "science_filter",
    "screen_file",
    "screen_files",
]
