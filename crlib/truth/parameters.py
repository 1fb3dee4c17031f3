"""drizzlepac's single-visit (SVM) AstroDrizzle parameter sets, read from the installed package.

drizzlepac ships one JSON file per instrument/detector and exposure-count class under
``drizzlepac/pars/hap_pars/svm_parameters``; its index maps condition names such as
``acs_wfc_any_n2`` to files. SVM processing uses the ``*_n2`` set for 2-5 exposures and the
``*_n6`` set for 6 or more (``drizzlepac.haputils.config_utils``). We load the same files and
flatten their step sections into the keyword arguments ``AstroDrizzle`` accepts.
"""

from __future__ import annotations

import json
import logging
from importlib.resources import files
from pathlib import Path
from typing import Any

from crlib.errors import ConfigError
from crlib.profiles import InstrumentProfile

log = logging.getLogger(__name__)

#: Condition names per profile and exposure class, as drizzlepac's SVM index spells them.
_CONDITIONS: dict[str, dict[str, str]] = {
    "acs_wfc": {"n2": "acs_wfc_any_n2", "n6": "acs_wfc_any_n6"},
    "wfc3_uvis": {"n2": "wfc3_uvis_any_post_n2", "n6": "wfc3_uvis_any_post_n6"},
}

#: GUI-only entries in the JSON files that AstroDrizzle does not accept as keywords.
_NOT_PARAMETERS = frozenset({"_mdriztab_btn_"})


def svm_parameter_dir() -> Path:
    """Directory of drizzlepac's installed single-visit parameter files."""
    return Path(str(files("drizzlepac") / "pars" / "hap_pars" / "svm_parameters"))


def exposure_class(n_exposures: int) -> str:
    """drizzlepac's SVM exposure-count class: ``n2`` for 2-5 exposures, ``n6`` for 6 or more.

    Raises
    ------
    ValueError
        For fewer than two exposures (driz_cr needs at least two overlapping exposures).
    """
    if n_exposures < 2:
        raise ValueError(f"AstroDrizzle CR rejection needs at least 2 exposures, got {n_exposures}")
    return "n2" if n_exposures < 6 else "n6"


def flatten_parameters(nested: dict[str, Any]) -> dict[str, Any]:
    """Flatten drizzlepac's sectioned parameter JSON into AstroDrizzle keyword arguments."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(flatten_parameters(value))
        elif key not in _NOT_PARAMETERS:
            flat[key] = value
    return flat


def load_svm_parameters(profile: InstrumentProfile, n_exposures: int) -> tuple[str, dict[str, Any]]:
    """The SVM AstroDrizzle parameter set drizzlepac would use for this visit.

    Parameters
    ----------
    profile
        Instrument profile (its ``name`` selects the detector's index file).
    n_exposures
        Number of exposures drizzled together.

    Returns
    -------
    tuple
        ``(condition, parameters)``: the condition name (e.g. ``acs_wfc_any_n2``) and the flat
        keyword arguments for ``drizzlepac.astrodrizzle.AstroDrizzle``.

    Raises
    ------
    ConfigError
        When the installed drizzlepac has no parameter set for this profile.
    """
    klass = exposure_class(n_exposures)
    try:
        condition = _CONDITIONS[profile.name][klass]
    except KeyError:
        raise ConfigError(
            f"no drizzlepac SVM parameter set known for profile {profile.name!r} "
            f"(choose one of {sorted(_CONDITIONS)})"
        ) from None
    base = svm_parameter_dir()
    index_path = base / f"{profile.drizzle_parset_prefix}_index.json"
    try:
        index = json.loads(index_path.read_text())
        relative = index["astrodrizzle"][condition]
        nested = json.loads((base / relative).read_text())
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{index_path}: cannot read drizzlepac SVM parameters for {condition!r} ({exc}); "
            "reinstall drizzlepac 3.11"
        ) from None
    log.debug("drizzlepac SVM parameters %s from %s", condition, relative)
    return condition, flatten_parameters(nested)


def parameter_differences(
    first: dict[str, Any], second: dict[str, Any], *, ignore: frozenset[str] = frozenset()
) -> dict[str, tuple[Any, Any]]:
    """Keywords whose values differ between two AstroDrizzle parameter dicts.

    Parameters
    ----------
    first, second
        Keyword dicts, e.g. the ``parameters`` of two :func:`crlib.truth.drizzle.read_run_record`.
    ignore
        Keywords left out of the comparison.

    Returns
    -------
    dict
        ``{keyword: (first value, second value)}``; a keyword missing on one side shows as
        ``None`` there. Empty when the two sets are the same.
    """
    missing = object()
    differences: dict[str, tuple[Any, Any]] = {}
    for key in sorted((set(first) | set(second)) - ignore):
        a, b = first.get(key, missing), second.get(key, missing)
        if a is missing or b is missing or a != b:
            differences[key] = (None if a is missing else a, None if b is missing else b)
    return differences
