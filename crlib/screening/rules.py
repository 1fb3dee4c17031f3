"""Header screening rules as data, grouped into per-instrument rule sets.

Each :class:`HeaderRule` names the keyword(s) it reads, where they live (primary or SCI header),
the test, what happens when it fires (reject, warning, info, or "not for training"), and a reason
text. The single-visit-mosaic rules follow drizzlepac 3.11's ``haputils/analyze.py``
(``analyze_data``): OBSTYPE not IMAGING, DRIZCORR OMIT/SKIPPED, MTFLAG = T, SCAN_TYP C/D (WFC3),
calibration target names (substrings DARK, TUNG, BIAS, FLAT, DEUT, EARTH-CAL), EXPTIME ~ 0
(``abs_tol=1e-5``), FGSLOCK containing GY or COARSE (a *warning*, the image is still processed),
CHINJECT not NONE (WFC3/UVIS) and a filter name starting with BLOCK. crlib adds calibration-state
rules, the instrument/detector match, units, the WCS alignment state and deepCR's training rule
(EXPTIME >= 100 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from crlib.profiles import ACS_WFC, WFC3_UVIS, InstrumentProfile

Effect = Literal["reject", "warning", "info", "not_for_training"]
Location = Literal["primary", "sci"]


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """One screening rule.

    Attributes
    ----------
    id
        Stable identifier stored with every verdict (e.g. ``svm.obstype``).
    keyword
        Header keyword read (``FILTERS`` is the profile's filter keywords joined by ``_``).
    location
        ``primary`` or ``sci`` (the first SCI extension's header).
    test
        Name of the predicate in :data:`TESTS`; the rule *fires* when it returns a message.
    params
        Parameters of the test (values, thresholds).
    effect
        What firing means: ``reject`` the exposure, record a ``warning`` or ``info``, or mark it
        ``not_for_training`` (it is still inferred and scored).
    reason
        Explanation stored with the verdict; ``{value}`` is replaced by the keyword's value.
    required
        If the keyword is missing: ``True`` rejects the file naming the missing keyword; ``False``
        skips the rule (keywords some products do not carry, e.g. MTFLAG in old FLTs) unless
        ``default`` is given, which is then tested in its place.
    default
        Value tested when an optional keyword is missing (``None``: skip the rule).
    source
        Where the rule comes from.
    """

    id: str
    keyword: str
    location: Location
    test: str
    reason: str
    effect: Effect = "reject"
    params: Mapping[str, Any] = field(default_factory=dict)
    required: bool = True
    default: Any = None
    source: str = "drizzlepac 3.11 haputils/analyze.py"


def _text(value: Any) -> str:
    return str(value).strip().upper()


def _test_not_in(value: Any, params: Mapping[str, Any]) -> bool:
    return _text(value) not in params["allowed"]


def _test_in(value: Any, params: Mapping[str, Any]) -> bool:
    return _text(value) in params["values"]


def _test_contains_any(value: Any, params: Mapping[str, Any]) -> bool:
    text = _text(value)
    return any(part in text for part in params["parts"])


def _test_item_startswith(value: Any, params: Mapping[str, Any]) -> bool:
    return any(item.startswith(tuple(params["prefixes"])) for item in _text(value).split("_") if item)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("boolean is not a number")
    return float(value)


def _test_near_zero(value: Any, params: Mapping[str, Any]) -> bool:
    return math.isclose(_number(value), 0.0, abs_tol=params.get("abs_tol", 1e-5))


def _test_below(value: Any, params: Mapping[str, Any]) -> bool:
    return _number(value) < params["minimum"]


def _test_unaligned_wcs(value: Any, params: Mapping[str, Any]) -> bool:
    text = _text(value)
    return not any(marker in text for marker in (*params["a_posteriori"], *params["a_priori"]))


def _test_aligned_wcs(value: Any, params: Mapping[str, Any]) -> bool:
    text = _text(value)
    return any(marker in text for marker in params["markers"])


#: Predicates by name: ``test(value, params) -> fires``. They may raise ValueError/TypeError for a
#: value of the wrong type, which the screener reports as a bad keyword value.
TESTS: dict[str, Callable[[Any, Mapping[str, Any]], bool]] = {
    "not_in": _test_not_in,
    "in": _test_in,
    "contains_any": _test_contains_any,
    "item_startswith": _test_item_startswith,
    "near_zero": _test_near_zero,
    "below": _test_below,
    "unaligned_wcs": _test_unaligned_wcs,
    "aligned_wcs": _test_aligned_wcs,
}

_WCS_POSTERIORI = ("-FIT",)
_WCS_PRIORI = ("-HSC30", "-GSC240")

#: Rules every HST imaging profile shares (drizzlepac's DEFAULT keyword set, then crlib's).
COMMON_RULES: tuple[HeaderRule, ...] = (
    HeaderRule(
        "svm.obstype",
        "OBSTYPE",
        "primary",
        "not_in",
        params={"allowed": ("IMAGING",)},
        reason="OBSTYPE={value}: not an imaging exposure; single-visit mosaics use imaging only",
    ),
    HeaderRule(
        "svm.drizcorr",
        "DRIZCORR",
        "primary",
        "in",
        params={"values": ("OMIT", "SKIPPED")},
        reason="DRIZCORR={value}: drizzling was turned off for this exposure",
    ),
    HeaderRule(
        "svm.mtflag",
        "MTFLAG",
        "primary",
        "in",
        params={"values": ("T",)},
        required=False,
        reason="MTFLAG={value}: moving-target observation; stars do not stay fixed between exposures",
    ),
    HeaderRule(
        "svm.targname",
        "TARGNAME",
        "primary",
        "contains_any",
        params={"parts": ("DARK", "TUNG", "BIAS", "FLAT", "DEUT", "EARTH-CAL")},
        reason="TARGNAME={value}: calibration target (dark/tungsten/bias/flat/deuterium/earth-calib)",
    ),
    HeaderRule(
        "svm.exptime",
        "EXPTIME",
        "primary",
        "near_zero",
        params={"abs_tol": 1e-5},
        reason="EXPTIME={value}: zero exposure time",
    ),
    HeaderRule(
        "svm.fgslock",
        "FGSLOCK",
        "primary",
        "contains_any",
        params={"parts": ("GY", "COARSE")},
        effect="warning",
        required=False,
        reason="FGSLOCK={value}: gyro or coarse guiding; stars may drift within the exposure",
    ),
    HeaderRule(
        "svm.filter_block",
        "FILTERS",
        "primary",
        "item_startswith",
        params={"prefixes": ("BLOCK",)},
        reason="filter {value}: a BLOCK filter (internal calibration) blocks the light path",
    ),
    HeaderRule(
        "calib.flatcorr",
        "FLATCORR",
        "primary",
        "not_in",
        params={"allowed": ("COMPLETE",)},
        source="crlib",
        reason="FLATCORR={value}: not flat-fielded; needs a calibrated FLC/FLT",
    ),
    HeaderRule(
        "calib.drizcorr",
        "DRIZCORR",
        "primary",
        "not_in",
        params={"allowed": ("COMPLETE", "OMIT", "SKIPPED")},
        effect="warning",
        source="crlib",
        reason="DRIZCORR={value}: the pipeline did not drizzle this exposure",
    ),
    HeaderRule(
        "calib.bunit",
        "BUNIT",
        "sci",
        "not_in",
        params={"allowed": ("ELECTRONS",)},
        source="crlib",
        reason=(
            "BUNIT={value}: science array is not in electrons (AstroDrizzle would treat it as a rate): "
            "use the calibrated FLC/FLT as MAST delivers it"
        ),
    ),
    HeaderRule(
        "align.wcs_unaligned",
        "WCSNAME",
        "sci",
        "unaligned_wcs",
        params={"a_posteriori": _WCS_POSTERIORI, "a_priori": _WCS_PRIORI},
        effect="warning",
        required=False,
        default="(missing)",
        source="crlib",
        reason="WCSNAME={value}: no a priori or a posteriori alignment to Gaia",
    ),
    HeaderRule(
        "align.wcs_a_posteriori",
        "WCSNAME",
        "sci",
        "aligned_wcs",
        params={"markers": _WCS_POSTERIORI},
        effect="info",
        required=False,
        source="crlib",
        reason="WCSNAME={value}: a posteriori alignment (-FIT)",
    ),
    HeaderRule(
        "align.wcs_a_priori",
        "WCSNAME",
        "sci",
        "aligned_wcs",
        params={"markers": _WCS_PRIORI},
        effect="info",
        required=False,
        source="crlib",
        reason="WCSNAME={value}: a priori alignment (-HSC30/-GSC240)",
    ),
    HeaderRule(
        "train.exptime",
        "EXPTIME",
        "primary",
        "below",
        params={"minimum": 100.0},
        effect="not_for_training",
        source="deepCR-ACS/WFC paper (training rule)",
        reason="EXPTIME={value} s < 100 s: excluded from training/evaluation (still inferred)",
    ),
)

#: drizzlepac applies these to WFC3 only (SCAN_TYP) and WFC3/UVIS only (CHINJECT).
WFC3_UVIS_RULES: tuple[HeaderRule, ...] = (
    HeaderRule(
        "svm.scan_typ",
        "SCAN_TYP",
        "primary",
        "in",
        params={"values": ("C", "D")},
        required=False,
        reason="SCAN_TYP={value}: spatial scan (boustrophedon) exposure",
    ),
    HeaderRule(
        "svm.chinject",
        "CHINJECT",
        "primary",
        "not_in",
        params={"allowed": ("NONE",)},
        reason="CHINJECT={value}: charge-injection exposure",
    ),
)


@dataclass(frozen=True, slots=True)
class ScreeningProfile:
    """Screening configuration of one instrument profile.

    Attributes
    ----------
    instrument
        The instrument profile exposures must match (INSTRUME/DETECTOR).
    filter_keywords
        Primary keywords holding filter names, joined with ``_`` like drizzlepac does.
    rules
        Rules evaluated in order.
    min_exposures_for_truth
        Accepted exposures a (visit, detector, filter) set needs for drizzle ground truth.
    """

    instrument: InstrumentProfile
    filter_keywords: tuple[str, ...]
    rules: tuple[HeaderRule, ...]
    min_exposures_for_truth: int = 2

    @property
    def name(self) -> str:
        """Profile key (``acs_wfc`` ...)."""
        return self.instrument.name


SCREENING_PROFILES: dict[str, ScreeningProfile] = {
    "acs_wfc": ScreeningProfile(ACS_WFC, ("FILTER1", "FILTER2"), COMMON_RULES),
    "wfc3_uvis": ScreeningProfile(WFC3_UVIS, ("FILTER",), COMMON_RULES + WFC3_UVIS_RULES),
}


def get_screening_profile(name: str) -> ScreeningProfile:
    """Screening profile by instrument profile name (``acs_wfc``, ``ACS/WFC``, ``wfc3_uvis``)."""
    key = name.lower().replace("/", "_")
    try:
        return SCREENING_PROFILES[key]
    except KeyError:
        raise KeyError(f"no screening profile {name!r}; known: {sorted(SCREENING_PROFILES)}") from None
