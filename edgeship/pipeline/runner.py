"""Run the recipe's passes in order. Each stage's result is cached under ``<runs>/.cache``, keyed by
the hash of its input model, its config and its data spec, so a rerun skips finished stages.

In a torchrun job every rank runs every pass (the training inside them is data-parallel), rank 0 alone
reads and writes the cache and evaluates the stage, and after each stage every rank continues from rank
0's model, so they cannot drift apart. The cache holds CPU models: a stage trained on a GPU is reused by
a CPU run and the other way round."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from edgeship.calibration.quant import LearnedQuantization, QuantSettings
from edgeship.limits import Deadline
from edgeship.models.io import IOModel, predict_io, to_model_dtype
from edgeship.models.load import fp32_size_bytes, model_stats, set_eval
from edgeship.pipeline.base import PassConfig, PassContext, PassResult, registry
from edgeship.pipeline.cache import StageCache
from edgeship.pipeline.distributed import World, active, broadcast, world
from edgeship.pipeline.training import evaluate, top1
from edgeship.progress import info
from edgeship.record import Stage

TIMEOUT_FIX = ("raise timeouts.stage_s in the recipe if the pass needs longer; a model whose forward() can loop "
               "forever must be fixed first")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The passes' own code (edgeship/pipeline/*.py) and the torch and torch-pruning versions: a stage
    cached by other code (an upgrade, a fix in a pass) is recomputed, not reused. torch's build tag (+cpu,
    +cu128) is left out: a CPU and a CUDA build of one version share the cache, as CPU and GPU runs do."""
    import torch_pruning

    release = str(torch.__version__).split("+")[0]
    h = hashlib.sha256(f"{release} {getattr(torch_pruning, '__version__', '')}".encode())
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def model_hash(model: nn.Module) -> str:
    """Architecture (module repr) + every tensor of the state dict."""
    h = hashlib.sha256(repr(model).encode())
    for k, t in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:20]


def stage_record(name: str, model: nn.Module, ctx: PassContext, wall_s: float, metrics: dict,
                 config: PassConfig) -> Stage:
    io = ctx.io
    if io is None or io.image:
        stats, top = model_stats(model, ctx.input_shape), evaluate(model, ctx.data["val"])
    else:  # the model behind its signature; top-1 only with class ids for its classification output
        val = ctx.data["val"]
        example = tuple(to_model_dtype(i, torch.from_numpy(np.ascontiguousarray(a)))
                        for i, a in zip(io.inputs, val.graph_inputs(io, slice(0, 1))))
        stats, top = model_stats(IOModel(model, io), example), None
        if io.classification is not None and ctx.splits.labels:
            k = io.outputs.index(io.classification)
            top = top1(predict_io(model, io, val.x, val.extra)[k], val.y)
    return Stage(stage=name, top1_val=top, **stats,
                 size_fp32_bytes=fp32_size_bytes(model), wall_s=round(wall_s, 2), cached=False,
                 metrics=json.loads(json.dumps(metrics, default=str)), config=config.model_dump(mode="json"))


@dataclass
class PipelineResult:
    """What the passes hand on: the compressed model, a record per stage, the quantization settings the
    targets follow, and (after QAT) the model's float view with its learned ranges."""

    model: nn.Module
    stages: list[Stage] = field(default_factory=list)
    quant: QuantSettings | None = None
    learned: LearnedQuantization | None = None


def run_passes(model: nn.Module, passes: list[tuple[str, PassConfig]], ctx: PassContext, cache: StageCache,
               data_spec: dict, timeout_s: float | None = None) -> PipelineResult:
    """Apply each (name, config) in order; a failure raises and leaves finished stages in the cache. A stage
    running longer than ``timeout_s`` is stopped with an error naming it."""
    result = PipelineResult(model=model)
    reg = registry()
    current = model
    ctx.teacher = set_eval(copy.deepcopy(model)) if ctx.teacher is None else ctx.teacher
    w = world() if active() else World()
    for i, (name, config) in enumerate(passes):
        stage = f"{i + 1}:{name}"
        ctx.stage = stage
        key = cache.key(model_hash(current), name, config, data_spec, code_fingerprint()) if w.main else ""
        hit = cache.get(key) if w.main else None
        record: Stage | None = None
        if broadcast(hit is not None):  # rank 0's cache decides for every rank, and hands them its model
            current, quant = broadcast((hit[0], hit[2]) if hit is not None else None)
            if hit is not None:
                record = hit[1].model_copy(update={"cached": True})
            info(f"[dim]stage {stage}: cached ({key})[/dim]")
        else:
            t0 = time.perf_counter()
            ctx.work_dir.mkdir(parents=True, exist_ok=True)
            with Deadline(timeout_s, f"stage {stage}", TIMEOUT_FIX):
                out: PassResult = reg[name]().run(current, config, ctx)
                current, quant = broadcast((set_eval(out.model), out.quant))  # rank 0's result on every rank
                if w.main:
                    record = stage_record(stage, current, ctx, time.perf_counter() - t0, out.metrics, config)
            if w.main and record is not None and not cache.put(key, current, record, quant):
                info(f"[dim]stage {stage}: not cached (the model cannot be pickled, or holds objects the cache's "
                     "safe loader does not restore)[/dim]")
        if quant is not None:
            ctx.quant = quant
            result.quant = quant
        if record is None:  # the other ranks keep no record
            continue
        result.stages.append(record)
        note = record.metrics.get("note")
        top = f"val top-1 {record.top1_val:.4f}, " if record.top1_val is not None else ""
        info(f"stage {stage}: {top}params {record.params:,}, "
             f"MACs {record.macs or 0:,}" + (f" [dim]({escape(note)})[/dim]" if note else ""))
    result.model = current
    # the float view of a fake-quantized model comes from the pass that quantized it (the last one that can)
    result.learned = next((view for name, _ in reversed(passes)
                           if (view := reg[name].learned_quantization(current)) is not None), None)
    return result
