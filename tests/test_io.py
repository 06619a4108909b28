"""Models with any signature (the recipe's ``io:``): several heads, several inputs, a filled recurrent state, constant
keyword arguments, 1-D signals and dynamic lengths; every output verified on every target with its own metric.

The multi-head model is a real pretrained one: MTCNN's output network with the weights facenet-pytorch ships
(benchmarks/zoo/models.py), fed 48x48 crops of the two photos scikit-learn ships (real images, not faces: the test
compares each artifact with the torch model, so any real pixels do)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from typer.testing import CliRunner

import edgeship
from edgeship import EdgeshipError
from edgeship.cli import app
from helpers import REPO, photo_crops

ALL_TARGETS = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp16"), ("openvino", "int8"), ("tflite", "fp32"),
               ("tflite", "int8")]


def _targets(pairs, **extra) -> list[dict]:
    return [{"name": f"{f}-{p}", "format": f, "precision": p, **extra} for f, p in pairs]


@pytest.fixture
def onet_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # benchmarks.zoo.models imports from the repository root, as a user's recipe would
    monkeypatch.syspath_prepend(str(REPO))
    np.savez(tmp_path / "crops.npz", image=photo_crops(240, 48))

    def make(targets, **io_overrides) -> dict:
        io = {"inputs": [{"name": "image", "shape": [3, 48, 48], "layout": "NCHW",
                          "preprocessing": {"scale": 1.0, "mean": [127.5], "std": [128.0]}}],
              # INT8 moves ONet's small box refinements by up to ~40% (relative; ORT QDQ here): a user who ships
              # it at INT8 accepts that, and says so; landmarks and the face decision hold the defaults
              "outputs": [{"name": "box", "task": "regression", "tolerance": {"int8": 0.5}},
                          {"name": "landmarks", "task": "regression"},
                          {"name": "face", "task": "score", "tolerance": {"int8": 0.9}}]}
        io.update(io_overrides)
        return {"name": "onet", "model": {"factory": "benchmarks.zoo.models:mtcnn_onet"}, "io": io,
                "data": {"source": {"kind": "npz", "path": str(tmp_path / "crops.npz")}, "val_size": 40,
                         "calib_size": 120, "test_fraction": 0.25},
                "passes": [{"name": "calibrate", "samples": 120, "method": "percentile", "percentile": 99.99}],
                "targets": targets, "output": str(tmp_path / "runs" / "onet")}

    return make


@pytest.mark.slow
def test_a_three_head_detector_on_every_target(onet_recipe):
    """MTCNN's ONet (box, landmarks, face score): each head of each artifact against torch, with its own metric."""
    run = edgeship.export(onet_recipe(_targets(ALL_TARGETS)), quiet=True, runs=3)
    assert run.ok, [(t.name, t.error) for t in run.targets]
    for t in run.targets:
        outs = t.verify.outputs
        assert list(outs) == ["box", "landmarks", "face"]
        assert outs["box"].metric == "relative_error" and outs["face"].metric == "agreement"
        assert all(o.passed for o in outs.values()), (t.name, outs)
        if t.precision == "fp32":
            assert outs["box"].max_abs_error < 1e-4 and outs["face"].agreement == 1.0
        assert run.measurements[t.name]["host"].p50_ms > 0  # the device runner feeds any signature
    assert run.targets[0].verify.top1 is None  # no classification output, no top-1 claimed
    tfl = run.target("tflite-int8")
    described = json.loads((run.run_dir / tfl.artifact).with_name("model.json").read_text())["meta"]
    assert [o["task"] for o in described["outputs"]] == ["regression", "regression", "score"]
    html = (run.run_dir / "report.html").read_text()
    assert "landmarks" in html and "relative_error" in html


