"""`lowbit`: quantization-aware training of the weights at 1, 2, 4 or 8 bits (binary, ternary, uniform), with a
straight-through estimator, fine-tuned with KD; activations stay float.

Per output channel of each conv/linear layer (the latent float weights are what the optimizer updates; the forward
pass sees their quantized values, and the gradient passes through the quantizer unchanged):

- ``bits: 1``, binary (BinaryConnect with XNOR-Net's scale, Rastegari et al. 2016): w_b = a sign(w), a = mean |w|
  of the channel; the gradient is cut where |w| > 1 (BinaryNet's clipped STE);
- ``bits: 2``, ternary with trained scales (TTQ, Zhu et al. 2017): w_t = +Wp where w > t max|w|, -Wn where
  w < -t max|w|, else 0; Wp and Wn are parameters trained with the rest (their gradients are the sums over the
  weights they stand for);
- ``bits: 4`` / ``8``: uniform symmetric, scale = max|w| / (2^(b-1) - 1), round to nearest.

Layers with fewer than ``min_fan_in`` weights per output channel (a first convolution on one input channel, the
depthwise convolutions of a MobileNet) and, with ``keep_last``, the classifier stay at 8 bits: partial
binarization, as the seed describes and the binary-network papers do. Batch norm stays (binary networks need it);
the converters fold it into the weights, which keeps each output channel's 2 (binary) or 3 (ternary) values.

Shipping: no runtime edgeship targets runs weights of fewer than 8 bits, so the artifacts hold them as int8 codes
on the FP32 or INT8 routes (binary: +-127 per channel; ternary: +127, 0 and -round(127 Wn/Wp), within half a step
of -Wn) and run at INT8 speed. The metrics give ``packed_bytes``, the size at the trained bit width (codes packed,
one float scale per channel and sign, other tensors at 32 bits), what a bit-serial runtime would load, beside the
artifact sizes in the run record. XNOR-Net's binary activations are not done: nothing here runs XNOR/popcount
kernels.

Hand-written: the quantizers with their straight-through gradients (a parametrization per layer, a few lines
each); torch has fake quantization for 8 bits but no binary or ternary quantizer with trained scales.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.utils.parametrize as parametrize
from pydantic import Field
from torch import nn

from edgeship.pipeline.base import Pass, PassContext, PassResult
from edgeship.pipeline.coding import FLOAT_BITS, weight_layers
from edgeship.pipeline.training import TrainConfig, evaluate, finetune

NOTE = ("no runtime here runs weights below 8 bits: the artifacts hold the trained values as int8 codes and run "
        "at INT8 speed; packed_bytes is the size at the trained bit width")


class LowBitConfig(TrainConfig):
    bits: Literal[1, 2, 4, 8] = Field(2, description="weight bits: 1 binary, 2 ternary, 4 or 8 uniform")
    epochs: int = Field(3, ge=0)
    threshold: float = Field(0.05, gt=0, lt=1, description="ternary: zero where |w| < threshold * max|w|")
    min_fan_in: int = Field(32, ge=1, description="layers with fewer weights per output channel stay at 8 bits")
    keep_last: bool = Field(True, description="the last conv/linear layer (the classifier) stays at 8 bits")


def _ste(q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Exactly the value of ``q`` (w - w is exactly zero; w + (q - w) would not be q in floating point) with the
    gradient of ``w`` (straight through)."""
    return q.detach() + (w - w.detach())


def _per_channel(w: torch.Tensor) -> tuple[int, ...]:
    return (-1,) + (1,) * (w.dim() - 1)


class Uniform(nn.Module):
    """Symmetric per-channel quantization to ``bits`` (scale from the channel's max |w|)."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        qmax = 2 ** (self.bits - 1) - 1
        scale = w.detach().abs().flatten(1).amax(1).clamp_min(1e-12).view(_per_channel(w)) / qmax
        return _ste(torch.round(w / scale).clamp(-qmax, qmax) * scale, w)


class Binary(nn.Module):
    """a sign(w), a = mean |w| per channel; the gradient is cut where |w| > 1."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        alpha = w.detach().abs().flatten(1).mean(1).view(_per_channel(w))
        q = alpha * torch.where(w >= 0, 1.0, -1.0)
        return _ste(q, torch.where(w.abs() <= 1, w, w.detach()))


