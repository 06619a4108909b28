"""ONNX-INT8 (ONNX Runtime static QDQ quantization, or a QAT model's own QDQ) through the shared
backend template, plus what only this backend does."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from template import BackendTemplate, context, digits_task
from test_onnx import onnx_description
from typer.testing import CliRunner

from edgeship.calibration.quant import QuantSettings
from edgeship.cli import app
from edgeship.errors import TargetError
from edgeship.targets.base import get_backend
from edgeship.targets.onnx_int8 import _initializer_values, float_ops


class TestOnnxInt8(BackendTemplate):
    FORMAT, PRECISION = "onnx", "int8"
    RUNTIME_MODULE = RUNTIME_PACKAGE = "onnxruntime"

    def embedded_description(self, art):
        return onnx_description(art)

    def test_qdq_graph_with_per_channel_int8_weights(self, lowered):
        g = onnx.load(str(lowered["art"].path)).graph
        ops = [n.op_type for n in g.node]
        assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
        consts = _initializer_values(g)  # initializers and Constant nodes (the QAT export uses those)
        weight_dq = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] in consts
                     and consts[n.input[0]].dtype == np.int8]
        per_channel = [n for n in weight_dq if consts[n.input[1]].ndim == 1 and consts[n.input[1]].size > 1]
        assert len(per_channel) >= 3  # the three convolutions (and the classifier) carry one scale per channel


class TestOnnxInt8Percentile(TestOnnxInt8):
    QUANT = QuantSettings(method="percentile", percentile=99.99)


class TestOnnxInt8QAT(TestOnnxInt8):
    QAT = True

    def test_route_is_qat_export(self, lowered):
        assert lowered["art"].meta["route"].startswith("qat")


def activation_scales(path) -> dict[str, float]:
    g = onnx.load(str(path)).graph
    consts = _initializer_values(g)
    return {n.input[0]: float(consts[n.input[1]]) for n in g.node if n.op_type == "QuantizeLinear"}


def test_calibration_method_reaches_the_quantizer(tmp_path):
    """percentile (99%) clips the outliers min-max keeps: narrower ranges; entropy picks its own."""
    scales = {}
    for method in ("minmax", "percentile", "entropy"):
        d = tmp_path / method
        ctx = context(d, "onnx", "int8", QuantSettings(method=method, percentile=99.0), name=method)
        (d / "out").mkdir()
        art = get_backend("onnx", "int8").lower(digits_task()["model"], ctx, d / "out")
        scales[method] = activation_scales(art.path)
        assert art.meta["quantization"]["method"] == method
    assert len(scales["minmax"]) >= 5 and scales["minmax"].keys() == scales["percentile"].keys()
    hidden = [k for k in scales["minmax"] if k != "input"]
    assert all(scales["percentile"][k] < scales["minmax"][k] for k in hidden)
    assert any(scales["entropy"][k] != scales["minmax"][k] for k in hidden)


def test_mse_is_a_clear_error_and_writes_nothing(tmp_path):
    ctx = context(tmp_path, "onnx", "int8", QuantSettings(method="mse"))
    (tmp_path / "out").mkdir()
    with pytest.raises(TargetError, match=r"onnx int8 calibrates with minmax, percentile, entropy, not 'mse' "
                                          r"\(mse is available on: openvino int8\)"):
        get_backend("onnx", "int8").lower(digits_task()["model"], ctx, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_op_audit_lists_float_ops_of_a_float_model(tmp_path):
    """The audit can fail: on the FP32 export every convolution and the classifier run in float."""
    ctx = context(tmp_path, "onnx", "fp32", QuantSettings())
    (tmp_path / "out").mkdir()
    art = get_backend("onnx", "fp32").lower(digits_task()["model"], ctx, tmp_path / "out")
    audit = float_ops(art.path)
    assert len(audit["float_compute_ops"]) == 4 and audit["n_float_ops"] >= 6


def test_export_cli_verifies_int8_targets(tmp_path, digits_recipe):
    """`edgeship export` lowers, verifies and records ONNX-INT8 and OpenVINO targets side by side."""
    targets = [{"name": "onnx-fp32", "format": "onnx", "precision": "fp32"},
               {"name": "phone-onnx-int8", "device": "pixel", "format": "onnx", "precision": "int8"},
               {"name": "x86-openvino-int8", "device": "x86-edge", "format": "openvino", "precision": "int8"},
               {"name": "x86-openvino-fp16", "device": "x86-edge", "format": "openvino", "precision": "fp16"}]
    result = CliRunner().invoke(app, ["--quiet", "export", str(digits_recipe(targets=targets))])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "digits_test"
    report = json.loads((run / "report.json").read_text())
    by = {t["name"]: t for t in report["targets"]}
    assert [t["status"] for t in report["targets"]] == ["ok"] * 4
    for name in ("phone-onnx-int8", "x86-openvino-int8"):
        t = by[name]
        assert t["verify"]["accuracy_drop_pt"] <= 1.0 and t["verify"]["agreement"] >= 0.97
        assert t["op_audit"]["float_compute_ops"] == []
        assert (run / t["artifact"]).is_file() and (run / "targets" / name / "model.json").is_file()
    assert by["onnx-fp32"]["op_audit"] is None
    assert sorted(p.name for p in (run / "targets").iterdir()) == sorted(by)  # no .partial left


def test_export_cli_rejects_too_little_calibration_data(tmp_path, digits_recipe):
    targets = [{"name": "phone-onnx-int8", "format": "onnx", "precision": "int8"}]
    data = {"source": {"kind": "digits"}, "val_size": 150, "calib_size": 8, "seed": 0}
    result = CliRunner().invoke(app, ["--quiet", "export", str(digits_recipe(targets=targets, data=data))])
    assert result.exit_code == 2
    assert "only 8 samples; at least 32" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs" / "digits_test").exists()
    assert not (tmp_path / "runs").exists()  # checked before anything is created, even the output's parent


def test_residual_blocks_run_int8(tmp_path):
    """MobileNetV2's residual adds: with int8 activations ONNX Runtime left the convolutions around
    them in float; uint8 activations keep every convolution and add quantized."""
    from edgeship.models.zoo import ZOO

    torch.manual_seed(0)
    model = ZOO["mobilenetv2"](in_channels=1, num_classes=10, input_size=(8, 8), width_mult=0.5).eval()
    ctx = context(tmp_path, "onnx", "int8", QuantSettings())
    (tmp_path / "out").mkdir()
    backend = get_backend("onnx", "int8")
    art = backend.lower(model, ctx, tmp_path / "out")
    assert sum(n.op_type == "Add" for n in onnx.load(str(art.path)).graph.node) >= 2  # the residual adds
    audit = backend.op_audit(art)
    assert audit["float_ops"] == [] and audit["op_counts"].get("QLinearAdd", 0) >= 2


def test_weights_leave_room_for_x86_int16_sums(tmp_path):
    """Large positive activations times large weights of one sign: on x86 without VNNI, ONNX Runtime's u8 x s8 kernel
    sums pairs of products in int16 (VPMADDUBSW) and 8-bit weights saturate it; 7-bit weights (reduce_range) do not.
    The INT8 file must stay within 2% of the FP32 one."""
    import onnxruntime as ort

    from edgeship.targets.onnx import export_onnx
    from edgeship.targets.onnx_int8 import quantize_onnx

    torch.manual_seed(0)
    layer = torch.nn.Linear(256, 8)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.0)
        layer.bias.zero_()
    x = np.random.default_rng(0).uniform(0.8, 1.0, (64, 256)).astype(np.float32)
    fp32 = export_onnx(layer.eval(), torch.from_numpy(x[:1]), tmp_path / "fp32.onnx", tmp_path / "log.txt")
    quantize_onnx(fp32, tmp_path / "int8.onnx", x, QuantSettings(), tmp_path, tmp_path / "log.txt")
    want, got = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                 for f in ("fp32.onnx", "int8.onnx"))
    assert np.abs(got - want).mean() / np.abs(want).mean() < 0.02


class _Depthwise(torch.nn.Module):
    """A 1-channel stem to 12 channels, a 12-channel depthwise 3x3 (12: not a multiple of 16), a 1x1 to 8 and a
    classifier; ``residual``: the depthwise output is added to its input (an Add reads it, not a convolution)."""

    def __init__(self, residual: bool = False):
        super().__init__()
        nn = torch.nn
        self.residual = residual
        self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.BatchNorm2d(12), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(12, 8, 1), nn.BatchNorm2d(8), nn.ReLU6())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

    def forward(self, x):
        x = self.stem(x)
        x = x + self.dw(x) if self.residual else self.dw(x)
        return self.head(self.pw(x))


def _depthwise_model(residual: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    m = _Depthwise(residual)
    with torch.no_grad():
        for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


def _convs(path) -> dict:
    """Each Conv of the file: (its weight as the runtime computes with it, its group)."""
    g = onnx.load(str(path)).graph
    consts = _initializer_values(g)
    producer = {o: n for n in g.node for o in n.output}
    out = {}
    for n in g.node:
        if n.op_type == "Conv":
            w = consts.get(n.input[1])
            if w is None:  # DequantizeLinear(int8 weights, scales, zero points)
                w = consts[producer[n.input[1]].input[0]]
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            out[n.name] = (w, group)
    return out


@pytest.mark.parametrize("qat", [False, True], ids=["calibrated", "qat"])
def test_depthwise_channels_are_aligned_to_16(tmp_path, qat):
    """ONNX Runtime's x86 kernels run an int8 depthwise convolution in the fused kernel only when its channels are a
    multiple of 16: the 12-channel one is widened to 16 with zero channels (the stem gets 4 zero filters, the 1x1
    after it 4 zero input columns), every convolution stays int8 and the outputs do not change."""
    import onnxruntime as ort

    from edgeship.targets.onnx_int8 import quantize_onnx

    model = _depthwise_model()
    quant = QuantSettings(qat=qat)
    ctx = context(tmp_path, "onnx", "int8", quant)
    if qat:
        from edgeship.pipeline.qat import QAT, calibrate_ranges, prepare_qat

        model = prepare_qat(model, torch.zeros(1, 1, 8, 8))
        calibrate_ranges(model, torch.from_numpy(digits_task()["calib"]))
        model = model.eval()
        ctx.learned = QAT.learned_quantization(model)
    (tmp_path / "out").mkdir()
    backend = get_backend("onnx", "int8")
    art = backend.lower(model, ctx, tmp_path / "out")
    convs = _convs(art.path)
    (stem_w, _), (dw_w, dw_group), (pw_w, _) = (convs[k] for k in sorted(convs, key=list(convs).index))
    assert dw_group == 16 and dw_w.shape == (16, 1, 3, 3) and stem_w.shape[0] == 16 and pw_w.shape[1] == 16
    assert not dw_w[12:].any() and not stem_w[12:].any() and not pw_w[:, 12:].any()
    assert dw_w[:12].any() and pw_w[:, :12].any()
    assert "12->16" in art.meta["route"]
    audit = backend.op_audit(art)
    assert audit["float_ops"] == [] and audit["op_counts"].get("QLinearConv") == 3
    # the same graph unaligned: the QAT export as it comes, or the calibration route's quantize_static
    x = digits_task()["x_test"][:64]
    plain = tmp_path / "plain.onnx"
    if qat:
        from edgeship.targets.onnx import export_onnx

        export_onnx(model, torch.from_numpy(x[:1]), plain, tmp_path / "plain.log")
    else:
        from edgeship.targets.onnx import export_onnx

        fp32 = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "fp32.onnx", tmp_path / "plain.log")
        quantize_onnx(fp32, plain, ctx.calib, quant, tmp_path / "work", tmp_path / "plain.log")
    assert _convs(plain)[next(iter(convs))][0].shape[0] == 12  # the reference really is unaligned
    want, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                 for p in (plain, art.path))
    np.testing.assert_array_equal(got, want)


def test_depthwise_read_by_an_add_is_left_alone(tmp_path):
    """A depthwise convolution whose output an Add reads cannot be widened alone (the Add's other input has 12
    channels): the file keeps it at 12 and the route says so."""
    ctx = context(tmp_path, "onnx", "int8", QuantSettings())
    (tmp_path / "out").mkdir()
    art = get_backend("onnx", "int8").lower(_depthwise_model(residual=True), ctx, tmp_path / "out")
    groups = sorted(g for _, g in _convs(art.path).values())
    assert groups == [1, 1, 12]
    assert "left unaligned" in art.meta["route"] and "(12)" in art.meta["route"]


def test_chained_depthwise_convolutions_are_both_aligned(tmp_path):
    """MobileNetV1's pattern: depthwise (12) -> 1x1 (12 -> 20) -> depthwise (20) -> 1x1: the middle 1x1 is read by the
    first depthwise's widening (4 zero input columns) and widened for the second (12 zero filters); outputs equal
    the unaligned file's."""
    import onnxruntime as ort

    from edgeship.targets.onnx import export_onnx
    from edgeship.targets.onnx_align import align_depthwise
    from edgeship.targets.onnx_int8 import quantize_onnx

    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.ReLU6(), nn.Conv2d(12, 12, 3, padding=1, groups=12),
                          nn.ReLU(), nn.Conv2d(12, 20, 1), nn.ReLU6(), nn.Conv2d(20, 20, 3, padding=1, groups=20),
                          nn.ReLU6(), nn.Conv2d(20, 8, 1), nn.Flatten(), nn.Linear(8 * 64, 10)).eval()
    x = digits_task()["x_test"][:64]
    fp32 = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "fp32.onnx", tmp_path / "log.txt")
    quantize_onnx(fp32, tmp_path / "plain.onnx", digits_task()["calib"], QuantSettings(), tmp_path, tmp_path / "log")
    m = onnx.load(str(tmp_path / "plain.onnx"))
    rows = align_depthwise(m)
    assert [(r["channels"], r["aligned"]) for r in rows] == [(12, 16), (20, 32)]
    onnx.save(m, str(tmp_path / "aligned.onnx"))
    convs = list(_convs(tmp_path / "aligned.onnx").values())
    assert [w.shape[:2] for w, _ in convs] == [(16, 1), (16, 1), (32, 16), (32, 1), (8, 32)]
    middle = convs[2][0]
    assert not middle[:, 12:].any() and not middle[20:].any() and middle[:20, :12].any()
    want, got = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                 for f in ("plain.onnx", "aligned.onnx"))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("pool", ["max", "average"])
