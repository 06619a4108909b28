"""`drop_blocks`: depth pruning. Whole blocks whose output has the shape of their input (residual blocks
``x + f(x)``, and any shape-keeping stack of layers) are replaced by identities, the ones whose removal
raises the validation loss least first, chosen greedily. Channel pruning (`prune`) cuts MACs but not the
number of kernels a runtime launches; on small inputs at batch 1 that launch cost is most of the latency
(benchmarks/results/depth_probe.json), so removing blocks is what makes such a model faster. Follow it with
`distill` (or `prune`'s recovery steps) to win the accuracy back.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.models.graph import forward_with_hooks
from edgeship.models.load import model_stats
from edgeship.pipeline.base import Pass, PassConfig, PassContext, PassResult
from edgeship.pipeline.training import TrainConfig, finetune, predict, resolve_teacher, subset

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


class DropBlocksConfig(PassConfig):
    blocks: int = Field(..., ge=1, description="how many blocks to replace by identities")
    candidates: list[str] | None = Field(None, description="module names that may be removed (default: every "
                                                              "shape-keeping element of a Sequential/ModuleList "
                                                              "with a conv/linear in it)")
    samples: int = Field(1024, ge=32, description="validation samples that score each removal")
    fine_tune: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=0),
                                   description="optional recovery training with KD from the teacher")


def removable_blocks(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Outermost elements of an ``nn.Sequential``/``nn.ModuleList`` (the stacks networks are built from)
    that are blocks (they have submodules, at least one a conv/linear layer) and whose single tensor output
    has the shape of their single tensor input: replacing one by an identity keeps the network runnable.
    A residual block's own branch (an attribute, not a stack element) is not a candidate, so a block is
    removed whole, never turned into x + x."""
    stacked = {f"{parent}.{child}" if parent else child
               for parent, m in model.named_modules() if isinstance(m, (nn.Sequential, nn.ModuleList))
               for child, _ in m.named_children()}
    shapes: dict[str, bool] = {}
    hooks = []
    for name, m in model.named_modules():
        if name in stacked and any(True for _ in m.children()) and any(isinstance(x, _LAYERS) for x in m.modules()):
            def hook(mod, inputs, output, name=name):
                ok = len(inputs) == 1 and torch.is_tensor(inputs[0]) and torch.is_tensor(output) \
                    and inputs[0].shape == output.shape
                shapes[name] = shapes.get(name, True) and ok  # a module run twice must keep shape both times
            hooks.append(m.register_forward_hook(hook))
    forward_with_hooks(model, example, hooks)
    keeping = [n for n, ok in shapes.items() if ok]
    return [n for n in keeping if not any(n.startswith(p + ".") for p in keeping)]  # whole blocks, outermost


def replace_by_identity(model: nn.Module, name: str) -> None:
    """Put an ``nn.Identity`` where the submodule ``name`` was."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(F.cross_entropy(predict(model, x), y))


class DropBlocks(Pass):
    name = "drop_blocks"
    Config = DropBlocksConfig
    example = {"blocks": 1, "samples": 64}
    needs_module = "depth pruning"

    def run(self, model: nn.Module, config: DropBlocksConfig, ctx: PassContext) -> PassResult:
        model = copy.deepcopy(model).eval()
        example = torch.zeros(1, *ctx.input_shape)
        found = removable_blocks(model, example)
        if config.candidates is not None:
            unknown = [c for c in config.candidates if c not in found]
            if unknown:
                raise EdgeshipError(f"{ctx.stage}: candidates {unknown} are not removable blocks of the model "
                                    "(their output shape differs from their input, or no such module)",
                                    f"choose among: {', '.join(found) or 'none'}")
            found = list(config.candidates)
        if config.blocks > len(found):
            raise EdgeshipError(f"{ctx.stage}: blocks: {config.blocks} asks for more blocks than the model has "
                                f"removable ({len(found)}: {', '.join(found) or 'none'})",
                                f"use blocks <= {len(found)}" if found else
                                "this model has no block that keeps its input's shape: use prune (channels) instead")
        val = subset(ctx.data["val"], config.samples, ctx.seed + 17)
        before = model_stats(model, ctx.input_shape)
        removed, scores = [], []
        for _ in range(config.blocks):  # greedy: remove the block whose absence costs least, then rescore
            trials = []
            for name in found:
                trial = copy.deepcopy(model)
                replace_by_identity(trial, name)
                trials.append((_loss(trial, val.x, val.y), name))
            loss, name = min(trials)
            replace_by_identity(model, name)
            found.remove(name)
            removed.append(name)
            scores.append(round(loss, 4))
        if config.fine_tune.epochs:
            teacher = resolve_teacher(None, ctx, model) if config.fine_tune.alpha else None
            hist = finetune(model, config.fine_tune, ctx, teacher)
        else:
            hist = {"note": "before any recovery training: the passes after it (prune's fine_tune, distill) or "
                            "this pass's fine_tune win the accuracy back"}
        return PassResult(model, {"removed": removed, "val_loss_after_each_removal": scores,
                                  "remaining_candidates": found, "macs_before": before["macs"],
                                  "params_before": before["params"], **hist})
