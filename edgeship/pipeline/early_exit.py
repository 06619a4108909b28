"""`early_exit`: a dynamic network (the seed's "classifier at the intermediate layer", BranchyNet / MSDNet style): exit
heads after chosen blocks, trained jointly with the network, so that an input the network is already sure of can stop
early.

Each exit is global average pooling and a linear classifier on the block's output. Training fine-tunes the whole
network and the heads with the sum of every output's loss (the final head's weight 1, each exit's ``exit_weight``),
each output distilled from the teacher (the model before the first pass) like any KD fine-tuning here. The stage's
metrics give each exit's validation top-1 and MACs, and for confidence thresholds (an input leaves at the first exit
whose largest softmax probability reaches the threshold) the exit rates, top-1 and mean MACs on the validation split.

The result's ``forward`` is the final exit (the whole network): what every target lowers, so the pass fits any
recipe. Until edgeship lowers multi-output artifacts, a deployment gets one artifact per exit: ``exit_models`` gives,
for each exit, the network truncated after its block (torch.fx, dead code removed) followed by its head, and
benchmarks/methods.py exports each with `edgeship export`, runs them on the test split and reports top-1 and mean
latency against the threshold with the exit rates measured there.

Hand-written: the heads, the joint loss and the truncation (a few lines over torch.fx); no library in the pinned set
trains or cuts early exits.
"""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.models.graph import forward_with_hooks
from edgeship.models.load import model_stats
from edgeship.pipeline.base import Pass, PassContext, PassResult
from edgeship.pipeline.training import FitConfig, TensorData, TrainConfig, fit, kd_loss, predict, subset, top1

THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class EarlyExitConfig(TrainConfig):
    epochs: int = Field(2, ge=0)
    exits: list[str] | None = Field(None, description="blocks whose outputs get an exit head; default: the blocks "
                                                      "at 1/3 and 2/3 of the model's longest stack of blocks")
    exit_weight: float = Field(1.0, ge=0, description="each exit's loss weight (the final head's is 1)")


class EarlyExitModel(nn.Module):
    """The network and its exit heads; ``forward`` is the final exit, ``all_logits`` every exit's then the final."""

    def __init__(self, model: nn.Module, exits: list[str], heads: list[nn.Module]):
        super().__init__()
        self.model, self.exits, self.heads = model, list(exits), nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def all_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats: dict[str, torch.Tensor] = {}
        hooks = [self.model.get_submodule(name).register_forward_hook(
            lambda mod, inp, out, name=name: feats.__setitem__(name, out)) for name in self.exits]
        try:
            final = self.model(x)
        finally:
            for h in hooks:
                h.remove()
        return [head(feats[name]) for name, head in zip(self.exits, self.heads, strict=True)] + [final]


class Joint(nn.Module):
    """The training view: every output's logits side by side (fit() trains one tensor-valued forward)."""

    def __init__(self, ee: EarlyExitModel):
        super().__init__()
        self.ee = ee

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.ee.all_logits(x), 1)


def head_for(feature: torch.Tensor, classes: int) -> nn.Module:
    if feature.dim() == 4:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(feature.shape[1], classes))
    return nn.Sequential(nn.Flatten(), nn.Linear(feature[0].numel(), classes))


