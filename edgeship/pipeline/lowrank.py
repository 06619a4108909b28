"""`lowrank`: low-rank factorisation of conv and linear layers, fine-tuned with KD.

- Linear and 1x1 convolutions: truncated SVD, W = U S V^T ~ (U_r S_r^1/2)(S_r^1/2 V_r^T): two layers,
  in -> r -> out (the stride on the first 1x1 convolution, the bias on the second).
- KxK convolutions: Tucker-2 (Kim et al., ICLR 2016): W ~ core x_0 U_out x_1 U_in, three layers: a 1x1
  convolution in -> r_in (U_in^T), the KxK convolution r_in -> r_out (the core, with the original stride,
  padding and dilation) and a 1x1 convolution r_out -> out (U_out, the bias). The factors come from HOSVD
  (the leading singular vectors of the two channel unfoldings, ``torch.linalg.svd``) refined by a few HOOI
  iterations. Grouped (depthwise) convolutions are left as they are: each channel has its own K*K filter.

Ranks: per layer, the smallest rank whose singular values keep ``energy`` of the squared norm (for Tucker-2,
per channel mode); or, with ``macs_ratio``, one energy for every layer, found by bisection, such that the
model has at most that fraction of its MACs. A layer is factorised only where that removes MACs; ranks are
rounded up to a multiple of ``round_to``. Then ``fine_tune`` recovers accuracy with distillation from the
teacher (``edgeship.pipeline.training.finetune``). The result is an ordinary module of convolutions and
linear layers, lowered by every backend like any other.

Hand-written: the layer surgery and Tucker-2 (HOSVD/HOOI is a few SVDs; tensorly, which has it, is not in the
pinned set); every decomposition is ``torch.linalg.svd``.
"""

from __future__ import annotations

import copy

import torch
from pydantic import Field, model_validator
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.models.graph import forward_with_hooks, replace_module
from edgeship.models.load import model_stats
from edgeship.pipeline.base import Pass, PassConfig, PassContext, PassResult
from edgeship.pipeline.training import TrainConfig, evaluate, finetune

HOOI_ITERATIONS = 5


class LowRankConfig(PassConfig):
    energy: float | None = Field(None, gt=0, le=1, description="keep this fraction of each layer's squared "
                                                                "singular values (default 0.9 without macs_ratio)")
    macs_ratio: float | None = Field(None, gt=0, lt=1, description="or: one energy for all layers, chosen so "
                                                                   "the model keeps at most this fraction of its "
                                                                   "MACs (all of them, as prune counts)")
    round_to: int = Field(4, ge=1, description="ranks are rounded up to a multiple of this")
    ignored_layers: list[str] = Field(default_factory=list, description="module names left as they are")
    fine_tune: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=2),
                                   description="KD recovery training after the factorisation")

    @model_validator(mode="after")
    def _one_criterion(self) -> LowRankConfig:
        if self.energy is not None and self.macs_ratio is not None:
            raise ValueError("give energy or macs_ratio, not both")
        return self


