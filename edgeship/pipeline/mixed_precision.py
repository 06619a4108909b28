"""`mixed_precision`: per-layer sensitivity to INT8 decides which conv/linear layers the INT8 backends leave in float.

The pass is `calibrate` (the same keys: calibration samples, method, per-channel or per-tensor weights, symmetric
activations) plus a choice of float layers, recorded in ``QuantSettings.float_layers`` (module names). Each INT8
backend keeps those layers in float with its own mechanism: ONNX Runtime's ``nodes_to_exclude``, NNCF's
``ignored_scope``, TFLite's selective quantization for ``int8_float_io`` (each backend maps module names to its graph's
nodes; a TFLite target it cannot serve fails with the reason rather than quantize everything).

Sensitivity (measured in torch on ``eval_samples`` validation images, batch norm folded first as the exporters do):
for each layer alone, its weights quantized (int8, symmetric, per channel or per tensor as configured) and its input
quantized (uint8 per tensor, asymmetric unless ``symmetric_activations`` is true, the range the calibration samples
span), the change of top-1 against the float model and the mean KL divergence of the softmax outputs, which still ranks
layers whose top-1 change rounds to zero. Then the whole model so simulated (every layer quantized), and, most
sensitive first by KL, layers are set back to float until the simulated top-1 is within ``max_drop_pt`` of float or
``max_float_layers`` are float. ``float_layers`` names them instead of searching (the sensitivity is still measured
and reported). The simulation uses min/max ranges whatever ``method`` says: it ranks layers, the backends' own
quantizers make the artifacts, and each artifact's accuracy is verified on the test split as always.

The per-layer table is in the stage's metrics (``layer_sensitivity``) and report.html shows it.

Hand-written: the simulation (forward hooks and weight rounding over torch; no library measures one layer at a
time for three runtimes). The selection is the greedy one of HAWQ-style mixed precision without the Hessian.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgeship.calibration.quant import QuantSettings
from edgeship.errors import EdgeshipError
from edgeship.models.graph import TraceError, fold_batch_norm, forward_with_hooks
from edgeship.pipeline.base import Pass, PassContext, PassResult
from edgeship.pipeline.calibrate import Calibrate, CalibrateConfig
from edgeship.pipeline.coding import weight_layers
from edgeship.pipeline.training import predict, subset, top1


class MixedPrecisionConfig(CalibrateConfig):
    eval_samples: int = Field(2000, ge=10, description="validation images each layer's sensitivity is measured on")
    max_drop_pt: float = Field(0.1, ge=0, description="stop once the simulated INT8 model is this close to float")
    max_float_layers: int = Field(3, ge=0, description="at most this many layers stay float")
    float_layers: list[str] | None = Field(None, description="these layers stay float (no search)")


def quantize_weight(w: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """Symmetric int8, per output channel or per tensor, dequantized back to float."""
    amax = w.abs().flatten(1).amax(1).view(-1, *([1] * (w.dim() - 1))) if per_channel else w.abs().max()
    scale = amax.clamp_min(1e-12) / 127
    return torch.round(w / scale).clamp(-127, 127) * scale


def quantize_activation(x: torch.Tensor, lo: float, hi: float, symmetric: bool) -> torch.Tensor:
    if symmetric:
        scale = max(abs(lo), abs(hi), 1e-12) / 127
        return torch.round(x / scale).clamp(-128, 127) * scale
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / 255
    zero = round(-lo / scale)
    return (torch.round(x / scale) + zero).clamp(0, 255).sub(zero) * scale


class Simulator:
    """The model with any set of its conv/linear layers fake-quantized (weights and inputs), in torch."""

    def __init__(self, model: nn.Module, calib: torch.Tensor, per_channel: bool, symmetric: bool):
        self.model, self.symmetric = model, symmetric
        self.layers = dict(weight_layers(model))
        self.original = {n: m.weight.detach().clone() for n, m in self.layers.items()}
        self.quantized = {n: quantize_weight(w, per_channel) for n, w in self.original.items()}
        self.ranges: dict[str, list[float]] = {}

        def observe(name):
            def hook(mod, inputs):
                x = inputs[0].detach()
                r = self.ranges.setdefault(name, [float("inf"), float("-inf")])
                r[0], r[1] = min(r[0], float(x.min())), max(r[1], float(x.max()))
            return hook

        forward_with_hooks(model, calib, [m.register_forward_pre_hook(observe(n)) for n, m in self.layers.items()])

    def logits(self, quantized: set[str], x: torch.Tensor) -> torch.Tensor:
        handles = []
        for name, m in self.layers.items():
            m.weight.data = self.quantized[name] if name in quantized else self.original[name]
            if name in quantized and name in self.ranges:
                lo, hi = self.ranges[name]
                handles.append(m.register_forward_pre_hook(
                    lambda mod, inp, lo=lo, hi=hi: (quantize_activation(inp[0], lo, hi, self.symmetric),)))
        try:
            return predict(self.model, x)
        finally:
            for h in handles:
                h.remove()
            for name, m in self.layers.items():
                m.weight.data = self.original[name]


def kl(ref: torch.Tensor, logits: torch.Tensor) -> float:
    return float(F.kl_div(F.log_softmax(logits, 1), F.log_softmax(ref, 1), reduction="batchmean", log_target=True))


class MixedPrecision(Pass):
    name = "mixed_precision"
    Config = MixedPrecisionConfig
    example = {"samples": 128, "eval_samples": 100, "max_float_layers": 1}
    needs_module = "mixed-precision sensitivity analysis"

    @classmethod
    def planned_quant(cls, config: MixedPrecisionConfig, seed: int) -> QuantSettings:
        return Calibrate.planned_quant(config, seed)

    def run(self, model: nn.Module, config: MixedPrecisionConfig, ctx: PassContext) -> PassResult:
        names = [n for n, _ in weight_layers(model)]
        unknown = sorted(set(config.float_layers or []) - set(names))
        if unknown:
            raise EdgeshipError(f"{ctx.stage}: float_layers names no conv/linear layer {', '.join(unknown)}",
                                f"use module names of conv/linear layers, e.g. {', '.join(names[:3])}")
        try:
            work, folded = fold_batch_norm(model)
        except TraceError:  # a model torch.fx cannot trace is simulated with its batch norms as they are
            work, folded = copy.deepcopy(model).eval(), 0
        calib = ctx.data["calib"].x[:config.samples]
        val = subset(ctx.data["val"], config.eval_samples, ctx.seed)
        sim = Simulator(work, calib, config.per_channel, bool(config.symmetric_activations))
        ref = sim.logits(set(), val.x)
        ref_top1 = top1(ref, val.y)
        table = {}
        for name in names:
            out = sim.logits({name}, val.x)
            table[name] = {"top1_drop_pt": round(100 * (ref_top1 - top1(out, val.y)), 3), "kl": kl(ref, out)}
        order = sorted(names, key=lambda n: -table[n]["kl"])
        for rank, name in enumerate(order):
            table[name]["rank"] = rank + 1
        steps = [{"float_layers": [], "top1": top1(sim.logits(set(names), val.x), val.y)}]
        if config.float_layers is not None:
            chosen = list(config.float_layers)
            if chosen:
                steps.append({"float_layers": chosen, "top1": top1(sim.logits(set(names) - set(chosen), val.x),
                                                                   val.y)})
        else:
            chosen = []
            for name in order[:config.max_float_layers]:
                if 100 * (ref_top1 - steps[-1]["top1"]) <= config.max_drop_pt:
                    break
                chosen.append(name)
                steps.append({"float_layers": list(chosen),
                              "top1": top1(sim.logits(set(names) - set(chosen), val.x), val.y)})
        available = len(ctx.data["calib"])
        quant = self.planned_quant(config, ctx.seed).model_copy(
            update={"samples": min(config.samples, available), "float_layers": tuple(chosen)})
        metrics = {**quant.to_dict(), "layer_sensitivity": table, "float_top1_sim": ref_top1,
                   "int8_top1_sim": steps[0]["top1"], "mixed_top1_sim": steps[-1]["top1"], "selection": steps,
                   "eval_samples": len(val), "batch_norms_folded": folded, "requested_samples": config.samples,
                   "note": f"{len(chosen)} of {len(names)} conv/linear layers stay float on the INT8 targets"}
        return PassResult(model, metrics, quant)
