"""deepCR mask weights: the shipped models, loading state dicts key for key, model choice.

Weights are always a *state dict plus an architecture name* (never a pickled module), so the
MLflow registry stores and restores them with :func:`load_state`.

The shipped files live in deepCR's ``learned_models/mask`` directory in site-packages. deepCR 0.3.1
registers only ``ACS-WFC`` and ``WFC3-UVIS``; the per-filter ``ACS-WFC-F435W/F606W/F814W`` files are
shipped but unregistered. Their state dicts have the same 46 keys and shapes as ``ACS-WFC``
(U-Net 2-32 with BatchNorm), and the running statistics of their first BatchNorm layer put their
training inputs on the same electron scale as ``ACS-WFC`` (see :func:`input_scale_estimate`), so
they run with input scale 1 and no normalisation, exactly like the global model.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from crlib.errors import ModelError
from crlib.file_digest import file_hexdigest
from crlib.model.networks import ARCHITECTURES, ArchitectureName, UNet2
from crlib.profiles import InstrumentProfile

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """How one mask model is built and fed.

    Attributes
    ----------
    name
        Model name, e.g. ``ACS-WFC-F606W``.
    architecture
        :data:`crlib.model.networks.ARCHITECTURES` entry.
    hidden
        Channels at full resolution.
    scale
        deepCR divides the input image (electrons) by this before inference.
    normalise
        Subtract the chip's mean and divide by its standard deviation after scaling (``WFC3-UVIS`` only).
    filename
        File name in deepCR's ``learned_models/mask`` directory, or ``None`` for registry models.
    """

    name: str
    architecture: ArchitectureName
    hidden: int = 32
    scale: float = 1.0
    normalise: bool = False
    filename: str | None = None


SHIPPED_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("ACS-WFC", "unet2-batchnorm", filename="ACS-WFC.pth"),
        ModelSpec("ACS-WFC-F435W", "unet2-batchnorm", filename="ACS-WFC-F435W.pth"),
        ModelSpec("ACS-WFC-F606W", "unet2-batchnorm", filename="ACS-WFC-F606W.pth"),
        ModelSpec("ACS-WFC-F814W", "unet2-batchnorm", filename="ACS-WFC-F814W.pth"),
        ModelSpec("WFC3-UVIS", "unet2-weightnorm", normalise=True, filename="WFC3-UVIS.pth"),
    )
}


@dataclass(frozen=True)
class LoadedModel:
    """A mask network ready for inference plus what the output files record about it.

    Attributes
    ----------
    spec
        Architecture and input handling.
    version
        ``deepCR-<package version>+<sha256 prefix of the weights file>`` for shipped models, or the
        registry's version string.
    network
        The trained :class:`~crlib.model.networks.UNet2` in eval mode on the CPU.
    """

    spec: ModelSpec
    version: str
    network: UNet2

    @property
    def name(self) -> str:
        """Model name."""
        return self.spec.name


def deepcr_mask_dir() -> Path:
    """deepCR's ``learned_models/mask`` directory (found without importing deepCR).

    Raises
    ------
    ModelError
        If deepCR's ``learned_models`` package is not installed.
    """
    spec = importlib.util.find_spec("learned_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("deepCR's learned_models package is not installed (pip install deepCR==0.3.1)")
    return Path(next(iter(spec.submodule_search_locations))) / "mask"


def strip_wrapper_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix deepCR's ``WrappedModel`` / ``DataParallel`` puts on every key."""
    return {key.removeprefix("module."): value for key, value in state_dict.items()}


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> tuple[ArchitectureName, int]:
    """Architecture and hidden width of a mask state dict.

    Raises
    ------
    ModelError
        If the keys match neither U-Net 2 variant.
    """
    keys = strip_wrapper_prefix(state_dict)
    if "inc.conv.conv.1.running_mean" in keys and "inc.conv.conv.0.weight" in keys:
        return "unet2-batchnorm", int(keys["inc.conv.conv.0.weight"].shape[0])
    if "inc.conv.conv.0.weight_v" in keys:
        return "unet2-weightnorm", int(keys["inc.conv.conv.0.weight_v"].shape[0])
    raise ModelError(f"state dict matches no known deepCR mask architecture (first keys: {list(keys)[:4]})")


