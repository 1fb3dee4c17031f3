"""The ground-truth product ``<rootname>_crtruth.fits``: CRMASK and VALID per chip, with provenance.

Layout: an empty primary HDU whose header records how the mask was made (method, status, reasons,
parameter set, sky method, alignment, software versions), then for every chip an ``CRMASK``
(uint8, 1 = CR) and a ``VALID`` (uint8, 1 = usable pixel) image with ``EXTVER`` equal to the
chip's SCI extver.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crlib.records import TruthResult

if TYPE_CHECKING:
    from crlib.truth.outcome import ChipMasks

log = logging.getLogger(__name__)


def _header_value(value: Any) -> Any:
    if isinstance(value, bool | int | float) or value is None:
        return value
    text = _ascii(str(value))
    return text if len(text) <= 68 else text[:65] + "..."


def _ascii(text: str) -> str:
    """FITS cards are ASCII only: a non-ASCII character (a unit, a file name) must not lose the file."""
    return text.encode("ascii", "replace").decode("ascii")


def write_truth_product(
    path: Path,
    *,
    rootname: str,
    masks: Mapping[int, tuple[np.ndarray, np.ndarray]],
    provenance: Mapping[str, Any],
    reasons: tuple[str, ...] = (),
) -> Path:
    """Write ``<rootname>_crtruth.fits``.

    Parameters
    ----------
    path
        Output file.
    rootname
        Exposure id.
    masks
        ``{sci_extver: (crmask, valid)}``, each uint8 (ny, nx), 1 = CR / 1 = valid.
    provenance
        Header keywords (<= 8 characters) and values for the primary header.
    reasons
        Quality-gate reasons, written as ``COMMENT`` cards.

    Returns
    -------
    Path
        ``path``.
    """
    from astropy.io import fits

    primary = fits.PrimaryHDU()
    primary.header["ROOTNAME"] = rootname
    primary.header["FILETYPE"] = ("CRTRUTH", "crlib ground-truth cosmic-ray mask")
    for key, value in provenance.items():
        primary.header[key[:8].upper()] = _header_value(value)
    for reason in reasons:
        primary.header.add_comment(_ascii(reason))
    hdus: list[Any] = [primary]
    for extver in sorted(masks):
        crmask, valid = masks[extver]
        for name, data, comment in (
            ("CRMASK", crmask, "1 = cosmic ray"),
            ("VALID", valid, "1 = valid pixel"),
        ):
            hdu = fits.ImageHDU(np.asarray(data, dtype=np.uint8), name=name, ver=extver)
            hdu.header["MASKDEF"] = comment
            hdus.append(hdu)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def write_exposure_truth(
    record: TruthResult, chips: Sequence[ChipMasks], *, header: Mapping[str, Any], out_dir: Path
) -> TruthResult:
    """Write ``<out_dir>/<rootname>_crtruth.fits`` of a truth record's exposure.

    Parameters
    ----------
    record
        The exposure's truth record: rootname, method, status, reasons (written as ``COMMENT``
        cards) and parameters.
    chips
        The exposure's chips, each written as its CRMASK and VALID images.
    header
        Primary-header keywords of the product (<= 8 characters).
    out_dir
        Directory of the product.

    Returns
    -------
    TruthResult
        ``record`` with the product's path and the chips' counts.
    """
    path = write_truth_product(
        out_dir / f"{record.rootname}_crtruth.fits",
        rootname=record.rootname,
        masks={c.quality.chip: (c.crmask, c.valid) for c in chips},
        provenance=header,
        reasons=record.reasons,
    )
    return replace(record, path=str(path), chips=tuple(c.truth for c in chips))


def read_truth_product(path: Path) -> tuple[dict[str, Any], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Read a ``*_crtruth.fits`` file: ``(primary header as dict, {extver: (crmask, valid)})``."""
    from astropy.io import fits

    masks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    with fits.open(path, memmap=False) as hdul:
        header = {k: v for k, v in hdul[0].header.items() if k not in ("COMMENT", "HISTORY", "")}
        for hdu in hdul[1:]:
            if hdu.name == "CRMASK":
                extver = int(hdu.ver)
                masks[extver] = (np.asarray(hdu.data), np.asarray(hdul["VALID", extver].data))
    return header, masks
