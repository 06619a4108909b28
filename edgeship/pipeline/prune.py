"""`prune`: structured channel pruning with torch-pruning's dependency graph.

Channels are removed from every layer that shares them (residual adds, depthwise convs,
concatenations), so the result is a genuinely smaller ``nn.Module``: fewer parameters, fewer MACs,
a smaller exported file. Masks are not pruning.

Targets: ``macs_ratio`` keeps at most that fraction of the input model's MACs (each step bisects
torch-pruning's ``pruning_ratio`` until the model fits the step's MACs budget), or with
``relative_to: original`` of the model before the first pass (after ``drop_blocks``, whose cut depends on
which blocks it picks, this keeps the final size fixed); ``channel_ratio``
keeps that fraction of the channels. ``steps`` prunes a little at a time and fine-tunes after each
step with distillation from the teacher (``fine_tune``), the iterative schedule that keeps accuracy.
The classifier (the last conv/linear layer run) is never pruned.

``spatial_weight`` (w > 0) prunes channels on large feature maps harder: a group of coupled channels
whose largest convolution output has area A gets the uniform ratio scaled by (A / A_min)^w (A_min: the
smallest such area), and the bisection finds the uniform ratio that meets the MACs target. The idea: at
batch 1 a runtime spends more time per MAC on large feature maps (memory traffic, not arithmetic, bounds
depthwise and narrow pointwise layers there). Measured (BENCHMARKS.md): the demo's MobileNetV2 at w = 1 ran
3.0x faster than FP32 at 1 thread against 2.2-2.35x pruned uniformly, for 0.07 pt; ResNet-20 at w = 0.5 kept
0.2 pt more than uniform. On untrained structures alone (benchmarks/results/spatial_weight.json) the gain is
mixed, so it stays off unless a recipe asks for it.
"""

from __future__ import annotations

import copy
import difflib
from typing import Literal

import torch
import torch.nn.functional as F
import torch_pruning as tp
from pydantic import Field, field_validator, model_validator
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.models.graph import forward_with_hooks
from edgeship.pipeline.base import Pass, PassConfig, PassContext, PassResult, require_python_module
from edgeship.pipeline.training import TrainConfig, finetune, resolve_teacher, subset

IMPORTANCE = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "taylor": lambda: tp.importance.TaylorImportance(),
    "bn_scale": lambda: tp.importance.BNScaleImportance(),
    "lamp": lambda: tp.importance.LAMPImportance(p=2),
}


class FineTuneConfig(TrainConfig):
    epochs: int = Field(1, ge=0, description="epochs after each pruning step (0: prune only)")
    samples: int | None = Field(None, ge=1, description="fine-tune each step on a seeded subset")


class PruneConfig(PassConfig):
    macs_ratio: float | None = Field(None, gt=0, le=1, description="keep at most this fraction of MACs")
    relative_to: Literal["input", "original"] = Field(
        "input", description="macs_ratio counts against this pass's input model, or the model before the first pass")
    channel_ratio: float | None = Field(None, gt=0, le=1, description="keep this fraction of channels")
    importance: Literal["l1", "l2", "taylor", "bn_scale", "lamp"] = "l2"
    global_pruning: bool = Field(False, description="rank channels across layers (else every layer alike)")
    round_to: int | Literal["auto"] = Field(
        8, description="remaining widths are multiples of this (SIMD-friendly); auto: 8, and tile from the "
        "targets' devices (`edgeship devices` shows it)")
    tile: int | None = Field(None, ge=2, description="layers at least this wide keep widths on multiples of it, never "
                             "below one tile (an INT8 matrix unit's channel tile: 64 with AMX); narrower layers use "
                             "round_to")
    ignored_layers: list[str] = Field(default_factory=list, description="module names never pruned")
    spatial_weight: float = Field(0.0, ge=0, le=2, description="prune channels on larger feature maps harder: "
                                  "a group's ratio x (its largest output area / the smallest)^w; 0 = uniform")
    steps: int = Field(1, ge=1, description="prune a little, fine-tune, repeat")
    fine_tune: FineTuneConfig = Field(default_factory=FineTuneConfig)

    @field_validator("round_to")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("round_to must be at least 1 (or auto)")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        if (self.macs_ratio is None) == (self.channel_ratio is None):
            raise ValueError("give exactly one of macs_ratio, channel_ratio")
        if self.relative_to == "original" and self.macs_ratio is None:
            raise ValueError("relative_to: original applies to macs_ratio; channel_ratio counts the input's channels")
        return self


class _WouldEmpty(Exception):
    def __init__(self, layer: str, channels: int):
        super().__init__(layer)
        self.layer, self.channels = layer, channels


