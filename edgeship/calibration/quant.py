"""Quantization settings shared by every backend, decided by the `calibrate` or `qat` pass
(or these defaults when a recipe asks for an INT8 target without either)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True)
class QuantSettings:
    samples: int = 512  # calibration samples drawn (seeded) from the calibration split
    method: Literal["minmax", "percentile", "entropy", "mse"] = "minmax"
    percentile: float = 99.999
    per_channel: bool = True  # weights
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    seed: int = 0
    qat: bool = False  # the model carries fake quantization: lower its own scales, no calibration

    def to_dict(self) -> dict:
        return asdict(self)