class Stateful(nn.Module):
    """A 1-D model with a recurrent state and a constant keyword argument: (frames, state, sr) -> (score, state)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 9, padding=4)
        self.act = nn.PReLU(8)
        self.cell = nn.GRUCell(8, 16)
        self.head = nn.Linear(16, 1)

    def forward(self, x, state, sr: int = 8000):
        h = self.act(self.conv(x * (sr / 16000))).mean(2)
        state = self.cell(h, state)
        return {"prob": torch.sigmoid(self.head(state)), "state": state}


def stateful() -> nn.Module:
    torch.manual_seed(0)
    return Stateful().eval()


class StatefulLSTM(Stateful):
    """The same with an ``nn.LSTMCell`` whose (h, c) travel as one state input, fed through a reflect pad as Silero
    VAD's is: the TorchScript ONNX exporter loses the feature size there and cannot take the LSTMCell ('unsafe_chunk,
    unknown dimension size')."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(8, 16)

    def forward(self, x, state, sr: int = 8000):
        h = F.pad(self.act(self.conv(x * (sr / 16000))), (0, 8), mode="reflect")[:, :, -1:].squeeze(-1)
        h, c = self.cell(h, (state[:, 0], state[:, 1]))
        return {"prob": torch.sigmoid(self.head(h)), "state": torch.stack([h, c], 1)}


def stateful_lstm() -> nn.Module:
    torch.manual_seed(0)
    return StatefulLSTM().eval()


def stateful_recipe(tmp_path, targets, monkeypatch, **over) -> dict:
    t = np.linspace(0, 1, 256, dtype=np.float32)
    rng = np.random.default_rng(0)
    tones = np.stack([np.sin(2 * np.pi * f * t) * a for f, a in zip(rng.uniform(2, 40, 300), rng.uniform(.1, 1, 300))])
    np.savez(tmp_path / "tones.npz", frames=tones[:, None, :].astype(np.float32))
    (tmp_path / "statemodels.py").write_text("from test_io import stateful, stateful_lstm\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    r = {"name": "stateful", "model": {"factory": "statemodels:stateful"},
         "io": {"inputs": [{"name": "frames", "shape": [1, 256], "layout": "NCL", "dynamic": {1: "samples"}},
                           {"name": "state", "shape": [16], "fill": 0.0}],
                "call_kwargs": {"sr": 16000},
                "outputs": [{"name": "prob", "task": "score"}, {"name": "state_out", "task": "regression"}]},
         "data": {"source": {"kind": "npz", "path": str(tmp_path / "tones.npz")}, "val_size": 30, "calib_size": 100},
         "targets": targets, "output": str(tmp_path / "runs" / "stateful")}
    r.update(over)
    return r


@pytest.mark.slow
def test_two_inputs_a_filled_state_and_keyword_arguments(tmp_path, monkeypatch):
    run = edgeship.export(stateful_recipe(tmp_path, _targets([("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp16"),
                                                              ("tflite", "fp32"), ("tflite", "dynamic_int8")]),
                                          monkeypatch), quiet=True, runs=3)
    assert run.ok, [(t.name, t.error) for t in run.targets]
    for t in run.targets:
        assert set(t.verify.outputs) == {"prob", "state_out"} and all(o.passed for o in t.verify.outputs.values())
    onnx = run.target("onnx-fp32")
    import onnx as onnx_lib

    graph = onnx_lib.load(str(run.run_dir / onnx.artifact)).graph
    assert [i.name for i in graph.input] == ["frames", "state"] and [o.name for o in graph.output] == ["prob",
                                                                                                         "state_out"]
    assert graph.input[0].type.tensor_type.shape.dim[2].dim_param == "samples"  # the dynamic length stays dynamic
    assert run.target("tflite-fp32").verify.outputs["prob"].max_abs_error < 1e-5


@pytest.mark.slow
def test_an_lstm_cell_the_torchscript_exporter_refuses_goes_through_the_dynamo_exporter(tmp_path, monkeypatch):
    recipe = stateful_recipe(tmp_path, _targets([("onnx", "fp32"), ("onnx", "int8")]), monkeypatch,
                             model={"factory": "statemodels:stateful_lstm"})
    recipe["io"]["inputs"][1] = {"name": "state", "shape": [2, 16], "fill": 0.0}
    run = edgeship.export(recipe, quiet=True, measure=False)
    assert run.ok, [(t.name, t.error) for t in run.targets]
    import onnx as onnx_lib

    fp32 = onnx_lib.load(str(run.run_dir / run.target("onnx-fp32").artifact))
    assert fp32.opset_import[0].version == 18  # the dynamo exporter's file
    assert [i.name for i in fp32.graph.input] == ["frames", "state"]
    assert fp32.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch stays dynamic
    assert run.target("onnx-fp32").verify.outputs["state_out"].max_abs_error < 1e-5
    log = (run.run_dir / "logs" / "onnx-fp32.log").read_text()
    assert "unsafe_chunk" in log and "dynamo=True" in log


