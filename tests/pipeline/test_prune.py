"""`prune`: structured pruning shrinks real models (params, MACs, the ONNX file) on every zoo model."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime as ort
import pytest
import torch
from models import ConcatNet, ShuffleNet, TwoShuffles

from edgeship.errors import EdgeshipError
from edgeship.models.zoo import ZOO
from edgeship.pipeline.base import validate_pass
from edgeship.pipeline.prune import Prune, PruneConfig, macs_of
from edgeship.pipeline.training import evaluate
from edgeship.targets.onnx import export_onnx

NO_FT = {"epochs": 0}


def onnx_roundtrip(model, ctx, path) -> tuple[int, float]:
    """Export with the FP32 target's exporter, run with ONNX Runtime: (file size, max |diff| vs torch)."""
    x = ctx.data["val"].x[:32]
    export_onnx(model, x[:1], path, path.with_suffix(".log"))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    return path.stat().st_size, float(np.abs(out - ref).max())


def test_prune_to_a_third_of_the_macs_with_distillation_keeps_accuracy(digits_ctx, tmp_path):
    model, ctx = digits_ctx
    base_top1 = evaluate(model, ctx.data["val"])
    base_macs = macs_of(model, torch.zeros(1, *ctx.input_shape))
    cfg = PruneConfig(macs_ratio=0.33, steps=2, round_to=2, fine_tune={"epochs": 4, "lr": 3e-3})
    out = Prune().run(model, cfg, ctx)
    m = out.metrics
    assert m["macs"] <= 0.33 * base_macs and m["macs"] == macs_of(out.model, torch.zeros(1, *ctx.input_shape))
    assert m["params_ratio"] < 0.6 and m["conv_channels"] < m["base_conv_channels"]
    assert [s["step"] for s in m["steps"]] == [1, 2] and m["steps"][0]["macs"] > m["steps"][1]["macs"]
    assert evaluate(out.model, ctx.data["val"]) >= base_top1 - 0.08
    size_before, _ = onnx_roundtrip(model, ctx, tmp_path / "before.onnx")
    size_after, diff = onnx_roundtrip(out.model, ctx, tmp_path / "after.onnx")
    assert size_after < 0.7 * size_before and diff < 1e-4


TINY = {
    "small_cnn": {"width": 16},
    "resnet": {"depth": 8, "width_mult": 1.0},
    "mobilenetv2": {"width_mult": 0.5, "last_channels": 64},
    "dscnn": {"width": 32, "blocks": 2},
}


@pytest.mark.parametrize("zoo", sorted(TINY))
@pytest.mark.parametrize("importance,global_pruning", [("l2", False), ("lamp", True)])
def test_prune_every_zoo_model(zoo, importance, global_pruning, digits_ctx, tmp_path):
    _, ctx = digits_ctx
    model = ZOO[zoo](input_size=ctx.input_shape[1:], num_classes=10, **TINY[zoo]).eval()
    ctx.teacher = model
    out = Prune().run(model, PruneConfig(macs_ratio=0.5, importance=importance, global_pruning=global_pruning,
                                         fine_tune=NO_FT), ctx)
    assert out.metrics["macs_ratio"] <= 0.5
    assert out.metrics["params_ratio"] < 1 and out.metrics["conv_channels"] < out.metrics["base_conv_channels"]
    widths = [m.out_channels for m in out.model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups == 1]
    assert all(w % 8 == 0 for w in widths), widths  # round_to 8 by default
    assert out.model.classifier.out_features == 10  # the classifier keeps its classes
    _, diff = onnx_roundtrip(out.model, ctx, tmp_path / "m.onnx")
    assert diff < 1e-4


@pytest.mark.parametrize("importance", ["l1", "taylor", "bn_scale"])
def test_prune_channel_ratio_on_a_concatenating_user_model(importance, digits_ctx, tmp_path):
    _, ctx = digits_ctx
    model = ConcatNet().eval()
    ctx.teacher = model
    out = Prune().run(model, PruneConfig(channel_ratio=0.5, importance=importance, round_to=4, steps=2,
                                         fine_tune={"epochs": 1, "samples": 128}), ctx)
    pruned = out.model
    assert pruned.a[0].out_channels == 8 and pruned.b[0].out_channels == 8
    assert pruned.head[0].in_channels == 16  # the concatenation followed both branches
    assert out.metrics["macs_ratio"] < 0.5
    _, diff = onnx_roundtrip(pruned, ctx, tmp_path / "c.onnx")
    assert diff < 1e-4


def test_ignored_layers_keep_their_width(digits_ctx):
    _, ctx = digits_ctx
    model = ConcatNet().eval()
    out = Prune().run(model, PruneConfig(channel_ratio=0.5, round_to=4, ignored_layers=["a.0"], fine_tune=NO_FT), ctx)
    assert out.model.a[0].out_channels == 16 and out.model.b[0].out_channels == 8
    assert "a.0" in out.metrics["ignored_layers"] and "fc" in out.metrics["ignored_layers"]


