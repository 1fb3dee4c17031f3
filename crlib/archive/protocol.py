"""The archive interface every backend implements (MAST, local directory)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from crlib.records import Observation


@runtime_checkable
class Archive(Protocol):
    """A source of HST exposures: queries by release date or proposal, and product URLs.

    Attributes
    ----------
    source
        Stable name of this archive (``mast:<server>`` or ``local:<dir>``); the key of its
        watermark.
    """

    source: str

    def released_between(self, since_mjd: float, until_mjd: float) -> list[Observation]:
        """Science exposures of the profile's instrument released in ``[since_mjd, until_mjd]`` (MJD)."""
        ...

    def proposal_observations(self, proposal_id: int) -> list[Observation]:
        """Every science exposure of the profile's instrument in one proposal."""
        ...

    def download_url(self, observation: Observation) -> str:
        """``http(s)://`` or ``file://`` URL of the exposure's calibrated product."""
        ...

    def request_headers(self) -> dict[str, str]:
        """Extra HTTP headers/cookies downloads must send (e.g. the MAST token); may be empty."""
        ...
