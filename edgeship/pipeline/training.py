"""The training loop shared by `edgeship train` and the fine-tuning passes (distill, qat, prune's
recovery steps): deterministic for a seed, with a rich progress bar, and a loss hook for KD. Inside a
torchrun job (``edgeship.pipeline.distributed``) it trains with DistributedDataParallel, each rank on its
DistributedSampler shard of every global batch, so N processes follow the batches one process would.

The passes' fine-tuning lives here too: ``TrainConfig`` (the settings every recovery step takes),
``kd_loss`` (cross entropy plus distillation from a teacher), ``finetune`` and ``resolve_teacher``."""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from edgeship.calibration.datasets import ArrayData
from edgeship.calibration.preprocess import Preprocessing
from edgeship.calibration.streaming import LazyRows
from edgeship.errors import EdgeshipError
from edgeship.models.io import graph_inputs
from edgeship.models.load import build_model, set_eval
from edgeship.perf import channels_last, nhwc_ok, to_channels_last, tune_allocator
from edgeship.pipeline.base import PassConfig, PassContext
from edgeship.pipeline.distributed import World, active, gather, gather_rows, shard, world
from edgeship.progress import progress_bar, step_line
from edgeship.recipe import InputSpec, IOSpec, ModelSpec


class StreamedImages:
    """A streamed split's images (``data.source.stream``): ``x[idx]`` reads those rows and preprocesses them,
    a batch at a time; nothing else of the split is held in memory."""

    def __init__(self, rows: LazyRows, pre: Preprocessing):
        self.rows, self.pre = rows, pre

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.rows.shape

    def __getitem__(self, key: torch.Tensor | slice | np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.pre.apply(self.rows[key.numpy() if isinstance(key, torch.Tensor) else key]))

    def take(self, sl: slice | np.ndarray) -> StreamedImages:
        return StreamedImages(self.rows.take(sl), self.pre)


@dataclass
class TensorData:
    """A split, preprocessed once into tensors: ``x`` the first data-fed input (float32 images for an image
    classifier), ``extra`` the other per-sample arrays of an ``io:`` model by name (inputs and class ids)."""

    x: torch.Tensor | StreamedImages
    y: torch.Tensor
    soft: torch.Tensor | None = None  # per-sample teacher logits, computed once for distillation
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_array(cls, data: ArrayData, pre: Preprocessing, io: IOSpec | None = None) -> TensorData:
        if isinstance(data.x, LazyRows):
            return cls(StreamedImages(data.x, pre), torch.from_numpy(data.y))
        if io is None or io.image:
            return cls(torch.from_numpy(pre.apply(data.x)), torch.from_numpy(data.y))
        by_source = {str(i.source): i for i in io.data_inputs}

        def prepared(name: str, a: np.ndarray) -> torch.Tensor:
            spec = by_source.get(name)
            p = spec.preprocessing_obj() if spec is not None else None
            if p is not None:
                return torch.from_numpy(p.apply(a))
            dtype = np.dtype(spec.dtype) if spec is not None else a.dtype
            return torch.from_numpy(np.ascontiguousarray(a, dtype))

        first = str(io.data_inputs[0].source)
        return cls(prepared(first, data.x), torch.from_numpy(data.y),
                   extra={k: prepared(k, v) for k, v in data.extra.items()})

    def graph_inputs(self, io: IOSpec, sl: slice | None = None) -> list[np.ndarray]:
        """The graph inputs of samples ``sl`` as numpy arrays, in the signature's order (filled ones generated)."""
        sl = sl or slice(None)
        return [t.numpy() if isinstance(t, torch.Tensor) else t
                for t in graph_inputs(io, self.x[sl], {k: v[sl] for k, v in self.extra.items()})]

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
    threads: int | None = None
    device: str = "cpu"  # where the model trains; it comes back to the CPU afterwards


class NonFiniteLoss(EdgeshipError):
    def __init__(self, stage: str, epoch: int):
        super().__init__(f"{stage}: the loss became NaN/inf in epoch {epoch + 1}; the previous stage's model is kept",
                         "lower the learning rate or check the data for NaN values")


def set_determinism(seed: int, threads: int | None = None) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if threads:
        torch.set_num_threads(threads)


def device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Logits for ``x`` in batches (128: larger batches were slower on 2 cores, see edgeship/perf.py), on the
    model's device; returned on the CPU."""
    set_eval(model)
    if not len(x):
        return torch.zeros(0)
    tune_allocator()
    dev = device_of(model)
    nhwc = nhwc_ok(model, x[:1].to(dev))
    layout = to_channels_last if nhwc else (lambda t: t)
    with channels_last(model, nhwc):
        return torch.cat([model(layout(x[i:i + batch_size].to(dev))).cpu() for i in range(0, len(x), batch_size)])