def _round_to_tile(n_pruned: int, current: int, round_to: int, tile: int | None) -> int:
    """``_round_keeping_one_unit`` with the unit ``tile`` for a layer at least one tile wide, else ``round_to``: a
    layer of a matrix unit's width keeps whole tiles (at least one), a narrower one rounds as before."""
    return _round_keeping_one_unit(n_pruned, current, tile if tile and current >= tile else round_to)


def _round_keeping_one_unit(n_pruned: int, current: int, round_to: int) -> int:
    """How many of ``current`` channels to remove when torch-pruning asks for ``n_pruned``: the kept
    width goes to the *nearest* multiple of round_to (halfway: up), and rounding alone never empties a layer (a layer
    that would keep 1..round_to-1 channels keeps round_to, or all it has). A target that asks for zero
    channels still empties it, which `prune` reports as bad input.

    torch-pruning rounds the kept width down, and its truncation asks for one channel at any ratio above
    zero, so each step took at least round_to channels from every group whatever the ratio: a 16-channel
    layer pruned in 3 steps with round_to 4 kept 4, however small the MACs target's ratio."""
    keep = current - n_pruned
    if keep <= 0:
        return current
    keep = min(current, max(round_to * ((2 * keep + round_to) // (2 * round_to)), min(round_to, current)))  # ties up
    return current - keep


MAX_LAYER_RATIO = 0.95  # spatial_weight never asks one layer for more than this


def group_areas(model: nn.Module, example: torch.Tensor, ignored: list[str]) -> dict[str, int]:
    """For each prunable group of coupled channels (keyed by its root module's name), the largest output
    H*W among the convolutions it touches: what spatial_weight scales the group's ratio by."""
    out: dict[nn.Module, int] = {}
    forward_with_hooks(model, example, [m.register_forward_hook(
        lambda mod, i, o: out.__setitem__(mod, int(o.shape[-2] * o.shape[-1])))
        for m in model.modules() if isinstance(m, nn.Conv2d)])
    names = {m: n for n, m in model.named_modules()}
    dg = tp.DependencyGraph().build_dependency(model, example)
    areas: dict[str, int] = {}
    for group in dg.get_all_groups(ignored_layers=[m for m in names if names[m] in ignored],
                                   root_module_types=(nn.Conv2d, nn.Linear)):
        touched = [out[dep.target.module] for dep, _ in group if dep.target.module in out]
        if touched:
            areas[names[group[0][0].target.module]] = max(touched)
    return areas


def macs_of(model: nn.Module, example: torch.Tensor) -> int:
    return int(tp.utils.count_ops_and_params(model, example)[0])


def classifier_name(model: nn.Module, example: torch.Tensor) -> str | None:
    """The last conv/linear module the forward pass runs."""
    order: list[str] = []
    forward_with_hooks(model, example, [m.register_forward_hook(lambda mod, i, o, n=n: order.append(n))
                                        for n, m in model.named_modules()
                                        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))])
    return order[-1] if order else None


def _last_module_run(model: nn.Module, fn) -> tuple[str | None, Exception]:
    """Run ``fn``; if it raises, return the last conv/linear layer that ran before the failure (the
    one whose channels the failing op could not follow) and the exception."""
    last: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, i, n=n: last.append(n))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    try:
        fn()
        return None, None  # type: ignore[return-value]
    except Exception as e:  # noqa: BLE001 - any failure is reported with the layer
        return (last[-1] if last else None), e
    finally:
        for h in hooks:
            h.remove()


class _Untraceable(EdgeshipError):
    """torch-pruning cannot follow the channels past ``layers`` (all of them, when the pass could find them)."""

    def __init__(self, stage: str, layers: list[str], err: Exception):
        self.stage, self.layers, self.err = stage, layers, err
        msg = " ".join(str(err).split())[:160]
        shown = ", ".join(repr(n) for n in layers)
        where = f"past layer{'s' if len(layers) > 1 else ''} {shown}" if layers else "in the model"
        fix = (f"add {shown} to ignored_layers" if layers else "add the layer to ignored_layers") \
            + " (keep their channels), or replace the op torch-pruning cannot follow"
        super().__init__(f"{stage}: torch-pruning's dependency graph cannot trace the model {where} "
                         f"({type(err).__name__}: {msg})", fix)


def _untraceable(stage: str, layer: str | None, err: Exception) -> _Untraceable:
    return _Untraceable(stage, [layer] if layer else [], err)