class Ternary(nn.Module):
    """+Wp / 0 / -Wn per channel, the threshold t max|w|, Wp and Wn trained (TTQ)."""

    def __init__(self, w: torch.Tensor, threshold: float):
        super().__init__()
        self.threshold = threshold
        pos, neg = self.masks(w.detach())
        mean = lambda m: ((w.detach().abs() * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1))  # noqa: E731
        self.wp = nn.Parameter(mean(pos).clamp_min(1e-6))
        self.wn = nn.Parameter(mean(neg).clamp_min(1e-6))

    def masks(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        delta = self.threshold * w.abs().flatten(1).amax(1).view(_per_channel(w))
        return (w > delta).to(w.dtype), (w < -delta).to(w.dtype)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        pos, neg = self.masks(w.detach())
        shape = _per_channel(w)
        q = self.wp.view(shape) * pos - self.wn.view(shape) * neg
        return q + (w - w.detach())  # the scales get their gradients through q, the latent weights straight through


def quantizer(w: torch.Tensor, bits: int, threshold: float) -> nn.Module:
    return Binary() if bits == 1 else Ternary(w, threshold) if bits == 2 else Uniform(bits)


def layer_bits(model: nn.Module, config: LowBitConfig) -> dict[str, int]:
    """The bit width of each conv/linear layer: ``bits``, or 8 for the narrow ones and (``keep_last``) the last."""
    layers = weight_layers(model)
    out = {}
    for i, (name, m) in enumerate(layers):
        fan_in = m.weight[0].numel()
        last = config.keep_last and i == len(layers) - 1
        out[name] = 8 if (fan_in < config.min_fan_in or last) else config.bits
    return out


def packed_bytes(model: nn.Module, bits: dict[str, int]) -> int:
    """Bytes at the trained bit widths: codes packed, per-channel float scales (two for ternary), the rest fp32."""
    total, coded = 0, set()
    for name, m in weight_layers(model):
        b = bits.get(name, FLOAT_BITS)
        scales = 0 if b == FLOAT_BITS else m.weight.shape[0] * (2 if b == 2 else 1)
        total += m.weight.numel() * b + scales * FLOAT_BITS
        coded.add(f"{name}.weight")
    other = sum(t.numel() for k, t in model.state_dict().items() if k not in coded and t.is_floating_point())
    return (total + other * FLOAT_BITS + 7) // 8


class LowBit(Pass):
    name = "lowbit"
    Config = LowBitConfig
    example = {"bits": 2, "epochs": 1, "samples": 256}
    needs_module = "low-bit quantization-aware training"

    def run(self, model: nn.Module, config: LowBitConfig, ctx: PassContext) -> PassResult:
        model = copy.deepcopy(model).eval()
        bits = layer_bits(model, config)
        modules = dict(model.named_modules())
        for name, b in bits.items():
            parametrize.register_parametrization(modules[name], "weight",
                                                 quantizer(modules[name].weight, b, config.threshold))
        quantized_top1 = evaluate(model, ctx.data["val"])
        hist = finetune(model, config, ctx, ctx.teacher)
        for name in bits:
            parametrize.remove_parametrizations(modules[name], "weight", leave_parametrized=True)
        values = {n: int(torch.unique(modules[n].weight.detach()[0]).numel()) for n in bits}
        fp32 = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point()) * 4
        packed = packed_bytes(model, bits)
        metrics = {"bits": config.bits, "layer_bits": bits,
                   "layers_at_8_bits": sorted(n for n, b in bits.items() if b == 8 and config.bits != 8),
                   "values_in_first_channel": values, "val_top1_quantized": quantized_top1,
                   "packed_bytes": packed, "fp32_bytes": fp32, "packed_ratio": round(fp32 / packed, 2),
                   "note": NOTE, **hist}
        return PassResult(model, metrics)
