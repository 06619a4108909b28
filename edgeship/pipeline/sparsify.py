"""`sparsify`: unstructured magnitude pruning (``torch.nn.utils.prune``, made permanent).

Zeroed weights make the file compress better, nothing more: dense runtimes (ONNX Runtime,
OpenVINO, TFLite's XNNPACK) multiply zeros at the same speed. Structured pruning (`prune`) is what
makes a model faster.
"""

from __future__ import annotations

import copy
import io
import zipfile
from typing import Literal

import torch
import torch.nn.utils.prune as tprune
from pydantic import Field
from torch import nn

from edgeship.pipeline.base import Pass, PassConfig, PassContext, PassResult
from edgeship.pipeline.training import TrainConfig, finetune

NOTE = ("unstructured sparsity only shrinks the compressed (zip) file: dense runtimes run the zeros at the "
        "same speed; use `prune` (structured) to make the model faster")


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


def sparsity(model: nn.Module) -> float:
    ws = [m.weight for _, m in weight_layers(model)]
    total = sum(w.numel() for w in ws)
    return float(sum(int((w == 0).sum()) for w in ws) / total) if total else 0.0


def zipped_fp32_bytes(model: nn.Module) -> int:
    """Size of the float32 state dict after zip (deflate) compression."""
    raw = io.BytesIO()
    torch.save(model.state_dict(), raw)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("weights.pt", raw.getvalue())
    return len(out.getvalue())


class SparsifyConfig(PassConfig):
    sparsity: float = Field(0.5, gt=0, lt=1, description="fraction of conv/linear weights set to zero")
    scope: Literal["global", "layer"] = Field("global", description="rank magnitudes across layers or per layer")
    fine_tune: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=0),
                                   description="optional recovery training (zeros stay zero)")


class Sparsify(Pass):
    name = "sparsify"
    Config = SparsifyConfig
    example = {"sparsity": 0.5}
    needs_module = "sparsify"

    def run(self, model: nn.Module, config: SparsifyConfig, ctx: PassContext) -> PassResult:
        model = copy.deepcopy(model).eval()
        before = zipped_fp32_bytes(model)
        params = [(m, "weight") for _, m in weight_layers(model)]
        if config.scope == "global":
            tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=config.sparsity)
        else:
            for m, name in params:
                tprune.l1_unstructured(m, name, amount=config.sparsity)
        hist = {}
        if config.fine_tune.epochs:  # masks stay attached while training, so pruned weights stay zero
            hist = finetune(model, config.fine_tune, ctx, ctx.teacher)
        for m, name in params:
            tprune.remove(m, name)
        per_layer = {n: round(float((m.weight == 0).float().mean()), 4) for n, m in weight_layers(model)}
        metrics = {"sparsity": round(sparsity(model), 4), "scope": config.scope, "layer_sparsity": per_layer,
                   "zip_fp32_bytes_before": before, "zip_fp32_bytes": zipped_fp32_bytes(model), "note": NOTE,
                   **hist}
        return PassResult(model, metrics)
