"""Model packages: state dict + architecture JSON round trip; corrupt or incompatible weights refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crlib.errors import ModelError
from crlib.model.networks import UNet2
from crlib.model.package import STATE_DICT_FILE, ModelMetadata, read_package, write_package


def _network(hidden: int = 4, seed: int = 0) -> UNet2:
    torch.manual_seed(seed)
    return UNet2("unet2-batchnorm", hidden=hidden).eval()


def test_round_trip_gives_the_same_probabilities(tmp_path: Path) -> None:
    network = _network()
    written = write_package(
        tmp_path / "pkg", network.state_dict(), ModelMetadata("unet2-batchnorm", hidden=4)
    )
    loaded, metadata = read_package(tmp_path / "pkg")
    image = torch.rand(1, 1, 48, 80) * 100
    with torch.inference_mode():
        assert torch.equal(loaded(image), network(image))
    assert metadata == written and len(metadata.state_dict_sha256) == 64


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    write_package(tmp_path / "pkg", _network().state_dict(), ModelMetadata("unet2-batchnorm", hidden=4))
    weights = tmp_path / "pkg" / STATE_DICT_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match="checksum"):
        read_package(tmp_path / "pkg")


def test_weights_of_another_width_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not fit"):
        write_package(
            tmp_path / "pkg", _network(hidden=8).state_dict(), ModelMetadata("unet2-batchnorm", hidden=4)
        )


def test_a_pickled_module_is_never_loaded(tmp_path: Path) -> None:
    write_package(tmp_path / "pkg", _network().state_dict(), ModelMetadata("unet2-batchnorm", hidden=4))
    meta = (tmp_path / "pkg" / "crlib_model.json").read_text().replace('"state_dict_sha256": "', '"x": "')
    (tmp_path / "pkg" / "crlib_model.json").write_text(meta)
    torch.save(_network(), tmp_path / "pkg" / STATE_DICT_FILE)  # a whole module, pickled
    with pytest.raises(ModelError, match="cannot read model weights"):
        read_package(tmp_path / "pkg")


def test_unknown_architecture_and_format_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model architecture"):
        write_package(tmp_path / "a", _network().state_dict(), ModelMetadata("unet3-fancy", hidden=4))
    write_package(tmp_path / "b", _network().state_dict(), ModelMetadata("unet2-batchnorm", hidden=4))
    path = tmp_path / "b" / "crlib_model.json"
    path.write_text(path.read_text().replace("crlib-deepcr-state-dict/1", "other/9"))
    with pytest.raises(ModelError, match="format"):
        read_package(tmp_path / "b")
