"""Choices shared by several ``crlib`` commands (one definition each, so their spelling cannot drift)."""

from __future__ import annotations

from typing import Literal

from crlib.config import DeviceName, InferencePrecision

#: Where torch runs: ``auto`` picks CUDA when it is available (the settings' ``CRLIB_DEVICE`` choices).
DeviceOption = DeviceName
#: Simulated exposure size of the benchmarks: ``full`` (2 x 2048 x 4096) or ``small`` crops.
SizeOption = Literal["full", "small"]
#: Simulator effects: ``realistic`` (the default of every simulating command) or ``basic``.
EffectsOption = Literal["basic", "realistic"]
#: Inference precision (the settings' ``CRLIB_INFERENCE_PRECISION`` choices).
PrecisionOption = InferencePrecision
