"""`calibrate` records settings without touching weights; `sparsify` zeroes weights and says what that buys."""

from __future__ import annotations

import pytest
import torch

from edgeship.errors import EdgeshipError
from edgeship.pipeline.base import validate_pass
from edgeship.pipeline.calibrate import Calibrate, CalibrateConfig
from edgeship.pipeline.sparsify import Sparsify, SparsifyConfig, sparsity
from edgeship.pipeline.training import evaluate


def test_calibrate_changes_no_weight_and_returns_settings(digits_ctx):
    model, ctx = digits_ctx
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = Calibrate().run(model, CalibrateConfig(samples=10_000, method="percentile", percentile=99.9,
                                                 per_channel=False, symmetric_activations=True, seed=3), ctx)
    assert all(torch.equal(before[k], v) for k, v in out.model.state_dict().items())
    q = out.quant
    assert (q.method, q.percentile, q.per_channel, q.symmetric_activations, q.seed, q.qat) == \
        ("percentile", 99.9, False, True, 3, False)
    assert q.samples == len(ctx.data["calib"]) == out.metrics["calib_split_size"]  # capped at what exists
    assert out.metrics["requested_samples"] == 10_000 and out.metrics["method"] == "percentile"


def test_calibrate_rejects_unknown_method():
    with pytest.raises(EdgeshipError, match=r"passes\[0\] \(calibrate\): method"):
        validate_pass(0, {"name": "calibrate", "method": "kl"})


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_sparsify_zeroes_weights_and_shrinks_the_zip(scope, digits_ctx):
    model, ctx = digits_ctx
    out = Sparsify().run(model, SparsifyConfig(sparsity=0.6, scope=scope), ctx)
    m = out.metrics
    assert abs(m["sparsity"] - 0.6) < 0.02 and abs(sparsity(out.model) - m["sparsity"]) < 1e-4
    if scope == "layer":
        assert all(abs(s - 0.6) < 0.05 for s in m["layer_sparsity"].values())
    assert m["zip_fp32_bytes"] < 0.85 * m["zip_fp32_bytes_before"]
    assert "same speed" in m["note"]
    assert not any(n.endswith("_orig") or n.endswith("_mask") for n in out.model.state_dict())  # permanent
    assert sum(p.numel() for p in out.model.parameters()) == sum(p.numel() for p in model.parameters())


def test_sparsify_spares_layers_below_min_fan_in(digits_ctx):
    """min_fan_in: layers with fewer weights per output channel stay dense, the others take the sparsity; a
    min_fan_in that spares everything is refused with the fix."""
    from edgeship.pipeline.coding import weight_layers

    model, ctx = digits_ctx
    fan_in = {n: m.weight[0].numel() for n, m in weight_layers(model)}
    cut = sorted(set(fan_in.values()))[1]  # spare the narrowest layer(s), prune the rest
    out = Sparsify().run(model, SparsifyConfig(sparsity=0.6, scope="layer", min_fan_in=cut), ctx)
    m = out.metrics
    assert m["spared_layers"] == [n for n, f in fan_in.items() if f < cut] and m["spared_layers"]
    for n, s in m["layer_sparsity"].items():
        assert (s < 0.05) if n in m["spared_layers"] else abs(s - 0.6) < 0.05
    assert m["sparsity"] == round(sparsity(out.model), 4) < 0.6  # the whole model: the spared layers count dense
    with pytest.raises(EdgeshipError, match="spares every layer"):
        Sparsify().run(model, SparsifyConfig(sparsity=0.6, min_fan_in=max(fan_in.values()) + 1), ctx)


def test_sparsify_fine_tune_keeps_zeros(digits_ctx):
    model, ctx = digits_ctx
    out = Sparsify().run(model, SparsifyConfig(sparsity=0.5, fine_tune={"epochs": 2, "lr": 3e-3}), ctx)
    assert out.metrics["sparsity"] >= 0.49
    assert evaluate(out.model, ctx.data["val"]) > 0.8


def test_sparsify_iterative_schedule(digits_ctx):
    """Three steps to 80 %: each prunes the same fraction of what is left, the sparsity each step reached and its
    validation top-1 are recorded, and the fine-tuning between steps keeps the earlier zeros."""
    model, ctx = digits_ctx
    out = Sparsify().run(model, SparsifyConfig(sparsity=0.8, steps=3, fine_tune={"epochs": 1, "lr": 3e-3}), ctx)
    rows = out.metrics["schedule"]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r, target in zip(rows, (1 - 0.2 ** (1 / 3), 1 - 0.2 ** (2 / 3), 0.8), strict=True):
        assert r["target"] == round(target, 4) and abs(r["sparsity"] - target) < 0.01
        assert 0 <= r["val_top1_pruned"] <= 1 and r["val_top1"] is not None
    assert abs(out.metrics["sparsity"] - 0.8) < 0.01 and out.metrics["steps"] == 3


def test_sparsify_rewinding_restarts_surviving_weights(digits_ctx):
    """rewind: weights (lottery ticket): the surviving weights are the pass's input weights again, so without
    fine-tuning the result is exactly input * mask; with it, the schedule records each retrained step."""
    model, ctx = digits_ctx
    out = Sparsify().run(model, SparsifyConfig(sparsity=0.75, steps=2, rewind="weights",
                                               fine_tune={"epochs": 0}), ctx)
    for name, layer in out.model.named_modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            w, w0 = layer.weight.detach(), model.get_submodule(name).weight.detach()
            assert torch.equal(w, torch.where(w == 0, torch.zeros_like(w0), w0)), name
    assert out.metrics["rewind"] == "weights" and len(out.metrics["schedule"]) == 2
    trained = Sparsify().run(model, SparsifyConfig(sparsity=0.75, steps=2, rewind="weights",
                                                   fine_tune={"epochs": 1, "lr": 3e-3}), ctx)
    assert all(r["val_top1"] is not None for r in trained.metrics["schedule"])
    assert evaluate(trained.model, ctx.data["val"]) > 0.8
