"""`mixed_precision`: per-layer sensitivity chooses the layers that stay float, and the INT8 backends keep exactly
those in float (ONNX Runtime's nodes_to_exclude, NNCF's ignored_scope); the TFLite route says it cannot."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from edgeship.errors import EdgeshipError
from edgeship.models.zoo import ZOO
from edgeship.pipeline.mixed_precision import (
    MixedPrecision,
    MixedPrecisionConfig,
    quantize_activation,
    quantize_weight,
)
from edgeship.targets.onnx_int8 import onnx_scope


def test_simulated_quantizers():
    torch.manual_seed(0)
    w = torch.randn(4, 50) * torch.tensor([[1.0], [10.0], [0.1], [3.0]])
    per_channel = quantize_weight(w, True)
    assert all(len(torch.unique(r)) <= 255 for r in per_channel)
    assert (per_channel - w).abs().max() <= w.abs().max() / 254 + 1e-6
    assert (quantize_weight(w, False) - w).abs()[2].max() > (per_channel - w).abs()[2].max()  # small channel suffers
    x = torch.linspace(-1, 3, 1000)
    q = quantize_activation(x, -1.0, 3.0, symmetric=False)
    assert len(torch.unique(q)) <= 256 and (q - x).abs().max() <= 4 / 255 / 2 + 1e-6
    assert quantize_activation(torch.tensor([5.0]), -1.0, 3.0, symmetric=False).item() == pytest.approx(3.0, abs=0.02)


def test_sensitivity_ranks_every_layer_and_picks_the_worst(digits_ctx):
    model, ctx = digits_ctx
    config = MixedPrecisionConfig(per_channel=False, eval_samples=150, max_drop_pt=0.0, max_float_layers=2)
    out = MixedPrecision().run(model, config, ctx)
    table = out.metrics["layer_sensitivity"]
    assert set(table) == {"features.0.0", "features.2.0", "features.4.0", "classifier"}
    assert sorted(r["rank"] for r in table.values()) == [1, 2, 3, 4]
    assert all(r["kl"] >= 0 for r in table.values())
    worst = sorted(table, key=lambda n: table[n]["rank"])
    steps = out.metrics["selection"]
    # stops as soon as the simulated model is within max_drop_pt; else keeps adding the most sensitive layers
    assert out.quant.float_layers == tuple(worst[:len(out.quant.float_layers)]) and len(out.quant.float_layers) <= 2
    assert [s["float_layers"] for s in steps][1:] == [worst[:i + 1] for i in range(len(steps) - 1)]
    assert out.quant.per_channel is False and out.quant.samples == 150  # the calibrate keys, capped at the split
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), out.model.state_dict().values(),
                                                  strict=True))  # no weight changes


def test_explicit_float_layers_and_bad_names(digits_ctx):
    model, ctx = digits_ctx
    out = MixedPrecision().run(model, MixedPrecisionConfig(eval_samples=50, float_layers=["classifier"]), ctx)
    assert out.quant.float_layers == ("classifier",) and len(out.metrics["layer_sensitivity"]) == 4
    with pytest.raises(EdgeshipError, match="float_layers names no conv/linear layer nope"):
        MixedPrecision().run(model, MixedPrecisionConfig(float_layers=["nope"]), ctx)


@pytest.mark.parametrize("zoo,kw", [("resnet", {"depth": 8}), ("mobilenetv2", {"width_mult": 0.5})])
def test_onnx_scope_names_every_layer(zoo, kw, tmp_path):
    """The exporter's scope of every conv/linear module is found among the ONNX graph's node names."""
    from edgeship.targets.onnx import export_onnx

    model = ZOO[zoo](input_size=(28, 28), num_classes=10, **kw).eval()
    path = export_onnx(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx", tmp_path / "log")
    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type in ("Conv", "Gemm")]
    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(names) == len(layers)
    assert sorted(next(x for x in names if x.startswith(onnx_scope(model, n) + "/")) for n in layers) == sorted(names)


@pytest.mark.slow
def test_backends_keep_the_chosen_layers_float(digits_recipe):
    """Through `edgeship export`: the layers the pass chose run in float on ONNX Runtime, OpenVINO and TFLite's
    int8_float_io (their op audits list exactly those), the rest in int8; TFLite's int8-interface target fails with
    the reason."""
    from edgeship.api import export

    passes = [{"name": "mixed_precision", "eval_samples": 150, "float_layers": ["features.2.0", "classifier"]}]
    targets = [{"name": "ort", "format": "onnx", "precision": "int8"},
               {"name": "ov", "format": "openvino", "precision": "int8"},
               {"name": "tfl", "format": "tflite", "precision": "int8"},
               {"name": "tfl-fio", "format": "tflite", "precision": "int8_float_io"}]
    record = export(digits_recipe(passes=passes, targets=targets), quiet=True, measure=False)
    assert record.quantization.float_layers == ("features.2.0", "classifier")
    ort, ov, tfl, fio = record.targets
    assert ort.ok and ov.ok and fio.ok and not tfl.ok and "use precision int8_float_io" in tfl.error
    assert sorted(ort.op_audit.float_compute_ops) == ["/classifier/Gemm", "/features/features.2/features.2.0/Conv"]
    assert len(ov.op_audit.float_compute_ops) == 2
    meta = json.loads((record.run_dir / "targets" / "ov" / "model.json").read_text())["meta"]
    assert "ignored_scope" in meta["route"]
    float_convs = [o for o in fio.op_audit.float_ops if o["op"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert len(float_convs) == 2 and fio.verify.agreement > 0.97
    notes = json.loads((record.run_dir / "targets" / "tfl-fio" / "model.json").read_text())["meta"]["float_layers"]
    assert set(notes) == {"features.2.0", "classifier"}
    html = (record.run_dir / "report.html")
    if html.is_file():
        assert "Per-layer sensitivity" in html.read_text()
