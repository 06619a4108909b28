"""torch.fx tracing and layer naming, shared by the passes that rewrite a graph (qat) and the backends that
translate one (TFLite) or name the layer an unsupported operator sits in (ONNX, OpenVINO)."""

from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from edgeship.models.load import exported_graph


class TraceError(Exception):
    """torch.fx could not trace the model (``str(e)``: the reason, one line); callers say what needed it."""


def trace(model: nn.Module, example: torch.Tensor, fold_bn: bool = True) -> fx.GraphModule:
    """fx-trace ``model`` in eval mode, fold every conv/linear + batch norm pair (``fold_bn``) and record each
    node's shape (``tensor_meta``). A torch.export program is already a graph (ATen ops): it is used as it is.
    The traced graph shares parameters with ``model`` where nothing was folded: pass a copy to rewrite it."""
    from torch.fx.experimental.optimization import fuse
    from torch.fx.passes.shape_prop import ShapeProp

    if isinstance(model, torch.jit.ScriptModule):
        raise TraceError("a TorchScript model has no torch.fx trace (it is a compiled graph, not Python code)")
    gm = exported_graph(model)
    if gm is None:
        try:  # data-dependent control flow fails the trace
            gm = fuse(model.eval()) if fold_bn else fx.symbolic_trace(model.eval())
        except Exception as e:
            raise TraceError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example)
    except Exception as e:
        raise TraceError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    return gm


def layer_of(node: fx.Node) -> str:
    """The user's name for where a node comes from: the module path, else the fx node name."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path = list(stack.values())[-1][0]
        return f"{path}:{node.name}" if path else node.name
    return node.name


def op_name(node: fx.Node, gm: fx.GraphModule) -> str:
    """The operator a node calls, as a user would write it (``Conv2d``, ``Tensor.view``, ``torch.cat``)."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    t = node.target
    mod = getattr(t, "__module__", "") or ""
    return f"{mod + '.' if mod and not mod.startswith('_') else ''}{getattr(t, '__name__', str(t))}"


def layer_of_op(model: nn.Module, op: str) -> str | None:
    """Best effort: the layer (module path) where ``op`` (a converter's name such as ``aten::fft_rfft`` or
    ``qa::mysquash``) is called, from an fx trace of the model; None when it cannot be told."""
    base = op.split("::")[-1].split(".")[0]
    if not base or isinstance(model, torch.jit.ScriptModule):
        return None
    try:
        gm = fx.symbolic_trace(model)
    except Exception:
        return None
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method"):
            continue
        t = node.target
        name = t if isinstance(t, str) else getattr(t, "__name__", None) or str(t).split(".")[-1]
        if name == base or base in str(t).split("."):  # torch.fft.rfft is fft_rfft; torch.ops.qa.x is qa.x.default
            return layer_of(node)
    return None
