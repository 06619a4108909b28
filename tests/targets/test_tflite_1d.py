"""1-D models (a Conv1d network over an (N, C, L) signal: audio, sensors) through TFLite's torch.fx lowering: lowered
as a height-one image, exact in float, channels last at the file's input, read by the latency predictor as the same
kernels as from ONNX, and profiled by LiteRT with a time for every kernel."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgeship.devices import in_context, litert_timer
from edgeship.devices.archs import random_arch_1d
from edgeship.devices.bench_runner import tflite_infer
from edgeship.devices.calibrate import lower
from edgeship.devices.kernels import read
from edgeship.devices.layer_profile import tflite_profiled
from edgeship.targets.base import Artifact, get_backend
from edgeship.targets.tflite import open_interpreter


class Every1d(nn.Module):
    """Every 1-D operator the lowering takes: Conv1d with integer, 'same' and dilated padding, depthwise and grouped;
    BatchNorm1d; max and average pools as modules and functions; a residual add; a concatenation over channels; an
    adaptive pool to four steps flattened in torch's (channel, step) order; and a mean over time."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(3, 16, 9, 2, 4), nn.BatchNorm1d(16), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv1d(16, 16, 5, padding="same", groups=16), nn.BatchNorm1d(16), nn.Hardswish())
        self.dilated = nn.Conv1d(16, 16, 3, padding=2, dilation=2)
        self.grouped = nn.Conv1d(16, 24, 3, padding=1, groups=4)
        self.pool = nn.MaxPool1d(3, 2, 1)
        self.avg = nn.AvgPool1d(2)
        self.adaptive = nn.AdaptiveAvgPool1d(4)
        self.fc = nn.Linear(40 * 4 + 40, 7)

    def forward(self, x):
        x = self.dw(self.stem(x))
        x = torch.relu(self.dilated(x) + x)
        x = torch.cat([self.grouped(x), x], 1)
        x = self.avg(self.pool(x))
        x = F.max_pool1d(x, 2)
        return self.fc(torch.cat([torch.flatten(self.adaptive(x), 1), x.mean(-1)], 1))


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _artifact(d) -> Artifact:
    meta = json.loads((d / "model.json").read_text())
    return Artifact(meta["target"], "tflite", meta["precision"], d, meta["main"], meta["files"], meta["meta"])


