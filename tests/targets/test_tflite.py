"""TFLite (torch.fx -> TF ops in NHWC -> TFLiteConverter, run with LiteRT) through the shared backend
template for every precision and the QAT route, plus what only this backend does: the NHWC layout,
the op set of the translator and its errors, the QAT ranges reaching the file."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from template import BackendTemplate, context, digits_task, qat_model
from torch import nn

from edgeship.calibration.quant import QuantSettings
from edgeship.errors import TargetError
from edgeship.models.zoo import ZOO
from edgeship.targets.base import Artifact, get_backend
from edgeship.targets.tflite import open_interpreter, read_metadata
from helpers import as_json, photo_crops


class TestTFLiteFP32(BackendTemplate):
    FORMAT, PRECISION = "tflite", "fp32"
    RUNTIME_MODULE, RUNTIME_PACKAGE = "ai_edge_litert", "ai-edge-litert"
    INPUT_LAYOUT = "NHWC"

    def embedded_description(self, art):
        return read_metadata(art.path)


class TestTFLiteFP16(TestTFLiteFP32):
    PRECISION = "fp16"

    def test_weights_are_float16(self, lowered):
        dtypes = {t["dtype"] for t in open_interpreter(lowered["art"].path, delegates=False).get_tensor_details()}
        assert np.float16 in dtypes and np.int8 not in dtypes and np.uint8 not in dtypes


class TestTFLiteDynamicInt8(TestTFLiteFP32):
    PRECISION = "dynamic_int8"
    MAX_ABS_LOGIT_DIFF = 0.5


class TestTFLiteInt8(TestTFLiteFP32):
    PRECISION = "int8"

    def test_int8_interface(self, lowered):
        it = open_interpreter(lowered["art"].path)
        (inp,), (out,) = it.get_input_details(), it.get_output_details()
        assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
        assert list(inp["shape"][1:]) == [8, 8, 1]  # NHWC
        meta = lowered["art"].meta
        assert meta["inputs"][0]["quantization"]["scale"] == pytest.approx(inp["quantization"][0])
        assert meta["inputs"][0]["quantization"]["zero_point"] == inp["quantization"][1]
        assert meta["calibration"]["source"] == "representative_dataset"

    def test_audit_lists_no_float_operator(self, lowered):
        a = lowered["backend"].op_audit(lowered["art"])
        assert a["float_ops"] == [] and a["op_counts"]["CONV_2D"] == 3 and a["op_counts"]["FULLY_CONNECTED"] == 1


class TestTFLiteInt8FloatIO(TestTFLiteFP32):
    PRECISION = "int8_float_io"
    QUANTIZED_IO = ()  # the interface is float32; QUANTIZE/DEQUANTIZE sit inside

    def test_float_interface_int8_inside(self, lowered):
        a = lowered["backend"].op_audit(lowered["art"])
        assert lowered["art"].meta["inputs"][0]["dtype"] == "float32"
        assert {(o["op"], o["interface"]) for o in a["float_ops"]} == {("QUANTIZE", True), ("DEQUANTIZE", True)}
        assert a["float_ops_inside"] == []


class TestTFLiteInt8PerTensor(TestTFLiteInt8):
    QUANT = QuantSettings(per_channel=False)


class TestTFLiteInt8QAT(TestTFLiteInt8):
    QAT = True

    def test_int8_interface(self, lowered):
        """The file's scales are the ones QAT learned: no second calibration."""
        from edgeship.pipeline.qat import activation_ranges

        learned = activation_ranges(qat_model())
        it = open_interpreter(lowered["art"].path)
        (inp,), (out,) = it.get_input_details(), it.get_output_details()
        first, last = next(iter(learned.values())), list(learned.values())[-1]
        assert inp["quantization"][0] == pytest.approx(first["scale"], rel=1e-5)
        assert inp["quantization"][1] == first["zero_point"]
        assert out["quantization"][0] == pytest.approx(last["scale"], rel=1e-5)
        cal = lowered["art"].meta["calibration"]
        assert cal["source"] == "qat" and cal["fake_quant_ranges"]["observed"] == 0


