"""torch.fx side of the lowering: tracing (BN folded), ATen aliases for torch.export programs, tensor
shapes, the ranges of every tensor over calibration samples, and the unsupported-operator error."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from edgeship.errors import TargetError
from edgeship.models import graph
from edgeship.models.graph import layer_of, op_name

FMT = "tflite"
NCHW_TO_NHWC = (0, 3, 1, 2)  # torch dim of a 4-D tensor -> TF axis
SUPPORTED = ("Conv1d/Conv2d (incl. depthwise, grouped, dilated), BatchNorm1d/2d, ReLU, ReLU6, Hardtanh, LeakyReLU, "
             "Sigmoid, Tanh, Hardswish, Hardsigmoid, SiLU, add, mul, cat, MaxPool1d/2d, AvgPool1d/2d, "
             "AdaptiveAvg/MaxPool1d/2d, mean, flatten/view/reshape to (N, -1), Linear, Dropout, Identity, Softmax")


def unsupported(what: str, node: fx.Node, gm: fx.GraphModule, why: str = "") -> TargetError:
    detail = f" ({why})" if why else ""
    return TargetError(f"{FMT}: operator {what or op_name(node, gm)} in layer '{layer_of(node)}' is not supported "
                       f"by the TFLite lowering{detail}",
                       f"replace it with supported operators ({SUPPORTED}) or drop the tflite targets")


def _aten_aliases() -> dict:
    """The ATen overloads a ``torch.export`` program (.pt2) is written in, as the torch functions with the
    same argument order that the translator already lowers."""
    a = torch.ops.aten
    pairs = [("conv2d.default", F.conv2d), ("conv1d.default", F.conv1d), ("linear.default", F.linear),
             ("relu.default", F.relu), ("relu_.default", F.relu), ("hardtanh.default", F.hardtanh),
             ("hardtanh_.default", F.hardtanh),
             ("leaky_relu.default", F.leaky_relu), ("sigmoid.default", torch.sigmoid), ("tanh.default", torch.tanh),
             ("silu.default", F.silu), ("silu_.default", F.silu), ("hardswish.default", F.hardswish),
             ("hardswish_.default", F.hardswish), ("hardsigmoid.default", F.hardsigmoid),
             ("add.Tensor", operator.add), ("add_.Tensor", operator.add), ("mul.Tensor", operator.mul),
             ("mul_.Tensor", operator.mul), ("cat.default", torch.cat), ("flatten.using_ints", torch.flatten),
             ("view.default", torch.reshape), ("reshape.default", torch.reshape), ("mean.dim", torch.mean),
             ("adaptive_avg_pool2d.default", F.adaptive_avg_pool2d), ("max_pool2d.default", F.max_pool2d),
             ("avg_pool2d.default", F.avg_pool2d), ("avg_pool1d.default", F.avg_pool1d),
             ("max_pool1d.default", F.max_pool1d), ("adaptive_avg_pool1d.default", F.adaptive_avg_pool1d),
             ("dropout.default", F.dropout), ("softmax.int", F.softmax)]
    out = {}
    for name, fn in pairs:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(a, packet, None), overload, None)
        if op is not None:
            out[op] = fn
    return out


ATEN_ALIASES = _aten_aliases()
ATEN_BATCH_NORM = getattr(getattr(torch.ops.aten, "batch_norm", None), "default", None)


def trace(model: nn.Module, example: torch.Tensor, fold_bn: bool = True) -> fx.GraphModule:
    """fx-trace the model with every conv+BN pair folded (``edgeship.models.graph.trace``). A torch.export
    program is used as it is, its batch norms lowered as scale + shift, which the TFLite converter folds
    into the preceding convolution."""
    fix = "give the model as model.zoo or model.factory (a traceable nn.Module) for tflite targets"
    if isinstance(model, torch.jit.ScriptModule):
        raise TargetError(f"{FMT}: a TorchScript model cannot be lowered to TFLite (the translator reads a "
                          "torch.fx trace of an nn.Module)", fix)
    try:
        return graph.trace(model, example, fold_bn)
    except graph.TraceError as e:
        raise TargetError(f"{FMT}: torch.fx cannot trace the model ({e})", fix) from None


def shape(node: Any) -> tuple[int, ...] | None:
    tm = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else None


def _each_tensor(gm: fx.GraphModule, calib: np.ndarray, batch: int, visit: Callable) -> None:
    """Run the calibration samples through the graph; ``visit(node name, output)`` per float tensor."""

    class Visitor(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                visit(n.name, out)
            return out

    v = Visitor(gm)
    with torch.no_grad():
        for i in range(0, len(calib), batch):
            v.run(torch.from_numpy(np.ascontiguousarray(calib[i:i + batch], np.float32)))


def observe_ranges(gm: fx.GraphModule, calib: np.ndarray, percentile: float | None = None,
                   batch: int = 64, bins: int = 2048) -> dict[str, tuple[float, float]]:
    """Range of every tensor-valued node over the calibration samples (torch, float): min/max, or with
    ``percentile`` the (100 - p)th and pth percentiles from a histogram over [min, max]."""
    mm: dict[str, list[float]] = {}

    def minmax(name: str, t: torch.Tensor) -> None:
        lo, hi = float(t.min()), float(t.max())
        mm[name] = [min(mm[name][0], lo), max(mm[name][1], hi)] if name in mm else [lo, hi]

    _each_tensor(gm, calib, batch, minmax)
    if percentile is None:
        return {k: (v[0], v[1]) for k, v in mm.items()}
    hist: dict[str, torch.Tensor] = {}

    def histogram(name: str, t: torch.Tensor) -> None:
        lo, hi = mm[name]
        h = torch.histc(t.float(), bins=bins, min=lo, max=hi if hi > lo else lo + 1e-8)
        hist[name] = hist[name] + h if name in hist else h

    _each_tensor(gm, calib, batch, histogram)
    out = {}
    for name, h in hist.items():
        lo, hi = mm[name]
        cdf = (torch.cumsum(h, 0) / h.sum()).numpy()
        edges = np.linspace(lo, hi, bins + 1)
        q_lo = edges[int(np.searchsorted(cdf, 1 - percentile / 100))]
        q_hi = edges[min(int(np.searchsorted(cdf, percentile / 100)) + 1, bins)]
        out[name] = (float(q_lo), float(q_hi))
    return out


