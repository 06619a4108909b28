"""`distill`: fine-tune the student (the current model) against a teacher with

    L = (1 - a) * CE(y, p_s) + a * T^2 * KL(p_t(T) || p_s(T))

(Hinton et al.). The teacher is the model as it was before the first pass, or a checkpoint named
in the config (``teacher: {zoo|factory|torchscript|exported, args, weights}``, the recipe's
``model`` keys). The loss and the fine-tuning loop are ``edgeship.pipeline.training``'s, which
`prune`, `drop_blocks`, `sparsify` and `qat` use for their recovery steps too.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from edgeship.models.load import clone_module
from edgeship.pipeline.base import Pass, PassContext, PassResult
from edgeship.pipeline.training import TrainConfig, finetune, resolve_teacher
from edgeship.recipe import ModelSpec


class DistillConfig(TrainConfig):
    epochs: int = Field(2, ge=1)
    teacher: ModelSpec | None = Field(None, description="default: the model before the first pass")


class Distill(Pass):
    name = "distill"
    Config = DistillConfig
    example = {"epochs": 1}
    needs_module = "distillation"
    torchscript_ok = True

    def run(self, model: nn.Module, config: DistillConfig, ctx: PassContext) -> PassResult:
        model = clone_module(model)  # the student trains; the model the pass was given stays as it was
        teacher = resolve_teacher(config.teacher, ctx, model)
        hist = finetune(model, config, ctx, teacher)
        return PassResult(model, {"alpha": config.alpha, "temperature": config.temperature, **hist})
