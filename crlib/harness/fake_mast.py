"""A fake MAST on 127.0.0.1 for tests: the endpoints astroquery and our downloader use, with faults.

It serves a local archive directory (the :mod:`crlib.simulate` layout) through the same HTTP
endpoints and JSON shapes as MAST (shapes from the recorded responses of astroquery's own test
data: ``caom.json``, ``products.json``, ``columnsconfig.json``), so the real astroquery client and
:mod:`crlib.archive.download` run unchanged against it:

* ``POST /portal/Mashup/Mashup.asmx/columnsconfig`` (``colConfigId=Mast.Caom.Cone`` ...)
* ``POST /api/v0/invoke`` with ``request=<json>`` for ``Mast.Caom.Filtered`` and ``Mast.Caom.Products``
  (``{"status": "COMPLETE", "msg": "", "data": [...], "fields": [...], "paging": {...}}``)
* ``GET /whoami`` (token check, cookie ``mast_token``)
* ``GET /api/v0.1/Download/file?uri=mast:HST/product/<file>`` with ``Range`` support

Faults (:class:`FaultPlan`) are drawn per request from a seeded RNG: ``503``, ``timeout`` (the
server stalls longer than the client's read timeout, then drops the connection), ``truncate``
(half the body, then the connection closes), ``wrong_length`` (a Content-Length larger than the
body) and ``slow`` (the body trickles in small chunks but completes). Counters record every
request, fault and completed download.

Examples
--------
>>> with FakeMast(archive_dir, faults=FaultPlan(fraction=0.3, seed=1)) as mast:   # doctest: +SKIP
...     archive = MastArchive(server=mast.url, policy=RetryPolicy(read_timeout_s=1))
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlparse

log = logging.getLogger(__name__)

FAULT_KINDS: tuple[str, ...] = ("503", "timeout", "truncate", "wrong_length", "slow")

# Column types of MAST's CAOM observation and product responses (recorded caom.json / products.json).
CAOM_FIELD_TYPES: dict[str, str] = {
    "intentType": "string",
    "dataproduct_type": "string",
    "obs_collection": "string",
    "instrument_name": "string",
    "project": "string",
    "filters": "string",
    "wavelength_region": "string",
    "target_name": "string",
    "target_classification": "string",
    "obs_id": "string",
    "s_ra": "float",
    "s_dec": "float",
    "proposal_id": "string",
    "proposal_pi": "string",
    "calib_level": "int",
    "t_min": "float",
    "t_max": "float",
    "t_exptime": "float",
    "em_min": "float",
    "em_max": "float",
    "obs_title": "string",
    "t_obs_release": "float",
    "s_region": "string",
    "jpegURL": "string",
    "dataURL": "string",
    "obsid": "string",
    "objID": "string",
    "distance": "float",
}
PRODUCT_FIELD_TYPES: dict[str, str] = {
    "obsID": "string",
    "obs_collection": "string",
    "dataproduct_type": "string",
    "obs_id": "string",
    "description": "string",
    "type": "string",
    "dataURI": "string",
    "productType": "string",
    "productGroupDescription": "string",
    "productSubGroupDescription": "string",
    "productDocumentationURL": "string",
    "project": "string",
    "prvversion": "string",
    "productFilename": "string",
    "size": "int",
}
# Columns-config entries (recorded columnsconfig.json, trimmed to what astroquery reads).
_CAOM_VOT_TYPES: dict[str, str] = {
    "intentType": "char",
    "obs_collection": "char",
    "instrument_name": "char",
    "project": "char",
    "filters": "char",
    "wavelength_region": "char",
    "target_name": "char",
    "target_classification": "char",
    "obs_id": "char",
    "s_ra": "double",
    "s_dec": "double",
    "obs_title": "char",
    "proposal_pi": "char",
    "dataproduct_type": "char",
    "calib_level": "int",
    "t_min": "double",
    "t_max": "double",
    "t_obs_release": "double",
    "t_exptime": "double",
    "em_min": "double",
    "em_max": "double",
    "objID": "long",
    "s_region": "char",
    "jpegURL": "char",
    "distance": "float",
    "obsid": "long",
    "proposal_id": "char",
    "dataRights": "string",
    "mtFlag": "boolean",
    "srcDen": "float",
}
_CAOM_PLAIN_TYPE = ("dataRights", "mtFlag")
_CAOM_SEPARATORS = ("obs_collection", "project", "filters", "wavelength_region", "target_classification")


def caom_columns_config() -> dict[str, dict[str, Any]]:
    """The ``Mast.Caom.Cone`` columns config: ``{column: {"text", "vot.datatype", ["separator"]}}``."""
    config: dict[str, dict[str, Any]] = {
        "_selected_": {"text": "selected", "type": "boolean", "hidden": True}
    }
    for name, vot_type in _CAOM_VOT_TYPES.items():
        # The recorded config gives a few columns a plain "type" instead of "vot.datatype".
        key = "type" if name in _CAOM_PLAIN_TYPE else "vot.datatype"
        entry: dict[str, Any] = {"text": name, key: vot_type, "vot.name": name}
        if name in _CAOM_SEPARATORS:
            entry["separator"] = ";"
        if name == "t_obs_release":
            entry.update({"isMjd": True, "unit": "MJD"})
        config[name] = entry
    return config


def products_columns_config() -> dict[str, dict[str, Any]]:
    """The ``Mast.Caom.Products`` columns config."""
    return {
        name: {"text": name, "vot.datatype": "int" if kind == "int" else "char"}
        for name, kind in PRODUCT_FIELD_TYPES.items()
    }


@dataclass
class FaultPlan:
    """Which faults to inject, how often, and how they behave.

    Attributes
    ----------
    fraction
        Probability that a request gets a fault.
    kinds
        Fault kinds to draw from (see :data:`FAULT_KINDS`).
    stall_s
        How long a ``timeout`` fault stalls before dropping the connection, seconds
        (make it longer than the client's read timeout).
    slow_chunk_bytes, slow_delay_s
        Chunk size and pause between chunks of a ``slow`` body.
    endpoints
        Only requests whose path starts with one of these get faults (empty: all).
    seed
        RNG seed; the same plan and request order give the same faults.
    """

    fraction: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    stall_s: float = 3.0
    slow_chunk_bytes: int = 32768
    slow_delay_s: float = 0.005
    endpoints: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"fault fraction must be within [0, 1], got {self.fraction}")


@dataclass
class FakeMastCounters:
    """What the fake saw (thread-safe updates through :class:`FakeMast`)."""

    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    downloads_completed: Counter[str] = field(default_factory=Counter)
    range_requests: Counter[str] = field(default_factory=Counter)
    authenticated_requests: int = 0


def _field_type(name: str, value: Any, known: dict[str, str]) -> str:
    if name in known:
        return known[name]
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def _matches(row: dict[str, Any], entry: dict[str, Any]) -> bool:
    name = entry.get("paramName", "")
    value = row.get(name)
    for wanted in entry.get("values", []):
        if isinstance(wanted, dict):
            try:
                if float(wanted["min"]) <= float(value) <= float(wanted["max"]):  # type: ignore[arg-type]
                    return True
            except (TypeError, ValueError):
                continue
        elif str(value).strip().lower() == str(wanted).strip().lower():
            return True
    free = entry.get("freeText")
    return bool(free) and fnmatch(str(value).lower(), str(free).replace("%", "*").lower())


class FakeMast:
    """A threaded HTTP server on 127.0.0.1 imitating MAST over a local archive directory.

    Parameters
    ----------
    archive_root
        Directory with ``observations.json`` (re-read on every query, so tests can add visits).
    faults
        Fault plan (default: none); replace it at any time with :meth:`set_faults`.
    token
        If set, downloads and ``/whoami`` require the cookie ``mast_token=<token>`` (exclusive access).
    """

    def __init__(
        self, archive_root: Path | str, *, faults: FaultPlan | None = None, token: str | None = None
    ):
        self.archive_root = Path(archive_root).resolve()
        self.token = token
        self.counters = FakeMastCounters()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.set_faults(faults or FaultPlan())

    # ------------------------------------------------------------------ lifecycle
    def set_faults(self, plan: FaultPlan) -> None:
        """Use a new fault plan (and reseed the fault RNG)."""
        with self._lock:
            self.faults = plan
            self._rng = random.Random(plan.seed)

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:49152``."""
        if self._server is None:
            raise RuntimeError("FakeMast is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeMast:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        fake = self

        class Handler(_Handler):
            owner = fake

        self._stop.clear()
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-mast", daemon=True)
        self._thread.start()
        log.debug("fake MAST serving %s at %s", self.archive_root, self.url)
        return self

    def stop(self) -> None:
        """Stop serving (stalled requests are released)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeMast:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for the handler
    def draw_fault(self, path: str) -> str | None:
        with self._lock:
            endpoint = path.split("?")[0]
            self.counters.requests[endpoint] += 1
            plan = self.faults
            if plan.fraction <= 0 or (plan.endpoints and not endpoint.startswith(plan.endpoints)):
                return None
            if self._rng.random() >= plan.fraction:
                return None
            kind = self._rng.choice(plan.kinds)
            self.counters.faults[kind] += 1
            return kind

    def note(
        self, *, completed: str | None = None, authenticated: bool = False, ranged: str | None = None
    ) -> None:
        with self._lock:
            if ranged:
                self.counters.range_requests[ranged] += 1
            if completed:
                self.counters.downloads_completed[completed] += 1
            if authenticated:
                self.counters.authenticated_requests += 1

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.archive_root / "observations.json").read_text())


class _Handler(BaseHTTPRequestHandler):
    owner: FakeMast
    protocol_version = "HTTP/1.1"
    server_version = "FakeMAST/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake MAST: " + format, *args)

    # ------------------------------------------------------------------ plumbing
    def _token_ok(self) -> bool:
        cookies = self.headers.get("Cookie", "")
        tokens = re.findall(r"mast_token=([^;\s]+)", cookies)
        ok = self.owner.token is None or self.owner.token in tokens
        if tokens and ok:
            self.owner.note(authenticated=True)
        return ok

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        fault: str | None,
        extra: dict[str, str] | None = None,
    ) -> bool:
        """Send a response, applying the drawn fault; True if the whole body was sent."""
        if fault == "timeout":
            self.owner._stop.wait(self.owner.faults.stall_s)
            self.close_connection = True
            return False
        if fault == "503":
            status, body, content_type, extra = 503, b"Service Unavailable (injected)", "text/plain", None
        declared = len(body)
        if fault == "wrong_length":
            declared = len(body) + 1024
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(declared))
        self.send_header("Accept-Ranges", "bytes")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if fault in {"truncate", "wrong_length"}:
            self.send_header("Connection", "close")
        self.end_headers()
        try:
            if fault == "truncate":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return False
            if fault == "slow":
                step = max(1, self.owner.faults.slow_chunk_bytes)
                for start in range(0, len(body), step):
                    self.wfile.write(body[start : start + step])
                    self.wfile.flush()
                    if self.owner._stop.wait(self.owner.faults.slow_delay_s):
                        return False
            else:
                self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return False
        if fault == "wrong_length":
            self.close_connection = True
            return False
        return status < 400

    def _json(self, document: Any, fault: str | None) -> None:
        self._send(200, json.dumps(document).encode(), "application/json", fault)

    def _body(self) -> str:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length).decode("utf-8", "replace") if length else ""

    # ------------------------------------------------------------------ endpoints
    def do_POST(self) -> None:
        fault = self.owner.draw_fault(self.path)
        body = self._body()
        path = urlparse(self.path).path
        if path.endswith("/Mashup.asmx/columnsconfig"):
            form = parse_qs(body)
            config_id = (form.get("colConfigId") or [""])[0]
            if config_id == "Mast.Caom.Products":
                self._json(products_columns_config(), fault)
            elif config_id.startswith("Mast.Caom"):
                self._json(caom_columns_config(), fault)
            else:
                self._json({}, fault)
        elif path == "/api/v0/invoke":
            raw = body[len("request=") :] if body.startswith("request=") else body
            try:
                request = json.loads(unquote_plus(raw))
            except json.JSONDecodeError:
                self._send(400, b"bad request", "text/plain", None)
                return
            self._json(self._invoke(request), fault)
        else:
            self._send(404, b"not found", "text/plain", None)

    def do_GET(self) -> None:
        fault = self.owner.draw_fault(self.path)
        parsed = urlparse(self.path)
        if parsed.path == "/whoami":
            if (
                self.owner.token is not None
                and self._token_ok()
                and "mast_token" in self.headers.get("Cookie", "")
            ):
                info = {"anon": False, "attrib": {"display_name": "crlib test user"}, "user": "crlib"}
            else:
                info = {"anon": True, "attrib": {}, "user": None}
            self._json(info, fault)
        elif parsed.path == "/api/v0.1/Download/file":
            uri = (parse_qs(parsed.query).get("uri") or [""])[0]
            self._download(uri, fault)
        else:
            self._send(404, b"not found", "text/plain", None)

    def _invoke(self, request: dict[str, Any]) -> dict[str, Any]:
        service = request.get("service")
        params = request.get("params") or {}
        manifest = self.owner.manifest()
        if service == "Mast.Caom.Filtered":
            rows = [
                row
                for row in manifest["observations"]
                if all(_matches(row, entry) for entry in params.get("filters", []))
            ]
            known = CAOM_FIELD_TYPES
        elif service == "Mast.Caom.Products":
            wanted = {s.strip() for s in str(params.get("obsid", "")).split(",") if s.strip()}
            rows = [row for row in manifest["products"] if str(row.get("obsID")) in wanted]
            known = PRODUCT_FIELD_TYPES
        else:
            return {
                "status": "ERROR",
                "msg": f"fake MAST does not implement {service!r}",
                "data": [],
                "fields": [],
            }
        rows = [{k: v for k, v in row.items() if not k.startswith("crlib_") and k != "md5"} for row in rows]
        names: dict[str, str] = {}
        for row in rows:
            for name, value in row.items():
                names.setdefault(name, _field_type(name, value, known))
        if not rows:
            names = dict(known)
        pagesize = max(1, int(request.get("pagesize") or 50000))
        page = max(1, int(request.get("page") or 1))
        pages = max(1, math.ceil(len(rows) / pagesize))
        chunk = rows[(page - 1) * pagesize : page * pagesize]
        fields = [{"name": name, "type": kind} for name, kind in names.items()]
        fields.append({"name": "_selected_", "type": "boolean"})
        return {
            "status": "COMPLETE",
            "msg": "",
            "data": [dict(row, _selected_=None) for row in chunk],
            "fields": fields,
            "paging": {
                "page": page,
                "pageSize": pagesize,
                "pagesFiltered": pages,
                "rows": len(chunk),
                "rowsFiltered": len(rows),
                "rowsTotal": len(rows),
            },
        }

    def _download(self, uri: str, fault: str | None) -> None:
        if not self._token_ok():
            self._send(401, b"exclusive-access data: MAST token required", "text/plain", None)
            return
        products = self.owner.manifest()["products"]
        match = next((p for p in products if p.get("dataURI") == uri), None)
        if match is None:
            self._send(404, f"no product {uri}".encode(), "text/plain", None)
            return
        path = (self.owner.archive_root / str(match.get("crlib_path") or match["productFilename"])).resolve()
        data = path.read_bytes()
        status, extra = 200, {"Content-Disposition": f'attachment; filename="{match["productFilename"]}"'}
        requested = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "").strip())
        if requested:
            start = int(requested.group(1))
            self.owner.note(ranged=str(match["productFilename"]))
            if start >= len(data):
                self._send(416, b"", "text/plain", None, {"Content-Range": f"bytes */{len(data)}"})
                return
            extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            status, data = 206, data[start:]
        if self._send(status, data, "application/octet-stream", fault, extra):
            self.owner.note(completed=str(match["productFilename"]))
