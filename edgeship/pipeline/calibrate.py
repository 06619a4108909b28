"""`calibrate`: post-training quantization settings every INT8 backend follows. No weight changes:
the pass records how many (seeded) calibration samples to draw, which range method, per-channel
or per-tensor weights, symmetric or asymmetric activations. Each backend maps the method to its
own calibrator (min-max, percentile, entropy, MSE where it has one) and says so in its report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from edgeship.calibration.quant import QuantSettings
from edgeship.pipeline.base import Pass, PassConfig, PassContext, PassResult


class CalibrateConfig(PassConfig):
    samples: int = Field(512, ge=1, description="calibration samples drawn from the calibration split")
    method: Literal["minmax", "percentile", "entropy", "mse"] = "minmax"
    percentile: float = Field(99.999, gt=50, le=100, description="for method: percentile")
    per_channel: bool = Field(True, description="per-channel weight scales (else per-tensor)")
    symmetric_activations: bool | None = Field(
        None, description="symmetric activation ranges (true) or asymmetric ones with a zero point (false); unset: "
        "each backend's faster scheme: OpenVINO symmetric (NNCF's PERFORMANCE preset: its CPU plugin runs depthwise "
        "convolutions with an activation zero point in a slower kernel), ONNX Runtime and LiteRT asymmetric")
    seed: int | None = Field(None, description="calibration subset seed; default: the recipe's seed")


class Calibrate(Pass):
    name = "calibrate"
    Config = CalibrateConfig
    any_model = True
    example = {"samples": 128, "method": "percentile"}

    @classmethod
    def planned_quant(cls, config: CalibrateConfig, seed: int) -> QuantSettings:
        return QuantSettings(samples=config.samples, method=config.method, percentile=config.percentile,
                             per_channel=config.per_channel, symmetric_activations=config.symmetric_activations,
                             symmetric_weights=True, seed=seed if config.seed is None else config.seed, qat=False)

    def run(self, model: nn.Module, config: CalibrateConfig, ctx: PassContext) -> PassResult:
        available = len(ctx.data["calib"])
        quant = self.planned_quant(config, ctx.seed).model_copy(update={"samples": min(config.samples, available)})
        metrics = {**quant.to_dict(), "requested_samples": config.samples, "calib_split_size": available}
        return PassResult(model, metrics, quant)