class _Pruner:
    """One configured pruning job over a model (names resolved, classifier found)."""

    def __init__(self, model: nn.Module, cfg: PruneConfig, ctx: PassContext):
        self.cfg, self.ctx = cfg, ctx
        if cfg.round_to == "auto":  # export resolves it from the targets' devices before any pass runs
            raise EdgeshipError(f"{ctx.stage}: round_to: auto was not resolved to a number (it is resolved from the "
                                "recipe's targets' devices by export, train and search)",
                                "give round_to a number when running the pass directly")
        self.round_to: int = cfg.round_to
        self.example = torch.zeros(1, *ctx.input_shape)
        require_python_module(model, ctx.stage, "pruning")
        names = dict(model.named_modules())
        for n in cfg.ignored_layers:
            if n not in names:
                close = difflib.get_close_matches(n, [k for k in names if k], 3)
                raise EdgeshipError(f"{ctx.stage}: ignored_layers names {n!r}, which is not a module of the model",
                                    "use module names as in model.named_modules()"
                                    + (f", e.g. {', '.join(close)}" if close else ""))
        self.classifier = classifier_name(model, self.example)
        self.ignored = list(cfg.ignored_layers) + ([self.classifier] if self.classifier else [])
        self.areas = self._traced(model, lambda: group_areas(model, self.example, self.ignored)) \
            if cfg.spatial_weight else {}
        batch = subset(ctx.data["train"], 128, ctx.seed + 11)
        self.batch = (batch.x, batch.y)

    def _build(self, model: nn.Module, ratio: float):
        names = dict(model.named_modules())
        ignored = [names[n] for n in self.ignored]
        if self.cfg.importance == "taylor":
            model.zero_grad()
            F.cross_entropy(model.train()(self.batch[0]), self.batch[1]).backward()
            model.eval()
        per_layer = None
        if self.areas:
            smallest, w = min(self.areas.values()), self.cfg.spatial_weight
            per_layer = {names[n]: min(MAX_LAYER_RATIO, ratio * (a / smallest) ** w) for n, a in self.areas.items()}
        return self._traced(model, lambda: tp.pruner.MetaPruner(
            model, self.example, importance=IMPORTANCE[self.cfg.importance](), global_pruning=self.cfg.global_pruning,
            pruning_ratio=ratio, pruning_ratio_dict=per_layer, ignored_layers=ignored, round_to=self.round_to))

    def _traced(self, model: nn.Module, build):
        """``build()`` (which traces ``model`` with torch-pruning); when tracing fails, the error names the layer."""
        try:
            return build()
        except Exception:  # find the layer by re-running the forward pass
            layer, err = _last_module_run(model, lambda: tp.DependencyGraph().build_dependency(model, self.example))
            if err is None:
                raise
            raise _untraceable(self.ctx.stage, layer, err) from None

    def prune(self, model: nn.Module, ratio: float) -> nn.Module:
        """Prune ``model`` in place by ``ratio`` (torch-pruning's pruning_ratio); raises _WouldEmpty."""
        pruner = self._build(model, ratio)
        names = {m: n for n, m in model.named_modules()}
        emptied: list[_WouldEmpty] = []
        check = pruner.DG.check_pruning_group

        def record_refusals(group) -> bool:  # torch-pruning silently skips a group it would empty
            ok = check(group)
            if not ok:
                root = group[0][0].target.module
                emptied.append(_WouldEmpty(names.get(root, type(root).__name__),
                                           pruner.DG.get_out_channels(root) or 0))
            return ok

        pruner.DG.check_pruning_group = record_refusals
        pruner._round_to = lambda n, current, round_to: _round_to_tile(n, current, round_to, self.cfg.tile)
        groups = list(pruner.step(interactive=True))
        if emptied:
            raise emptied[0]
        for group in groups:
            group.prune()
        model.zero_grad(set_to_none=True)
        layer, err = _last_module_run(model, lambda: model.eval()(torch.zeros(2, *self.ctx.input_shape)))
        if err is not None:
            raise _untraceable(self.ctx.stage, layer, err)
        return model

    def every_untraceable(self, model: nn.Module, first: _Untraceable, most: int = 12) -> _Untraceable:
        """All the layers past which pruning fails, found in one run (a user fixing them one by one pays a whole
        run per layer): each found layer is ignored in turn and a copy pruned again, until it prunes."""
        found, base = list(first.layers), list(self.ignored)
        try:
            while found and len(found) < most:
                self.ignored = base + found
                try:
                    self.prune(copy.deepcopy(model), 0.5)
                    break
                except _Untraceable as e:
                    if not e.layers or e.layers[0] in found:
                        break
                    found.append(e.layers[0])
                except _WouldEmpty:
                    break
        finally:
            self.ignored = base
        return _Untraceable(first.stage, found, first.err)

    def ratio_for_macs(self, model: nn.Module, target: float, iters: int = 14) -> float:
        lo, hi, best, empty = 0.0, 0.999, None, None
        for _ in range(iters):
            mid = (lo + hi) / 2
            try:
                macs = macs_of(self.prune(copy.deepcopy(model), mid), self.example)
            except _WouldEmpty as e:
                macs, empty = None, e
            if macs is None or macs <= target:
                hi = mid
                if macs is not None:
                    best = mid
            else:
                lo = mid
        if best is None:
            units = f"widths on multiples of {self.round_to}" + (f" (tile {self.cfg.tile})" if self.cfg.tile else "")
            coarse = " or a smaller round_to or tile" if self.round_to > 8 or self.cfg.tile else ""
            if empty is not None:
                raise EdgeshipError(f"{self.ctx.stage}: no pruning ratio reaches {target:,.0f} MACs with {units} "
                                    f"without removing every channel of layer {empty.layer!r} ({empty.channels} "
                                    "channels)", f"use a larger macs_ratio{coarse}, or add {empty.layer!r} to "
                                    "ignored_layers")
            raise EdgeshipError(f"{self.ctx.stage}: no pruning ratio reaches {target:,.0f} MACs with {units}",
                                f"use a larger macs_ratio, fewer ignored_layers{coarse}")
        return best

    def empty_error(self, e: _WouldEmpty) -> EdgeshipError:
        target = (f"macs_ratio {self.cfg.macs_ratio}" if self.cfg.macs_ratio
                  else f"channel_ratio {self.cfg.channel_ratio}")
        return EdgeshipError(f"{self.ctx.stage}: {target} would remove every channel of layer {e.layer!r} "
                             f"({e.channels} channels, round_to {self.round_to})",
                             f"use a larger ratio, a smaller round_to, or add {e.layer!r} to ignored_layers")


