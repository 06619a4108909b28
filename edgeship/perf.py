"""CPU-side speed settings for the torch work (training, fine-tuning, evaluation).

Two measured causes of slowness on this kind of machine (see benchmarks/results/pipeline_cost.json):

* glibc's malloc hands every large tensor (> its mmap threshold) to mmap and returns it on free, so each
  batch's activations fault their pages in again; on a VM that costs more system time than the
  convolutions take. Raising the mmap and trim thresholds keeps freed activations in the heap for reuse.
* oneDNN's convolutions run natively in NHWC ("channels_last"); NCHW tensors are reordered per layer.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
import warnings
from collections.abc import Iterator

import torch
from torch import nn

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TUNED = False
_ACTIVE: set[int] = set()  # models inside a channels_last() block (so that nested blocks do nothing)


def tune_allocator(mmap_threshold: int = 512 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Keep large freed blocks in glibc's heap (once per process; EDGESHIP_NO_MALLOPT=1 turns it off).
    Returns whether the settings were applied (False off glibc)."""
    global _TUNED
    if _TUNED or os.environ.get("EDGESHIP_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return _TUNED
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _TUNED = bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):  # not glibc (musl, macOS): keep the defaults
        _TUNED = False
    return _TUNED


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def nhwc_ok(model: nn.Module, sample: torch.Tensor) -> bool:
    """Whether ``model`` runs on NHWC tensors: a ``.view()`` over a feature map (a user's flatten written as
    ``x.view(x.size(0), -1)``) fails on them, and such a model runs in NCHW instead. One sample, no gradient."""
    if sample.dim() != 4:
        return False
    training = model.training
    try:
        model.eval()  # the probe must not move batch-norm statistics
    except NotImplementedError:  # a torch.export module: frozen in its mode
        training = None
    try:
        with torch.no_grad(), channels_last(model):
            model(to_channels_last(sample[:1]))
    except RuntimeError as e:
        if "view size is not compatible" in str(e):
            return False
        raise
    finally:
        if training:
            model.train()
    return True


def _to_layout(model: nn.Module, memory_format: torch.memory_format) -> None:
    with warnings.catch_warnings():  # a TorchScript module's parameters are not leaves: torch warns on .grad
        warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
        model.to(memory_format=memory_format)


@contextlib.contextmanager
def channels_last(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Run ``model`` with NHWC weights, then give its parameters back their ordinary layout (pruning and
    the exporters expect contiguous tensors). Modules that cannot be converted (some scripted ones) are
    used as they are."""
    if id(model) in _ACTIVE or not enabled:  # e.g. the validation pass inside a training loop
        yield model
        return
    try:
        _to_layout(model, torch.channels_last)
        converted = True
    except (RuntimeError, TypeError, AttributeError):
        converted = False
    _ACTIVE.add(id(model))
    try:
        yield model
    finally:
        _ACTIVE.discard(id(model))
        if converted:
            _to_layout(model, torch.contiguous_format)
