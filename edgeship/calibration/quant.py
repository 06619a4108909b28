"""Quantization settings shared by every backend, decided by the `calibrate` or `qat` pass (or these
defaults when a recipe asks for an INT8 target without either), and what a QAT pass learned, in the
form a backend that does not read fake quantization from the module consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict

from edgeship.schema import Strict

CalibrationMethod = Literal["minmax", "percentile", "entropy", "mse"]


class QuantSettings(Strict):
    model_config = ConfigDict(frozen=True)

    samples: int = 512  # calibration samples drawn (seeded) from the calibration split
    method: CalibrationMethod = "minmax"
    percentile: float = 99.999
    per_channel: bool = True  # weights
    # None: each INT8 backend's faster scheme (OpenVINO symmetric, ONNX Runtime and LiteRT asymmetric)
    symmetric_activations: bool | None = None
    symmetric_weights: bool = True
    seed: int = 0
    qat: bool = False  # the model carries fake quantization: lower its own scales, no calibration
    # mixed precision: conv/linear layers (module names) the INT8 backends leave in float (the mixed_precision pass)
    float_layers: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


@dataclass
class LearnedQuantization:
    """A QAT model seen without its fake quantization: ``float_model`` (an ``nn.Module``: batch norm folded,
    weights on the int8 grid QAT learned, no quantizers) and ``activation_ranges``, the learned range of
    every quantized activation keyed by the fx node names of ``float_model``'s graph. The pipeline derives
    it from the pass that quantized the model (``Pass.learned_quantization``); a backend that cannot take
    fake quantization from the module (TFLite) rebuilds it from these."""

    float_model: Any
    activation_ranges: dict[str, dict]
