"""The on-disk model package: a state dict plus a JSON description, never a pickled module.

A package is a directory with two files::

    state_dict.pt       torch.save(state_dict) of a crlib.model.networks.UNet2 (tensors only;
                        read back with torch.load(weights_only=True))
    crlib_model.json    {"format": "crlib-deepcr-state-dict/1", "architecture": "unet2-batchnorm",
                         "hidden": 32, "scale": 1.0, "normalise": false, "threshold": 0.5,
                         "instrument": "acs_wfc", "source": "...", "state_dict_sha256": "..."}

The network's input is the image in electrons divided by ``scale`` (and mean/std normalised per
image when ``normalise``); it is fully convolutional, so any even input size works. The same
directory is the ``data_path`` of the MLflow pyfunc model (:mod:`crlib.registry.pyfunc_flavor`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crlib.errors import ModelError
from crlib.file_digest import file_hexdigest

if TYPE_CHECKING:
    import torch

    from crlib.model.weights import ModelSpec
    from crlib.profiles import InstrumentProfile

log = logging.getLogger(__name__)

PACKAGE_FORMAT = "crlib-deepcr-state-dict/1"
STATE_DICT_FILE = "state_dict.pt"
METADATA_FILE = "crlib_model.json"


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What is needed, besides the weights, to rebuild and apply a mask model.

    Attributes
    ----------
    architecture
        Name from :data:`crlib.model.networks.ARCHITECTURES` (``unet2-batchnorm``, ``unet2-weightnorm``).
    hidden
        Channels at full resolution.
    scale
        The input image (electrons) is divided by this before the network.
    normalise
        Whether the scaled image is mean/std normalised per image (deepCR's WFC3-UVIS model).
    threshold
        Default probability threshold for binary masks.
    instrument
        Instrument profile name.
    source
        Human description of where the weights come from.
    state_dict_sha256
        Checksum of ``state_dict.pt`` (filled by :func:`write_package`).
    format
        Package format tag.
    """

    architecture: str
    hidden: int = 32
    scale: float = 1.0
    normalise: bool = False
    threshold: float = 0.5
    instrument: str = "acs_wfc"
    source: str = ""
    state_dict_sha256: str = ""
    format: str = PACKAGE_FORMAT

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-friendly dict."""
        return asdict(self)

    @classmethod
    def of_shipped(cls, spec: ModelSpec, profile: InstrumentProfile, *, source: str = "") -> ModelMetadata:
        """The description of deepCR's shipped model ``spec`` applied with ``profile``'s threshold.

        Parameters
        ----------
        spec
            A :data:`crlib.model.weights.SHIPPED_MODELS` entry (architecture, width, input scale).
        profile
            The instrument the weights are applied to (its ``threshold`` and ``name``).
        source
            Where the weights come from, for people.
        """
        return cls(
            architecture=spec.architecture,
            hidden=spec.hidden,
            scale=spec.scale,
            normalise=spec.normalise,
            threshold=profile.threshold,
            instrument=profile.name,
            source=source,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any], *, where: object) -> ModelMetadata:
        """Build from a parsed ``crlib_model.json``, rejecting unknown formats and missing keys."""
        if data.get("format") != PACKAGE_FORMAT:
            raise ModelError(
                f"{where}: model format {data.get('format')!r} is not {PACKAGE_FORMAT!r} "
                "(re-register the model with this crlib version)"
            )
        known = {f.name for f in fields(cls)}
        if "architecture" not in data:
            raise ModelError(f"{where}: model description lacks 'architecture'")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise ModelError(f"{where}: invalid model description: {exc}") from None


def network_from_state(
    metadata: ModelMetadata, state_dict: dict[str, Any], *, where: object
) -> torch.nn.Module:
    """Build the described network and load ``state_dict`` into it key for key (eval mode, CPU).

    Raises
    ------
    ModelError
        Naming ``where``: unknown architecture, missing/unexpected/mis-shaped keys, NaN weights.
    """
    from crlib.model.weights import load_state

    try:
        return load_state(metadata.architecture, state_dict, hidden=metadata.hidden)
    except ModelError as exc:
        raise ModelError(
            f"{where}: {exc} (register weights with the architecture they were trained with)"
        ) from None


def read_state_dict(path: Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` on CPU; a clear :class:`ModelError` for corrupt files."""
    from crlib.model.weights import read_state_file

    return read_state_file(path)


def write_package(directory: Path, state_dict: dict[str, Any], metadata: ModelMetadata) -> ModelMetadata:
    """Write ``state_dict.pt`` and ``crlib_model.json`` into ``directory`` after checking they fit.

    Parameters
    ----------
    directory
        Created if missing; existing package files are replaced.
    state_dict
        Tensors of a :class:`~crlib.model.networks.UNet2` (``module.`` prefixes are stripped).
    metadata
        Description; its checksum field is filled in.

    Returns
    -------
    ModelMetadata
        The metadata as written (with ``state_dict_sha256``).

    Raises
    ------
    ModelError
        If the state dict does not fit the architecture.
    """
    import torch

    network = network_from_state(metadata, state_dict, where=f"{directory} (new package)")
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / STATE_DICT_FILE
    torch.save({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}, weights)
    written = replace(metadata, state_dict_sha256=file_hexdigest(weights, "sha256"))
    (directory / METADATA_FILE).write_text(json.dumps(written.to_json(), indent=2) + "\n")
    return written


def read_metadata(directory: Path) -> ModelMetadata:
    """Parse ``crlib_model.json`` of a package directory.

    Raises
    ------
    ModelError
        If the file is missing or not a crlib model description.
    """
    path = directory / METADATA_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{directory}: no {METADATA_FILE}; not a crlib model package") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable model description ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: model description is not a JSON object")
    return ModelMetadata.from_json(data, where=path)


def read_package(directory: Path, *, device: str = "cpu") -> tuple[torch.nn.Module, ModelMetadata]:
    """Rebuild the network of a package in eval mode on ``device``.

    Returns
    -------
    (torch.nn.Module, ModelMetadata)
        The :class:`~crlib.model.networks.UNet2` with its weights, and the description.

    Raises
    ------
    ModelError
        If the description is missing/invalid, the checksum does not match (corrupt weights), or
        the state dict does not fit the architecture.
    """
    metadata = read_metadata(directory)
    weights = directory / STATE_DICT_FILE
    if not weights.is_file():
        raise ModelError(f"{directory}: no {STATE_DICT_FILE} in the model package")
    if metadata.state_dict_sha256 and file_hexdigest(weights, "sha256") != metadata.state_dict_sha256:
        raise ModelError(
            f"{weights}: checksum does not match {METADATA_FILE} (the weights were altered or truncated)"
        )
    state_dict = read_state_dict(weights)
    network = network_from_state(metadata, state_dict, where=weights)
    return network.to(device), metadata
