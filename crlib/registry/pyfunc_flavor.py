"""MLflow pyfunc loader for crlib model packages (``loader_module`` workflow, nothing pickled).

A registered model version is logged with ``loader_module="crlib.registry.pyfunc_flavor"`` and
``data_path=<package directory>`` (see :mod:`crlib.model.package`). MLflow then calls
:func:`_load_pyfunc` with that directory; the code lives in the installed crlib, never in the
artifact. ``mlflow.pyfunc.load_model("models:/deepcr-acs-wfc@champion")`` therefore works in any
environment that has crlib installed, and any input size is accepted (fully convolutional).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from crlib.errors import InputDataError


class CrlibMaskModel:
    """Pyfunc wrapper: electrons in, CR probabilities out.

    ``predict`` takes a float array of shape ``(N, 1, H, W)``, ``(N, H, W)`` or ``(H, W)`` in
    electrons (``H``, ``W`` even) and returns probabilities in [0, 1] of the same shape.
    """

    def __init__(self, data_path: str) -> None:
        from crlib.model.package import read_package

        self.network, self.metadata = read_package(Path(data_path))

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """Probabilities for ``model_input`` (see class docstring)."""
        import torch

        if isinstance(model_input, dict) and len(model_input) == 1:
            model_input = next(iter(model_input.values()))
        image = np.asarray(model_input, dtype=np.float32)
        if image.ndim not in (2, 3, 4) or image.shape[-1] % 2 or image.shape[-2] % 2:
            raise InputDataError(
                "model input", f"shape {image.shape} is not (H, W), (N, H, W) or (N, 1, H, W) with even H, W"
            )
        if not np.isfinite(image).all():
            raise InputDataError("model input", "contains NaN or infinite pixels", fix="replace them first")
        shape = image.shape
        batch = image.reshape(-1, 1, shape[-2], shape[-1]) / np.float32(self.metadata.scale)
        if self.metadata.normalise:
            mean = batch.mean(axis=(1, 2, 3), keepdims=True)
            std = batch.std(axis=(1, 2, 3), keepdims=True)
            batch = (batch - mean) / np.maximum(std, np.float32(1e-12))
        with torch.inference_mode():
            probabilities = self.network(torch.from_numpy(np.ascontiguousarray(batch))).numpy()
        return probabilities.reshape(shape)


def _load_pyfunc(data_path: str) -> CrlibMaskModel:
    """MLflow entry point: build the model from a package directory."""
    return CrlibMaskModel(data_path)