def channel_count(model: nn.Module) -> int:
    return int(sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)))


class Prune(Pass):
    name = "prune"
    Config = PruneConfig
    example = {"macs_ratio": 0.6, "fine_tune": {"epochs": 1}}
    needs_module = "pruning"

    def run(self, model: nn.Module, config: PruneConfig, ctx: PassContext) -> PassResult:
        job = _Pruner(model, config, ctx)
        try:
            return self._run(job, model, config, ctx)
        except _Untraceable as e:
            raise job.every_untraceable(model, e) from None

    def _run(self, job: _Pruner, model: nn.Module, config: PruneConfig, ctx: PassContext) -> PassResult:
        teacher = resolve_teacher(None, ctx, model) if config.fine_tune.epochs and config.fine_tune.alpha else None
        model = copy.deepcopy(model).eval()
        base_macs, base_params = macs_of(model, job.example), sum(p.numel() for p in model.parameters())
        base_channels = channel_count(model)
        keep_ratio, original_macs = config.macs_ratio, None
        if config.macs_ratio is not None and config.relative_to == "original":
            original_macs = macs_of(ctx.teacher, job.example) if ctx.teacher is not None else base_macs
            keep_ratio = config.macs_ratio * original_macs / base_macs
            if keep_ratio >= 1:
                raise EdgeshipError(f"{ctx.stage}: the input already has {base_macs / original_macs:.3f} of the "
                                    f"original model's MACs, within macs_ratio {config.macs_ratio} (relative_to: "
                                    "original): nothing to prune", "lower macs_ratio, or drop this prune pass")
        steps: list[dict] = []
        keep_prev = 1.0
        for k in range(1, config.steps + 1):
            frac = k / config.steps
            if config.macs_ratio is not None:
                target = base_macs * (1 - (1 - keep_ratio) * frac)
                ratio = job.ratio_for_macs(model, target)
            else:
                keep = 1 - (1 - config.channel_ratio) * frac
                ratio, keep_prev = 1 - keep / keep_prev, keep
            try:
                job.prune(model, ratio)
            except _WouldEmpty as e:
                raise job.empty_error(e) from None
            macs = macs_of(model, job.example)
            hist = finetune(model, config.fine_tune, ctx, teacher, stage=f"{ctx.stage} step {k}/{config.steps}",
                            seed_offset=k) if teacher is not None or config.fine_tune.epochs else {}
            steps.append({"step": k, "pruning_ratio": round(ratio, 4), "macs": macs,
                          "params": sum(p.numel() for p in model.parameters()),
                          "val_top1": hist.get("val_top1")})
        macs = macs_of(model, job.example)
        params = sum(p.numel() for p in model.parameters())
        metrics = {"base_macs": base_macs, "macs": macs, "macs_ratio": round(macs / base_macs, 4),
                   **({"original_macs": original_macs, "macs_ratio_of_original": round(macs / original_macs, 4)}
                      if original_macs else {}),
                   "base_params": base_params, "params_ratio": round(params / base_params, 4),
                   "base_conv_channels": base_channels, "conv_channels": channel_count(model),
                   "importance": config.importance, "global_pruning": config.global_pruning,
                   "spatial_weight": config.spatial_weight,
                   "ignored_layers": job.ignored, "steps": steps}
        return PassResult(model.eval(), metrics)
