"""MastArchive: HST exposures from MAST through astroquery, with retries.

What astroquery 0.4.11 calls (read from its source, ``astroquery/mast/discovery_portal.py``,
``observations.py``, ``auth.py``)::

    POST {server}/portal/Mashup/Mashup.asmx/columnsconfig   colConfigId=Mast.Caom.Cone (once per process)
    POST {server}/api/v0/invoke    request={"service": "Mast.Caom.Filtered", "params": {"columns": "*",
                                            "filters": [...]}, "format": "json", "pagesize", "page"}
    POST {server}/portal/Mashup/Mashup.asmx/columnsconfig   colConfigId=Mast.Caom.Products
    POST {server}/api/v0/invoke    request={"service": "Mast.Caom.Products", "params": {"obsid": "1,2"}}
    GET  {server}/whoami           (only when a token is given; cookie ``mast_token``)
    GET  {server}/api/v0.1/Download/file?uri=mast:HST/product/<file>    (our own downloader)

astroquery captures ``conf.server`` in *class* attributes at import time, so setting
``astroquery.mast.conf.server`` later does not move the portal URLs; :class:`MastArchive` sets
``astroquery.mast.conf.server`` while building its client and then points the client's portal
connection at ``Settings.mast_server`` explicitly. astroquery sends no socket timeout (a stalled
server would hang forever), so a transport adapter adds the policy's timeouts, and every query
runs under :func:`~crlib.archive.retry.call_with_retries` because astroquery never retries.

Field type: the observation query asks for every CAOM column (astroquery's ``columns="*"``), so
each row carries ``target_classification``, ``target_name``, ``obs_title`` and ``s_ra``/``s_dec``;
:func:`crlib.archive.caom.join_products` labels each exposure from them (see
:mod:`crlib.classify.metadata`) and logs how many remain ``unknown`` for the image classifier.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

from crlib.archive.caom import join_products
from crlib.archive.retry import RetryPolicy, RetryStats, call_with_retries
from crlib.errors import ArchiveError
from crlib.profiles import ACS_WFC, InstrumentProfile
from crlib.records import Observation

log = logging.getLogger(__name__)

#: How many obsids go into one product-list request.
PRODUCT_BATCH = 200


def table_rows(table: Any) -> list[dict[str, Any]]:
    """Rows of an astropy (masked) table as plain dicts; masked cells become ``None``."""
    import numpy as np

    rows: list[dict[str, Any]] = []
    names = list(table.colnames)
    for row in table:
        values: dict[str, Any] = {}
        for name in names:
            value = row[name]
            if value is np.ma.masked:
                values[name] = None
            elif hasattr(value, "item"):
                values[name] = value.item()
            else:
                values[name] = value
        rows.append(values)
    return rows


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MastArchive:
    """Archive backend for MAST (astroquery ``Observations``), retried and time-limited.

    Parameters
    ----------
    server
        Base URL of the MAST service (``Settings.mast_server``).
    token
        MAST API token for exclusive-access data, or ``None``. Kept private: never logged,
        never part of ``repr`` or error messages.
    profile
        Instrument profile to query (``instrument_name``).
    policy
        Retry/backoff/timeouts for every request.
    stats
        Counters of attempts and retries, updated in place.
    """

    def __init__(
        self,
        *,
        server: str = "https://mast.stsci.edu",
        token: str | None = None,
        profile: InstrumentProfile = ACS_WFC,
        policy: RetryPolicy | None = None,
        stats: RetryStats | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.profile = profile
        self.policy = policy or RetryPolicy()
        self.stats = stats if stats is not None else RetryStats()
        self.source = f"mast:{self.server}"
        self.__token = token or None
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Any, *, policy: RetryPolicy | None = None) -> MastArchive:
        """Build from :class:`crlib.config.Settings` (server, token, instrument profile)."""
        from crlib.profiles import get_profile

        token = settings.mast_token.get_secret_value() if settings.mast_token else None
        return cls(
            server=settings.mast_server, token=token, profile=get_profile(settings.instrument), policy=policy
        )

    def __repr__(self) -> str:
        token = "set" if self.__token else "none"
        return f"MastArchive(server={self.server!r}, profile={self.profile.name!r}, token={token})"

    # ------------------------------------------------------------------ astroquery client
    def client(self) -> Any:
        """The astroquery ``ObservationsClass`` pointed at :attr:`server` (built once, logged in)."""
        if self._client is not None:
            return self._client
        import requests.adapters
        from astroquery.mast import ObservationsClass, conf

        timeout = self.policy.timeout

        class _TimeoutAdapter(requests.adapters.HTTPAdapter):
            def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
                if kwargs.get("timeout") is None:
                    kwargs["timeout"] = timeout
                return super().send(request, **kwargs)

        with conf.set_temp("server", self.server):
            client = ObservationsClass()
        portal = client._portal_api_connection
        portal.MAST_REQUEST_URL = f"{self.server}/api/v0/invoke"
        portal.COLUMNS_CONFIG_URL = f"{self.server}/portal/Mashup/Mashup.asmx/columnsconfig"
        portal.MAST_DOWNLOAD_URL = f"{self.server}/api/v0.1/Download/file"
        portal.MAST_BUNDLE_URL = f"{self.server}/api/v0.1/Download/bundle"
        # astroquery raises its own TimeoutError when one query (all pages) exceeds this total.
        portal.TIMEOUT = max(self.policy.read_timeout_s * 10, 60.0)
        adapter = _TimeoutAdapter()
        client._session.mount("http://", adapter)
        client._session.mount("https://", adapter)
        client._auth_obj.SESSION_INFO_URL = f"{self.server}/whoami"
        if self.__token:
            token = self.__token

            def login() -> None:
                from astroquery.exceptions import LoginError

                try:
                    client.login(token=token)
                except LoginError:
                    raise ArchiveError(
                        f"MAST at {self.server} rejected the API token (CRLIB_MAST_TOKEN); create a new "
                        "token at https://auth.mast.stsci.edu/token"
                    ) from None

            call_with_retries(
                login, policy=self.policy, what=f"MAST login at {self.server}", stats=self.stats
            )
        self._client = client
        return client

    # ------------------------------------------------------------------ queries
    def _observation_rows(self, **criteria: Any) -> list[dict[str, Any]]:
        from astroquery.exceptions import NoResultsWarning

        client = self.client()

        def attempt() -> list[dict[str, Any]]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NoResultsWarning)
                table = client.query_criteria(
                    obs_collection="HST",
                    instrument_name=self.profile.mast_instrument_name,
                    dataproduct_type="image",
                    intentType="science",
                    **criteria,
                )
            return table_rows(table)

        shown = ", ".join(f"{key}={value}" for key, value in criteria.items())
        return call_with_retries(attempt, policy=self.policy, what=f"MAST query ({shown})", stats=self.stats)

    def _product_rows(self, obsids: list[str]) -> list[dict[str, Any]]:
        from astroquery.exceptions import NoResultsWarning

        client = self.client()
        rows: list[dict[str, Any]] = []
        for batch in _batches(sorted(set(obsids)), PRODUCT_BATCH):

            def attempt(batch: list[str] = batch) -> list[dict[str, Any]]:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NoResultsWarning)
                    return table_rows(client.get_product_list(batch))

            rows.extend(
                call_with_retries(
                    attempt,
                    policy=self.policy,
                    what=f"MAST product list ({len(batch)} obsids)",
                    stats=self.stats,
                )
            )
        return rows

    def _observations(self, **criteria: Any) -> list[Observation]:
        rows = self._observation_rows(**criteria)
        if not rows:
            return []
        products = self._product_rows([str(row["obsid"]) for row in rows if row.get("obsid") is not None])
        records = join_products(rows, products, uri_of=self._product_uri)
        log.info("MAST: %d observation rows, %d calibrated exposures", len(rows), len(records))
        return records

    @staticmethod
    def _product_uri(product: Mapping[str, Any]) -> str:
        return str(product.get("dataURI") or f"mast:HST/product/{product.get('productFilename')}")

    def released_between(self, since_mjd: float, until_mjd: float) -> list[Observation]:
        """Science exposures released in ``[since_mjd, until_mjd]`` (``t_obs_release``, MJD)."""
        return self._observations(t_obs_release=[float(since_mjd), float(until_mjd)])

    def proposal_observations(self, proposal_id: int) -> list[Observation]:
        """Every science exposure of one proposal."""
        return self._observations(proposal_id=str(int(proposal_id)))

    def download_url(self, observation: Observation) -> str:
        """``{server}/api/v0.1/Download/file?uri=<dataURI>``, as astroquery builds it."""
        return f"{self.server}/api/v0.1/Download/file?uri={quote(observation.product_uri, safe=':/')}"

    def request_headers(self) -> dict[str, str]:
        """The ``mast_token`` cookie for exclusive-access downloads (empty without a token)."""
        return {"Cookie": f"mast_token={self.__token}"} if self.__token else {}
