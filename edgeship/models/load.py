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
from edgeship.limits import disk_full
from edgeship.models.zoo import ZOO
from edgeship.recipe import IOSpec


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


def build_model(spec, signature, num_classes: int, trust_pickle: bool = False,
                require_weights: bool = True) -> nn.Module:
    """Recipe ``model`` -> an ``nn.Module`` in eval mode. ``signature``: the recipe's ``input:`` (checked here against
    the input shape and the class count) or its ``io:`` (checked with real samples by ``io.check_signature``)."""
    io = signature if isinstance(signature, IOSpec) else IOSpec.for_image(signature)
    if spec.zoo is not None:
        model = _zoo(spec, io, num_classes, trust_pickle, require_weights)
    elif spec.factory is not None:
        model = _factory(spec, trust_pickle)
    elif spec.torchscript is not None:
        model = _file(spec.torchscript, "torchscript", lambda p: torch.jit.load(p, map_location="cpu"),
                      "save it with torch.jit.save(torch.jit.script(model), path)", "a loadable TorchScript file")
    elif spec.exported is not None:
        model = _file(spec.exported, "exported", lambda p: torch.export.load(p).module(),
                      "save it with torch.export.save(torch.export.export(model, (x,)), path)",
                      "a loadable torch.export program")
    else:
        from edgeship.models.onnx_import import torch_from_onnx  # onnx2torch: only for ONNX models

        model = torch_from_onnx(Path(spec.onnx))
    set_eval(model)
    if io.image:
        check_input(model, io.inputs[0].shape, num_classes)
    return model


def _zoo(spec, io: IOSpec, num_classes: int, trust_pickle: bool, require_weights: bool) -> nn.Module:
    if not io.image:
        raise EdgeshipError(f"zoo model {spec.zoo!r} takes one image and returns class logits, not this io: "
                            "signature", "use input: (C, H, W) with a zoo model, or bring your own model")
    c, h, w = io.inputs[0].shape
    args = {"in_channels": c, "num_classes": num_classes, "input_size": (h, w), **spec.args}
    try:
        model = ZOO[spec.zoo](**args)
    except (TypeError, ValueError) as e:
        raise EdgeshipError(f"model.args do not fit zoo model {spec.zoo!r}: {e}",
                            "see the model's arguments in edgeship/models/zoo.py") from None
    if spec.weights is not None and Path(spec.weights).is_file():
        return _apply_weights(model, spec.weights, trust_pickle)
    if require_weights:
        raise EdgeshipError(f"no trained weights for zoo model {spec.zoo!r} at {spec.weights}",
                            "run `edgeship train RECIPE` first (make demo does)")
    return model


def _factory(spec, trust_pickle: bool) -> nn.Module:
    fn = import_factory(spec.factory)
    try:
        model = fn(**spec.args)
    except EdgeshipError:
        raise
    except Exception as e:  # user code: any failure is bad input
        raise EdgeshipError(f"model.factory {spec.factory!r} raised {type(e).__name__}: {e}",
                            "check model.args") from None
    if not isinstance(model, nn.Module):
        raise EdgeshipError(f"model.factory {spec.factory!r} returned {type(model).__name__}, not an nn.Module",
                            "return the module itself")
    return _apply_weights(model, spec.weights, trust_pickle) if spec.weights is not None else model


def _file(path, key: str, load, fix: str, what: str) -> nn.Module:
    path = Path(path)
    if not path.is_file():
        raise EdgeshipError(f"model file not found: {path}", f"check model.{key}")
    try:
        return load(str(path))
    except Exception as e:  # torch raises RuntimeError or ValueError variants
        raise EdgeshipError(f"{path} is not {what} ({str(e).splitlines()[0][:120]})", fix) from None


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


def check_input(model: nn.Module, sample_shape, num_classes: int | None = None) -> None:
    """An image classifier (``input:``): zeros of the input shape in, (batch, classes) logits out."""
    shape = (2, *sample_shape)
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape))
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        raise EdgeshipError(f"the model rejects input shape {tuple(shape)}: {type(e).__name__}: {msg}",
                            "set input.shape to the (C, H, W) the model expects, or describe other inputs (1-D "
                            "signals, several inputs, extra arguments, state) with io: instead of input:") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != shape[0]:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise EdgeshipError(f"input: is for a model that returns logits of shape (batch, classes), got {got}",
                            "describe the model's outputs (several heads, scores, regressions, embeddings) with io: "
                            "instead of input: (README, 'Any model: io')")
    if num_classes is not None and out.shape[1] < num_classes:
        raise EdgeshipError(f"the model outputs {out.shape[1]} classes but the data has {num_classes}",
                            "set the model's class count to match the data")


def model_stats(model: nn.Module, example: tuple) -> dict[str, int | None]:
    """Parameters and MACs (one sample), counted by torch-pruning's op counter. ``example``: one sample's shape (an
    image classifier's input) or one sample of every input (a tuple of tensors)."""
    import torch_pruning as tp

    args = (torch.zeros(1, *example),) if all(isinstance(d, int) for d in example) else tuple(example)
    params = sum(p.numel() for p in model.parameters())
    try:
        macs, _ = tp.utils.count_ops_and_params(model, args)
    except Exception:
        macs = None
    if not macs:  # torch-pruning hooks modules; a .pt2 program or TorchScript has none: count the ATen ops
        macs = _aten_macs(model, args)
    return {"params": int(params), "macs": int(macs) if macs else None}  # None: unknown


def _aten_macs(model: nn.Module, args: tuple) -> int | None:
    """MACs of one sample from torch's FLOP counter (convolutions and matrix products: 2 FLOPs per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(*args)
        return counter.get_total_flops() // 2 or None
    except Exception:
        return None


def save_module(model: nn.Module, directory: Path, example: tuple) -> tuple[Path | None, str | None]:
    """Save the whole compressed module (pruned shapes differ from any factory's), the first way that works:
    TorchScript modules with torch.jit.save; torch.save; for modules that cannot be pickled (torch.export's, an
    ONNX model's, one holding a lambda) a .pt2 program with a dynamic batch; then torch.jit.script. (path, None),
    or (None, why) when no format can hold it: the run keeps its artifacts and says so rather than being lost.
    ``example``: one sample's shape (an image classifier) or one sample of every input (tensors)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(model, torch.jit.ScriptModule):
        path = directory / "compressed.ts"
        torch.jit.save(model, str(path))
        return path, None
    def exported(path: Path) -> None:
        args = ((torch.zeros(2, *example),) if all(isinstance(d, int) for d in example)
                else tuple(torch.cat([t, t]) for t in example))
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.export.save(torch.export.export(model, args, dynamic_shapes=tuple({0: batch} for _ in args)), str(path))

    writers = (("torch.save", "compressed.pt", lambda p: torch.save(model, p)),
               ("torch.export", "compressed.pt2", exported),
               ("torch.jit.script", "compressed.ts", lambda p: torch.jit.save(torch.jit.script(model), str(p))))
    why = []
    for name, filename, write in writers:
        path = directory / filename
        try:
            write(path)
            return path, None
        except Exception as e:  # noqa: BLE001 - pickling and tracing raise many types; the next format is tried
            path.unlink(missing_ok=True)
            if disk_full(e, directory):  # a full disk is no reason to try another format: the export says so
                raise
            why.append(f"{name}: {_first_line(e)}")
    return None, "; ".join(why)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:120] if text else ''}"


def fp32_size_bytes(model: nn.Module) -> int:
    return int(sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point()))