class TestTFLiteInt8FloatIOQAT(TestTFLiteInt8FloatIO):
    QAT = True


# ----------------------------------------------------------------------------- beyond the template
def lower(model, tmp_path, precision, input_shape, calib=None, quant=None, name="t"):
    quant = QuantSettings() if quant is None else quant
    ctx = context(tmp_path, "tflite", precision, quant, calib, name=name)
    ctx.input_shape = input_shape
    if calib is None:
        ctx.calib = np.random.default_rng(0).normal(size=(64, *input_shape)).astype(np.float32)
    out = tmp_path / "out"
    out.mkdir(parents=True)
    backend = get_backend("tflite", precision)
    return backend, backend.lower(model, ctx, out)


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics, so folding them is actually tested."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model.eval()


@pytest.mark.parametrize("name,shape", [("small_cnn", (1, 12, 10)), ("resnet", (3, 12, 10)),
                                        ("mobilenetv2", (1, 28, 28)), ("dscnn", (1, 49, 10))])
def test_zoo_models_lower_exactly(tmp_path, name, shape):
    """Every zoo model (depthwise convs, residual adds, strided convs on odd and even sizes, non-square
    inputs): the FP32 file computes what torch does, and the INT8 one runs every operator in int8."""
    torch.manual_seed(0)
    args = {"depth": 8} if name == "resnet" else {}
    model = randomize_bn(ZOO[name](in_channels=shape[0], num_classes=7, input_size=shape[1:], **args))
    assert_lowers_exactly(model, shape, tmp_path)


def assert_lowers_exactly(model, shape, tmp_path) -> None:
    """The FP32 file computes what torch does; the INT8 file runs every operator in int8."""
    x = np.random.default_rng(1).normal(size=(5, *shape)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    backend, art = lower(model, tmp_path / "fp32", "fp32", shape)
    np.testing.assert_allclose(backend.load(art, threads=1)(x)[0], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    backend, art = lower(model, tmp_path / "int8", "int8", shape)
    assert backend.op_audit(art)["float_ops"] == []
    assert backend.load(art, threads=1)(x)[0].shape == ref.shape


@pytest.mark.slow
def test_litert_runs_every_operator_of_resnet18_in_xnnpack(tmp_path):
    """ResNet-18's stem pools 3x3/2 with padding 1 on an even size (torch pads with -inf: not TF's SAME). Lowered to
    INT8, every operator runs in LiteRT's XNNPACK delegate, one partition, none in the builtin kernels: the padding
    was a MIRROR_PAD, which XNNPACK does not take (issue 20: the 224x224 INT8 ResNet-18 ran in two partitions with
    that op between them). The profile's delegation view is checked against the interpreter without its delegate."""
    from edgeship.devices.layer_profile import layer_profile, tflite_layers

    torch.manual_seed(0)
    shape = (3, 64, 64)
    model = randomize_bn(ZOO["resnet18"](in_channels=3, num_classes=10, input_size=shape[1:]))
    _, art = lower(model, tmp_path, "int8", shape)
    source, rows = tflite_layers(open_interpreter(art.path, threads=1))
    assert "1 XNNPACK partition" in source and layer_profile(source, rows, True)["not_delegated"] == [], source
    assert {"CONV_2D", "MAX_POOL_2D", "ADD", "FULLY_CONNECTED"} <= {r["op"] for r in rows}
    assert "MIRROR_PAD" not in {r["op"] for r in rows}
    assert all(r["kernel"] == "int8 XNNPACK" for r in rows if r["compute"]) and len(rows) > 30
    source, rows = tflite_layers(open_interpreter(art.path, threads=1, delegates=False))
    assert layer_profile(source, rows, True)["not_delegated"] == [r["name"] for r in rows]


class CumsumNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.cumsum(self.conv(x), dim=1).mean((2, 3)))


def test_litert_profiler_times_xnnpack_and_builtin_operators(tmp_path):
    """LiteRT's Python interpreter has no per-op timer; its C API's profiler (litert_timer) times every operator:
    XNNPACK's by XNNPACK's names, with the arithmetic they ran in, and an operator XNNPACK does not take (CUMSUM)
    in LiteRT's builtin kernels, listed as not delegated. Each time is its whole-microsecond readings' mean plus
    half a microsecond, so every operator has one."""
    from edgeship.devices import litert_timer
    from edgeship.devices.layer_profile import layer_profile, tflite_profiled

    torch.manual_seed(0)
    _, art = lower(CumsumNet().eval(), tmp_path, "fp32", (3, 16, 16))
    interp = open_interpreter(art.path, threads=1)
    x = np.zeros((1, 16, 16, 3), np.float32).tobytes()
    source, rows = tflite_profiled(interp, litert_timer, str(art.path), 1, 10, [x])
    assert source.startswith("litert CompiledModel profiler"), source
    p = layer_profile(source, rows, False)
    assert [r["name"] for r in rows if not r["delegated"]] == p["not_delegated"] and \
        [n.split(":")[1] for n in p["not_delegated"]] == ["CUMSUM"]
    assert p["runs"] == 10 and all(r["ms"] >= 0.0005 for r in p["layers"]) and p["compute_layers"] == 2
    compute = {r["op"] for r in rows if r["compute"]}
    assert compute == {"Convolution (NHWC, F32) IGEMM", "Fully Connected (NC, F32) GEMM"}
    assert all(r["precision"] == "float" for r in rows if r["compute"])
    # a file the library refuses: no times and the reason; the runner's profile then falls back to the
    # interpreter's op list (here: the good file's), untimed, saying why
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 8)
    timed, note = litert_timer.timed_ops(str(bad), 1, 3, [x])
    assert timed is None and note.startswith("LiteRT C API: model returned status"), note
    source, rows = tflite_profiled(interp, litert_timer, str(bad), 1, 10, [x])
    assert source.endswith(f"the C API profiler: {note}") and all(r["us"] is None for r in rows), source
    assert "CUMSUM" in {r["op"] for r in rows}


