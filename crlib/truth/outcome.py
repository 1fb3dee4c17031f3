"""Per-exposure truth outcomes shared by the drizzle and multi-frame methods.

Once a method has a chip's CR and valid masks, both run the same steps on them: keep artefacts out
(:func:`without_artefacts`), measure the chip for the quality gates (:func:`chip_quality`), and sum
the chips' artefact counts into the record and the product header (:func:`artefact_entries`). A
visit that cannot be processed ends with :func:`failed_all`, one ``failed`` record per exposure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from crlib.formats.exposures import ExposureInfo
from crlib.profiles import InstrumentProfile
from crlib.records import ChipTruth, TruthResult
from crlib.truth.artefacts import HEADER_KEYS, exclude_artefacts, find_satellite_trails, sum_counts
from crlib.truth.quality import ChipQuality, count_events, failed_truth


@dataclass(frozen=True, slots=True)
class ChipMasks:
    """One chip's truth: its masks, the gates' measurements, the artefacts kept out of the masks.

    Attributes
    ----------
    crmask, valid
        CR mask and valid mask, ``uint8`` (ny, nx), 1 = cosmic ray / valid pixel.
    quality
        The chip's numbers for :func:`~crlib.truth.quality.assess`.
    artefacts
        :func:`without_artefacts` counts (``None`` when artefacts were not excluded).
    """

    crmask: np.ndarray
    valid: np.ndarray
    quality: ChipQuality
    artefacts: dict[str, int] | None = None

    @property
    def truth(self) -> ChipTruth:
        """The chip's entry in the :class:`~crlib.records.TruthResult`."""
        q = self.quality
        return ChipTruth(q.chip, q.cr_pixels, q.cr_events, q.valid_pixels / q.total_pixels)


def failed_all(
    infos: Iterable[ExposureInfo], method: str, reason: str, **parameters: Any
) -> list[TruthResult]:
    """A ``failed`` record with the same reason (and parameters) for every exposure, in order."""
    return [failed_truth(info.rootname, method, reason, **parameters) for info in infos]


def without_artefacts(
    flagged: np.ndarray, valid: np.ndarray, *, hot: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Keep satellite trails and (given) hot pixels out of a chip's CR and valid masks.

    Parameters
    ----------
    flagged, valid
        The chip's CR mask and valid mask, (ny, nx), nonzero = flagged / valid.
    hot
        Recurrent hot pixels of the chip, bool (ny, nx), or ``None``.

    Returns
    -------
    tuple
        CR mask and valid mask, ``uint8`` (ny, nx), and the
        :func:`~crlib.truth.artefacts.exclude_artefacts` counts with ``satellite_trails``, the
        number of trails found among the valid flagged pixels.
    """
    band, trails = find_satellite_trails(flagged.astype(bool) & valid.astype(bool))
    flagged_u8, valid_u8, counts = exclude_artefacts(flagged, valid, hot=hot, satellite_band=band)
    return flagged_u8, valid_u8, {**counts, "satellite_trails": len(trails)}


def chip_quality(
    extver: int,
    flagged: np.ndarray,
    valid: np.ndarray,
    core: np.ndarray,
    *,
    exptime_s: float,
    profile: InstrumentProfile,
) -> ChipQuality:
    """The quality-gate numbers of one chip.

    Parameters
    ----------
    extver
        SCI extension version of the chip.
    flagged, valid, core
        CR mask, valid mask and star-core mask, bool (ny, nx).
    exptime_s
        Exposure time, seconds.
    profile
        Instrument profile (pixel area, cm^2).

    Returns
    -------
    ChipQuality
        CR pixels and events among the valid pixels, valid and total pixel counts, star-core pixels
        and the flagged ones among them.
    """
    cr_valid = flagged & valid
    return ChipQuality(
        chip=extver,
        cr_pixels=int(cr_valid.sum()),
        cr_events=count_events(cr_valid),
        valid_pixels=int(valid.sum()),
        total_pixels=int(valid.size),
        exptime_s=exptime_s,
        pixel_area_cm2=profile.pixel_area_cm2,
        star_core_pixels=int(core.sum()),
        star_core_flagged=int((core & flagged).sum()),
    )


def artefact_entries(counts: Sequence[dict[str, int]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chips' artefact counts summed: ``artefact_<count>`` record parameters, header keywords."""
    totals = sum_counts(counts)
    parameters = {f"artefact_{key}": value for key, value in totals.items()}
    header = {HEADER_KEYS[key]: value for key, value in totals.items() if key in HEADER_KEYS}
    return parameters, header
