"""The CPU speed settings (edgeship/perf.py) change speed, never results or the model's layout."""

import sys

import pytest
import torch

from edgeship.models.zoo import ZOO
from edgeship.perf import channels_last, tune_allocator
from edgeship.pipeline.training import FitConfig, TensorData, fit, predict


def _weights_contiguous(model) -> bool:
    return all(p.is_contiguous() for p in model.parameters())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_allocator_tuned_on_glibc():
    assert tune_allocator() is True
    assert tune_allocator() is True  # idempotent


def test_channels_last_restores_layout_and_nests():
    model = ZOO["resnet"](depth=8, num_classes=10)  # 3x3 convolutions over many channels: NHWC is visible
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    with channels_last(model):
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not conv.weight.is_contiguous()
        with channels_last(model):  # a nested block (validation inside training) keeps NHWC
            pass
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert _weights_contiguous(model)


def test_predict_matches_plain_forward_and_fit_leaves_contiguous_weights():
    torch.manual_seed(0)
    model = ZOO["mobilenetv2"](width_mult=0.5, num_classes=10).eval()
    x = torch.randn(300, 1, 28, 28)
    with torch.no_grad():
        plain = model(x)
    assert torch.allclose(predict(model, x), plain, atol=1e-4)
    assert _weights_contiguous(model)
    data = TensorData(x, torch.randint(0, 10, (300,)))
    fit(model, data, data, FitConfig(epochs=1, batch_size=64, threads=1), quiet=True)
    assert _weights_contiguous(model)
