"""Registered model versions: log, register, alias, bootstrap, list and load.

Registered models are named per instrument (``deepcr-acs-wfc``, ``deepcr-wfc3-uvis``). Every
version is a pyfunc model whose data is a crlib model package (state dict + architecture JSON,
see :mod:`crlib.model.package`), loaded by :mod:`crlib.registry.pyfunc_flavor`; no pickled
code is stored. Aliases: ``champion`` (what inference uses) and ``challenger`` (set on registration).

MLflow keeps only the current alias; every alias move is also written as a registered-model tag
``crlib.alias_event.<unix ms>`` (JSON), so :func:`alias_history` can list who held an alias when.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlib.errors import ConfigError, ModelError
from crlib.model.package import ModelMetadata, read_package, write_package
from crlib.registry.tracking import (
    REGISTRY_EXPERIMENT,
    active_tracking,
    experiment_id,
    local_store_path,
    mlflow_client,
)

if TYPE_CHECKING:
    import torch
    from mlflow.entities.model_registry import ModelVersion

    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
REGISTERED_MODEL_NAMES: dict[str, str] = {"acs_wfc": "deepcr-acs-wfc", "wfc3_uvis": "deepcr-wfc3-uvis"}
ALIAS_EVENT_PREFIX = "crlib.alias_event."
PIP_REQUIREMENTS = ["crlib", "torch==2.13.0", "numpy"]

#: Version tag: where the training manifest is (``runs:/<run>/dataset/manifest.json``) or ``external: ...``.
MANIFEST_TAG = "crlib.training_manifest"
#: Version tag: ``real``, ``simulator`` or ``mixed`` (what the training exposures were).
TRUTH_SOURCE_TAG = "crlib.truth_source"
#: Version tag: the scoring rules of the training patches and test scores (``border 128 px, DQ-flagged ...``).
SCORING_TAG = "crlib.scoring_rules"
#: What crlib can say about the training set of deepCR's shipped weights.
DEEPCR_EXTERNAL = (
    "external: deepCR's shipped weights were trained outside crlib on real HST visits (for ACS-WFC "
    "the deepCR-ACS/WFC paper's training set), which crlib cannot list"
)

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


class ModelNotFoundError(ModelError):
    """The registry answered: this registered model, version or alias does not exist.

    Distinct from the :class:`~crlib.errors.ModelError` raised when the registry cannot be reached
    or fails to answer, which must never be taken to mean "missing".
    """


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version as crlib sees it.

    Attributes
    ----------
    name, version
        Registered model name and version number (as a string, as MLflow returns it).
    run_id
        MLflow run that produced it.
    aliases
        Aliases currently pointing at it.
    tags
        Version tags (``crlib.*`` tags hold test metrics and gate outcomes).
    created_ms
        Registration time, Unix milliseconds.
    metadata
        The package description (architecture, scale, threshold ...) when loaded.
    """

    name: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0
    metadata: ModelMetadata | None = None

    @property
    def uri(self) -> str:
        """``models:/<name>/<version>``."""
        return f"models:/{self.name}/{self.version}"

    @property
    def label(self) -> str:
        """``<name>/<version>``: what predictions record as the model version."""
        return f"{self.name}/{self.version}"


@dataclass(frozen=True, slots=True)
class AliasEvent:
    """One move of an alias (from :func:`alias_history`)."""

    alias: str
    version: str
    previous_version: str | None
    reason: str
    at_ms: int


def instrument_of(model_name: str) -> str:
    """Instrument profile of a registered model name (``deepcr-acs-wfc`` -> ``acs_wfc``).

    Raises
    ------
    ConfigError
        If the name is not one of :data:`REGISTERED_MODEL_NAMES`.
    """
    for instrument, name in REGISTERED_MODEL_NAMES.items():
        if name == model_name:
            return instrument
    raise ConfigError(
        f"unknown registered model {model_name!r}; known: {sorted(REGISTERED_MODEL_NAMES.values())}"
    )


def registered_model_name(instrument: str) -> str:
    """Registered model name of an instrument profile (``acs_wfc`` -> ``deepcr-acs-wfc``)."""
    key = instrument.lower().replace("/", "_")
    try:
        return REGISTERED_MODEL_NAMES[key]
    except KeyError:
        raise ConfigError(
            f"no registered model name for instrument {instrument!r} (CRLIB_INSTRUMENT); "
            f"known: {sorted(REGISTERED_MODEL_NAMES)}"
        ) from None