def test_a_target_that_empties_a_layer_is_bad_input(digits_ctx):
    model, ctx = digits_ctx
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(EdgeshipError, match=r"would remove every channel of layer 'features\.\d\.0'.*ignored_layers"):
        Prune().run(model, PruneConfig(channel_ratio=0.05, fine_tune=NO_FT), ctx)
    with pytest.raises(EdgeshipError, match="reaches .* MACs with widths on multiples of 1 without removing every "
                                            "channel of layer"):
        Prune().run(model, PruneConfig(macs_ratio=0.001, round_to=1, fine_tune=NO_FT), ctx)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is untouched


def test_an_untraceable_model_names_the_layer_and_ignoring_it_works(digits_ctx):
    _, ctx = digits_ctx
    model = ShuffleNet().eval()
    with pytest.raises(EdgeshipError,
                       match=r"cannot trace the model past layer 'stem\.0'.*add 'stem\.0' to ignored_layers"):
        Prune().run(model, PruneConfig(channel_ratio=0.5, round_to=4, fine_tune=NO_FT), ctx)
    # also when it weighs groups
    with pytest.raises(EdgeshipError, match=r"cannot trace the model past layer 'stem\.0'"):
        Prune().run(model, PruneConfig(channel_ratio=0.5, round_to=4, spatial_weight=1.0, fine_tune=NO_FT), ctx)
    out = Prune().run(model, PruneConfig(channel_ratio=0.5, round_to=4, ignored_layers=["stem.0"], fine_tune=NO_FT),
                      ctx)
    assert out.model.stem[0].out_channels == 16 and out.model.mix[0].out_channels == 8


def test_every_untraceable_layer_is_named_in_one_run(digits_ctx):
    _, ctx = digits_ctx
    model = TwoShuffles().eval()
    with pytest.raises(EdgeshipError, match=r"cannot trace the model past layers 'stem\.0', 'mid\.0'.*"
                                            r"Fix: add 'stem\.0', 'mid\.0' to ignored_layers"):
        Prune().run(model, PruneConfig(channel_ratio=0.5, round_to=4, fine_tune=NO_FT), ctx)
    out = Prune().run(model, PruneConfig(channel_ratio=0.5, round_to=4, ignored_layers=["stem.0", "mid.0"],
                                         fine_tune=NO_FT), ctx)
    assert out.model.stem[0].out_channels == out.model.mid[0].out_channels == 16
    assert out.model.mix[0].out_channels == 8


@pytest.mark.parametrize("entry,message", [
    ({"name": "prune"}, "give exactly one of macs_ratio, channel_ratio"),
    ({"name": "prune", "macs_ratio": 0.5, "channel_ratio": 0.5}, "give exactly one"),
    ({"name": "prune", "macs_ratio": 1.5}, "macs_ratio"),
    ({"name": "prune", "macs_ratio": 0.5, "importance": "random"}, "importance"),
    ({"name": "prune", "macs_ratio": 0.5, "fine_tune": {"epoch": 1}}, "unknown key 'fine_tune.epoch'"),
    ({"name": "prune", "channel_ratio": 0.5, "relative_to": "original"}, "relative_to: original applies to macs_ratio"),
    ({"name": "prune", "macs_ratio": 0.5, "relative_to": "teacher"}, "relative_to"),
    ({"name": "prune", "macs_ratio": 0.5, "spatial_weight": -0.5}, "spatial_weight"),
    ({"name": "prune", "macs_ratio": 0.5, "round_to": 0}, "round_to must be at least 1"),
    ({"name": "prune", "macs_ratio": 0.5, "round_to": "tile"}, "round_to"),
])
def test_bad_prune_configs(entry, message):
    with pytest.raises(EdgeshipError, match=message):
        validate_pass(0, entry)


def test_unknown_ignored_layer_is_bad_input(digits_ctx):
    model, ctx = digits_ctx
    with pytest.raises(EdgeshipError, match="'features.9', which is not a module"):
        Prune().run(model, PruneConfig(macs_ratio=0.5, ignored_layers=["features.9"], fine_tune=NO_FT), ctx)


