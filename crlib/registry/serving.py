"""Which weights inference uses: the registry's champion (or another alias/version) or deepCR's own.

A *model spec* names the weights, as the CLI (``crlib infer --model``), the pipeline stages and the
DAGs' ``model`` parameter give it:

* ``None``: decided by ``Settings.inference_model`` (``CRLIB_INFERENCE_MODEL``):

  - ``registry``: ``models:/<registered model>@champion``;
  - ``deepcr``: deepCR's shipped weights (the per-filter model where deepCR ships one);
  - ``auto`` (default): the champion when the registered model exists in the tracking store,
    else the shipped weights: a *fallback*, logged as a warning (once per process and model)
    and named on the reference (:attr:`ModelReference.fallback`) so a run summary can list it;

* ``champion``: the registry's champion; falls back like ``auto`` when the model is not registered
  (unless ``CRLIB_INFERENCE_MODEL=registry``);
* ``challenger`` or a version number (``"3"``): that registered version (must exist);
* ``deepcr``: the shipped weights; a shipped model name (``ACS-WFC-F606W``): exactly that one.

Resolving (:func:`resolve_model_reference`) asks the registry which version an alias points at on
every call, so a promotion is picked up by the next exposure; loading
(:func:`load_inference_model`) is cached per process by resolved version, and downloaded packages
are kept under ``<data_root>/models/`` so several processes (mapped Airflow tasks) download a
version once. Registered versions run as model ``<registered name>`` version ``<number>``
(``deepcr-acs-wfc`` / ``3``), which is what predictions record.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from crlib.errors import ModelError
from crlib.provenance import code_version
from crlib.registry.versions import CHALLENGER, CHAMPION, registered_model_name

if TYPE_CHECKING:
    from crlib.config import Settings
    from crlib.model.networks import ArchitectureName
    from crlib.model.weights import LoadedModel
    from crlib.records import PredictionResult

log = logging.getLogger(__name__)

ModelSource = Literal["mlflow", "deepcr_package"]

#: Loaded models kept per process (the newest resolved versions).
CACHE_SIZE = 4

_cache: OrderedDict[tuple[str, str, str], LoadedModel] = OrderedDict()
_cache_lock = threading.Lock()
#: ``(tracking URI, registered model)`` pairs whose fallback this process has warned about.
_fallbacks_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True, slots=True)
class ModelReference:
    """The weights a spec resolved to, before they are loaded.

    Attributes
    ----------
    source
        ``mlflow`` (a registered version) or ``deepcr_package`` (deepCR's shipped weights).
    name
        Registered model name (``deepcr-acs-wfc``) or shipped model name (``ACS-WFC-F606W``).
    version
        Registered version number, or ``deepCR-<package version>+<weights sha256 prefix>``.
    uri
        ``models:/<name>/<version>`` or the path of the shipped weights file.
    tracking_uri
        Tracking/registry URI of a registered version.
    run_id
        MLflow run that produced a registered version.
    reason
        Why these weights were chosen (logged and shown by the CLI).
    fallback
        ``None``, or why the champion that was asked for (``champion``, ``CRLIB_INFERENCE_MODEL=auto``)
        was not used and deepCR's shipped weights stand in for it (one line, for run summaries).
    """

    source: ModelSource
    name: str
    version: str
    uri: str
    tracking_uri: str | None = None
    run_id: str | None = None
    reason: str = ""
    fallback: str | None = None

    @property
    def label(self) -> str:
        """``<name>:<version>``."""
        return f"{self.name}:{self.version}"

    @property
    def record_uri(self) -> str:
        """What the results database records as the version's URI (with the tracking store)."""
        if self.source == "mlflow":
            return f"{self.uri} @ {self.tracking_uri}"[:1024]
        return self.uri[:1024]


def resolve_model_reference(
    settings: Settings, spec: str | None = None, *, filter_name: str | None = None
) -> ModelReference:
    """Resolve a model spec (see the module docstring) to concrete weights.

    Parameters
    ----------
    settings
        ``instrument`` (registered model name and shipped model), ``inference_model`` and the
        tracking URI.
    spec
        ``None``, ``champion``, ``challenger``, a version number, ``deepcr`` or a shipped model name.
    filter_name
        The exposure's filter: picks deepCR's per-filter model when the shipped weights are used.

    Raises
    ------
    ModelError
        Unknown spec, or a registered version/alias that does not exist (the message lists what does).
    """
    from crlib.model.weights import SHIPPED_MODELS

    tracking_uri = settings.resolved_mlflow_uri()
    model_name = registered_model_name(settings.instrument)
    choice = (spec or "").strip()
    if not choice:
        if settings.inference_model == "deepcr":
            return _shipped(settings, filter_name, reason="CRLIB_INFERENCE_MODEL=deepcr")
        return _champion_or_shipped(settings, tracking_uri, model_name, filter_name)
    lowered = choice.lower()
    if lowered == CHAMPION:
        return _champion_or_shipped(settings, tracking_uri, model_name, filter_name)
    if lowered == CHALLENGER or choice.isdigit():
        return _registered(tracking_uri, model_name, lowered, reason=f"requested {choice}")
    if lowered == "deepcr":
        return _shipped(settings, filter_name, reason="requested deepcr")
    if choice in SHIPPED_MODELS:
        return _shipped(settings, filter_name, name=choice, reason=f"requested {choice}")
    raise ModelError(
        f"unknown model {spec!r}: use champion, challenger, a registered version number, deepcr, "
        f"or a shipped deepCR model ({', '.join(sorted(SHIPPED_MODELS))})"
    )


def load_inference_model(settings: Settings, reference: ModelReference) -> LoadedModel:
    """The network for ``reference``, loaded once per process per resolved version.

    Registered packages are downloaded into ``<data_root>/models/<store hash>/<name>/<version>``
    (under a file lock, so concurrent processes download a version once) and checked against
    their checksum on every load.

    Raises
    ------
    ModelError
        Corrupt or incompatible weights, or an unreachable registry.
    """
    from crlib.model.weights import load_shipped_model

    if reference.source == "deepcr_package":
        return load_shipped_model(reference.name)  # cached by name in crlib.model.weights
    key = (reference.tracking_uri or "", reference.name, reference.version)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return cached
    loaded = _load_registered(settings, reference)
    with _cache_lock:
        _cache[key] = loaded
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return loaded


def resolve_inference_model(
    settings: Settings, spec: str | None = None, *, filter_name: str | None = None
) -> LoadedModel:
    """Resolve ``spec`` and load it: :func:`resolve_model_reference` + :func:`load_inference_model`.

    Returns
    -------
    LoadedModel
        For a registered version: model name ``deepcr-acs-wfc``, version ``"3"``; for deepCR's
        weights: the shipped name and ``deepCR-<version>+<sha>``.
    """
    return load_inference_model(settings, resolve_model_reference(settings, spec, filter_name=filter_name))


def clear_model_cache() -> None:
    """Forget every loaded registered model of this process (the disk cache stays)."""
    with _cache_lock:
        _cache.clear()


def cached_model_keys() -> list[tuple[str, str, str]]:
    """``(tracking URI, name, version)`` of the models this process holds, oldest first."""
    with _cache_lock:
        return list(_cache)


def exposure_filter_of(path: Path) -> str | None:
    """The spectral filter in an exposure's primary header (``None`` if unreadable or absent)."""
    from astropy.io import fits

    from crlib.formats.flc import exposure_filter

    try:
        return exposure_filter(fits.getheader(path, 0))
    except (OSError, ValueError, TypeError, IndexError):
        return None


def reusable_prediction(
    path: Path, *, reference: ModelReference, threshold: float
) -> PredictionResult | None:
    """The record of an existing ``_crpred.fits`` if ``reference``'s weights wrote it, else ``None``.

    The file must be readable, hold CRPROB/CRMASK extensions, and its provenance header must name
    the same model (``CRMODEL``), version (``CRMODVER``), threshold (``CRTHRESH``) and crlib code
    version (``CRLIBVER``, see :func:`crlib.provenance.code_version`). The record
    carries the header's code version, device and seconds; peak memory is not in the file (0).
    """
    from astropy.io import fits

    from crlib.records import PredictionResult

    if not path.is_file():
        return None
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
            header = hdul[0].header
            names = {hdu.name for hdu in hdul[1:]}
            same = (
                str(header.get("CRMODEL", "")) == reference.name
                and str(header.get("CRMODVER", "")) == reference.version
                and abs(float(header.get("CRTHRESH", -1.0)) - threshold) < 1e-9
                and str(header.get("CRLIBVER", "")) == code_version()
                and {"CRPROB", "CRMASK"} <= names
            )
            if not same:
                log.info(
                    "%s was written by %s:%s with crlib %s; predicting again with %s and crlib %s",
                    path.name,
                    header.get("CRMODEL"),
                    header.get("CRMODVER"),
                    header.get("CRLIBVER"),
                    reference.label,
                    code_version(),
                )
                return None
            return PredictionResult(
                rootname=str(header["ROOTNAME"]).strip().lower(),
                model_name=reference.name,
                model_version=reference.version,
                code_version=str(header.get("CRLIBVER", "0+unknown")),
                threshold=float(header["CRTHRESH"]),
                device=str(header.get("CRDEVICE", "unknown")),
                seconds=float(header.get("CRSECS", 0.0)),
                peak_memory_mb=0.0,
                path=str(path),
            )
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("%s is unreadable (%s); predicting again", path, exc)
        return None


# ----------------------------------------------------------------------------- internals
def _champion_or_shipped(
    settings: Settings, tracking_uri: str, model_name: str, filter_name: str | None
) -> ModelReference:
    from crlib.registry.versions import registered_model_exists

    if registered_model_exists(tracking_uri, model_name):
        return _registered(tracking_uri, model_name, CHAMPION, reason=f"{CHAMPION} of {model_name}")
    if settings.inference_model == "registry":
        raise ModelError(
            f"CRLIB_INFERENCE_MODEL=registry but {model_name} is not registered at {tracking_uri} "
            "(run `crlib models --bootstrap`, or set CRLIB_INFERENCE_MODEL=auto)"
        )
    reason = f"{model_name} is not registered at {tracking_uri}: using deepCR's shipped weights"
    key = (tracking_uri, model_name)
    with _cache_lock:
        first = key not in _fallbacks_warned
        _fallbacks_warned.add(key)
    if first:
        log.warning(
            "%s (run `crlib models --bootstrap` to register them as the %s, or set "
            "CRLIB_INFERENCE_MODEL=deepcr to choose them on purpose)",
            reason,
            CHAMPION,
        )
    else:
        log.debug("%s", reason)
    return _shipped(settings, filter_name, reason=reason, fallback=reason)


def _registered(tracking_uri: str, model_name: str, version_or_alias: str, *, reason: str) -> ModelReference:
    from crlib.registry.tracking import local_store_path
    from crlib.registry.versions import get_version

    local = local_store_path(tracking_uri)
    if local is not None and not local.exists():  # never create a store just to look
        raise ModelError(
            f"registered model {model_name!r} does not exist: there is no tracking store at {tracking_uri} "
            "(run `crlib models --bootstrap` to register deepCR's shipped weights as the champion)"
        )
    found = get_version(tracking_uri, model_name, version_or_alias)
    return ModelReference(
        source="mlflow",
        name=found.name,
        version=found.version,
        uri=found.uri,
        tracking_uri=tracking_uri,
        run_id=found.run_id,
        reason=f"{reason} (version {found.version})",
    )


def _shipped(
    settings: Settings,
    filter_name: str | None,
    *,
    reason: str,
    name: str | None = None,
    fallback: str | None = None,
) -> ModelReference:
    from crlib.model.weights import SHIPPED_MODELS, choose_model_name, deepcr_mask_dir, load_shipped_model
    from crlib.profiles import get_profile

    chosen = name or choose_model_name(get_profile(settings.instrument), filter_name)
    loaded = load_shipped_model(chosen)
    filename = SHIPPED_MODELS[chosen].filename or chosen
    return ModelReference(
        source="deepcr_package",
        name=loaded.name,
        version=loaded.version,
        uri=str(deepcr_mask_dir() / filename),
        reason=reason,
        fallback=fallback,
    )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_registered(settings: Settings, reference: ModelReference) -> LoadedModel:
    from crlib.model.networks import UNet2
    from crlib.model.weights import LoadedModel, ModelSpec
    from crlib.registry.versions import load_registered_model

    tracking_uri = reference.tracking_uri or settings.resolved_mlflow_uri()
    store = hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]
    cache_dir = settings.data_root / "models" / store
    with _file_lock(cache_dir / f"{reference.name}.lock"):
        network, version = load_registered_model(
            f"models:/{reference.name}/{reference.version}", tracking_uri=tracking_uri, cache_dir=cache_dir
        )
    metadata = version.metadata
    if metadata is None or not isinstance(network, UNet2):  # pragma: no cover - read_package guarantees both
        raise ModelError(f"{reference.uri}: not a crlib mask model package")
    spec = ModelSpec(
        name=reference.name,
        architecture=cast("ArchitectureName", metadata.architecture),
        hidden=metadata.hidden,
        scale=metadata.scale,
        normalise=metadata.normalise,
    )
    log.info("loaded %s version %s for inference (%s)", reference.name, reference.version, reference.reason)
    return LoadedModel(spec=spec, version=reference.version, network=network)