def model_signature() -> Any:
    """Tensor signature ``(-1, 1, -1, -1)`` float32 in and out: any batch and image size."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    image = Schema([TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1))])
    probabilities = Schema([TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1))])
    return ModelSignature(inputs=image, outputs=probabilities)


def log_model_package(package_dir: Path, metadata: ModelMetadata) -> str:
    """Log a package as the active run's pyfunc model; return its model URI.

    Must be called inside ``mlflow.start_run()`` under :func:`active_tracking`.
    """
    import mlflow

    info = mlflow.pyfunc.log_model(
        name="model",
        loader_module="crlib.registry.pyfunc_flavor",
        data_path=str(package_dir),
        signature=model_signature(),
        pip_requirements=PIP_REQUIREMENTS,
        metadata={"crlib": metadata.to_json()},
    )
    return str(info.model_uri)


def register_version(
    tracking_uri: str,
    *,
    model_uri: str,
    model_name: str,
    run_id: str | None,
    alias: str | None = CHALLENGER,
    tags: dict[str, str] | None = None,
    reason: str = "registered",
) -> RegisteredVersion:
    """Register ``model_uri`` as a new version of ``model_name`` and point ``alias`` at it.

    Returns
    -------
    RegisteredVersion
        The new version with its aliases.
    """
    client = mlflow_client(tracking_uri)
    if _registered_model(client, model_name) is None:
        client.create_registered_model(
            model_name, description="deepCR cosmic-ray mask model (crlib state-dict package)"
        )
    import mlflow

    # register_model passes the logged model's id (REST servers require it for models:/m-<id> sources);
    # the store resolves such sources through the global tracking URI
    with active_tracking(tracking_uri):
        created = mlflow.register_model(model_uri, model_name, await_registration_for=60, tags=tags or {})
    _wait_ready(client, model_name, str(created.version))
    if alias:
        set_alias(tracking_uri, model_name, alias, str(created.version), reason=reason)
    log.info("registered %s version %s (alias %s)", model_name, created.version, alias)
    return get_version(tracking_uri, model_name, str(created.version))


def set_alias(tracking_uri: str, model_name: str, alias: str, version: str, *, reason: str) -> None:
    """Point ``alias`` at ``version`` and append an alias event tag to the registered model.

    Raises
    ------
    ModelError
        If the registered model does not exist or the registry cannot be reached (nothing moved).
    """
    client = mlflow_client(tracking_uri)
    registered = _registered_model(client, model_name)
    if registered is None:
        raise ModelError(
            f"registered model {model_name!r} does not exist at {tracking_uri}: cannot set {alias}"
        )
    held = _aliases(registered).get(alias)
    previous = str(held) if held is not None else None
    client.set_registered_model_alias(model_name, alias, version)
    now = int(time.time() * 1000)
    event = {"alias": alias, "version": version, "previous_version": previous, "reason": reason, "at_ms": now}
    key = f"{ALIAS_EVENT_PREFIX}{now:013d}.{alias}"
    client.set_registered_model_tag(model_name, key, json.dumps(event)[:4900])


def alias_history(tracking_uri: str, model_name: str, *, alias: str | None = None) -> list[AliasEvent]:
    """Every recorded alias move of ``model_name``, oldest first (optionally only one alias)."""
    client = mlflow_client(tracking_uri)
    registered = _registered_model(client, model_name)
    if registered is None:
        return []
    events = []
    for key, value in registered.tags.items():
        if not key.startswith(ALIAS_EVENT_PREFIX):
            continue
        data = json.loads(value)
        if alias is None or data["alias"] == alias:
            events.append(
                AliasEvent(
                    alias=data["alias"],
                    version=str(data["version"]),
                    previous_version=data.get("previous_version"),
                    reason=data.get("reason", ""),
                    at_ms=int(data["at_ms"]),
                )
            )
    return sorted(events, key=lambda e: (e.at_ms, e.alias))


def get_version(tracking_uri: str, model_name: str, version_or_alias: str) -> RegisteredVersion:
    """Look up a version by number (``"3"``) or alias (``"champion"``).

    Raises
    ------
    ModelNotFoundError
        If the model, version or alias does not exist (the message lists what does).
    ModelError
        If the registry cannot be reached or fails to answer.
    """
    client = mlflow_client(tracking_uri)
    registered = _registered_model(client, model_name)
    if registered is None:
        raise ModelNotFoundError(
            f"registered model {model_name!r} does not exist at {tracking_uri} "
            "(run `crlib models --bootstrap` to register deepCR's shipped weights as the champion)"
        )
    number = version_or_alias if version_or_alias.isdigit() else _aliases(registered).get(version_or_alias)
    found = None
    if number is not None:
        try:
            found = client.get_model_version(model_name, str(number))
        except Exception as exc:
            if not is_not_found(exc):
                raise ModelError(
                    f"cannot read {model_name} version {number} at {tracking_uri}: {exc}"
                ) from None
    if found is None:
        known = ", ".join(f"{v.version}{list(v.aliases)}" for v in list_versions(tracking_uri, model_name))
        raise ModelNotFoundError(
            f"{model_name}: no version or alias {version_or_alias!r} (versions: {known or 'none'})"
        )
    return _as_registered(found)


def registered_model_exists(tracking_uri: str, model_name: str) -> bool:
    """Whether ``model_name`` is registered at ``tracking_uri``.

    A local store (``file:`` or ``sqlite:///``) that does not exist yet answers ``False`` without
    creating it or importing MLflow.

    Raises
    ------
    ModelError
        If the tracking server cannot be reached.
    """
    local = local_store_path(tracking_uri)
    if local is not None and not local.exists():
        return False
    return _registered_model(mlflow_client(tracking_uri), model_name) is not None


def list_versions(tracking_uri: str, model_name: str) -> list[RegisteredVersion]:
    """All versions of ``model_name``, newest first (empty if the model is not registered)."""
    client = mlflow_client(tracking_uri)
    registered = _registered_model(client, model_name)
    if registered is None:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():  # search results carry no aliases
        aliases.setdefault(str(version), []).append(alias)
    return [
        replace(_as_registered(v), aliases=tuple(sorted(aliases.get(str(v.version), []))))
        for v in _all_versions(client, model_name)
    ]


def set_version_tags(tracking_uri: str, model_name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on one model version (values truncated to MLflow's limit)."""
    client = mlflow_client(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value)[:4900])