def test_a_depthwise_convolution_after_a_pool_is_aligned_with_the_stem_before_it(tmp_path, pool):
    """A stem (3 -> 8), a pool, a depthwise convolution (8): a pool reads each channel alone, so the zero channels
    the widening gives the stem stay 0 through it. The stem gets 8 zero filters, the depthwise 8 zero channels, the
    1x1 after it 8 zero input columns; with 16 outputs the stem's input is then padded to 4 channels. Outputs equal
    the unaligned file's bit for bit; the depthwise convolution was left at 8 before pools passed."""
    import onnxruntime as ort

    from edgeship.targets.onnx import export_onnx
    from edgeship.targets.onnx_align import align_file
    from edgeship.targets.onnx_int8 import quantize_onnx

    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU6(), nn.Conv2d(8, 24, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10)).eval()
    x = np.random.default_rng(0).standard_normal((32, 3, 64, 64)).astype(np.float32)
    fp32 = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "fp32.onnx", tmp_path / "log.txt")
    quantize_onnx(fp32, tmp_path / "plain.onnx", x[:16], QuantSettings(), tmp_path, tmp_path / "log")
    (tmp_path / "aligned.onnx").write_bytes((tmp_path / "plain.onnx").read_bytes())
    route = align_file(tmp_path / "aligned.onnx")
    assert "8->16" in route and "3->4" in route and "left unaligned" not in route
    convs = list(_convs(tmp_path / "aligned.onnx").values())
    assert [w.shape[:2] for w, _ in convs] == [(16, 4), (16, 1), (24, 16)] and convs[1][1] == 16
    (stem, _), (dw, _), (pw, _) = convs
    assert not stem[8:].any() and not dw[8:].any() and not pw[:, 8:].any() and pw[:, :8].any()
    want, got = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                 for f in ("plain.onnx", "aligned.onnx"))
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_an_rgb_stem_reads_four_input_channels_with_outputs_unchanged(tmp_path):
    """torchvision's pretrained MobileNetV2 on photo crops: its 3 -> 32 stem gets its quantized input padded to 4
    channels with the zero point and a zero weight column (ONNX Runtime's int8 convolution runs a 3-channel input
    about half as fast, benchmarks/ort_stem.py); the logits are those of the same file unpadded, bit for bit; the
    route says so; the kernel reader still reads a 3-channel stem and nothing it leaves out. MTCNN P-Net's stem
    (3 -> 10: no gain measured) is left as it is."""
    import shutil

    import onnxruntime as ort

    from benchmarks.zoo.models import mobilenet_v2, mtcnn_pnet
    from edgeship.devices.kernels import read
    from edgeship.targets.onnx import export_onnx
    from edgeship.targets.onnx_align import PAD_INPUT, pad_stem_input
    from edgeship.targets.onnx_int8 import quantize_onnx
    from helpers import photo_crops

    x = (photo_crops(24, 64).astype(np.float32) / 255 - 0.45) / 0.25
    model = mobilenet_v2().eval()
    fp32 = export_onnx(model, torch.from_numpy(x[:1]), tmp_path / "fp32.onnx", tmp_path / "log.txt")
    quantize_onnx(fp32, tmp_path / "plain.onnx", x[:16], QuantSettings(), tmp_path, tmp_path / "log.txt")
    shutil.copyfile(tmp_path / "plain.onnx", tmp_path / "padded.onnx")
    m = onnx.load(str(tmp_path / "padded.onnx"))
    rows = pad_stem_input(m)
    assert [(r["channels"], r["padded"]) for r in rows] == [(3, 4)]
    onnx.save(m, str(tmp_path / "padded.onnx"))
    pads = [n for n in m.graph.node if n.op_type == "Pad"]
    assert len(pads) == 1 and pads[0].name.endswith(PAD_INPUT)
    stem = next(iter(_convs(tmp_path / "padded.onnx").values()))[0]
    assert stem.shape == (32, 4, 3, 3) and not stem[:, 3].any() and stem[:, :3].any()
    name = m.graph.input[0].name
    want, got = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
                 for f in ("plain.onnx", "padded.onnx"))
    np.testing.assert_array_equal(got, want)
    plain_kernels, _ = read(tmp_path / "plain.onnx", "onnx")
    kernels, left_out = read(tmp_path / "padded.onnx", "onnx")
    assert kernels == plain_kernels and kernels[0].cin == 3 and left_out == {}
    # ONNX Runtime's counters: the Pad's row is the stem convolution's time too (in_context.kernel_times)
    from edgeship.devices.in_context import kernel_times
    from edgeship.devices.layer_profile import ort_layers

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.enable_profiling = 1, True
    sess = ort.InferenceSession(str(tmp_path / "padded.onnx"), so, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, {name: x[:1]})
    layers = ort_layers(sess)[1]
    pad = [r for r in layers if str(r["name"]).endswith(PAD_INPUT)]
    stem_row = next(r for r in layers[layers.index(pad[0]):] if r["op"] == "QLinearConv")
    assert len(pad) == 1 and pad[0]["us"] > 0
    assert kernel_times(kernels, layers, "onnx")[0] == pytest.approx((pad[0]["us"] + stem_row["us"]) / 1e3)
    # the lowering does it, and says so
    from edgeship.devices.calibrate import lower

    d = lower(model, (3, 64, 64), "onnx", "int8", tmp_path / "art", "mnv2", tmp_path / "work")
    meta = json.loads((d / "model.json").read_text())["meta"]
    assert "input channels padded with zeros to a multiple of 4" in meta["route"] and "3->4" in meta["route"]
    # P-Net: 10 output channels, not padded
    fp32 = export_onnx(mtcnn_pnet().eval(), torch.from_numpy(x[:1]), tmp_path / "p32.onnx", tmp_path / "log.txt")
    quantize_onnx(fp32, tmp_path / "pnet.onnx", x[:16], QuantSettings(), tmp_path, tmp_path / "log.txt")
    assert pad_stem_input(onnx.load(str(tmp_path / "pnet.onnx"))) == []


