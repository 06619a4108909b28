"""`distill`: fine-tune the student (the current model) against a teacher with

    L = (1 - a) * CE(y, p_s) + a * T^2 * KL(p_t(T) || p_s(T))

(Hinton et al.). The teacher is the model as it was before the first pass, or a checkpoint named
in the config (``teacher: {zoo|factory|torchscript|exported, args, weights}``, the recipe's
``model`` keys). `prune` and `qat` reuse ``kd_loss`` and ``finetune`` for their recovery steps.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.pipeline.base import Pass, PassConfig, PassContext, PassResult
from edgeship.pipeline.training import FitConfig, LossFn, TensorData, fit, predict
from edgeship.recipe import InputSpec, ModelSpec


class TrainConfig(PassConfig):
    """Fine-tuning settings shared by distill, qat and prune's recovery steps."""

    epochs: int = Field(2, ge=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["onecycle", "cosine", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the distillation term (a); 0 = plain CE")
    temperature: float = Field(4.0, gt=0, description="softmax temperature T")
    samples: Optional[int] = Field(None, ge=1, description="train on a seeded subset of this many samples")


def kd_loss(teacher: Optional[nn.Module], alpha: float, temperature: float) -> LossFn:
    """(logits, y, x) -> (1-a) CE + a T^2 KL(teacher || student); plain CE when a = 0 or no teacher."""
    if teacher is not None:
        teacher.eval()
    t2 = temperature * temperature

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
             soft: Optional[torch.Tensor] = None) -> torch.Tensor:
        ce = F.cross_entropy(logits, y)
        if teacher is None or alpha == 0:
            return ce
        if soft is not None:
            t_logits = soft
        else:
            with torch.no_grad():
                t_logits = teacher(x)
        kl = F.kl_div(F.log_softmax(logits / temperature, 1), F.log_softmax(t_logits / temperature, 1),
                      reduction="batchmean", log_target=True)
        return (1 - alpha) * ce + alpha * t2 * kl

    return loss


def check_compatible(teacher: nn.Module, student: nn.Module, input_shape: tuple[int, ...], stage: str) -> None:
    x = torch.zeros(2, *input_shape)
    with torch.no_grad():
        t_out, s_out = teacher.eval()(x), student.eval()(x)
    if tuple(t_out.shape) != tuple(s_out.shape):
        raise EdgeshipError(f"{stage}: teacher outputs {tuple(t_out.shape[1:])} but the student outputs "
                            f"{tuple(s_out.shape[1:])} per sample",
                            "use a teacher trained on the same classes as the student")


def subset(data: TensorData, n: Optional[int], seed: int) -> TensorData:
    if n is None or n >= len(data):
        return data
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return TensorData(data.x[idx], data.y[idx])


def finetune(model: nn.Module, cfg: TrainConfig, ctx: PassContext, teacher: Optional[nn.Module],
             stage: Optional[str] = None, seed_offset: int = 0) -> dict:
    """Train ``model`` in place with the KD loss; returns training metrics (val top-1 per epoch)."""
    if cfg.epochs == 0:
        return {"epochs": 0}
    train = subset(ctx.data["train"], cfg.samples, ctx.seed + seed_offset)
    fit_cfg = FitConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                        optimizer=cfg.optimizer, schedule=cfg.schedule, label_smoothing=0.0,
                        seed=ctx.seed + seed_offset, threads=ctx.threads)
    loss = kd_loss(teacher, cfg.alpha, cfg.temperature)
    if teacher is not None and cfg.alpha > 0:  # the teacher sees each sample once, not once per epoch
        train = TensorData(train.x, train.y, soft=predict(teacher, train.x))
    return fit(model, train, ctx.data["val"], fit_cfg, stage=stage or ctx.stage, loss_fn=loss, quiet=ctx.quiet)


def resolve_teacher(spec: Optional[ModelSpec], ctx: PassContext, student: nn.Module) -> nn.Module:
    if spec is None:
        teacher = ctx.teacher
    else:
        from edgeship.models.load import build_model

        with torch.no_grad():
            classes = student.eval()(torch.zeros(1, *ctx.input_shape)).shape[1]
        teacher = build_model(spec, InputSpec(shape=ctx.input_shape), classes)
    if teacher is None:
        raise EdgeshipError(f"{ctx.stage}: no teacher model", "name one with teacher: {zoo: ..., weights: ...}")
    check_compatible(teacher, student, ctx.input_shape, ctx.stage)
    return teacher


class DistillConfig(TrainConfig):
    epochs: int = Field(2, ge=1)
    teacher: Optional[ModelSpec] = Field(None, description="default: the model before the first pass")


class Distill(Pass):
    name = "distill"
    Config = DistillConfig
    needs_module = "distillation"
    torchscript_ok = True

    def run(self, model: nn.Module, config: DistillConfig, ctx: PassContext) -> PassResult:
        teacher = resolve_teacher(config.teacher, ctx, model)
        hist = finetune(model, config, ctx, teacher)
        return PassResult(model, {"alpha": config.alpha, "temperature": config.temperature, **hist})