def bootstrap_registry(tracking_uri: str, *, instrument: str = "acs_wfc") -> RegisteredVersion:
    """Make sure ``deepcr-<instrument>`` exists with a champion; register deepCR's weights if not.

    Idempotent: when a champion exists it is returned untouched. Otherwise deepCR's shipped global
    model for the instrument (``ACS-WFC`` / ``WFC3-UVIS``) is logged in experiment
    ``crlib-registry``, registered, and given the ``champion`` alias. Its training manifest is
    recorded as external (tag ``crlib.training_manifest``: the paper's training visits are not
    known to crlib) and its truth source as ``real``.

    Returns
    -------
    RegisteredVersion
        The champion.
    """
    from crlib.model.weights import SHIPPED_MODELS, load_shipped_model
    from crlib.profiles import get_profile

    profile = get_profile(instrument)
    model_name = registered_model_name(profile.name)
    client = mlflow_client(tracking_uri)
    registered = _registered_model(client, model_name)  # ModelError when the registry cannot answer
    if registered is not None:
        if CHAMPION in _aliases(registered):
            return get_version(tracking_uri, model_name, CHAMPION)
        log.info("%s exists without a champion; registering deepCR's shipped weights", model_name)
    spec = SHIPPED_MODELS[profile.deepcr_model]
    shipped = load_shipped_model(profile.deepcr_model)
    metadata = ModelMetadata.of_shipped(
        spec, profile, source=f"deepCR shipped model {spec.name} ({shipped.version})"
    )
    import mlflow

    with tempfile.TemporaryDirectory(prefix="crlib-bootstrap-") as tmp, active_tracking(tracking_uri):
        package = Path(tmp) / "package"
        metadata = write_package(package, shipped.network.state_dict(), metadata)
        with mlflow.start_run(
            experiment_id=experiment_id(client, REGISTRY_EXPERIMENT), run_name=f"bootstrap-{spec.name}"
        ) as run:
            mlflow.log_params(
                {"source": "deepcr", "deepcr_model": spec.name, "deepcr_version": shipped.version}
                | {f"model_{k}": v for k, v in metadata.to_json().items() if k != "state_dict_sha256"}
            )
            model_uri = log_model_package(package, metadata)
            run_id = run.info.run_id
    version = register_version(
        tracking_uri,
        model_uri=model_uri,
        model_name=model_name,
        run_id=run_id,
        alias=CHAMPION,
        tags={
            "crlib.source": "deepcr",
            "crlib.deepcr_model": spec.name,
            MANIFEST_TAG: DEEPCR_EXTERNAL,
            TRUTH_SOURCE_TAG: "real",
        },
        reason=f"bootstrap from deepCR {spec.name}",
    )
    return version