def test_a_1d_model_lowers_exactly_with_its_input_channels_last(tmp_path):
    """In float the file computes what torch does (every operator above), takes its input as (N, L, C) and says so;
    the host's runner and the device runner both take the torch layout (N, C, L) and transpose it."""
    torch.manual_seed(0)
    model = _randomize_bn(Every1d())
    x = np.random.default_rng(1).normal(size=(5, 3, 256)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    d = lower(model, (3, 256), "tflite", "fp32", tmp_path / "fp32", "t", tmp_path)
    art = _artifact(d)
    assert art.meta["route"].startswith("torch.fx") and "NLC" in art.meta["route"]
    assert art.meta["inputs"][0]["shape"] == [-1, 256, 3] and art.meta["inputs"][0]["layout"] == "NLC"
    assert art.meta["source_layout"] == "NCL"
    np.testing.assert_allclose(get_backend("tflite", "fp32").load(art, threads=1)(x)[0], ref, rtol=1e-4, atol=1e-5)
    it = open_interpreter(art.path, threads=1)
    it.resize_tensor_input(it.get_input_details()[0]["index"], [1, 256, 3])
    it.allocate_tensors()
    np.testing.assert_allclose(tflite_infer(it, art.meta, np)(x[:1])[0], ref[:1], rtol=1e-4, atol=1e-5)
    ops = [op["op_name"] for op in open_interpreter(art.path, delegates=False)._get_ops_details()]
    # one TRANSPOSE: the flatten of the four-step map into torch's (channel, step) order (litert-torch puts one around
    # each convolution to keep the torch layout); the signal becomes the height-one map by one RESHAPE
    assert ops.count("TRANSPOSE") == 1 and ops[0] == "RESHAPE", ops


def test_random_1d_architectures_read_as_the_onnx_kernels_and_are_timed_in_context(tmp_path):
    """The predictor's kernels of a 1-D model are the same from the TFLite file as from the ONNX one (1-D
    convolutions along the length, the add and global pool over (length, 1)), nothing left out; INT8 keeps the
    float model's decisions; and LiteRT's profiler gives every kernel a time (a calibration's in-context times)."""
    for seed in (250_000,):  # a fitting architecture: depthwise kernels of 21 and 33 taps XNNPACK runs as IGEMM
        a = random_arch_1d(seed)
        onnx_dir = lower(a.model, a.input_shape, "onnx", "fp32", tmp_path / f"{seed}-onnx", "o", tmp_path)
        tfl_dir = lower(a.model, a.input_shape, "tflite", "int8", tmp_path / f"{seed}-tfl", "t", tmp_path)
        onnx_ks, onnx_left = read(onnx_dir / "model.onnx", "onnx")
        tfl_ks, tfl_left = read(tfl_dir / "model.tflite", "tflite")
        assert tfl_ks == [replace(k, sin=0) for k in onnx_ks] and tfl_left == onnx_left == {}, seed
        assert {k.type for k in tfl_ks} >= {"conv1d", "dwconv1d", "gpool", "fc"}
        x = np.random.default_rng(seed).normal(size=(16, *a.input_shape)).astype(np.float32)
        with torch.no_grad():
            ref = a.model(torch.from_numpy(x)).numpy()
        got = get_backend("tflite", "int8").load(_artifact(tfl_dir), threads=1)(x)[0]
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.8, seed

    it = open_interpreter(tfl_dir / "model.tflite", threads=1)
    inputs = [np.zeros(d["shape"], d["dtype"]).tobytes() for d in it.get_input_details()]
    _, layers = tflite_profiled(it, litert_timer, str(tfl_dir / "model.tflite"), 1, 5, inputs)
    times = in_context.kernel_times(tfl_ks, layers, "tflite")
    assert all(t is not None and t > 0 for t in times), layers


def digits_conv1d() -> nn.Module:
    """A small Conv1d classifier over scikit-learn's digits read as 64-sample, one-channel signals."""
    torch.manual_seed(0)
    return _randomize_bn(nn.Sequential(
        nn.Conv1d(1, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(16, 16, 3, padding=1, groups=16), nn.BatchNorm1d(16), nn.ReLU6(),
        nn.Conv1d(16, 32, 1), nn.BatchNorm1d(32), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        nn.Linear(32, 10)))


def test_a_1d_recipe_exports_to_tflite_through_the_lowering(tmp_path, monkeypatch):
    """From a recipe (`io:` one NCL input, logits out), real data (the digits as signals): the TFLite targets take the
    torch.fx route, their input is channels last, and the export's verification against the torch model passes for
    float and full INT8 alike."""
    from sklearn.datasets import load_digits

    import edgeship

    digits = load_digits()
    np.savez(tmp_path / "digits1d.npz", signal=(digits.data[:, None, :] / 16.0).astype(np.float32),
             y=digits.target.astype(np.int64))
    (tmp_path / "onedmodels.py").write_text("from test_tflite_1d import digits_conv1d\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    recipe = {"name": "digits1d", "model": {"factory": "onedmodels:digits_conv1d"},
              "io": {"inputs": [{"name": "signal", "shape": [1, 64], "layout": "NCL"}],
                     "outputs": [{"name": "logits", "task": "classification"}]},
              "data": {"source": {"kind": "npz", "path": str(tmp_path / "digits1d.npz")}, "val_size": 100,
                       "calib_size": 128},
              "targets": [{"name": f"tflite-{p}", "format": "tflite", "precision": p} for p in ("fp32", "int8")],
              "output": str(tmp_path / "runs" / "digits1d")}
    run = edgeship.export(recipe, quiet=True, runs=3)
    assert run.ok, [(t.name, t.error) for t in run.targets]
    for t in run.targets:
        meta = json.loads((run.run_dir / t.artifact).parent.joinpath("model.json").read_text())["meta"]
        assert meta["route"].startswith("torch.fx") and meta["inputs"][0]["layout"] == "NLC", meta.get("lowering")
        assert meta["inputs"][0]["shape"] == [-1, 64, 1]
        assert all(o.passed for o in t.verify.outputs.values()), (t.name, t.verify)