def default_exits(model: nn.Module) -> list[str]:
    """The blocks at 1/3 and 2/3 of the longest ``nn.Sequential`` of blocks (elements holding a conv/linear)."""
    best: list[str] = []
    for parent, m in model.named_modules():
        if isinstance(m, nn.Sequential):
            blocks = [f"{parent}.{c}" if parent else c for c, child in m.named_children()
                      if any(isinstance(x, (nn.Conv2d, nn.Linear)) for x in child.modules())]
            best = blocks if len(blocks) > len(best) else best
    if len(best) < 3:
        return []
    n = len(best)
    return sorted({best[n // 3 - 1], best[2 * n // 3 - 1]}, key=best.index)


def truncate(model: nn.Module, name: str) -> fx.GraphModule:
    """``model`` cut after the (last) call of submodule ``name``: a GraphModule returning that block's output."""
    model = copy.deepcopy(model).eval()

    class Tracer(fx.Tracer):  # the exit block stays one call (fx would otherwise inline a custom block)
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return qualname == name or super().is_leaf_module(m, qualname)

    gm = fx.GraphModule(model, Tracer().trace(model))
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == name]
    if not calls:
        raise ValueError(f"{name} is not called in the traced graph")
    output = next(n for n in gm.graph.nodes if n.op == "output")
    output.args = (calls[-1],)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def exit_models(model: EarlyExitModel) -> list[tuple[str, nn.Module]]:
    """(exit name, a module computing only that exit's logits) for each exit, then ("final", the whole network)."""
    out: list[tuple[str, nn.Module]] = [(name, nn.Sequential(truncate(model.model, name), copy.deepcopy(head)).eval())
                                        for name, head in zip(model.exits, model.heads, strict=True)]
    return out + [("final", copy.deepcopy(model.model).eval())]


def confidence_table(logits: list[torch.Tensor], y: torch.Tensor, macs: list[int]) -> list[dict]:
    """For each threshold: where the inputs leave (the first output whose top softmax probability reaches it), the
    resulting top-1 and the mean MACs (an input that leaves at exit k ran the network up to exit k and its head)."""
    conf = [F.softmax(z, 1).amax(1) for z in logits]
    preds = [z.argmax(1) for z in logits]
    rows = []
    for t in THRESHOLDS:
        left = torch.full_like(y, len(logits) - 1)
        for k in reversed(range(len(logits) - 1)):
            left = torch.where(conf[k] >= t, k, left)
        pred = torch.stack(preds, 1).gather(1, left[:, None])[:, 0]
        rates = [float((left == k).float().mean()) for k in range(len(logits))]
        rows.append({"threshold": t, "exit_rates": [round(r, 4) for r in rates],
                     "top1": float((pred == y).float().mean()),
                     "mean_macs": round(sum(r * m for r, m in zip(rates, macs, strict=True)))})
    return rows


class EarlyExit(Pass):
    name = "early_exit"
    Config = EarlyExitConfig
    example = {"epochs": 1, "samples": 256}
    needs_module = "early-exit heads"

    def run(self, model: nn.Module, config: EarlyExitConfig, ctx: PassContext) -> PassResult:
        base = copy.deepcopy(model).eval()
        exits = config.exits if config.exits is not None else default_exits(base)
        known = {n for n, _ in base.named_modules()}
        bad = [e for e in exits if e not in known or not e]
        if bad or not exits:
            raise EdgeshipError(f"{ctx.stage}: " + (f"exits names no module {', '.join(bad)}" if bad else
                                                    "found no stack of blocks to put exits after"),
                                "name the blocks with exits: [<module name>, ...] (e.g. layers.2)")
        feats: dict[str, torch.Tensor] = {}
        hooks = [base.get_submodule(e).register_forward_hook(lambda mod, inp, out, e=e: feats.__setitem__(e, out))
                 for e in exits]
        forward_with_hooks(base, torch.zeros(2, *ctx.input_shape), hooks)
        with torch.no_grad():
            classes = base(torch.zeros(1, *ctx.input_shape)).shape[1]
        torch.manual_seed(ctx.seed)
        ee = EarlyExitModel(base, exits, [head_for(feats[e], classes) for e in exits]).eval()
        hist = self.train_jointly(ee, config, ctx)
        val = ctx.data["val"]
        with torch.no_grad():
            logits = [torch.cat(part) for part in zip(*(ee.all_logits(val.x[i:i + 256])
                                                         for i in range(0, len(val), 256)), strict=True)]
        macs = [model_stats(m, ctx.input_shape)["macs"] or 0 for _, m in exit_models(ee)]
        metrics = {"exits": exits, "exit_macs": macs, "exit_val_top1": [top1(z, val.y) for z in logits],
                   "confidence": confidence_table(logits, val.y, macs), "exit_weight": config.exit_weight, **hist}
        return PassResult(ee.eval(), metrics)

    @staticmethod
    def train_jointly(ee: EarlyExitModel, config: EarlyExitConfig, ctx: PassContext) -> dict:
        if config.epochs == 0:
            return {"epochs": 0}
        train = subset(ctx.data["train"], config.samples, ctx.seed)
        teacher = ctx.teacher if config.alpha > 0 else None
        if teacher is not None:  # the teacher sees each sample once
            train = TensorData(train.x, train.y, soft=predict(teacher, train.x))
        one = kd_loss(teacher, config.alpha, config.temperature)
        n = len(ee.exits) + 1
        weights = [config.exit_weight] * (n - 1) + [1.0]

        def loss(logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
            parts = logits.chunk(n, 1)
            return sum((w * one(z, y, x, soft) for w, z in zip(weights, parts, strict=True)), torch.zeros(()))

        cfg = FitConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
                        weight_decay=config.weight_decay, optimizer=config.optimizer, schedule=config.schedule,
                        label_smoothing=0.0, seed=ctx.seed, threads=ctx.threads)
        return fit(Joint(ee), train, None, cfg, stage=ctx.stage, loss_fn=loss, quiet=ctx.quiet)