def load_registered_model(
    uri: str, *, tracking_uri: str, device: str = "cpu", cache_dir: Path | None = None
) -> tuple[torch.nn.Module, RegisteredVersion]:
    """Load a registered model for inference: ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.

    Parameters
    ----------
    uri
        Registered model URI.
    tracking_uri
        Tracking/registry URI (``Settings.resolved_mlflow_uri()``).
    device
        Torch device for the network.
    cache_dir
        Where downloaded packages are kept per version (``<cache>/<name>/<version>``); a
        temporary directory when ``None``.

    Returns
    -------
    (torch.nn.Module, RegisteredVersion)
        The :class:`~crlib.model.networks.UNet2` in eval mode, and the resolved version whose
        ``label`` (``deepcr-acs-wfc/3``) predictions record and whose ``metadata`` gives scale,
        normalisation and threshold.

    Raises
    ------
    ModelError
        Malformed URI, unknown model/alias, or corrupt/incompatible weights.
    """
    match = _MODEL_URI.match(uri.strip())
    if match is None:
        raise ModelError(
            f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version> "
            "(e.g. models:/deepcr-acs-wfc@champion)"
        )
    name = match["name"]
    resolved = get_version(tracking_uri, name, match["alias"] or match["version"])
    if cache_dir is not None:
        target = cache_dir / name / resolved.version
        if not (target / "data").is_dir():
            _download(tracking_uri, resolved, target)
        network, metadata = read_package(target / "data", device=device)
    else:
        with tempfile.TemporaryDirectory(prefix="crlib-model-") as tmp:
            _download(tracking_uri, resolved, Path(tmp))
            network, metadata = read_package(Path(tmp) / "data", device=device)
    return network, replace(resolved, metadata=metadata)


def _download(tracking_uri: str, version: RegisteredVersion, target: Path) -> None:
    """Download a version's model directory and expose its package as ``target/data``."""
    import shutil

    import mlflow

    staging = Path(
        tempfile.mkdtemp(prefix="crlib-download-", dir=target.parent if target.parent.exists() else None)
    )
    try:
        with active_tracking(tracking_uri):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.uri, dst_path=str(staging)))
        mlmodel = local / "MLmodel"
        if not mlmodel.is_file():
            raise ModelError(f"{version.uri}: downloaded artifacts have no MLmodel file (not a crlib model)")
        import yaml

        flavors = yaml.safe_load(mlmodel.read_text()).get("flavors", {})
        pyfunc = flavors.get("python_function", {})
        if pyfunc.get("loader_module") != "crlib.registry.pyfunc_flavor":
            raise ModelError(
                f"{version.uri}: not a crlib model package (loader {pyfunc.get('loader_module')!r}); "
                "register models with crlib so weights are stored as a state dict"
            )
        target.mkdir(parents=True, exist_ok=True)
        if (target / "data").exists():
            shutil.rmtree(target / "data")
        shutil.move(str(local / pyfunc["data"]), str(target / "data"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_not_found(exc: BaseException) -> bool:
    """Whether an MLflow error says the asked-for resource does not exist.

    Only MLflow's ``RESOURCE_DOES_NOT_EXIST`` error code counts: a refused connection, a timeout,
    a server error or a message that merely contains "not found" is a failure to answer, never an
    answer that the model or version is missing (which could make crlib register or fall back to
    deepCR's shipped weights).

    Parameters
    ----------
    exc
        The exception an ``MlflowClient`` call raised.

    Returns
    -------
    bool
    """
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _registered_model(client: MlflowClient, name: str) -> Any:
    """The registered model, ``None`` when MLflow says it does not exist.

    Raises
    ------
    ModelError
        On any other failure (unreachable server, timeout, server error).
    """
    try:
        return client.get_registered_model(name)
    except Exception as exc:
        if is_not_found(exc):
            return None
        log.warning("MLflow registry lookup of %s failed: %s", name, exc)
        raise ModelError(
            f"cannot reach the MLflow model registry at {client._registry_uri} to look up {name!r}: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def _aliases(registered: Any) -> dict[str, str]:
    """``{alias: version}`` of a registered model entity (MLflow returns a dict, older stores a list)."""
    aliases = registered.aliases or {}
    if isinstance(aliases, dict):
        return {str(k): str(v) for k, v in aliases.items()}
    return {str(a.alias): str(a.version) for a in aliases}


def _all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    found = client.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version), reverse=True)


def _as_registered(version: ModelVersion) -> RegisteredVersion:
    return RegisteredVersion(
        name=version.name,
        version=str(version.version),
        run_id=version.run_id,
        aliases=tuple(getattr(version, "aliases", ()) or ()),
        tags=dict(version.tags or {}),
        created_ms=int(version.creation_timestamp or 0),
    )


def _wait_ready(client: MlflowClient, name: str, version: str, *, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION":
            raise ModelError(f"{name} version {version}: registration failed in MLflow")
        time.sleep(0.2)
    raise ModelError(f"{name} version {version}: registration not ready after {timeout_s:.0f} s")
