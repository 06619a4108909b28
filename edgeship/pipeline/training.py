"""The training loop shared by `edgeship train` and the fine-tuning passes (distill, qat, prune's
recovery steps): deterministic for a seed, with a rich progress bar, and a loss hook for KD."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from edgeship.calibration.datasets import ArrayData
from edgeship.calibration.preprocess import Preprocessing
from edgeship.errors import EdgeshipError
from edgeship.models.load import set_eval
from edgeship.perf import channels_last, tune_allocator, to_channels_last
from edgeship.progress import progress_bar, step_line


@dataclass
class TensorData:
    """A split, preprocessed once into float32 tensors."""

    x: torch.Tensor
    y: torch.Tensor
    soft: Optional[torch.Tensor] = None  # per-sample teacher logits, computed once for distillation

    @classmethod
    def from_array(cls, data: ArrayData, pre: Preprocessing) -> "TensorData":
        return cls(torch.from_numpy(pre.apply(data.x)), torch.from_numpy(data.y))

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class FitConfig:
    epochs: int = 3
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    label_smoothing: float = 0.05
    hflip: bool = False
    seed: int = 0
    threads: Optional[int] = None


class NonFiniteLoss(EdgeshipError):
    def __init__(self, stage: str, epoch: int):
        super().__init__(f"{stage}: the loss became NaN/inf in epoch {epoch + 1}; the previous stage's model is kept",
                         "lower the learning rate or check the data for NaN values")


def set_determinism(seed: int, threads: Optional[int] = None) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if threads:
        torch.set_num_threads(threads)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Logits for ``x`` in batches (128: larger batches were slower on 2 cores, see edgeship/perf.py)."""
    set_eval(model)
    if not len(x):
        return torch.zeros(0)
    tune_allocator()
    with channels_last(model):
        return torch.cat([model(to_channels_last(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


def top1(logits: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    logits, y = np.asarray(logits), np.asarray(y)
    return float((logits.argmax(1) == y).mean()) if len(y) else float("nan")


def evaluate(model: nn.Module, data: TensorData) -> float:
    return top1(predict(model, data.x), data.y)


# (logits, y, x, soft) -> loss; soft is the batch's precomputed teacher logits or None
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


def fit(model: nn.Module, train: TensorData, val: Optional[TensorData], cfg: FitConfig, *,
        stage: str = "train", loss_fn: Optional[LossFn] = None, quiet: bool = False) -> dict:
    """Train in place; returns metrics (val top-1 per epoch, wall time). Raises NonFiniteLoss on NaN."""
    set_determinism(cfg.seed, cfg.threads)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = max(1, math.ceil(len(train) / cfg.batch_size))
    total = steps_per_epoch * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    ce = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    loss_fn = loss_fn or (lambda logits, y, x, soft: ce(logits, y))
    if cfg.hflip and train.soft is not None:
        raise ValueError("precomputed teacher logits do not match flipped inputs: turn hflip off")
    history: list[float] = []
    t0 = time.perf_counter()
    tune_allocator()
    with channels_last(model), progress_bar(quiet) as bar:
        task = bar.add_task(f"{stage}", total=total)
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.randperm(len(train), generator=gen)
            running, seen = 0.0, 0
            for i in range(steps_per_epoch):
                idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
                xb, yb = train.x[idx], train.y[idx]
                if cfg.hflip:
                    flip = torch.rand(len(xb), generator=gen) < 0.5
                    xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
                loss = loss_fn(model(to_channels_last(xb)), yb, xb, None if train.soft is None else train.soft[idx])
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(stage, epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                running += loss.item() * len(idx)
                seen += len(idx)
                bar.update(task, advance=1, description=f"{stage} epoch {epoch + 1}/{cfg.epochs} "
                                                        f"loss {running / seen:.3f}")
            if val is not None and len(val):
                history.append(evaluate(model, val))
                bar.update(task, description=f"{stage} epoch {epoch + 1}/{cfg.epochs} val top-1 {history[-1]:.4f}")
            step_line(f"{stage} epoch {epoch + 1}/{cfg.epochs}: loss {running / max(seen, 1):.3f}"
                      + (f", val top-1 {history[-1]:.4f}" if val is not None and len(val) else "")
                      + f" ({time.perf_counter() - t0:.0f} s)", quiet)
    set_eval(model)
    return {"val_top1_per_epoch": history, "val_top1": history[-1] if history else None,
            "epochs": cfg.epochs, "wall_s": round(time.perf_counter() - t0, 2)}
