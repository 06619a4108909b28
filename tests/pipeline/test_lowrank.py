"""`lowrank`: the factorisations are exact at full rank and shrink MACs at lower ranks, the rank criteria do what
they say, fine-tuning recovers accuracy, and the factorised model lowers like any other."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgeship.errors import EdgeshipError
from edgeship.models.load import model_stats
from edgeship.models.zoo import ZOO
from edgeship.pipeline.base import validate_pass
from edgeship.pipeline.lowrank import LowRank, LowRankConfig, factorised, rank_for, tucker2
from edgeship.pipeline.training import evaluate


@pytest.mark.parametrize("layer", [nn.Linear(24, 16), nn.Conv2d(24, 16, 1, stride=2),
                                   nn.Conv2d(12, 20, 3, stride=2, padding=1)])
def test_full_rank_factorisation_is_exact(layer):
    torch.manual_seed(0)
    w = layer.weight
    ranks = (min(w.shape[0], w.shape[1]),) if w.dim() == 2 or w.shape[2] == 1 else (w.shape[0], w.shape[1])
    new = factorised(layer, ranks)
    x = torch.randn(3, 24) if isinstance(layer, nn.Linear) else torch.randn(3, layer.in_channels, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(new(x), layer(x), atol=1e-4, rtol=1e-4)
    assert len(new) == (2 if ranks[0] and len(ranks) == 1 else 3)


def test_tucker2_beats_truncation_of_one_mode():
    """HOOI at ranks (r, r) reconstructs at least as well as HOSVD's start, and the core has the ranks' shape."""
    torch.manual_seed(0)
    w = torch.randn(32, 16, 3, 3)
    core, u_out, u_in = tucker2(w, 8, 6)
    assert core.shape == (8, 6, 3, 3) and u_out.shape == (32, 8) and u_in.shape == (16, 6)
    approx = torch.einsum("srhw,os,ir->oihw", core, u_out, u_in)
    assert torch.allclose(u_out.t() @ u_out, torch.eye(8), atol=1e-5)
    assert (approx - w).norm() < w.norm()


def test_rank_for_energy():
    s = torch.tensor([3.0, 2.0, 1.0, 0.5])  # squared: 9, 4, 1, 0.25 of 14.25
    assert rank_for(s, 0.6, 1) == 1 and rank_for(s, 0.9, 1) == 2 and rank_for(s, 0.99, 1) == 4
    assert rank_for(s, 0.6, 4) == 4  # rounded up, never past the full rank


def test_lowrank_energy_on_resnet(digits_ctx):
    _, ctx = digits_ctx
    torch.manual_seed(0)
    model = ZOO["resnet"](input_size=ctx.input_shape[1:], num_classes=10, depth=8).eval()
    out = LowRank().run(model, LowRankConfig(energy=0.6, fine_tune={"epochs": 0}), ctx)
    m = out.metrics
    assert m["factorised_layers"] >= 4
    assert all(r["macs_after"] < r["macs"] for r in m["layers"].values())
    assert all(min(r["energy_kept"]) >= 0.6 for r in m["layers"].values())
    assert {r["method"] for r in m["layers"].values()} >= {"tucker2"}
    after = model_stats(out.model, ctx.input_shape)["macs"]
    assert after < model_stats(model, ctx.input_shape)["macs"]


def test_lowrank_macs_target_and_recovery(digits_ctx):
    """A MACs budget is met (within the rounding of ranks), and KD fine-tuning wins back what factorising lost."""
    model, ctx = digits_ctx
    before = model_stats(model, ctx.input_shape)["macs"]
    out = LowRank().run(model, LowRankConfig(macs_ratio=0.6, round_to=1,
                                             fine_tune={"epochs": 4, "lr": 3e-3}), ctx)
    m = out.metrics
    assert model_stats(out.model, ctx.input_shape)["macs"] <= 0.6 * before
    assert m["val_top1"] >= m["val_top1_factorised"] and m["val_top1"] >= evaluate(model, ctx.data["val"]) - 0.05


def test_lowrank_bad_config(digits_ctx):
    model, ctx = digits_ctx
    with pytest.raises(EdgeshipError, match="give energy or macs_ratio, not both"):
        validate_pass(0, {"name": "lowrank", "energy": 0.9, "macs_ratio": 0.5})
    with pytest.raises(EdgeshipError, match="ignored_layers names no module nope"):
        LowRank().run(model, LowRankConfig(ignored_layers=["nope"]), ctx)
    with pytest.raises(EdgeshipError, match="no layer gets cheaper"):
        LowRank().run(model, LowRankConfig(energy=1.0, fine_tune={"epochs": 0}), ctx)
