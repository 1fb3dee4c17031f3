"""LocalArchive: the archive interface over a directory written by ``crlib simulate`` or a mirror.

The layout is the contract in :mod:`crlib.simulate`: ``observations.json`` holds MAST-shaped
CAOM observation rows and product rows (``crlib_path`` locates each product in the directory).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crlib.archive.caom import join_products
from crlib.errors import InputDataError
from crlib.profiles import ACS_WFC, InstrumentProfile
from crlib.records import Observation

log = logging.getLogger(__name__)

SCHEMA = "crlib-local-archive/1"
MANIFEST_NAME = "observations.json"
#: What to do about a missing manifest: the archive is chosen by ``CRLIB_ARCHIVE`` everywhere,
#: and by ``--archive`` on the commands that have that option (``crlib poll``, ``fetch``, ``train``).
MANIFEST_FIX = (
    f"set CRLIB_ARCHIVE=local:DIR, or --archive local:DIR on a command that has that option, to a "
    f"directory holding {MANIFEST_NAME}, e.g. one written by `crlib simulate --out DIR`"
)


def read_manifest(root: Path) -> dict[str, Any]:
    """Read and check ``<root>/observations.json``.

    Raises
    ------
    InputDataError
        If the file is missing, not JSON, or of another schema.
    """
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise InputDataError(
            path,
            "local archive manifest not found"
            + ("" if Path(root).is_dir() else f": there is no directory {root}"),
            fix=MANIFEST_FIX,
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputDataError(
            path, f"unreadable archive manifest: {exc}", fix="regenerate the archive"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise InputDataError(
            path, f"not a {SCHEMA} manifest", fix="regenerate the archive with `crlib simulate`"
        )
    for key in ("observations", "products"):
        if not isinstance(manifest.get(key), list):
            raise InputDataError(path, f"manifest lacks the {key!r} list", fix="regenerate the archive")
    return manifest


def is_science_image(row: Mapping[str, Any], profile: InstrumentProfile) -> bool:
    """The MAST query's fixed criteria: HST, the profile's instrument, science images."""
    return (
        str(row.get("obs_collection", "")).upper() == "HST"
        and str(row.get("instrument_name", "")).upper() == profile.mast_instrument_name
        and str(row.get("dataproduct_type", "")).lower() == "image"
        and str(row.get("intentType", "science")).lower() == "science"
    )


class LocalArchive:
    """Archive backend reading a local directory (simulated archive or mirror).

    Parameters
    ----------
    root
        Directory holding ``observations.json``.
    profile
        Instrument profile whose exposures are listed.
    """

    def __init__(self, root: Path | str, *, profile: InstrumentProfile = ACS_WFC) -> None:
        self.root = Path(root).expanduser().resolve()
        self.profile = profile
        self.source = f"local:{self.root}"

    def _rows(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        manifest = read_manifest(self.root)
        return manifest["observations"], manifest["products"]

    def _uri(self, product: Mapping[str, Any]) -> str:
        relative = product.get("crlib_path") or product.get("productFilename")
        path = (self.root / str(relative)).resolve()
        if not path.is_relative_to(self.root):
            raise InputDataError(
                self.root / MANIFEST_NAME,
                f"product path {relative!r} leaves the archive",
                fix="fix the manifest's crlib_path entries",
            )
        return str(path)

    def _select(self, keep: Any) -> list[Observation]:
        observations, products = self._rows()
        rows = [row for row in observations if is_science_image(row, self.profile) and keep(row)]
        obsids = {str(row.get("obsid")) for row in rows}
        wanted = [p for p in products if str(p.get("obsID")) in obsids]
        return join_products(rows, wanted, uri_of=self._uri)

    def released_between(self, since_mjd: float, until_mjd: float) -> list[Observation]:
        """Science exposures released in ``[since_mjd, until_mjd]`` (MJD, inclusive)."""

        def keep(row: Mapping[str, Any]) -> bool:
            release = float(row.get("t_obs_release", "nan"))
            return since_mjd <= release <= until_mjd

        return self._select(keep)

    def proposal_observations(self, proposal_id: int) -> list[Observation]:
        """Every science exposure of proposal ``proposal_id``."""
        return self._select(lambda row: str(row.get("proposal_id", "")).strip() == str(proposal_id))

    def download_url(self, observation: Observation) -> str:
        """``file://`` URL of the product inside the archive directory."""
        return Path(observation.product_uri).as_uri()

    def request_headers(self) -> dict[str, str]:
        """No credentials are needed for a local directory."""
        return {}
