from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeship.errors import EdgeshipError
from edgeship.models.load import build_model, model_stats
from edgeship.models.zoo import ZOO
from edgeship.recipe import InputSpec, ModelSpec


@pytest.mark.parametrize("name,shape,args", [
    ("small_cnn", (1, 28, 28), {}), ("small_cnn", (3, 32, 32), {}),
    ("resnet", (1, 28, 28), {"depth": 8, "width_mult": 0.5}), ("resnet", (3, 32, 32), {"depth": 20}),
    ("mobilenetv2", (1, 28, 28), {"width_mult": 0.5}), ("mobilenetv2", (3, 64, 64), {}),
    ("dscnn", (1, 49, 10), {}), ("dscnn", (1, 28, 28), {"width": 32}),
    ("mobilenetv2_standard", (3, 32, 32), {"width_mult": 0.35}), ("resnet18", (3, 32, 32), {"width_mult": 0.25}),
])
def test_zoo_models_fit_their_inputs(name, shape, args):
    m = ZOO[name](in_channels=shape[0], num_classes=7, input_size=shape[1:], **args).eval()
    assert m(torch.zeros(2, *shape)).shape == (2, 7)
    stats = model_stats(m, shape)
    assert stats["params"] > 0 and stats["macs"] > stats["params"] / 10


def test_mobilenetv2_uses_depthwise_and_residuals():
    m = ZOO["mobilenetv2"]()
    convs = [c for c in m.modules() if isinstance(c, torch.nn.Conv2d)]
    assert any(c.groups == c.in_channels > 1 for c in convs)
    assert any(getattr(b, "use_res", False) for b in m.modules())


def test_deployment_references_are_the_published_architectures():
    """The 96x96-224x224 references (issue 20): parameter counts at 1000 classes equal torchvision's (they do not
    depend on the input size, so no 224x224 tensor is needed here), and depth pruning finds their residual blocks."""
    from edgeship.pipeline.depth import removable_blocks

    assert model_stats(ZOO["mobilenetv2_standard"](), (3, 32, 32))["params"] == 3_504_872
    assert model_stats(ZOO["resnet18"](), (3, 32, 32))["params"] == 11_689_512
    x = torch.zeros(1, 3, 32, 32)
    mnv2 = ZOO["mobilenetv2_standard"](num_classes=10).eval()
    residual = {f"features.{i}" for i, b in enumerate(mnv2.features) if getattr(b, "use_res", False)}
    assert len(residual) == 10 and residual <= set(removable_blocks(mnv2, x))  # 1 + 2 + 3 + 2 + 2
    # ResNet-18: both blocks of the first stage and the second block of each later one
    assert removable_blocks(ZOO["resnet18"](num_classes=10).eval(), x) == [f"layers.{i}" for i in (0, 1, 3, 5, 7)]


def test_width_multiplier_shrinks():
    small = model_stats(ZOO["mobilenetv2"](width_mult=0.5), (1, 28, 28))
    big = model_stats(ZOO["mobilenetv2"](width_mult=1.0), (1, 28, 28))
    assert small["macs"] < big["macs"] * 0.5


def _input():
    return InputSpec(shape=(1, 8, 8))


def test_factory_with_state_dict(tmp_path):
    ref = ZOO["small_cnn"](1, 10, (8, 8), width=8)
    torch.save(ref.state_dict(), tmp_path / "sd.pt")
    spec = ModelSpec(factory="edgeship.models.zoo:SmallCNN", args={"width": 8}, weights=tmp_path / "sd.pt")
    m = build_model(spec, _input(), 10)
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(m(x), ref.eval()(x))


def test_torchscript_and_export_programs(tmp_path):
    ref = ZOO["small_cnn"](1, 10, (8, 8), width=8).eval()
    x = torch.randn(2, 1, 8, 8)
    torch.jit.save(torch.jit.script(ref), tmp_path / "m.ts")
    ep = torch.export.export(ref, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    torch.export.save(ep, tmp_path / "m.pt2")
    ts = build_model(ModelSpec(torchscript=tmp_path / "m.ts"), _input(), 10)
    pt2 = build_model(ModelSpec(exported=tmp_path / "m.pt2"), _input(), 10)
    assert torch.allclose(ts(x), ref(x), atol=1e-5)
    assert torch.allclose(pt2(x), ref(x), atol=1e-5)


def test_state_dict_that_does_not_fit(tmp_path):
    torch.save(ZOO["small_cnn"](1, 10, (8, 8), width=16).state_dict(), tmp_path / "sd.pt")
    spec = ModelSpec(factory="edgeship.models.zoo:SmallCNN", args={"width": 8}, weights=tmp_path / "sd.pt")
    with pytest.raises(EdgeshipError, match="does not fit the model"):
        build_model(spec, _input(), 10)


def test_not_a_torchscript_file(tmp_path):
    (tmp_path / "m.ts").write_bytes(b"garbage")
    with pytest.raises(EdgeshipError, match="not a loadable TorchScript"):
        build_model(ModelSpec(torchscript=tmp_path / "m.ts"), _input(), 10)


def test_model_spec_needs_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one"):
        ModelSpec(zoo="small_cnn", factory="a.b:c")
    from edgeship.api import load_recipe
    from helpers import digits_recipe_dict

    recipe = digits_recipe_dict(Path("unused"), model={"zoo": "vgg"})
    with pytest.raises(EdgeshipError, match=r"<dict>: model.zoo: unknown zoo model 'vgg'; allowed: .*small_cnn"):
        load_recipe(recipe)


def test_macs_of_graphs_torch_pruning_cannot_hook():
    """A .pt2 program and a TorchScript module have no nn.Module hooks: their MACs come from torch's FLOP
    counter (convolutions + linear layers), the same count for the same network."""
    torch.manual_seed(0)
    model = ZOO["small_cnn"](width=8, input_size=(8, 8)).eval()
    x = torch.zeros(1, 1, 8, 8)
    # conv + linear MACs by hand: the small CNN's layers, from the module's own shapes
    expected = 0
    with torch.no_grad():
        shapes = {}
        hooks = [m.register_forward_hook(lambda mod, i, o, k=name: shapes.__setitem__(k, o.shape))
                 for name, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        model(x)
        for h in hooks:
            h.remove()
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            expected += shapes[name].numel() * m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
        elif isinstance(m, torch.nn.Linear):
            expected += m.in_features * m.out_features
    exported = torch.export.export(model, (x,)).module()
    scripted = torch.jit.trace(model, x)
    assert model_stats(exported, (1, 8, 8))["macs"] == expected
    assert model_stats(scripted, (1, 8, 8))["macs"] == expected
