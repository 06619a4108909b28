"""`lowbit`: binary, ternary and uniform weight QAT. The quantizers give the values they promise with straight-through
gradients, the trained model holds them per output channel, and the INT8 artifacts carry them as int8 codes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from edgeship.pipeline.lowbit import Binary, LowBit, LowBitConfig, Ternary, Uniform, layer_bits, packed_bytes
from edgeship.pipeline.training import evaluate


def test_binary_values_and_clipped_straight_through_gradient():
    w = torch.tensor([[0.5, -0.25, 2.0, -0.1]], requires_grad=True)
    q = Binary()(w)
    alpha = w.detach().abs().mean()
    assert torch.allclose(q, alpha * torch.tensor([[1.0, -1.0, 1.0, -1.0]]))
    q.sum().backward()
    assert w.grad.tolist() == [[1.0, 1.0, 0.0, 1.0]]  # cut where |w| > 1


def test_ternary_scales_are_trained():
    torch.manual_seed(0)
    w = torch.randn(4, 8, requires_grad=True)
    t = Ternary(w, threshold=0.3)
    q = t(w)
    assert all(len(torch.unique(row)) <= 3 for row in q.detach())
    assert torch.allclose(q.detach()[q.detach() > 0], t.wp.detach().repeat_interleave(8).view(4, 8)[q.detach() > 0])
    (q * torch.arange(8.0)).sum().backward()
    assert t.wp.grad is not None and t.wn.grad is not None and t.wp.grad.abs().sum() > 0
    assert torch.equal(w.grad, torch.arange(8.0).expand(4, 8))  # straight through


@pytest.mark.parametrize("bits,levels", [(4, 15), (8, 255)])
def test_uniform_levels(bits, levels):
    torch.manual_seed(0)
    q = Uniform(bits)(torch.randn(3, 1000))
    assert all(len(torch.unique(row)) <= levels for row in q)


@pytest.mark.parametrize("bits,per_channel", [(1, 2), (2, 3)])
def test_lowbit_trains_and_keeps_the_grid(bits, per_channel, digits_ctx):
    model, ctx = digits_ctx
    config = LowBitConfig(bits=bits, epochs=3, lr=3e-3, min_fan_in=32)
    out = LowBit().run(model, config, ctx)
    m = out.metrics
    low = [n for n, b in m["layer_bits"].items() if b == bits]
    assert low == ["features.2.0", "features.4.0"]  # the first conv (9 weights per channel) and the classifier: 8 bits
    assert m["layers_at_8_bits"] == ["classifier", "features.0.0"]
    for name in low:
        w = out.model.get_submodule(name).weight.detach()
        assert all(len(torch.unique(c)) <= per_channel for c in w), name
    assert m["val_top1"] >= m["val_top1_quantized"] and evaluate(out.model, ctx.data["val"]) > 0.85
    assert m["packed_bytes"] == packed_bytes(out.model, m["layer_bits"]) < m["fp32_bytes"] / 5
    assert "int8 codes" in m["note"]


def test_layer_bits_rules(digits_ctx):
    model, _ = digits_ctx
    assert set(layer_bits(model, LowBitConfig(bits=1, min_fan_in=1, keep_last=False)).values()) == {1}
    assert layer_bits(model, LowBitConfig(bits=4, min_fan_in=1))["classifier"] == 8


@pytest.mark.slow
def test_binary_model_exports_as_int8_codes(digits_recipe):
    """The INT8 ONNX artifact of a binarized model: every binarized layer's int8 weights take one magnitude per channel
    (BN folded in by the quantizer's per-channel scale), the top of the weight range (127, or 63 with the 7-bit weights
    of onnx_int8.REDUCE_RANGE), so the 1-bit values survive as int8 codes."""
    from edgeship.api import export
    from edgeship.targets.onnx_int8 import REDUCE_RANGE

    passes = [{"name": "lowbit", "bits": 1, "epochs": 3, "lr": 3e-3}]
    targets = [{"name": "int8", "format": "onnx", "precision": "int8", "max_accuracy_drop": 3.0}]
    record = export(digits_recipe(passes=passes, targets=targets), quiet=True, measure=False)
    assert record.ok, record.targets[0].error
    g = onnx.load(str(record.run_dir / record.targets[0].artifact)).graph
    int8 = [numpy_helper.to_array(i) for i in g.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) > 1]
    binary = [w for w in int8 if w.ndim == 4 and w[0].size >= 32]  # the layers lowbit binarized
    assert len(binary) == 2
    top = {63, 64} if REDUCE_RANGE else {127}  # symmetric 7-bit rounds the maximum to 63 or 64
    for w in binary:
        mags = [set(np.unique(np.abs(c)).tolist()) for c in w]
        assert all(len(m) == 1 and m <= top for m in mags), mags[:4]