def rank_for(s: torch.Tensor, energy: float, round_to: int) -> int:
    """The smallest rank whose singular values ``s`` keep ``energy`` of the squared norm, rounded up."""
    e = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum().clamp_min(1e-30)
    r = int(torch.searchsorted(e, torch.tensor([energy - 1e-9], dtype=e.dtype)).item()) + 1
    return min(len(s), -(-r // round_to) * round_to)


class Candidate:
    """One layer that may be factorised: its singular values per mode and its MACs at each rank."""

    def __init__(self, name: str, m: nn.Module, in_hw: tuple[int, int], out_hw: tuple[int, int]):
        self.name, self.module = name, m
        w = m.weight.detach().double()
        self.linear = isinstance(m, nn.Linear) or tuple(w.shape[2:]) == (1, 1)
        self.out_ch, self.in_ch = w.shape[0], w.shape[1]
        self.k = 1 if isinstance(m, nn.Linear) else int(w.shape[2] * w.shape[3])
        self.in_px, self.out_px = in_hw[0] * in_hw[1], out_hw[0] * out_hw[1]
        if self.linear:
            self.s = (torch.linalg.svdvals(w.reshape(self.out_ch, -1)),)
        else:  # the two channel unfoldings of Tucker-2
            self.s = (torch.linalg.svdvals(w.reshape(self.out_ch, -1)),
                      torch.linalg.svdvals(w.transpose(0, 1).reshape(self.in_ch, -1)))
        self.macs = self.out_px * self.out_ch * self.in_ch * self.k

    def ranks(self, energy: float, round_to: int) -> tuple[int, ...]:
        return tuple(rank_for(s, energy, round_to) for s in self.s)

    def macs_at(self, ranks: tuple[int, ...]) -> int:
        if self.linear:
            first_px = self.out_px  # the stride is on the first 1x1 convolution
            return first_px * ranks[0] * (self.in_ch + self.out_ch)
        r_out, r_in = ranks
        return self.in_px * self.in_ch * r_in + self.out_px * (r_in * r_out * self.k + r_out * self.out_ch)


def candidates(model: nn.Module, input_shape: tuple[int, ...], ignored: list[str]) -> list[Candidate]:
    sizes: dict[str, tuple] = {}
    layers = {n: m for n, m in model.named_modules()
              if (isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)) and n not in ignored}

    def hook(name):
        def record(mod, inp, out):
            hw = lambda t: tuple(t.shape[2:4]) if t.dim() == 4 else (1, 1)  # noqa: E731
            sizes[name] = (hw(inp[0]), hw(out))
        return record

    forward_with_hooks(model, torch.zeros(1, *input_shape), [m.register_forward_hook(hook(n))
                                                             for n, m in layers.items()])
    return [Candidate(n, m, *sizes[n]) for n, m in layers.items() if n in sizes]


def plan(cands: list[Candidate], energy: float, round_to: int) -> dict[str, tuple[int, ...]]:
    """Ranks of the layers worth factorising at ``energy`` (those whose factors cost fewer MACs)."""
    out = {}
    for c in cands:
        r = c.ranks(energy, round_to)
        if c.macs_at(r) < c.macs:
            out[c.name] = r
    return out


def saved_macs(cands: list[Candidate], ranks: dict[str, tuple[int, ...]]) -> int:
    return sum(c.macs - c.macs_at(ranks[c.name]) for c in cands if c.name in ranks)


def energy_for(cands: list[Candidate], total_macs: int, macs_ratio: float, round_to: int) -> float:
    """The largest energy (bisection, 1e-4) at which the factorised model has at most ``macs_ratio`` of the MACs."""
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if total_macs - saved_macs(cands, plan(cands, mid, round_to)) <= macs_ratio * total_macs:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-4:
            break
    return lo


def svd_split(w: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with W (out x in) ~ A @ B, A out x r, B r x in, the singular values split evenly."""
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    root = s[:r].sqrt()
    return (u[:, :r] * root).float(), (root[:, None] * vh[:r]).float()


def tucker2(w: torch.Tensor, r_out: int, r_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(core r_out x r_in x kh x kw, U_out out x r_out, U_in in x r_in) by HOSVD refined with HOOI."""
    w = w.double()
    out_ch, in_ch = w.shape[:2]

    def leading(mat: torch.Tensor, r: int) -> torch.Tensor:
        return torch.linalg.svd(mat, full_matrices=False)[0][:, :r]

    u_in = leading(w.transpose(0, 1).reshape(in_ch, -1), r_in)
    u_out = leading(w.reshape(out_ch, -1), r_out)
    for _ in range(HOOI_ITERATIONS):
        u_out = leading(torch.einsum("oihw,ir->orhw", w, u_in).reshape(out_ch, -1), r_out)
        u_in = leading(torch.einsum("oihw,os->ishw", w, u_out).reshape(in_ch, -1), r_in)
    core = torch.einsum("oihw,os,ir->srhw", w, u_out, u_in)
    return core.float(), u_out.float(), u_in.float()


def factorised(m: nn.Module, ranks: tuple[int, ...]) -> nn.Sequential:
    """The layer as a sequence of smaller layers computing (approximately) the same function."""
    w = m.weight.detach()
    bias = m.bias is not None
    if isinstance(m, nn.Linear):
        a, b = svd_split(w, ranks[0])
        first, second = nn.Linear(m.in_features, ranks[0], bias=False), nn.Linear(ranks[0], m.out_features, bias=bias)
        first.weight.data, second.weight.data = b, a
    elif tuple(w.shape[2:]) == (1, 1):
        a, b = svd_split(w.reshape(w.shape[0], -1), ranks[0])
        first = nn.Conv2d(m.in_channels, ranks[0], 1, m.stride, m.padding, bias=False, padding_mode=m.padding_mode)
        second = nn.Conv2d(ranks[0], m.out_channels, 1, bias=bias)
        first.weight.data, second.weight.data = b[:, :, None, None], a[:, :, None, None]
    else:
        r_out, r_in = ranks
        core, u_out, u_in = tucker2(w, r_out, r_in)
        first = nn.Conv2d(m.in_channels, r_in, 1, bias=False)
        middle = nn.Conv2d(r_in, r_out, m.kernel_size, m.stride, m.padding, m.dilation, bias=False,
                           padding_mode=m.padding_mode)
        second = nn.Conv2d(r_out, m.out_channels, 1, bias=bias)
        first.weight.data = u_in.t()[:, :, None, None].contiguous()
        middle.weight.data = core
        second.weight.data = u_out[:, :, None, None].contiguous()
        if bias:
            second.bias.data = m.bias.detach().clone()
        return nn.Sequential(first, middle, second)
    if bias:
        second.bias.data = m.bias.detach().clone()
    return nn.Sequential(first, second)


class LowRank(Pass):
    name = "lowrank"
    Config = LowRankConfig
    example = {"energy": 0.8, "fine_tune": {"epochs": 1, "samples": 256}}
    needs_module = "low-rank factorisation"

    def run(self, model: nn.Module, config: LowRankConfig, ctx: PassContext) -> PassResult:
        model = copy.deepcopy(model).eval()
        known = {n for n, _ in model.named_modules()}
        unknown = [n for n in config.ignored_layers if n not in known]
        if unknown:
            raise EdgeshipError(f"{ctx.stage}: ignored_layers names no module {', '.join(unknown)}",
                                "use module names as model.named_modules() gives them (e.g. layers.0.conv1.0)")
        cands = candidates(model, ctx.input_shape, config.ignored_layers)
        total = sum(c.macs for c in cands)
        if config.macs_ratio is not None:
            model_macs = model_stats(model, ctx.input_shape)["macs"] or total
            energy = energy_for(cands, model_macs, config.macs_ratio, config.round_to)
        else:
            energy = config.energy if config.energy is not None else 0.9
        ranks = plan(cands, energy, config.round_to)
        if not ranks:
            raise EdgeshipError(f"{ctx.stage}: no layer gets cheaper at energy {energy:.4f}",
                                "lower energy (or macs_ratio), or drop the lowrank pass for this model")
        layers = {}
        for c in cands:
            if c.name not in ranks:
                continue
            kept = [float((s[:r] ** 2).sum() / (s ** 2).sum()) for s, r in zip(c.s, ranks[c.name], strict=True)]
            replace_module(model, c.name, factorised(c.module, ranks[c.name]))
            layers[c.name] = {"method": "svd" if c.linear else "tucker2", "ranks": list(ranks[c.name]),
                              "channels": [c.out_ch, c.in_ch], "macs": c.macs, "macs_after": c.macs_at(ranks[c.name]),
                              "energy_kept": [round(e, 4) for e in kept]}
        factorised_top1 = evaluate(model, ctx.data["val"])
        hist = finetune(model, config.fine_tune, ctx, ctx.teacher)
        metrics = {"energy": round(energy, 4), "macs_ratio_target": config.macs_ratio, "layers": layers,
                   "factorised_layers": len(layers), "conv_linear_macs": total,
                   "conv_linear_macs_after": total - saved_macs(cands, ranks),
                   "val_top1_factorised": factorised_top1, **hist}
        return PassResult(model, metrics)
