"""A model the user holds only as ``.onnx``: converted to a torch ``fx.GraphModule`` with onnx2torch (a well-kept
converter) for the passes and the TFLite targets; the ONNX and OpenVINO targets take the file as it is
(``LowerContext.source_onnx``) when no pass changed the model.

onnx2torch imports torchvision for its NMS and RoIAlign converters, and torchvision does not import beside the CPU
torch 2.13 this project pins (``operator torchvision::nms does not exist``). When torchvision cannot be imported,
a stand-in module whose ``ops`` refuse to run takes its place in ``sys.modules``: every other operator converts, and
a model that uses NMS or RoIAlign fails naming them.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from edgeship.errors import EdgeshipError


def _torchvision_stand_in() -> None:
    try:
        import torchvision  # noqa: F401
        return
    except Exception:  # not installed, or installed for another torch (RuntimeError on import)
        pass

    def refuse(*_a, **_k):
        raise EdgeshipError("this ONNX model uses NonMaxSuppression or RoiAlign, which onnx2torch runs with "
                            "torchvision, and torchvision does not import beside this torch",
                            "use the onnx and openvino targets only (they take the file as it is)")

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.box_convert = ops.roi_align = refuse  # type: ignore[attr-defined]
    tv.ops = ops  # type: ignore[attr-defined]
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.ops", ops)


SMALL = 1024  # elements: a tensor computed from shapes and constants only is folded up to this size


class ConstantReshape(nn.Module):
    """ONNX ``Reshape`` to a shape that is a constant of the graph, held as Python ints: onnx2torch's ``OnnxReshape``
    reads the shape tensor's values at run time (``torch.any(shape == 0)``), which ``torch.export`` (litert-torch,
    PT2E) refuses as a data-dependent guard ('Could not guard on data-dependent expression Eq(u0, 1)')."""

    def __init__(self, shape: list[int]):
        super().__init__()
        self.shape = tuple(int(d) for d in shape)

    def forward(self, x, _shape=None):
        return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)])  # ONNX: 0 copies that axis


class ConstantSlice(nn.Module):
    """ONNX ``Slice`` with constant starts, ends, axes and steps, held as Python ints (onnx2torch's ``OnnxSlice`` reads
    them with ``.numpy()`` at run time, which torch.export refuses)."""

    def __init__(self, starts: list[int], ends: list[int], axes: list[int] | None, steps: list[int] | None):
        super().__init__()
        import torch  # heavy: imported when an ONNX model is converted
        from onnx2torch.node_converters.slice import _get_slices  # the converter's own ONNX -> Python slice rules

        as_tensor = lambda v: None if v is None else torch.tensor(v, dtype=torch.int64)  # noqa: E731
        flip, pos, neg = _get_slices(np.asarray(starts), np.asarray(ends), as_tensor(axes), as_tensor(steps))
        py = lambda v: None if v is None else int(v)  # noqa: E731
        plain = lambda sl: [s if not isinstance(s, slice) else slice(py(s.start), py(s.stop), py(s.step))  # noqa: E731
                            for s in sl]
        self.flip_dims, self.pos, self.neg = [int(d) for d in flip], plain(pos), plain(neg)

    def forward(self, x, *_constants):
        if self.flip_dims:
            x = x.flip(self.flip_dims)
        if self.pos:
            x = x[tuple(self.pos)]
        return x[tuple(self.neg)] if self.neg else x


def _constant(gm, node) -> Any:
    """The tensor a ``get_attr`` node reads, or None."""
    if getattr(node, "op", None) != "get_attr":
        return None
    try:
        return gm.get_buffer(node.target)
    except AttributeError:
        return None


def fold_constant_shapes(gm) -> int:
    """Replace every onnx2torch ``OnnxReshape`` whose shape is a graph constant by a :class:`ConstantReshape`, and every
    ``OnnxSlice`` whose bounds are by a :class:`ConstantSlice`; returns how many. (What is computed at run time stays
    as onnx2torch wrote it.)"""
    folded = 0
    for node in gm.graph.nodes:
        kind = type(gm.get_submodule(node.target)).__name__ if node.op == "call_module" else None
        if kind == "OnnxReshape" and len(node.args) > 1 and (shape := _constant(gm, node.args[1])) is not None:
            gm.add_submodule(node.target, ConstantReshape(shape.tolist()))
        elif kind == "OnnxSlice":
            values = [_constant(gm, a) for a in node.args[1:]]
            if len(values) < 2 or any(v is None for v in values):
                continue
            starts, ends, axes, steps = ([v.tolist() for v in values] + [None, None])[:4]
            gm.add_submodule(node.target, ConstantSlice(starts, ends, axes, steps))
        else:
            continue
        folded += 1
    if folded:
        gm.recompile()
    return folded


def freeze_shapes(model: nn.Module, examples: tuple) -> int:
    """For a converter that exports at one input shape (litert-torch: batch 1): in every onnx2torch graph of ``model``,
    the ``Shape`` results for ``examples`` and whatever small tensors are computed from them and from constants
    alone become constants, then :func:`fold_constant_shapes` runs. A Paddle or TF export's flatten
    (Shape -> Slice -> Concat -> Reshape) is then a plain reshape torch.export can trace. Changes ``model`` (give it
    a copy); returns how many nodes were frozen."""
    import torch  # heavy: only an ONNX model's TFLite targets get here
    from torch import fx

    shape_modules = [m for m in model.modules() if type(m).__name__ == "OnnxShape"]
    if not shape_modules:
        return 0
    seen: dict[int, Any] = {}
    hooks = [m.register_forward_hook(lambda mod, _args, out: seen.__setitem__(id(mod), out.detach().clone()))
             for m in shape_modules]
    try:
        with torch.no_grad():
            model(*examples)
    finally:
        for h in hooks:
            h.remove()
    frozen = 0
    for gm in [m for m in model.modules() if isinstance(m, fx.GraphModule)]:
        values: dict[Any, Any] = {}
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                if (v := _constant(gm, node)) is not None and v.numel() <= SMALL:
                    values[node] = v
                continue
            if node.op != "call_module":
                continue
            mod = gm.get_submodule(node.target)
            if id(mod) in seen:
                values[node] = seen[id(mod)]
            elif node.args and all(a in values for a in node.args if isinstance(a, fx.Node)) and \
                    not any(True for _ in mod.parameters()):
                with torch.no_grad():
                    out = mod(*[values.get(a, a) if isinstance(a, fx.Node) else a for a in node.args])
                if isinstance(out, torch.Tensor) and out.numel() <= SMALL:
                    values[node] = out
        for i, (node, value) in enumerate(values.items()):
            if node.op == "get_attr":
                continue
            name = f"frozen_shape_{i}"
            gm.register_buffer(name, value)
            with gm.graph.inserting_before(node):
                const = gm.graph.get_attr(name)
            node.replace_all_uses_with(const)
            gm.graph.erase_node(node)
            frozen += 1
        gm.graph.eliminate_dead_code()
        gm.recompile()
        fold_constant_shapes(gm)
    return frozen


def torch_from_onnx(path: Path) -> nn.Module:
    """The ONNX file as a torch module (an fx GraphModule), or one line naming what could not be converted."""
    import onnx  # heavy: only ONNX models need it here

    path = Path(path)
    if not path.is_file():
        raise EdgeshipError(f"model file not found: {path}", "check model.onnx")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:
        raise EdgeshipError(f"{path} is not a valid ONNX model ({' '.join(str(e).split())[:160]})",
                            "export it again (torch.onnx.export, tf2onnx, ...); onnx.checker must accept it") from None
    _torchvision_stand_in()
    try:
        from onnx2torch import convert
    except ImportError:
        raise EdgeshipError("onnx2torch is not installed (it converts an ONNX model for the passes and tflite "
                            "targets)", "pip install --no-deps onnx2torch (scripts/bootstrap.sh does)") from None
    try:
        gm = convert(model)
    except NotImplementedError as e:
        raise EdgeshipError(f"{path}: onnx2torch cannot convert it: {' '.join(str(e).split())[:200]}",
                            "use only the onnx and openvino targets for this model (no passes)") from None
    fold_constant_shapes(gm)
    return gm