def test_io_bad_input_is_one_line(tmp_path, monkeypatch):
    base = stateful_recipe(tmp_path, _targets([("onnx", "fp32")]), monkeypatch)
    cases = [
        ({"data": {"source": {"kind": "npz", "path": str(tmp_path / "tones.npz")}}, "io": {**base["io"], "inputs": [
            {"name": "audio", "shape": [1, 256]}, base["io"]["inputs"][1]]}},
         r"has arrays \['frames'\] but the io: inputs read 'audio'"),
        ({"io": {**base["io"], "inputs": [{"name": "frames", "shape": [1, 128]}, base["io"]["inputs"][1]]}},
         r"array 'frames' holds samples of shape \(1, 256\) but input 'frames' declares \(1, 128\)"),
        ({"io": {**base["io"], "outputs": [*base["io"]["outputs"], {"name": "extra"}]}},
         r"the model returns 2 tensors .* but io.outputs names 3 \(prob, state_out, extra\)"),
        ({"io": {**base["io"], "call_kwargs": {}, "inputs": base["io"]["inputs"][:1]}},
         r"the model rejects its io: inputs \(frames \(2, 1, 256\) float32\)"),
        ({"passes": [{"name": "distill", "epochs": 1}]},
         r"1:distill: the pass trains or rewrites a model with one data input and one classification output"),
        ({"model": {"zoo": "small_cnn"}}, r"zoo model 'small_cnn' takes one image"),
    ]
    for over, expected in cases:
        with pytest.raises(EdgeshipError, match=expected):
            edgeship.export({**base, **over}, quiet=True, measure=False)
        assert not (tmp_path / "runs").exists()
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**base, **cases[0][0]}))
    res = CliRunner().invoke(app, ["export", str(tmp_path / "r.yaml")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


class FlattenByBatch(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).view(x.size(0), -1))


def test_a_graph_that_fixes_the_batch_fails_only_its_target_with_the_reason(tmp_path, digits_recipe):
    """A .pt2 exported with a dynamic batch, whose ONNX export bakes the batch into a reshape (issue 15: ORT's 'GEMM:
    Dimension mismatch' aborted the whole export): that target fails saying why; the others ship."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(FlattenByBatch().eval(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(tmp_path / "net.pt2"))
    recipe = yaml.safe_load(digits_recipe().read_text())
    recipe["model"] = {"exported": str(tmp_path / "net.pt2")}
    recipe["targets"] = _targets([("onnx", "fp32"), ("openvino", "fp32")], max_accuracy_drop=100.0)
    run = edgeship.export(recipe, quiet=True, measure=False)
    onnx, ov = run.targets
    assert onnx.status == "failed" and "runs one sample but not a batch of two: its graph fixes the batch size" in \
        onnx.error, onnx.error
    assert ov.status == "ok"


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.cls, self.reg = nn.Linear(8, 10), nn.Linear(8, 2)

    def forward(self, x):
        h = self.body(x)
        return self.cls(h), torch.sigmoid(self.reg(h))


@pytest.mark.slow
def test_a_model_held_only_as_onnx(tmp_path):
    """model: {onnx: ...}: the ONNX and OpenVINO targets take the file as it is (PTQ for INT8, no re-export); the
    TFLite target gets it through onnx2torch and litert-torch; every output is checked against the ONNX model."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    net = TwoHeads().eval()
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(tmp_path / "user.onnx"), dynamo=False, opset_version=17,
                      input_names=["pixels"], output_names=["digit", "box"],
                      dynamic_axes={"pixels": {0: "n"}, "digit": {0: "n"}, "box": {0: "n"}})
    d = load_digits()
    np.savez(tmp_path / "digits.npz", pixels=(d.images[:, None] / 16.0).astype(np.float32), y=d.target)
    recipe = {"name": "held-as-onnx", "model": {"onnx": str(tmp_path / "user.onnx")},
              "io": {"inputs": [{"name": "pixels", "shape": [1, 8, 8], "layout": "NCHW"}],
                     "outputs": [{"name": "digit", "task": "classification"}, {"name": "box", "task": "score"}]},
              "data": {"source": {"kind": "npz", "path": str(tmp_path / "digits.npz")}, "val_size": 100,
                       "calib_size": 200},
              "targets": _targets([("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp16"), ("tflite", "fp32")],
                                  max_accuracy_drop=100.0),
              "output": str(tmp_path / "runs" / "onnx")}
    run = edgeship.export(recipe, quiet=True, measure=False)
    assert run.ok, [(t.name, t.error) for t in run.targets]
    fp32 = run.target("onnx-fp32")
    import onnx as onnx_lib

    shipped = onnx_lib.load(str(run.run_dir / fp32.artifact))
    assert [i.name for i in shipped.graph.input] == ["pixels"]  # the user's graph, not a re-export
    for t in run.targets:
        assert set(t.verify.outputs) == {"digit", "box"} and all(o.passed for o in t.verify.outputs.values()), t
    assert run.target("tflite-fp32").verify.outputs["box"].max_abs_error < 1e-5
    assert run.baseline.top1_test is not None  # class ids in the data: top-1 of the classification output