def top1(logits: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    logits, y = np.asarray(logits), np.asarray(y)
    return float((logits.argmax(1) == y).mean()) if len(y) else float("nan")


def evaluate(model: nn.Module, data: TensorData) -> float:
    return top1(predict(model, data.x), data.y)


class SeededShards(DistributedSampler):
    """DistributedSampler's shards (rank r takes every size-th index of the epoch's order, padded so every rank
    takes as many) of an order drawn from ``gen`` each epoch: one process trains in the order it always has,
    and N processes on the same global batches, each rank on 1/N of every one."""

    def __init__(self, n: int, w: World, gen: torch.Generator):
        super().__init__(range(n), num_replicas=w.size, rank=w.rank, shuffle=False)
        self.gen = gen

    def __iter__(self):
        order = torch.randperm(len(self.dataset), generator=self.gen).tolist()
        order += order[:self.total_size - len(order)]
        return iter(order[self.rank:self.total_size:self.num_replicas])


# (logits, y, x, soft) -> loss; soft is the batch's precomputed teacher logits or None
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _peak_rss_mb() -> float:
    """This process's peak resident set: VmHWM (its own memory since exec) where /proc has it. ru_maxrss also holds
    the high-water mark of the process that started it (Linux carries it over exec): `edgeship train` launched by a
    5 GB benchmark reported 5 GB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

def fit(model: nn.Module, train: TensorData, val: TensorData | None, cfg: FitConfig, *,
        stage: str = "train", loss_fn: LossFn | None = None, quiet: bool = False) -> dict:
    """Train in place; returns metrics (val top-1 per epoch, wall time). Raises NonFiniteLoss on NaN.

    On N processes each rank takes batch_size / N samples of every global batch (DistributedSampler: the
    same seeded order on every rank), gradients are averaged by DDP, and rank 0 alone validates."""
    w = world() if active() else World()
    set_determinism(cfg.seed + w.rank, cfg.threads)  # a seed per rank (dropout, flips); the order is shared
    order_gen = torch.Generator().manual_seed(cfg.seed)
    gen = order_gen if w.size == 1 else torch.Generator().manual_seed(cfg.seed + w.rank)
    sampler = SeededShards(len(train), w, order_gen)
    rank_batch = max(1, cfg.batch_size // w.size)
    steps_per_epoch = max(1, math.ceil(len(sampler) / rank_batch))
    total = steps_per_epoch * cfg.epochs
    dev = torch.device(cfg.device)
    model.to(dev)
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
    nhwc = nhwc_ok(model, train.x[:1].to(dev))
    layout = to_channels_last if nhwc else (lambda t: t)
    with channels_last(model, nhwc), progress_bar(quiet) as bar:
        net = model if w.size == 1 else DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
        task = bar.add_task(f"{stage}", total=total)
        for epoch in range(cfg.epochs):
            model.train()
            order = torch.tensor(list(sampler), dtype=torch.long)
            running, seen = 0.0, 0
            for i in range(steps_per_epoch):
                idx = order[i * rank_batch:(i + 1) * rank_batch]
                xb, yb = train.x[idx], train.y[idx]
                if cfg.hflip:
                    flip = torch.rand(len(xb), generator=gen) < 0.5
                    xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
                xb, yb = xb.to(dev), yb.to(dev)
                soft = None if train.soft is None else train.soft[idx].to(dev)
                loss = loss_fn(net(layout(xb)), yb, xb, soft)
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
            if val is not None and len(val) and w.main:
                history.append(evaluate(model, val))
                bar.update(task, description=f"{stage} epoch {epoch + 1}/{cfg.epochs} val top-1 {history[-1]:.4f}")
            step_line(f"{stage} epoch {epoch + 1}/{cfg.epochs}: loss {running / max(seen, 1):.3f}"
                      + (f", val top-1 {history[-1]:.4f}" if history else "")
                      + f" ({time.perf_counter() - t0:.0f} s)", quiet)
    set_eval(model.cpu())  # stages, the cache and the lowering see a CPU model, wherever it trained
    peak_mb = _peak_rss_mb()
    return {"val_top1_per_epoch": history, "val_top1": history[-1] if history else None,
            "epochs": cfg.epochs, "wall_s": round(time.perf_counter() - t0, 2), "processes": w.size,
            "batch_per_process": rank_batch,
            "device": str(dev), "peak_rss_mb_per_process": gather(round(peak_mb, 1))}


# ------------------------------------------------------------------ fine-tuning inside the passes
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
    samples: int | None = Field(None, ge=1, description="train on a seeded subset of this many samples")


def kd_loss(teacher: nn.Module | None, alpha: float, temperature: float) -> LossFn:
    """(logits, y, x) -> (1-a) CE + a T^2 KL(teacher || student); plain CE when a = 0 or no teacher."""
    if teacher is not None:
        teacher.eval()
    t2 = temperature * temperature

    def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
             soft: torch.Tensor | None = None) -> torch.Tensor:
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


def subset_index(size: int, n: int | None, seed: int) -> torch.Tensor | None:
    """The rows of a seeded subset of ``n`` samples (None: all of them)."""
    if n is None or n >= size:
        return None
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]


def subset(data: TensorData, n: int | None, seed: int) -> TensorData:
    idx = subset_index(len(data), n, seed)
    return data if idx is None else TensorData(data.x[idx], data.y[idx])


@dataclass
class _TeacherLogits:
    teacher: nn.Module
    known: torch.Tensor  # bool per training sample
    logits: torch.Tensor | None = None


def teacher_logits(ctx: PassContext, teacher: nn.Module, idx: torch.Tensor | None) -> torch.Tensor:
    """The teacher's logits for training rows ``idx`` (None: all), each row computed once per run and teacher:
    prune's recovery steps, distill and QAT share one teacher, which ran over the same images once per pass (the
    demo's: 92k teacher forwards instead of 55k)."""
    train = ctx.data["train"]
    memo = ctx.memo.get("teacher_logits")
    if memo is None or memo.teacher is not teacher:
        memo = ctx.memo["teacher_logits"] = _TeacherLogits(teacher, torch.zeros(len(train), dtype=torch.bool))
    rows = torch.arange(len(train)) if idx is None else idx
    todo = torch.unique(rows[~memo.known[rows]])
    if len(todo):
        mine = todo[shard(len(todo))]  # each rank its share, gathered (one process: all of them)
        x = train.x.take(mine.numpy()) if isinstance(train.x, StreamedImages) else train.x[mine]  # still streamed
        out = gather_rows(predict(teacher, x), len(todo))
        if memo.logits is None:
            memo.logits = torch.empty(len(train), *out.shape[1:], dtype=out.dtype)
        memo.logits[todo] = out
        memo.known[todo] = True
    assert memo.logits is not None
    return memo.logits[rows]


def unlabelled(stage: str, alpha: float) -> EdgeshipError:
    return EdgeshipError(f"{stage}: the data has no class ids, so fine-tuning's cross-entropy term (weight "
                         f"1 - alpha = {1 - alpha:g}) would train every sample toward class 0",
                         "set alpha: 1.0 on this pass (or its fine_tune:) to learn from the teacher alone, or give "
                         "data with class ids")


def check_labels_for_training(pass_configs: list, labelled: bool) -> None:
    """Before any work: refuse a pass that would fine-tune on class ids the data does not have (its own config or
    its ``fine_tune:`` section, with epochs > 0 and alpha < 1)."""
    if labelled:
        return
    for i, (name, config) in enumerate(pass_configs):
        sections = [config, *(getattr(config, f) for f in type(config).model_fields)]
        for c in sections:
            if isinstance(c, TrainConfig) and c.epochs > 0 and c.alpha < 1:
                raise unlabelled(f"{i + 1}:{name}", c.alpha)


def finetune(model: nn.Module, cfg: TrainConfig, ctx: PassContext, teacher: nn.Module | None,
             stage: str | None = None, seed_offset: int = 0) -> dict:
    """Train ``model`` in place with the KD loss; returns training metrics (val top-1 per epoch)."""
    if cfg.epochs == 0:
        return {"epochs": 0}
    labelled = bool(getattr(ctx.splits, "labels", True))  # no class ids: y is all zeros
    if not labelled and (teacher is None or cfg.alpha < 1):
        raise unlabelled(stage or ctx.stage, cfg.alpha if teacher is not None else 0.0)
    full = ctx.data["train"]
    idx = subset_index(len(full), cfg.samples, ctx.seed + seed_offset)
    train = full if idx is None else TensorData(full.x[idx], full.y[idx])
    fit_cfg = FitConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
                        optimizer=cfg.optimizer, schedule=cfg.schedule, label_smoothing=0.0,
                        seed=ctx.seed + seed_offset, threads=ctx.threads, device=ctx.device)
    loss = kd_loss(teacher, cfg.alpha, cfg.temperature)
    if teacher is not None and cfg.alpha > 0:  # the teacher sees each sample once per run, not once per pass
        train = TensorData(train.x, train.y, soft=teacher_logits(ctx, teacher, idx))
    val = ctx.data["val"] if labelled else None  # a top-1 against all-zero ids would say nothing
    return fit(model, train, val, fit_cfg, stage=stage or ctx.stage, loss_fn=loss, quiet=ctx.quiet)


def resolve_teacher(spec: ModelSpec | None, ctx: PassContext, student: nn.Module) -> nn.Module:
    if spec is None:
        teacher = ctx.teacher
    else:
        with torch.no_grad():
            classes = student.eval()(torch.zeros(1, *ctx.input_shape)).shape[1]
        teacher = build_model(spec, InputSpec(shape=ctx.input_shape), classes)
    if teacher is None:
        raise EdgeshipError(f"{ctx.stage}: no teacher model", "name one with teacher: {zoo: ..., weights: ...}")
    check_compatible(teacher, student, ctx.input_shape, ctx.stage)
    return teacher
