"""Damaged exposures planted in a simulated archive: the poison pills ingestion must survive.

Each damage class is what an operator meets in a real archive or a mirror: a chip of NaNs, a file
cut short by a failed transfer, a checksum that does not match, an extension missing, a header
value that AstroDrizzle would silently misread. :func:`plant_damaged_exposure` copies one of a
visit's simulated exposures under a new rootname, damages the copy, and lists it in the visit's
``visit.json`` and the archive's ``observations.json``, so a poll finds it like any other
exposure. The pipeline must record it with its reason and process everything else.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from crlib.errors import ConfigError
from crlib.file_digest import file_hexdigest

#: Damage classes and what each does to the copy.
DAMAGES: dict[str, str] = {
    "all_nan": "SCI,1 is all NaN",
    "half_nan": "half of SCI,1 is NaN",
    "constant": "SCI,1 is one constant value",
    "missing_dq": "the DQ,1 extension is removed",
    "missing_err": "the ERR,2 extension is removed",
    "wrong_bunit": "BUNIT of every SCI extension says COUNTS/S",
    "zero_exptime": "EXPTIME is 0",
    "truncated": "the file is cut in the middle of SCI,1's data",
    "not_fits": "the file is text named like an FLC",
    "bad_checksum": "the archive's listing gives another md5 than the file's",
    "duplicate_rootname": "the archive lists an exposure of the visit a second time",
}


def _damage_file(path: Path, damage: str, rootname: str) -> None:
    from astropy.io import fits

    if damage == "not_fits":
        path.write_text("<html><body>503 Service Unavailable</body></html>\n" * 40)
        return
    with fits.open(path, mode="update") as hdus:
        hdus[0].header["ROOTNAME"] = rootname
        for hdu in hdus[1:]:
            if "EXPNAME" in hdu.header:
                hdu.header["EXPNAME"] = rootname
        sci = hdus["SCI", 1]
        if damage == "all_nan":
            sci.data[...] = np.nan
        elif damage == "half_nan":
            sci.data[: sci.data.shape[0] // 2] = np.nan
        elif damage == "constant":
            sci.data[...] = 100.0
        elif damage == "missing_dq":
            del hdus[hdus.index_of(("DQ", 1))]
        elif damage == "missing_err":
            del hdus[hdus.index_of(("ERR", 2))]
        elif damage == "wrong_bunit":
            for hdu in hdus:
                if hdu.name == "SCI":
                    hdu.header["BUNIT"] = "COUNTS/S"
        elif damage == "zero_exptime":
            hdus[0].header["EXPTIME"] = 0.0
    if damage == "truncated":
        with fits.open(path) as hdus:
            info = hdus["SCI", 1].fileinfo()
            cut = int(info["datLoc"]) + int(info["datSpan"]) // 2
        with path.open("r+b") as stream:
            stream.truncate(cut)


def plant_damaged_exposure(
    root: Path, visit: str, damage: str, *, source: str | None = None, rootname: str | None = None
) -> str:
    """Add a damaged copy of one of ``visit``'s exposures to a simulated archive.

    Parameters
    ----------
    root
        The archive directory (written by :func:`crlib.simulate.simulate_archive`).
    visit
        Visit id whose exposure is copied; the copy joins that visit.
    damage
        One of :data:`DAMAGES`.
    source
        Rootname to copy (default: the visit's first exposure).
    rootname
        Rootname of the copy (default: ``<visit>z<n>q`` with a letter per damage class).

    Returns
    -------
    str
        The planted exposure's rootname (for ``duplicate_rootname``: the duplicated one).
    """
    from crlib.simulate.archive import write_observations

    if damage not in DAMAGES:
        raise ConfigError(f"unknown damage {damage!r}; choose one of {', '.join(DAMAGES)}")
    visit_json = root / visit / "truth" / "visit.json"
    if not visit_json.is_file():
        raise ConfigError(f"{root} has no simulated visit {visit} ({visit_json} is missing)")
    data: dict[str, Any] = json.loads(visit_json.read_text())
    original = next((e for e in data["exposures"] if source in (None, e["rootname"])), None)
    if original is None:
        raise ConfigError(f"visit {visit} has no exposure {source}")
    if damage == "duplicate_rootname":
        data["exposures"].append(dict(original))
        visit_json.write_text(json.dumps(data, indent=1))
        write_observations(root)
        return str(original["rootname"])
    letter = "abcdefghijklmnopqrstuvwxyz"[list(DAMAGES).index(damage)]
    new = (rootname or f"{visit}z{letter}q").lower()
    if any(e["rootname"] == new for e in data["exposures"]):
        raise ConfigError(f"visit {visit} already has an exposure {new}")
    target = root / visit / f"{new}_flc.fits"
    shutil.copyfile(root / visit / f"{original['rootname']}_flc.fits", target)
    _damage_file(target, damage, new)
    md5 = file_hexdigest(target, "md5")
    if damage == "bad_checksum":
        md5 = hashlib.md5(md5.encode()).hexdigest()
    data["exposures"].append({**original, "rootname": new, "size": target.stat().st_size, "md5": md5})
    visit_json.write_text(json.dumps(data, indent=1))
    write_observations(root)
    return new


def blank_field(root: Path, visit: str) -> None:
    """Remove every star and galaxy from a simulated visit: sky, noise and cosmic rays remain.

    Each exposure's noiseless scene (``MODEL`` in its ``_simtruth.fits``) is subtracted from
    the science array and the scene's median (the sky) added back, so the visit has no source to
    align on while its CRs and noise are unchanged. The archive listing is updated.

    Parameters
    ----------
    root
        The archive directory.
    visit
        The visit to empty.
    """
    from astropy.io import fits

    from crlib.simulate.archive import write_observations

    visit_json = root / visit / "truth" / "visit.json"
    data: dict[str, Any] = json.loads(visit_json.read_text())
    for exposure in data["exposures"]:
        rootname = exposure["rootname"]
        path = root / visit / f"{rootname}_flc.fits"
        with fits.open(root / visit / "truth" / f"{rootname}_simtruth.fits") as truth:
            models = {hdu.ver: np.asarray(hdu.data, dtype=np.float32) for hdu in truth if hdu.name == "MODEL"}
        with fits.open(path, mode="update") as hdus:
            for hdu in hdus:
                if hdu.name == "SCI" and hdu.ver in models:
                    model = models[hdu.ver]
                    hdu.data[...] = hdu.data - model + np.float32(np.median(model))
        exposure["size"], exposure["md5"] = path.stat().st_size, file_hexdigest(path, "md5")
    visit_json.write_text(json.dumps(data, indent=1))
    write_observations(root)