def test_macs_ratio_relative_to_the_original_model(digits_ctx):
    """After drop_blocks, `relative_to: original` prunes to a fraction of the model before the first pass
    (ctx.teacher), whatever the cut left; the default counts the pass's input."""
    from edgeship.pipeline.depth import replace_by_identity

    _, ctx = digits_ctx
    torch.manual_seed(0)
    original = ZOO["mobilenetv2"](input_size=ctx.input_shape[1:], num_classes=10, **TINY["mobilenetv2"]).eval()
    x = torch.zeros(1, *ctx.input_shape)
    cut = copy.deepcopy(original)
    replace_by_identity(cut, "features.3")
    orig_macs, cut_macs = macs_of(original, x), macs_of(cut, x)
    assert cut_macs < orig_macs
    ctx.teacher = original
    cfg = dict(macs_ratio=0.5, round_to=1, fine_tune=NO_FT)
    of_original = Prune().run(cut, PruneConfig(relative_to="original", **cfg), ctx).metrics
    of_input = Prune().run(cut, PruneConfig(**cfg), ctx).metrics
    assert of_original["original_macs"] == orig_macs and of_original["base_macs"] == cut_macs
    assert of_original["macs"] <= 0.5 * orig_macs and of_original["macs_ratio_of_original"] > 0.4
    assert abs(of_original["macs"] / orig_macs - of_original["macs_ratio_of_original"]) < 1e-4
    assert of_input["macs"] <= 0.5 * cut_macs < of_original["macs"] and "original_macs" not in of_input
    with pytest.raises(EdgeshipError, match=r"input already has 0\.\d+ of the original model's MACs.*nothing to prune"):
        Prune().run(cut, PruneConfig(relative_to="original", macs_ratio=0.99, fine_tune=NO_FT), ctx)


def test_spatial_weight_prunes_large_feature_maps_harder_at_the_same_macs(digits_ctx, tmp_path):
    """spatial_weight moves pruning from the small feature maps to the large ones: at the same MACs
    target the channels that run at the stem's resolution shrink more, those after the stride-2
    stage less, and the result still meets the target and exports."""
    from edgeship.pipeline.prune import group_areas

    _, ctx = digits_ctx
    torch.manual_seed(0)
    model = ZOO["mobilenetv2"](input_size=ctx.input_shape[1:], num_classes=10, **TINY["mobilenetv2"]).eval()
    x = torch.zeros(1, *ctx.input_shape)
    areas = group_areas(model, x, ["classifier"])
    # groups are keyed by torch-pruning's root module; the stem's channels (coupled with block 1's
    # depthwise conv) run at 4x the area of those after the stride-2 stage
    assert areas["features.1.conv.0.0"] == 4 * areas["features.5.conv.1.0"] > 0
    assert "classifier" not in areas
    assert set(areas.values()) == {areas["features.1.conv.0.0"], areas["features.5.conv.1.0"]}
    base = macs_of(model, x)
    cfg = dict(macs_ratio=0.5, round_to=1, fine_tune=NO_FT)
    uniform = Prune().run(model, PruneConfig(**cfg), ctx)
    weighted = Prune().run(model, PruneConfig(spatial_weight=1.0, **cfg), ctx)
    assert weighted.metrics["spatial_weight"] == 1.0 and uniform.metrics["spatial_weight"] == 0.0
    for out in (uniform, weighted):
        assert out.metrics["macs"] <= 0.5 * base
    u, w = uniform.model.features, weighted.model.features
    assert w[0][0].out_channels < u[0][0].out_channels  # large map: pruned harder
    assert w[5].conv[0][0].out_channels > u[5].conv[0][0].out_channels  # small map: pruned less
    _, diff = onnx_roundtrip(weighted.model, ctx, tmp_path / "w.onnx")
    assert diff < 1e-4


def test_round_to_rounds_widths_to_the_nearest_multiple():
    """torch-pruning's own rounding took at least round_to channels per group and step at any ratio above
    zero (its truncation asks for one channel, rounding down the kept width makes that round_to), so
    narrow layers lost far more than the ratio: 16 channels, 3 small steps, round_to 4 -> 4 kept."""
    from edgeship.pipeline.prune import _round_keeping_one_unit as removed

    assert removed(1, 16, 4) == 0  # a tiny ratio's one channel rounds back to the full width
    assert removed(3, 16, 4) == 4 and removed(7, 16, 4) == 8  # keep 13 -> 12, keep 9 -> 8
    assert removed(5, 16, 4) == 4 and removed(6, 16, 4) == 4  # keep 11 -> 12; keep 10, halfway -> 12
    assert removed(2, 16, 4) == 0  # keep 14, halfway -> 16
    assert removed(15, 16, 4) == 12 and removed(16, 16, 4) == 16  # never emptied by rounding; asked to empty, empties
    assert removed(1, 3, 4) == 0 and removed(2, 3, 4) == 0  # fewer channels than round_to: kept whole
    width = 16
    for _ in range(3):  # three steps that each ask for one channel leave the layer as it was
        width -= removed(1, width, 4)
    assert width == 16


