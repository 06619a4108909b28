"""Loading a user's model: a zoo name, ``package.module:factory`` (+ state_dict), a TorchScript
file or a ``torch.export`` program. Every failure is one line naming the problem and the fix."""

from __future__ import annotations

import copy
import importlib
import io
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.models.zoo import ZOO


def load_checkpoint(path: Path, trust_pickle: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` unless the user opts in to full unpickling."""
    path = Path(path)
    if not path.is_file():
        raise EdgeshipError(f"model file not found: {path}", "check the path, or run `edgeship train RECIPE` "
                            "to create a reference model's checkpoint")
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch's zip format, or a legacy pickle
        raise EdgeshipError(f"{path} is not a torch checkpoint (it starts with {head!r})",
                            "save the weights with torch.save(model.state_dict(), path)")
    try:
        if trust_pickle:
            importable_cwd()  # a pickled module's class imports from the cwd, as a factory does
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except ModuleNotFoundError as e:
        raise EdgeshipError(f"{path} holds a pickled module whose code is not importable ({e})",
                            "run from the directory that holds that module, add it to PYTHONPATH, or save a "
                            "state_dict and name the class with model.factory") from None
    except pickle.UnpicklingError as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # torch's message carries terminal bold codes
        first = text.splitlines()[0] if text else "unsupported object"
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise EdgeshipError(f"{path} holds Python objects that torch.load(weights_only=True) refuses "
                                f"({first[:120]})", "if you trust the file, rerun with --trust-pickle") from None
        raise EdgeshipError(f"{path} is not a valid torch checkpoint ({first[:120]})",
                            "re-save it with torch.save(model.state_dict(), path)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise EdgeshipError(f"{path} is corrupt or not a torch file ({str(e).splitlines()[0][:120]})",
                            "re-save it with torch.save(model.state_dict(), path)") from None


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"]
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise EdgeshipError(f"{path} does not hold a state_dict", "save it with torch.save(model.state_dict(), path)")


def _apply_weights(model: nn.Module, path: Path, trust_pickle: bool) -> nn.Module:
    obj = load_checkpoint(path, trust_pickle)
    if isinstance(obj, nn.Module):  # a whole pickled module (only with --trust-pickle)
        return obj
    sd = _state_dict_of(obj, path)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:200]
        raise EdgeshipError(f"{path} does not fit the model ({detail})",
                            "check model.args (widths, depth, classes) match the ones the weights were "
                            "trained with") from None
    return model


def importable_cwd() -> None:
    """User code (a factory's module, a pickled module's class) imports from the working directory."""
    if "." not in sys.path and "" not in sys.path:
        sys.path.insert(0, ".")


def import_factory(spec: str):
    mod_name, _, fn_name = spec.partition(":")
    importable_cwd()
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise EdgeshipError(f"cannot import {mod_name!r} for model.factory {spec!r} ({e})",
                            "check the module path and that its package is installed or on PYTHONPATH") from None
    fn = getattr(module, fn_name, None)
    if fn is None or not callable(fn):
        raise EdgeshipError(f"{mod_name} has no callable {fn_name!r} (model.factory {spec!r})",
                            "name a function or class that returns an nn.Module")
    return fn


def build_model(spec, input_spec, num_classes: int, trust_pickle: bool = False,
                require_weights: bool = True) -> nn.Module:
    """Recipe ``model`` -> an ``nn.Module`` in eval mode, checked against the input shape."""
    c, h, w = input_spec.shape
    if spec.zoo is not None:
        args = {"in_channels": c, "num_classes": num_classes, "input_size": (h, w), **spec.args}
        try:
            model = ZOO[spec.zoo](**args)
        except (TypeError, ValueError) as e:
            raise EdgeshipError(f"model.args do not fit zoo model {spec.zoo!r}: {e}",
                                "see the model's arguments in edgeship/models/zoo.py") from None
        if spec.weights is not None and Path(spec.weights).is_file():
            model = _apply_weights(model, spec.weights, trust_pickle)
        elif require_weights:
            raise EdgeshipError(f"no trained weights for zoo model {spec.zoo!r} at {spec.weights}",
                                "run `edgeship train RECIPE` first (make demo does)")
    elif spec.factory is not None:
        fn = import_factory(spec.factory)
        try:
            model = fn(**spec.args)
        except Exception as e:  # user code: any failure is bad input
            raise EdgeshipError(f"model.factory {spec.factory!r} raised {type(e).__name__}: {e}",
                                "check model.args") from None
        if not isinstance(model, nn.Module):
            raise EdgeshipError(f"model.factory {spec.factory!r} returned {type(model).__name__}, not an nn.Module",
                                "return the module itself")
        if spec.weights is not None:
            model = _apply_weights(model, spec.weights, trust_pickle)
    elif spec.torchscript is not None:
        path = Path(spec.torchscript)
        if not path.is_file():
            raise EdgeshipError(f"model file not found: {path}", "check model.torchscript")
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:  # torch raises RuntimeError or ValueError variants
            raise EdgeshipError(f"{path} is not a loadable TorchScript file ({str(e).splitlines()[0][:120]})",
                                "save it with torch.jit.save(torch.jit.script(model), path)") from None
    else:
        path = Path(spec.exported)
        if not path.is_file():
            raise EdgeshipError(f"model file not found: {path}", "check model.exported")
        try:
            model = torch.export.load(str(path)).module()
        except Exception as e:
            raise EdgeshipError(f"{path} is not a loadable torch.export program ({str(e).splitlines()[0][:120]})",
                                "save it with torch.export.save(torch.export.export(model, (x,)), path)") from None
    set_eval(model)
    check_input(model, input_spec, num_classes)
    return model


class Frozen(nn.Module):
    """Wraps a torch.export module (which refuses train()/eval()) for tools that toggle modes."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def train(self, mode: bool = True) -> Frozen:
        self.training = False
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def clone_module(model: nn.Module) -> nn.Module:
    """An independent copy: one a pass can train or a converter can change without touching the original
    (torch.onnx.export rewrites a TorchScript module's graph in place, after which openvino.convert_model fails on
    it). A TorchScript module is copied through its own format: a deepcopy shares its graphs (one compilation unit)
    and its parameters come back as non-leaf tensors that an optimizer refuses."""
    if isinstance(model, torch.jit.ScriptModule):
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        buf.seek(0)
        return torch.jit.load(buf)
    return copy.deepcopy(model)


def exported_graph(model: nn.Module):
    """The ATen graph module of a torch.export program (possibly wrapped in ``Frozen``), else None."""
    import torch.fx as fx

    inner = model.module if isinstance(model, Frozen) else model
    if isinstance(inner, fx.GraphModule) and any(
            n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload) for n in inner.graph.nodes):
        return inner
    return None


def exportable(model: nn.Module) -> nn.Module:
    """The module in eval mode, wrapped in ``Frozen`` when it cannot switch modes itself."""
    try:
        return model.eval()
    except NotImplementedError:
        return Frozen(model)


def set_eval(model: nn.Module) -> nn.Module:
    """``model.eval()``, except for torch.export modules, which are frozen in the mode they were exported in."""
    try:
        model.eval()
    except NotImplementedError:
        pass
    return model


def check_input(model: nn.Module, input_spec, num_classes: int | None = None) -> None:
    shape = (2, *input_spec.shape)
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape))
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        raise EdgeshipError(f"the model rejects input shape {tuple(shape)}: {type(e).__name__}: {msg}",
                            "set input.shape to the (C, H, W) the model expects") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EdgeshipError(f"the model must return logits of shape (batch, classes), got {got}",
                            "return a single 2-D tensor of class scores")
    if num_classes is not None and out.shape[1] < num_classes:
        raise EdgeshipError(f"the model outputs {out.shape[1]} classes but the data has {num_classes}",
                            "set the model's class count to match the data")


def model_stats(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Parameters and MACs (one sample), counted by torch-pruning's op counter."""
    import torch_pruning as tp

    params = sum(p.numel() for p in model.parameters())
    try:
        macs, _ = tp.utils.count_ops_and_params(model, torch.zeros(1, *input_shape))
    except Exception:
        macs = None
    if not macs:  # torch-pruning hooks modules; a .pt2 program or TorchScript has none: count the ATen ops
        macs = _aten_macs(model, input_shape)
    return {"params": int(params), "macs": int(macs) if macs else None}  # None: unknown


def _aten_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int | None:
    """MACs of one sample from torch's FLOP counter (convolutions and matrix products: 2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, *input_shape))
        return counter.get_total_flops() // 2 or None
    except Exception:
        return None


def save_module(model: nn.Module, directory: Path, input_shape: tuple[int, ...]) -> Path:
    """Save the whole compressed module (pruned shapes differ from any factory's): TorchScript
    modules with torch.jit.save, modules that cannot be pickled (torch.export's) as a .pt2
    program, everything else with torch.save."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(model, torch.jit.ScriptModule):
        path = directory / "compressed.ts"
        torch.jit.save(model, str(path))
        return path
    path = directory / "compressed.pt"
    try:
        torch.save(model, path)
    except (AttributeError, TypeError, pickle.PicklingError):
        path.unlink(missing_ok=True)
        path = directory / "compressed.pt2"
        example = (torch.zeros(2, *input_shape),)
        dims = ({0: torch.export.Dim("batch", min=1, max=4096)},)
        torch.export.save(torch.export.export(model, example, dynamic_shapes=dims), str(path))
    return path


def fp32_size_bytes(model: nn.Module) -> int:
    return int(sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point()))
