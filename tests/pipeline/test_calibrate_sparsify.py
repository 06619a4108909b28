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


def test_sparsify_fine_tune_keeps_zeros(digits_ctx):
    model, ctx = digits_ctx
    out = Sparsify().run(model, SparsifyConfig(sparsity=0.5, fine_tune={"epochs": 2, "lr": 3e-3}), ctx)
    assert out.metrics["sparsity"] >= 0.49
    assert evaluate(out.model, ctx.data["val"]) > 0.8