class UserNet(nn.Module):
    """A user's model from the supported op set, written with modules, functions and methods."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.Hardswish())
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)  # torch pads with -inf: not TF's SAME on even sizes
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4, bias=False)
        self.dilated = nn.Conv2d(16, 8, 3, padding=2, dilation=2)
        self.dw = nn.Conv2d(16, 32, 5, padding=2, groups=16)  # depthwise with channel multiplier 2
        self.bn = nn.BatchNorm2d(40)  # after a concatenation: not folded into a conv
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(40, 40, 1), nn.Sigmoid())
        self.avg = nn.AvgPool2d(2)
        self.fc = nn.Linear(40 * 2 * 2, 12)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = self.pool(self.stem(x))
        x = x + F.relu6(self.grouped(x))
        y = torch.cat([self.dilated(x), self.dw(x)], dim=1)
        y = F.leaky_relu(self.bn(y), 0.1)
        y = y * self.se(y)
        y = self.avg(y)
        y = y.view(y.size(0), -1)  # a 2x2 feature map flattened in torch's (C, H, W) order
        return self.head(self.drop(torch.tanh(self.fc(y))))


def test_user_model_from_the_op_set(tmp_path):
    model = randomize_bn(UserNet())
    x = np.random.default_rng(2).normal(size=(3, 3, 16, 14)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    backend, art = lower(model, tmp_path, "fp32", (3, 16, 14))
    np.testing.assert_allclose(backend.load(art, threads=1)(x)[0], ref, rtol=1e-4, atol=1e-5)
    assert art.meta["inputs"][0]["shape"] == [-1, 16, 14, 3] and art.meta["inputs"][0]["layout"] == "NHWC"
    assert art.meta["source_layout"] == "NCHW"


class ScoreMap(nn.Module):
    """A detector's score map (MTCNN P-Net's head): a softmax over each position's channels, then pooled."""

    def __init__(self, one_d: bool = False):
        super().__init__()
        self.conv = (nn.Conv1d if one_d else nn.Conv2d)(2 if one_d else 1, 6, 3)
        self.pool = nn.AdaptiveAvgPool1d(1) if one_d else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(F.softmax(self.conv(x), dim=1)), 1))