def load_state(
    architecture: str, state_dict: Mapping[str, torch.Tensor], *, hidden: int | None = None
) -> UNet2:
    """Build a network of ``architecture`` and load ``state_dict`` into it key for key.

    Parameters
    ----------
    architecture
        ``unet2-batchnorm`` or ``unet2-weightnorm``.
    state_dict
        Parameters and buffers with or without deepCR's ``module.`` prefix.
    hidden
        Full-resolution channels; read from the state dict when ``None``.

    Returns
    -------
    UNet2
        In eval mode, on the CPU, gradients off.

    Raises
    ------
    ModelError
        Unknown architecture, missing/unexpected keys, wrong shapes, or non-finite values.
    """
    if architecture not in ARCHITECTURES:
        raise ModelError(f"unknown model architecture {architecture!r}; known: {list(ARCHITECTURES)}")
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ModelError(f"{architecture}: the state dict is empty or not a mapping")
    cleaned = strip_wrapper_prefix(state_dict)
    if hidden is None:
        inferred_arch, hidden = infer_architecture(cleaned)
        if inferred_arch != architecture:
            raise ModelError(f"state dict is a {inferred_arch} network, not {architecture}")
    network = UNet2(architecture, hidden=hidden)  # type: ignore[arg-type]
    try:
        network.load_state_dict(cleaned, strict=True)
    except (RuntimeError, KeyError, TypeError) as exc:
        detail = str(exc).replace("\n", " ")[:400]
        raise ModelError(f"state dict does not fit {architecture} (hidden={hidden}): {detail}") from None
    for key, value in cleaned.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ModelError(f"state dict entry {key!r} holds NaN/inf values: the weights are corrupt")
    network.eval()
    network.requires_grad_(False)
    return network


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth`` state dict safely (``weights_only``; no pickled code is executed).

    Raises
    ------
    ModelError
        If the file is missing, truncated, or not a state dict.
    """
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: model weights file not found") from None
    except Exception as exc:  # torch raises several types for corrupt archives
        raise ModelError(f"{path}: cannot read model weights ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelError(f"{path}: not a state dict of tensors (crlib never loads pickled modules)")
    return dict(loaded)


def _deepcr_version() -> str:
    try:
        return version("deepCR")
    except PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=8)
def load_shipped_model(name: str) -> LoadedModel:
    """Load one of deepCR's shipped mask models by name (cached per process).

    Raises
    ------
    ModelError
        Unknown name (listing the known ones) or unreadable/incompatible weights.
    """
    spec = SHIPPED_MODELS.get(name)
    if spec is None or spec.filename is None:
        raise ModelError(f"unknown deepCR model {name!r}; shipped models: {sorted(SHIPPED_MODELS)}")
    path = deepcr_mask_dir() / spec.filename
    state = read_state_file(path)
    try:
        network = load_state(spec.architecture, state, hidden=spec.hidden)
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    model_version = f"deepCR-{_deepcr_version()}+{file_hexdigest(path, 'sha256')[:12]}"
    log.debug("loaded %s (%s) from %s", name, model_version, path)
    return LoadedModel(spec=spec, version=model_version, network=network)


def choose_model_name(
    profile: InstrumentProfile, filter_name: str | None, *, override: str | None = None
) -> str:
    """The mask model for an exposure: the override, else the per-filter model, else the global one.

    Parameters
    ----------
    profile
        Instrument profile (``deepcr_model``, ``deepcr_filter_models``).
    filter_name
        The exposure's filter (``FILTER1``/``FILTER2`` resolved by the caller), e.g. ``F606W``.
    override
        Explicit model name; wins when given.
    """
    if override:
        return override
    if filter_name and filter_name.upper() in profile.deepcr_filter_models:
        return f"{profile.deepcr_model}-{filter_name.upper()}"
    return profile.deepcr_model


def input_scale_estimate(state_dict: Mapping[str, torch.Tensor]) -> float:
    """Typical input amplitude a BatchNorm network was trained on, from its first BatchNorm layer.

    The first convolution is linear, so the running standard deviation of its output divided by
    the norm of its kernel estimates the spread of the (scaled) training inputs. Models trained on
    electrons give hundreds; a model trained on inputs divided by 100 gives a few. Used to decide
    the input scale of the unregistered per-filter models.

    Raises
    ------
    ModelError
        If the state dict has no BatchNorm after its first convolution.
    """
    keys = strip_wrapper_prefix(state_dict)
    try:
        weight = keys["inc.conv.conv.0.weight"]
        running_var = keys["inc.conv.conv.1.running_var"]
    except KeyError:
        raise ModelError("input scale can only be estimated for BatchNorm networks") from None
    ratio = running_var.double().sqrt() / weight.double().flatten(1).norm(dim=1)
    return float(ratio.median())