@pytest.mark.slow
def test_a_narrow_convolution_is_widened_to_16_outputs_through_prelu_and_pool(tmp_path):
    """MTCNN P-Net (pretrained) on 96 x 128 photo crops: its first convolution has 10 outputs over 94 x 126, read
    through a PReLU (Relu, Min, Mul by the slopes expanded along the width) and a max pool by the next
    convolution alone, so it gets 6 zero filters, the slopes 6 more values and the Expand's shape 16 channels,
    the next convolution 6 zero input columns, and then (16 outputs) the stem's input pad; the heads' maps are
    under NARROW_MIN_POSITIONS. Outputs equal those of the same quantized graph without the widening, bit for
    bit. A narrow convolution read by a flatten or a residual Add is left."""
    import shutil

    import onnxruntime as ort

    from benchmarks.zoo.models import mtcnn_pnet
    from edgeship.targets.onnx import export_onnx
    from edgeship.targets.onnx_align import align_depthwise, align_narrow, pad_stem_input
    from edgeship.targets.onnx_int8 import quantize_onnx
    from edgeship.targets.onnx_prelu import tile_slopes, vectorize_prelu
    from helpers import photo_crops

    x = (photo_crops(24, 128).astype(np.float32)[:, :, :96] - 127.5) / 128
    fp32 = export_onnx(mtcnn_pnet().eval(), torch.from_numpy(x[:1]), tmp_path / "fp32.onnx", tmp_path / "log.txt")
    quantize_onnx(fp32, tmp_path / "q.onnx", x[:16], QuantSettings(), tmp_path, tmp_path / "log.txt",
                  vectorize_prelu(fp32))
    for name, widen in (("plain.onnx", False), ("widened.onnx", True)):
        shutil.copyfile(tmp_path / "q.onnx", tmp_path / name)
        assert tile_slopes(tmp_path / name) == 3  # all three PReLUs: 16384 elements or more at 96 x 128
        m = onnx.load(str(tmp_path / name))
        align_depthwise(m)
        rows = align_narrow(m) if widen else []
        stems = pad_stem_input(m)
        onnx.save(m, str(tmp_path / name))
        assert [r["channels"] for r in stems] == ([3] if widen else [])
    assert [(r["channels"], r["widened"]) for r in rows] == [(10, 16)]  # the heads' 43 x 59 map: under 4096
    convs = list(_convs(tmp_path / "widened.onnx").values())
    (w1, _), (w2, _) = convs[:2]
    assert w1.shape == (16, 4, 3, 3) and not w1[10:].any() and w1[:10].any()
    assert w2.shape == (16, 16, 3, 3) and not w2[:, 10:].any() and w2[:, :10].any()
    g = onnx.load(str(tmp_path / "widened.onnx")).graph
    inits = _initializer_values(g)
    expand = next(n for n in g.node if n.op_type == "Expand")
    assert inits[expand.input[1]].tolist() == [1, 16, 1, 126] and inits[expand.input[0]].shape == (16, 1, 1)
    want, got = (ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]).run(
        None, {g.input[0].name: x}) for f in ("plain.onnx", "widened.onnx"))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    # 8 outputs read by a flatten, or by a residual Add with another convolution's: not widened
    nn = torch.nn

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 16, 3)

        def forward(self, x):
            return self.c(torch.relu(self.a(x)) + self.b(x))

    d = np.random.default_rng(0).standard_normal((16, 1, 72, 72)).astype(np.float32)  # maps of 70 x 70, 72 x 72
    flat = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 70 * 70, 10)).eval()
    for name, model, want in (("flat", flat, [None]), ("residual", Residual().eval(), [None, None])):
        f32 = export_onnx(model, torch.from_numpy(d[:1]), tmp_path / f"{name}.onnx", tmp_path / "log.txt")
        quantize_onnx(f32, tmp_path / f"{name}q.onnx", d, QuantSettings(), tmp_path, tmp_path / "log.txt")
        assert [r["widened"] for r in align_narrow(onnx.load(str(tmp_path / f"{name}q.onnx")))] == want, name