@pytest.mark.parametrize("one_d,shape", [(False, (1, 12, 10)), (True, (2, 24))])
def test_a_softmax_over_a_maps_channels_takes_the_lowering(tmp_path, one_d, shape):
    """The torch.fx lowering takes a softmax over dim 1 of a 2-D or 1-D map (the channels-last tensor's last axis):
    the same outputs as torch's."""
    model = ScoreMap(one_d).eval()
    x = np.random.default_rng(3).normal(size=(3, *shape)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    backend, art = lower(model, tmp_path, "fp32", shape)
    assert art.meta["route"].startswith("torch.fx"), art.meta.get("lowering")
    np.testing.assert_allclose(backend.load(art, threads=1)(x)[0], ref, rtol=1e-4, atol=1e-5)


def test_a_softmax_inside_the_network_quantized_by_pt2e_gets_the_scale_litert_demands(tmp_path):
    """A score map's softmax (48 channels, so its outputs stay far below 1) inside a network the litert-torch route
    takes (a PReLU): PT2E observed its range and gave it a scale LiteRT's int8 SOFTMAX refuses to prepare; edgeship
    hands the quantizer the softmax it annotates with 1/256 (zero point -128), and the file runs, near torch's
    outputs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.PReLU(8), nn.Conv2d(8, 48, 1), nn.Softmax(dim=1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 10)).eval()
    backend, art = lower(model, tmp_path, "int8", (1, 8, 8), calib=digits_task()["calib"])
    assert art.meta["route"].startswith("litert-torch")
    it = open_interpreter(art.path)
    details = {t["index"]: t for t in it.get_tensor_details()}
    softmax = [op for op in it._get_ops_details() if op["op_name"] == "SOFTMAX"]
    assert softmax and all(details[op["outputs"][0]]["quantization"] == (1 / 256, -128) for op in softmax)
    x = digits_task()["x_test"][:16]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    out = backend.load(art, threads=1)(x)[0]
    assert np.abs(out - ref).max() <= 0.1 * np.abs(ref).max()


@pytest.mark.slow
def test_a_detectors_score_map_at_its_output_is_int8_in_a_full_integer_file(tmp_path):
    """MTCNN P-Net (facenet-pytorch's weights) at 48 x 64 on photo crops, through the litert-torch route: its
    softmax over the face score map is a model output, and torch.export keeps it as ``aten.softmax``, which
    litert-torch's quantizer does not annotate, so it ran as a float SOFTMAX between a DEQUANTIZE and the output.
    Now it is LiteRT's int8 SOFTMAX at scale 1/256, and the face probabilities stay near torch's."""
    from benchmarks.zoo.models import mtcnn_pnet

    model = mtcnn_pnet().eval()
    x = (F.interpolate(torch.from_numpy(photo_crops(48, 48).astype(np.float32)), size=(48, 64)) - 127.5) / 128
    backend, art = lower(model, tmp_path, "int8", (3, 48, 64), calib=x[:32].numpy())
    assert art.meta["route"].startswith("litert-torch")
    it = open_interpreter(art.path)
    details = {t["index"]: t for t in it.get_tensor_details()}
    softmax = [op for op in it._get_ops_details() if op["op_name"] == "SOFTMAX"]
    assert len(softmax) == 1 and details[softmax[0]["outputs"][0]]["quantization"] == (1 / 256, -128)
    assert details[softmax[0]["inputs"][0]]["dtype"] == np.int8
    with torch.no_grad():
        box, face = (t.numpy() for t in model(x[32:]))
    got_box, got_face = backend.load(art, threads=1)(x[32:].numpy())
    assert got_face.shape == face.shape and np.abs(got_face - face).mean() < 0.02, np.abs(got_face - face).mean()
    assert np.abs(got_face - face).max() < 0.25 and np.abs(got_box - box).max() < 0.1


class Upsampler(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Sequential(nn.Upsample(scale_factor=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))

    def forward(self, x):
        return self.head(self.conv(x))


class CumSum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.cumsum(x.flatten(1), 1))


@pytest.mark.parametrize("model,operator,layer", [(Upsampler(), "Upsample", "head.0"),
                                                  (CumSum(), "torch.cumsum", "cumsum")])
def test_operators_outside_the_lowering_take_the_litert_route(tmp_path, model, operator, layer):
    """The torch.fx lowering names what it cannot take (operator, layer); litert-torch converts the model instead,
    and the artifact says which route made it and why."""
    x = digits_task()["x_test"][:16]
    backend, art = lower(model.eval(), tmp_path, "fp32", (1, 8, 8), calib=digits_task()["calib"])
    assert art.meta["route"].startswith("litert-torch")
    assert f"operator {operator} in layer '{layer}'" in art.meta["lowering"]
    assert art.meta["inputs"][0]["layout"] == "NCHW"  # litert-torch keeps the torch layout
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.load(art, threads=1)(x)[0], ref, rtol=1e-4, atol=1e-4)
    _, art8 = lower(model.eval(), tmp_path / "int8", "int8", (1, 8, 8), calib=digits_task()["calib"])
    assert art8.meta["route"].startswith("litert-torch") and "PT2E" in art8.meta["route"]
    out8 = backend.load(art8, threads=1)(x)[0]
    assert out8.shape == ref.shape and np.isfinite(out8).all()


def test_a_model_no_tflite_route_takes_fails_only_its_target(tmp_path, digits_recipe, monkeypatch):
    """Through `edgeship export`: a TorchScript model outside the lowering's operators (litert-torch needs a Python
    module to export) fails its tflite target with one line; the ONNX target still ships."""
    from edgeship.api import export

    net = Upsampler().eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), str(tmp_path / "up.ts"))
    recipe = digits_recipe(model={"torchscript": str(tmp_path / "up.ts")},
                           targets=[{"name": "tfl", "format": "tflite", "precision": "fp32"},
                                    {"name": "onnx-fp32", "format": "onnx", "precision": "fp32",
                                     "max_accuracy_drop": 100.0}])
    report, code = as_json(export(recipe, quiet=True, measure=False))
    assert code == 1
    tfl, onx = report["targets"]
    assert tfl["status"] == "failed" and "TorchScript model cannot be lowered" in tfl["error"], tfl["error"]
    assert onx["status"] == "ok"
    run = tmp_path / "runs" / "digits_test" / "targets"
    assert sorted(p.name for p in run.iterdir()) == ["onnx-fp32"]


def test_export_verifies_every_precision(tmp_path, digits_recipe):
    """`edgeship export` lowers, runs and gates each precision with LiteRT on the digits test split."""
    from edgeship.api import export

    precisions = ("fp32", "fp16", "dynamic_int8", "int8", "int8_float_io")
    targets = [{"name": f"tfl-{p}", "format": "tflite", "precision": p} for p in precisions]
    report, code = as_json(export(digits_recipe(targets=targets), quiet=True, measure=False))
    assert code == 0, [t["error"] for t in report["targets"]]
    by = {t["precision"]: t for t in report["targets"]}
    for p in precisions:
        v = by[p]["verify"]
        assert by[p]["status"] == "ok" and v["accuracy_drop_pt"] <= 1.0, (p, v)
    assert by["fp32"]["verify"]["agreement"] == 1.0 and by["fp32"]["verify"]["max_abs_logit_diff"] < 1e-4
    assert by["int8"]["op_audit"]["float_ops"] == [] and by["dynamic_int8"]["op_audit"] is None
    run = tmp_path / "runs" / "digits_test"
    sidecar = json.loads((run / "targets" / "tfl-int8" / "model.json").read_text())
    assert sidecar["meta"]["inputs"][0]["layout"] == "NHWC"
    assert read_metadata(run / by["int8"]["artifact"]) == sidecar["meta"]
    assert (run / "logs" / "tfl-int8.log").stat().st_size > 0  # converter chatter went to the log


def test_no_runtime_at_all_names_the_package(tmp_path):
    """Neither ai_edge_litert nor tflite_runtime importable (a fresh interpreter)."""
    _, art = lower(digits_task()["model"], tmp_path, "fp32", (1, 8, 8), calib=digits_task()["calib"])
    code = ("import sys; sys.modules['ai_edge_litert'] = None; sys.modules['tflite_runtime'] = None\n"
            "from edgeship.targets.base import Artifact, get_backend\n"
            "from edgeship.errors import TargetError\n"
            f"art = Artifact.from_sidecar({str(art.dir / 'model.json')!r})\n"
            "try:\n    get_backend('tflite', 'fp32').load(art)\nexcept TargetError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "no TFLite runtime is installed" in out.stdout and "pip install ai-edge-litert" in out.stdout, out


def test_qat_ranges_keyed_by_module_path_or_input(tmp_path):
    """Ranges given by module path (and "input") become the file's scales; the rest come from calibration."""
    from edgeship.logs import captured
    from edgeship.targets import tflite

    model = copy.deepcopy(digits_task()["model"])
    ctx = context(tmp_path, "tflite", "int8", QuantSettings(qat=True))
    learned = {"input": (-3.0, 3.0), "classifier": {"min": -12.0, "max": 13.5}}
    with captured(ctx.log_path):
        flat, notes = tflite.convert(model, ctx, "int8", learned)
    (tmp_path / "m.tflite").write_bytes(flat)
    it = open_interpreter(tmp_path / "m.tflite")
    assert it.get_input_details()[0]["quantization"][0] == pytest.approx(6 / 255, rel=1e-5)
    assert it.get_output_details()[0]["quantization"][0] == pytest.approx(25.5 / 255, rel=1e-5)
    assert notes["calibration"]["fake_quant_ranges"]["learned"] == 2
    assert notes["calibration"]["fake_quant_ranges"]["observed"] >= 3


def test_qat_ranges_that_match_nothing_are_an_error(tmp_path):
    ctx = context(tmp_path, "tflite", "int8", QuantSettings(qat=True))
    from edgeship.targets import tflite

    with pytest.raises(TargetError, match="none of the 1 QAT activation ranges"):
        tflite.convert(copy.deepcopy(digits_task()["model"]), ctx, "int8", {"no_such_node": (-1.0, 1.0)})


def test_unreadable_artifact_is_target_error(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"not a flatbuffer")
    art = Artifact("t", "tflite", "fp32", tmp_path, "model.tflite", ["model.tflite"], {})
    with pytest.raises(TargetError, match="cannot open"):
        get_backend("tflite", "fp32").load(art)


class TestTFLiteInt8Percentile(TestTFLiteFP32):
    PRECISION = "int8"
    QUANT = QuantSettings(method="percentile", percentile=99.99)


def test_percentile_narrows_ranges_and_entropy_is_a_clear_error(tmp_path):
    """percentile (99%) clips what min/max keeps: smaller scales inside the network; TFLite has no entropy."""
    model = digits_task()["model"]
    scales = {}
    for method in ("minmax", "percentile"):
        _, art = lower(model, tmp_path / method, "int8", (1, 8, 8), calib=digits_task()["calib"],
                       quant=QuantSettings(method=method, percentile=99.0))
        it = open_interpreter(art.path, delegates=False)
        scales[method] = sorted(t["quantization"][0] for t in it.get_tensor_details()
                                if t["dtype"] == np.int8 and t["quantization"][0] > 0)
        assert art.meta["calibration"]["source"] == ("representative_dataset" if method == "minmax" else "percentile")
    assert len(scales["minmax"]) == len(scales["percentile"]) >= 8
    assert sum(scales["percentile"]) < 0.9 * sum(scales["minmax"])
    with pytest.raises(TargetError, match=r"tflite int8 calibrates with minmax, percentile, not 'entropy'"):
        lower(model, tmp_path / "entropy", "int8", (1, 8, 8), calib=digits_task()["calib"],
              quant=QuantSettings(method="entropy"))
    assert list((tmp_path / "entropy" / "out").iterdir()) == []


def test_models_fx_cannot_trace_are_target_errors(tmp_path):
    model = digits_task()["model"]
    x = torch.zeros(1, 1, 8, 8)
    scripted = torch.jit.trace(model, x)
    with pytest.raises(TargetError, match="tflite: a TorchScript model cannot be lowered"):
        lower(scripted, tmp_path / "ts", "fp32", (1, 8, 8))


class BranchOnValue(nn.Module):
    def forward(self, x):
        return x.flatten(1) if x.sum() > 0 else -x.flatten(1)  # data-dependent control flow


def test_untraceable_model_is_a_target_error(tmp_path):
    """Data-dependent control flow: neither the torch.fx lowering nor torch.export (litert-torch) can take it; the
    one line says why for both."""
    with pytest.raises(TargetError, match="tflite: no route converts this model: the torch.fx lowering: torch.fx "
                                          "cannot trace the model.*litert-torch could not convert the model"):
        lower(BranchOnValue(), tmp_path / "branch", "fp32", (1, 2, 2))


@pytest.mark.parametrize("name,shape", [("mobilenetv2", (1, 28, 28)), ("resnet", (3, 12, 10))])
def test_torch_export_programs_lower_exactly(tmp_path, name, shape):
    """A .pt2 program is an ATen graph (aten.conv2d, aten.batch_norm, ...), not an fx trace: its FP32 file
    computes what the program does, batch norms included; its INT8 file runs every operator in int8."""
    from edgeship.models.load import Frozen

    torch.manual_seed(0)
    args = {"depth": 8} if name == "resnet" else {}
    model = randomize_bn(ZOO[name](in_channels=shape[0], num_classes=7, input_size=shape[1:], **args))
    batch = ({0: torch.export.Dim("batch", min=1, max=64)},)  # as models.load.save_module writes .pt2
    program = torch.export.export(model, (torch.zeros(2, *shape),), dynamic_shapes=batch)
    torch.export.save(program, tmp_path / "m.pt2")
    loaded = Frozen(torch.export.load(str(tmp_path / "m.pt2")).module())  # as models.load hands it to a backend
    assert_lowers_exactly(loaded, shape, tmp_path)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_float_files_of_a_qat_model_are_its_float_copy(tmp_path, precision):
    """As `export` verifies float targets after QAT: no quantize/dequantize pairs, the stripped model's logits."""
    from edgeship.pipeline.qat import QAT, fold_and_strip

    ctx = context(tmp_path, "tflite", precision, QuantSettings(qat=True))
    ctx.learned = QAT.learned_quantization(qat_model())
    (tmp_path / "out").mkdir()
    backend = get_backend("tflite", precision)
    art = backend.lower(qat_model(), ctx, tmp_path / "out")
    it = open_interpreter(art.path, delegates=False)
    assert not {"QUANTIZE", "DEQUANTIZE"} & {o["op_name"] for o in it._get_ops_details()} - \
        ({"DEQUANTIZE"} if precision == "fp16" else set())  # fp16 weights are dequantized to fp32
    assert np.int8 not in {t["dtype"] for t in it.get_tensor_details()}
    x = digits_task()["x_test"][:64]
    with torch.no_grad():
        ref = fold_and_strip(qat_model())(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(backend.load(art, threads=1)(x)[0], ref, atol=1e-3 if precision == "fp32" else 0.05)


class HardSwishNet(nn.Module):
    """Hard swish as a module and as a function, and a convolution before a sigmoid."""

    def __init__(self):
        super().__init__()
        self.stem, self.act = nn.Conv2d(3, 16, 3, 2, 1), nn.Hardswish()
        self.dw, self.gate = nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = F.hardswish(self.dw(self.act(self.stem(x))))
        return self.fc(torch.sigmoid(self.gate(x)).mean((2, 3)))


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_an_int8_hard_swish_runs_in_xnnpack(tmp_path, method):
    """TFLite's converter fuses x * relu6(x + 3) / 6 into HARD_SWISH, which XNNPACK does not take in int8 (LiteRT ran
    it in its builtin kernels, one XNNPACK partition between each two). The INT8 file has none (``tflite_hardswish``:
    an ADD and two MULs each), every operator in one XNNPACK partition, none float, with TFLite's min/max calibration
    and with the percentile ranges in FakeQuant ops (whose convolutions before a hard swish or a sigmoid ran in float:
    no range of their own); the outputs stay near the FP32 file's, which keeps its one HARD_SWISH per activation."""
    from edgeship.devices.layer_profile import layer_profile, tflite_layers
    from edgeship.targets.tflite import make_runner

    torch.manual_seed(0)
    model, shape = HardSwishNet().eval(), (3, 32, 32)
    calib = photo_crops(64, 32).astype(np.float32) / 255 - 0.5
    backend, art = lower(model, tmp_path / "int8", "int8", shape, calib, QuantSettings(method=method))
    audit = backend.op_audit(art)
    assert "HARD_SWISH" not in audit["op_counts"] and audit["n_float_ops"] == 0, audit
    assert audit["op_counts"]["MUL"] == 4 and audit["op_counts"]["ADD"] == 2
    source, rows = tflite_layers(open_interpreter(art.path, threads=1))
    assert "1 XNNPACK partition" in source and layer_profile(source, rows, True)["not_delegated"] == [], source
    _, fp32 = lower(model, tmp_path / "fp32", "fp32", shape, calib)
    ops = [o["op_name"] for o in open_interpreter(fp32.path)._get_ops_details()]
    assert ops.count("HARD_SWISH") == 2
    x = photo_crops(16, 32, seed=1).astype(np.float32) / 255 - 0.5
    got, want = (np.concatenate([make_runner(open_interpreter(a.path, threads=1), "NHWC")(x[i:i + 1])[0]
                                 for i in range(len(x))]) for a in (art, fp32))
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.1


class HardSwishCumsum(nn.Module):
    """A hard swish in a model the torch.fx lowering does not take (a cumsum): the litert-torch route."""

    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Hardswish(), nn.Linear(16, 4)
        self.pw = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        return self.fc(torch.cumsum(self.pw(self.act(self.conv(x))), dim=1).mean((2, 3)))


def test_the_litert_route_gets_its_int8_hard_swish_rewritten_too(tmp_path):
    """litert-torch's PT2E file fuses the hard swish into an int8 HARD_SWISH as well: rewritten in the file, the route
    says so, XNNPACK leaves only the cumsum to LiteRT, and the outputs stay near the FP32 file's."""
    from edgeship.devices.layer_profile import layer_profile, tflite_layers

    torch.manual_seed(0)
    model, shape = HardSwishCumsum().eval(), (3, 16, 16)
    calib = photo_crops(64, 16).astype(np.float32) / 255 - 0.5
    backend, art = lower(model, tmp_path / "int8", "int8", shape, calib)
    assert art.meta["route"].startswith("litert") and "1 int8 HARD_SWISH rewritten as ADD (relu6) and two MULs" in (
        art.meta["route"])
    counts = backend.op_audit(art)["op_counts"]
    assert "HARD_SWISH" not in counts and counts["MUL"] == 2 and counts["ADD"] == 1, counts
    source, rows = tflite_layers(open_interpreter(art.path, threads=1))
    assert [n.split(":")[1] for n in layer_profile(source, rows, True)["not_delegated"]] == ["CUMSUM"], source
    _, fp32 = lower(model, tmp_path / "fp32", "fp32", shape, calib)
    x = photo_crops(8, 16, seed=1).astype(np.float32) / 255 - 0.5
    got, want = (np.concatenate([backend.load(a, threads=1)(x[i:i + 1])[0] for i in range(len(x))])
                 for a in (art, fp32))
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 0.1
