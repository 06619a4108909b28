"""torch.fx tracing and layer naming, shared by the passes that rewrite a graph (qat) and the backends that
translate one (TFLite) or name the layer an unsupported operator sits in (ONNX, OpenVINO)."""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from edgeship.models.load import exported_graph


def forward_with_hooks(model: nn.Module, example: torch.Tensor, handles: list) -> None:
    """One eval-mode, no-grad forward pass of ``example``; the hook ``handles`` are removed afterwards."""
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()


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


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (a dotted path) is."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def fold_batch_norm(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` with each BatchNorm2d that directly follows a Conv2d folded into it (torch's
    ``fuse_conv_bn_eval``) and replaced by ``nn.Identity``, in the model's own classes: torch.fx only finds the
    pairs (``trace``'s GraphModule computes the same, but cannot be pickled into the stage cache). Returns
    (the copy, how many batch norms were folded); raises TraceError when torch.fx cannot trace the model."""
    model = copy.deepcopy(model).eval()
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as e:  # data-dependent control flow fails the trace
        raise TraceError(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in graph.nodes:
        conv = node.args[0] if node.op == "call_module" and node.args else None
        if not (isinstance(modules.get(node.target), nn.BatchNorm2d) and isinstance(conv, fx.Node)
                and conv.op == "call_module" and isinstance(modules.get(conv.target), nn.Conv2d)
                and len(conv.users) == 1 and calls[node.target] == calls[conv.target] == 1):
            continue
        replace_module(model, conv.target, fuse_conv_bn_eval(modules[conv.target], modules[node.target]))
        replace_module(model, node.target, nn.Identity())
        folded += 1
    return model, folded


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
