"""`drop_blocks`: whole shape-keeping blocks replaced by identities, the cheapest first; a real, smaller,
exportable nn.Module with fewer kernels to launch."""

from __future__ import annotations

import copy

import pytest
import torch
from test_prune import TINY, onnx_roundtrip

from edgeship.errors import EdgeshipError
from edgeship.models.zoo import ZOO
from edgeship.pipeline.base import validate_pass
from edgeship.pipeline.depth import DropBlocks, DropBlocksConfig, _loss, removable_blocks, replace_by_identity
from edgeship.pipeline.training import evaluate, subset


def test_candidates_are_whole_blocks():
    """Residual blocks whole (never their branch, which would leave x + x), shape-keeping layers of a stack."""
    assert removable_blocks(ZOO["resnet"](depth=20), torch.zeros(1, 1, 28, 28)) == \
        ["layers.0", "layers.1", "layers.2", "layers.4", "layers.5", "layers.7", "layers.8"]
    mb = removable_blocks(ZOO["mobilenetv2"](), torch.zeros(1, 1, 28, 28))
    assert {"features.3", "features.5", "features.6", "features.8"} <= set(mb)
    assert not any(n.endswith(".conv") for n in mb)  # a residual branch is never a candidate
    assert removable_blocks(ZOO["small_cnn"](), torch.zeros(1, 1, 28, 28)) == []


@pytest.mark.parametrize("zoo", ["resnet", "mobilenetv2", "dscnn"])
def test_drop_blocks_shrinks_every_zoo_model(zoo, digits_ctx, tmp_path):
    _, ctx = digits_ctx
    model = ZOO[zoo](input_size=ctx.input_shape[1:], num_classes=10, **TINY[zoo]).eval()
    before = removable_blocks(model, torch.zeros(1, *ctx.input_shape))
    out = DropBlocks().run(model, DropBlocksConfig(blocks=1, samples=64), ctx)
    (gone,) = out.metrics["removed"]
    assert gone in before and isinstance(out.model.get_submodule(gone), torch.nn.Identity)
    assert out.metrics["remaining_candidates"] == [b for b in before if b != gone]
    assert sum(p.numel() for p in out.model.parameters()) < out.metrics["params_before"]
    assert not isinstance(model.get_submodule(gone), torch.nn.Identity)  # the input model is untouched
    assert "before any recovery" in out.metrics["note"]  # printed with the stage's val top-1
    _, diff = onnx_roundtrip(out.model, ctx, tmp_path / "m.onnx")
    assert diff < 1e-4


def test_the_cheapest_block_goes_first_and_recovery_trains(digits_ctx):
    """On a trained ResNet-8 stand-in: the block chosen is the one whose removal costs least on validation."""
    _, ctx = digits_ctx
    torch.manual_seed(0)
    model = ZOO["resnet"](input_size=ctx.input_shape[1:], num_classes=10, depth=14).eval()
    from edgeship.pipeline.training import FitConfig, fit

    fit(model, ctx.data["train"], None, FitConfig(epochs=3, batch_size=64, lr=3e-3, threads=1), quiet=True)
    ctx.teacher = model
    val = subset(ctx.data["val"], 256, ctx.seed + 17)  # the samples the pass scores with
    by_hand = {}
    for name in removable_blocks(model, torch.zeros(1, *ctx.input_shape)):
        trial = copy.deepcopy(model)
        replace_by_identity(trial, name)
        by_hand[name] = _loss(trial, val.x, val.y)
    out = DropBlocks().run(model, DropBlocksConfig(blocks=2, samples=256, fine_tune={"epochs": 2, "lr": 2e-3}), ctx)
    first, second = out.metrics["removed"]
    assert first == min(by_hand, key=by_hand.get) and second != first
    assert out.metrics["val_loss_after_each_removal"][0] == pytest.approx(by_hand[first], abs=1e-4)
    assert out.metrics["epochs"] == 2 and "note" not in out.metrics
    assert evaluate(out.model, ctx.data["val"]) > 0.8  # recovered (10 classes: chance is 0.1)


def test_bad_drop_blocks_configs(digits_ctx):
    model, ctx = digits_ctx  # the small CNN has no removable block
    with pytest.raises(EdgeshipError, match="more blocks than the model has removable \\(0: none\\).*use prune"):
        DropBlocks().run(model, DropBlocksConfig(blocks=1), ctx)
    resnet = ZOO["resnet"](input_size=ctx.input_shape[1:], num_classes=10, depth=8).eval()
    with pytest.raises(EdgeshipError, match="not removable blocks.*choose among: layers.0"):
        DropBlocks().run(resnet, DropBlocksConfig(blocks=1, candidates=["layers.1"]), ctx)
    with pytest.raises(EdgeshipError, match="blocks"):
        validate_pass(0, {"name": "drop_blocks"})  # blocks is required
