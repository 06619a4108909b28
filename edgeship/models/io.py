"""A model behind its signature (the recipe's ``io:``): named tensor inputs fed from data or filled with a constant,
constant keyword arguments of ``forward()``, and named outputs however the model returns them (a tensor, a tuple or
list, nested, a dict or a ``ModelOutput``).

``IOModel`` is what the backends lower for such a model: ``forward(*inputs)`` takes the graph inputs in the
signature's order and returns a tuple with one tensor per declared output, so every exporter sees plain positional
tensors in and a flat tuple out. A recipe with ``input:`` (one image in, class logits out) is lowered as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.recipe import IOInput, IOSpec

DTYPES = {"float32": torch.float32, "int64": torch.int64, "int32": torch.int32}


def flatten(out: Any, names: Sequence[str] | None = None) -> list[torch.Tensor]:
    """A model's return value as a flat list of tensors: tuples and lists depth first, a mapping by ``names`` when it
    holds them all (else its values in order)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        if names and all(n in out for n in names):
            return [out[n] for n in names]
        return [t for v in out.values() for t in flatten(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten(v)]
    if out is None:
        return []
    raise EdgeshipError(f"the model returned a {type(out).__name__}, not tensors",
                        "return a tensor, a tuple/list of tensors or a dict of tensors")


def describe(tensors: list[torch.Tensor]) -> str:
    return ", ".join(f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for t in tensors)


class IOModel(nn.Module):
    """``model`` called with the graph inputs in the signature's order (and its constant keyword arguments), its
    outputs flattened to one tensor per declared output."""

    def __init__(self, model: nn.Module, io: IOSpec):
        super().__init__()
        self.model = model
        self.output_names = [o.name for o in io.outputs]
        self.call_kwargs = dict(io.call_kwargs)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = flatten(self.model(*inputs, **self.call_kwargs), self.output_names)
        if len(outs) != len(self.output_names):
            plural = "s" if len(outs) != 1 else ""
            raise EdgeshipError(f"the model returns {len(outs)} tensor{plural} ({describe(outs)}) "
                                f"but io.outputs names {len(self.output_names)} ({', '.join(self.output_names)})",
                                "declare one io.outputs entry per tensor the model returns, in order")
        return tuple(outs)


def lowerable(model: nn.Module, io: IOSpec) -> nn.Module:
    """What a backend lowers: the model itself for an image classifier recipe, else the model behind its signature."""
    return model if io.image else IOModel(model, io)


def fill(inp: IOInput, n: int) -> np.ndarray:
    """``n`` samples of a filled input."""
    return np.full((n, *inp.shape), inp.fill, dtype=inp.dtype)


def graph_inputs(io: IOSpec, first: np.ndarray | torch.Tensor, extra: Mapping[str, Any]) -> list[Any]:
    """The graph inputs in signature order for a batch: the first data input, the others from ``extra`` by their
    data name, filled ones generated (numpy or torch, as ``first`` is)."""
    n = len(first)
    out: list[Any] = []
    for inp in io.inputs:
        if inp.fill is not None:
            arr = fill(inp, n)
            out.append(torch.from_numpy(arr) if isinstance(first, torch.Tensor) else arr)
        elif inp is io.data_inputs[0]:
            out.append(first)
        else:
            out.append(extra[str(inp.source)])
    return out


def to_model_dtype(inp: IOInput, t: torch.Tensor) -> torch.Tensor:
    return t.to(DTYPES[inp.dtype])


@torch.no_grad()
def predict_io(model: nn.Module, io: IOSpec, first: torch.Tensor, extra: Mapping[str, torch.Tensor],
               batch_size: int = 128) -> list[torch.Tensor]:
    """Every declared output of ``model`` over the samples (batched), one tensor per output."""
    wrapped = IOModel(model, io)
    chunks: list[list[torch.Tensor]] = []
    for i in range(0, len(first), batch_size):
        sl = slice(i, i + batch_size)
        feed = graph_inputs(io, first[sl], {k: v[sl] for k, v in extra.items()})
        chunks.append(list(wrapped(*[to_model_dtype(inp, t) for inp, t in zip(io.inputs, feed)])))
    return [torch.cat([c[k] for c in chunks]) for k in range(len(io.outputs))]


def check_signature(model: nn.Module, io: IOSpec, sample: list[np.ndarray]) -> list[torch.Tensor]:
    """Run two samples through the model behind its signature: every failure is one line naming the inputs it was
    given and the outputs it returned; classification outputs must be (batch, classes). Returns the outputs."""
    feed = [to_model_dtype(inp, torch.from_numpy(np.ascontiguousarray(a[:2]))) for inp, a in zip(io.inputs, sample)]
    try:
        with torch.no_grad():
            outs = list(IOModel(model, io).eval()(*feed))
    except EdgeshipError:
        raise
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        given = ", ".join(f"{inp.name} {tuple(t.shape)} {inp.dtype}" for inp, t in zip(io.inputs, feed))
        raise EdgeshipError(f"the model rejects its io: inputs ({given}) with {type(e).__name__}: {msg}",
                            "make io.inputs match forward()'s positional arguments (shape of one sample, dtype), and "
                            "put constant non-tensor arguments in io.call_kwargs") from None
    for out, spec in zip(outs, io.outputs):
        if out.shape[:1] != feed[0].shape[:1]:
            raise EdgeshipError(f"output {spec.name!r} has shape {tuple(out.shape)}: its first axis is not the batch "
                                f"({len(feed[0])} samples in)", "return outputs with the batch axis first")
        if spec.task == "classification" and out.ndim != 2:
            raise EdgeshipError(f"output {spec.name!r} is declared a classification but has shape {tuple(out.shape)}",
                                "a classification output is (batch, classes) logits; use task: any or regression")
    return outs
