"""`sparsify`: unstructured magnitude pruning (``torch.nn.utils.prune``, made permanent), in one step or
iteratively, optionally with lottery-ticket style weight rewinding.

Zeroed weights make the file compress better, nothing more: dense runtimes (ONNX Runtime,
OpenVINO, TFLite's XNNPACK) multiply zeros at the same speed. Structured pruning (`prune`) is what
makes a model faster.

Iterative pruning (``steps`` > 1): step i prunes to 1 - (1 - s)^(i/steps) of the weights (the same fraction
of the remaining weights each step: torch's ``PruningContainer`` applies ``amount`` to the weights still
unpruned), ranked by the magnitudes the previous step's fine-tuning left, then fine-tunes (``fine_tune``) with
the masks attached. ``rewind: weights`` is the lottery-ticket procedure (Frankle & Carbin 2019) with late
rewinding (Frankle et al. 2020, Renda et al. 2020): after each pruning step the surviving weights (and every
other parameter and buffer) go back to their values at the rewind point, here the pass's input (the trained
model: the original initialisation of a model edgeship did not train is unknown), and are retrained from
there; ``rewind: none`` keeps the fine-tuned weights and only restarts the learning-rate schedule, which
Renda et al. call learning-rate rewinding. The sparsity and validation top-1 each step reached are in the
metrics (``schedule``).

``min_fan_in``: layers with fewer weights per output channel (a MobileNet's 3x3 depthwise kernels of 9 weights, a
first convolution on one input channel) stay dense and the sparsity applies to the others, as Deep Compression
kept its first convolution denser (Han et al. 2016, table 4): a uniform rate hits those narrow layers as hard as
the wide ones (MobileNetV2 fell to chance at 85 %, benchmarks/results/notes.md). They are a few per cent of the
weights; the metrics give the sparsity of the whole model and which layers were spared.

Hand-written: the schedule, the rewinding (a state-dict copy) and the sparing; the masks are torch's.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.utils.prune as tprune
from pydantic import Field
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.pipeline.base import Pass, PassConfig, PassContext, PassResult
from edgeship.pipeline.coding import weight_layers, zipped_fp32_bytes
from edgeship.pipeline.training import TrainConfig, evaluate, finetune

NOTE = ("unstructured sparsity only shrinks the compressed (zip) file: dense runtimes run the zeros at the "
        "same speed; use `prune` (structured) to make the model faster")


def sparsity(model: nn.Module) -> float:
    ws = [m.weight for _, m in weight_layers(model)]
    total = sum(w.numel() for w in ws)
    return float(sum(int((w == 0).sum()) for w in ws) / total) if total else 0.0


class SparsifyConfig(PassConfig):
    sparsity: float = Field(0.5, gt=0, lt=1, description="fraction of conv/linear weights set to zero")
    scope: Literal["global", "layer"] = Field("global", description="rank magnitudes across layers or per layer")
    steps: int = Field(1, ge=1, le=20, description="prune in this many steps, fine-tuning after each")
    min_fan_in: int = Field(0, ge=0, description="layers with fewer weights per output channel stay dense "
                            "(depthwise 3x3 kernels have 9); the sparsity applies to the others")
    rewind: Literal["none", "weights"] = Field(
        "none", description="weights: after each pruning step the surviving weights restart from the pass's input "
                            "(lottery-ticket rewinding); none: they keep their fine-tuned values")
    fine_tune: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=0),
                                   description="recovery training after each step (zeros stay zero)")


def step_targets(final: float, steps: int) -> list[float]:
    """Cumulative sparsity after each step: the same fraction of the remaining weights pruned each time."""
    return [1 - (1 - final) ** (i / steps) for i in range(1, steps + 1)]


def rewind_to(model: nn.Module, start: dict[str, torch.Tensor]) -> None:
    """Load the rewind point into a model whose weights carry pruning masks (``<name>_orig``, ``<name>_mask``):
    every parameter and buffer goes back, the masks stay."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("_mask"):
            state[key] = value
        else:
            state[key] = start[key[:-len("_orig")] if key.endswith("_orig") else key]
    model.load_state_dict(state)


def apply_masks(params: list[tuple[nn.Module, str]]) -> None:
    """Recompute each pruned weight from its ``_orig`` and ``_mask`` (torch's pruning hook does so only on the next
    forward: after a rewind the attribute is stale, after evaluating or training it is in channels-last layout, which
    the next global ranking cannot flatten)."""
    for m, name in params:
        if hasattr(m, f"{name}_orig"):
            setattr(m, name, getattr(m, f"{name}_orig") * getattr(m, f"{name}_mask"))


class Sparsify(Pass):
    name = "sparsify"
    Config = SparsifyConfig
    example = {"sparsity": 0.5}
    needs_module = "sparsify"

    def run(self, model: nn.Module, config: SparsifyConfig, ctx: PassContext) -> PassResult:
        model = copy.deepcopy(model).eval()
        before = zipped_fp32_bytes(model)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        spared = [n for n, m in weight_layers(model) if m.weight[0].numel() < config.min_fan_in]
        params = [(m, "weight") for n, m in weight_layers(model) if n not in spared]
        if not params:
            raise EdgeshipError(f"sparsify: min_fan_in {config.min_fan_in} spares every layer (the widest has "
                            f"{max(m.weight[0].numel() for _, m in weight_layers(model))} weights per output)",
                            "lower min_fan_in")
        schedule, hist, done = [], {}, 0.0
        for i, target in enumerate(step_targets(config.sparsity, config.steps)):
            amount = 1 - (1 - target) / (1 - done)  # of the weights still unpruned
            apply_masks(params)
            if config.scope == "global":
                tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
            else:
                for m, name in params:
                    tprune.l1_unstructured(m, name, amount=amount)
            done = target
            if config.rewind == "weights":
                rewind_to(model, start)
            row = {"step": i + 1, "target": round(target, 4), "sparsity": round(sparsity(model), 4)}
            if config.steps > 1 or config.rewind == "weights":
                row["val_top1_pruned"] = evaluate(model, ctx.data["val"])
            if config.fine_tune.epochs:  # masks stay attached while training, so pruned weights stay zero
                hist = finetune(model, config.fine_tune, ctx, ctx.teacher, seed_offset=i,
                                stage=f"{ctx.stage} step {i + 1}/{config.steps}" if config.steps > 1 else None)
                row["val_top1"] = hist.get("val_top1")
            schedule.append(row)
        for m, name in params:
            tprune.remove(m, name)
        per_layer = {n: round(float((m.weight == 0).float().mean()), 4) for n, m in weight_layers(model)}
        metrics = {"sparsity": round(sparsity(model), 4), "scope": config.scope, "layer_sparsity": per_layer,
                   "spared_layers": spared,
                   "steps": config.steps, "rewind": config.rewind, "schedule": schedule,
                   "zip_fp32_bytes_before": before, "zip_fp32_bytes": zipped_fp32_bytes(model), "note": NOTE,
                   **hist}
        return PassResult(model, metrics)