def test_a_small_macs_cut_leaves_narrow_layers_alone(digits_ctx):
    """macs_ratio close to 1 in several steps with a coarse round_to: the MACs target is met by the wide
    layers, the narrow ones keep their width (before the rounding fix each step cut every group)."""
    _, ctx = digits_ctx
    torch.manual_seed(0)
    model = ZOO["resnet"](input_size=ctx.input_shape[1:], num_classes=10, depth=8, width_mult=1.0).eval()
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    out = Prune().run(model, PruneConfig(macs_ratio=0.9, steps=3, round_to=4, fine_tune=NO_FT), ctx)
    after = {n: m.out_channels for n, m in out.model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert out.metrics["macs"] <= 0.9 * out.metrics["base_macs"]
    assert out.metrics["macs_ratio"] > 0.75  # not far past the target
    assert after["stem.0"] == before["stem.0"] == 16


def test_round_to_auto_takes_the_target_devices_channel_tile(tmp_path, digits_ctx):
    """`round_to: auto` becomes the channel tile of the recipe's targets' devices when the recipe is checked: 64 on
    a device with AMX (its INT8 tile row holds 64 channels), 8 elsewhere, the largest when targets differ. A prune
    pass given an unresolved auto says so instead of guessing."""
    from edgeship import api
    from edgeship.devices import catalog
    from helpers import digits_recipe_dict

    amx = catalog.get("x86-edge").model_copy(deep=True)
    amx.cpu.features.append("amx_int8")
    assert catalog.channel_tile(amx) == (64, "amx_int8")
    assert catalog.channel_tile(catalog.get("rpi5"))[0] == catalog.channel_tile(catalog.get("x86-edge"))[0] == 8
    host_tile = catalog.channel_tile(catalog.get("host"))[0]
    assert host_tile == (64 if "amx_int8" in open("/proc/cpuinfo").read() else 8)

    prune = {"name": "prune", "macs_ratio": 0.5, "round_to": "auto", "fine_tune": NO_FT}
    for devices, want in ((["rpi4"], None), (["rpi4", "host"], host_tile if host_tile > 8 else None)):
        targets = [{"name": f"t-{d}", "device": d, "format": "onnx", "precision": "int8"} for d in devices]
        _, _, configs = api._checked(digits_recipe_dict(tmp_path, passes=[prune], targets=targets))
        assert (configs[0][1].round_to, configs[0][1].tile) == (8, want)
        line = api._auto_round_to(api.load_recipe(digits_recipe_dict(tmp_path, passes=[prune], targets=targets)))[1]
        assert line.startswith(f"prune: round_to auto -> round_to 8, {f'tile {want}' if want else 'no tile'}")
        assert "rpi4: 8, no matrix unit with a measured tile" in line

    model, ctx = digits_ctx
    with pytest.raises(EdgeshipError, match="round_to: auto was not resolved"):
        Prune().run(model, PruneConfig(macs_ratio=0.5, round_to="auto", fine_tune=NO_FT), ctx)
    # a unit as wide as the model's layers leaves nothing to prune: the error says the rounding is why
    with pytest.raises(EdgeshipError, match="multiples of 64") as e:
        Prune().run(model, PruneConfig(macs_ratio=0.5, round_to=64, fine_tune=NO_FT), ctx)
    assert "smaller round_to or tile" in e.value.fix


def test_a_tile_keeps_wide_layers_on_whole_tiles_and_rounds_narrow_ones_finer(digits_ctx):
    """`tile` (what round_to: auto sets on a device with a matrix unit): a layer at least one tile wide keeps a
    multiple of the tile, never less than one; a narrower layer rounds to round_to."""
    from edgeship.pipeline.prune import _round_to_tile as removed

    assert removed(50, 128, 8, 64) == 64 and removed(90, 128, 8, 64) == 64  # keep 78 -> 64; keep 38 -> 64, not 40
    assert removed(20, 128, 8, 64) == 0  # keep 108 -> 128 (nearest)
    assert removed(30, 64, 8, 64) == 0  # a one-tile layer stays whole
    assert removed(21, 48, 8, 64) == 24 and removed(21, 48, 8, None) == 24  # narrower than a tile: round_to 8
    _, ctx = digits_ctx
    torch.manual_seed(0)
    model = ZOO["resnet"](input_size=ctx.input_shape[1:], num_classes=10, depth=8, width_mult=8.0).eval()  # 128+
    out = Prune().run(model, PruneConfig(macs_ratio=0.5, tile=64, fine_tune=NO_FT), ctx)
    widths = {n: m.out_channels for n, m in out.model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert out.metrics["macs"] <= 0.5 * out.metrics["base_macs"]
    for n, w in widths.items():
        assert w == before[n] or (w % 64 == 0 if before[n] >= 64 else w % 8 == 0), (n, before[n], w)
    assert any(before[n] >= 64 and w < before[n] for n, w in widths.items())  # the wide layers were pruned