@pytest.mark.slow
def test_fine_tuning_on_data_without_class_ids_learns_from_the_teacher_alone(tmp_path, monkeypatch):
    """torchvision's pretrained MobileNetV2 on unlabelled photo crops, judged by agreement with torch: the class ids of
    such data are all 0, so a pass whose loss has a cross-entropy term (qat's default alpha 0.7, a prune's fine_tune:)
    is refused before any work; with alpha 1 QAT distils from the teacher alone and claims no top-1."""
    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO))
    np.savez(tmp_path / "crops.npz", image=photo_crops(120, 64))
    recipe = {"name": "mnv2", "model": {"factory": "benchmarks.zoo.models:mobilenet_v2"},
              "io": {"inputs": [{"name": "image", "shape": [3, 64, 64], "layout": "NCHW",
                                 "preprocessing": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                                   "std": [0.229, 0.224, 0.225]}}],
                     "outputs": [{"name": "logits", "task": "classification", "metric": "agreement",
                                  "tolerance": {"int8": 0.5}}]},
              "data": {"source": {"kind": "npz", "path": str(tmp_path / "crops.npz")}, "val_size": 20,
                       "calib_size": 40, "test_fraction": 0.25},
              "targets": _targets([("onnx", "int8")]), "output": str(tmp_path / "runs" / "mnv2")}
    refused = [([{"name": "qat", "epochs": 1}], r"1:qat: .*\(weight 1 - alpha = 0.3\) would train every sample toward "
                                                 r"class 0. Fix: set alpha: 1.0"),
               ([{"name": "calibrate"},
                 {"name": "prune", "channel_ratio": 0.8, "fine_tune": {"epochs": 1, "alpha": 0.5}}],
                r"2:prune: .*\(weight 1 - alpha = 0.5\)")]
    for passes, expected in refused:
        with pytest.raises(EdgeshipError, match=expected):
            edgeship.export({**recipe, "passes": passes}, quiet=True, measure=False)
        assert not (tmp_path / "runs").exists()
    run = edgeship.export({**recipe, "passes": [{"name": "qat", "epochs": 1, "alpha": 1.0, "calib_samples": 32,
                                                  "batch_size": 16}]}, quiet=True, measure=False)
    assert run.ok, [(t.name, t.error) for t in run.targets]
    qat = run.stages[-1]
    assert qat.metrics["distillation_alpha"] == 1.0 and qat.metrics["epochs"] == 1
    assert qat.metrics["val_top1"] is None and qat.top1_val is None  # no labels, no top-1 against them
    assert run.target("onnx-int8").verify.outputs["logits"].metric == "agreement"
