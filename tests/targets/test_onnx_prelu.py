"""A large PReLU reaches ONNX Runtime as Relu(x) + slope * Min(x, 0) (``targets.onnx_prelu``): the same function
bit for bit, a time that does not follow its input's signs, read by the predictor as the PReLU it replaces; in an
INT8 file a PReLU after a cheap convolution is split by sign instead, so it runs int8."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from edgeship.devices.calibrate import lower
from edgeship.devices.in_context import kernel_times
from edgeship.devices.kernels import Kernel, read
from edgeship.devices.layer_profile import ort_layers
from edgeship.targets.onnx import export_onnx
from edgeship.targets.onnx_prelu import MARK, MIN_ELEMENTS, SPLIT, split_prelu, tile_slopes, vectorize_prelu


def _session(path, profile: bool = False) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.enable_profiling = 1, profile
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _prelu_graph(path, slopes: dict[str, np.ndarray], shape: list[int]) -> None:
    """x -> PRelu(slope) for each slope in turn: a chain over one (1, C, H, W) map."""
    nodes, inits, x = [], [], "x"
    for name, s in slopes.items():
        inits.append(numpy_helper.from_array(s.astype(np.float32), f"{name}_s"))
        nodes.append(helper.make_node("PRelu", [x, f"{name}_s"], [f"{name}_y"], name=name))
        x = f"{name}_y"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, shape)], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_rewrite_is_the_same_function_bit_for_bit_for_any_slope(tmp_path):
    """Per-channel slopes below 0, between 0 and 1 and above 1 (MTCNN's trained slopes span -1.3 to 1.3), a
    shared one, over inputs of both signs, zeros and infinities: ONNX Runtime's outputs of the rewritten graph
    equal its PRelu's exactly; a PReLU over fewer than MIN_ELEMENTS is left as it is."""
    c = 32
    per_channel = np.linspace(-1.3, 1.3, c).reshape(c, 1, 1)
    _prelu_graph(tmp_path / "big.onnx", {"a": per_channel, "b": np.array([0.25])}, [1, c, 24, 24])
    _prelu_graph(tmp_path / "small.onnx", {"a": per_channel}, [1, c, 8, 8])
    original = {p: _session(tmp_path / p) for p in ("big.onnx", "small.onnx")}
    assert len(vectorize_prelu(tmp_path / "big.onnx")) == 8  # two PReLUs of 24 * 24 * 32 = 18432 elements
    assert c * 24 * 24 >= MIN_ELEMENTS > c * 8 * 8
    assert vectorize_prelu(tmp_path / "small.onnx") == []
    ops = [n.op_type for n in onnx.load(str(tmp_path / "big.onnx")).graph.node]
    assert ops == ["Relu", "Min", "Mul", "Add"] * 2
    rng = np.random.default_rng(0)
    for name, shape in (("big.onnx", (1, c, 24, 24)), ("small.onnx", (1, c, 8, 8))):
        x = rng.standard_normal(shape).astype(np.float32)
        x.flat[:4] = [0.0, -0.0, np.inf, -np.inf]
        want = original[name].run(None, {"x": x})[0]
        got = _session(tmp_path / name).run(None, {"x": x})[0]
        finite = np.isfinite(want)  # (ONNX Runtime's PRelu gives NaN for an infinity: onnxruntime issue 28489)
        assert np.array_equal(got[finite], want[finite]), name
        assert np.isinf(got.flat[2]) and got.flat[2] > 0


@pytest.mark.slow
def test_mtcnn_onet_prelus_run_vectorized_in_both_onnx_artifacts_and_read_as_prelus(tmp_path):
    """MTCNN's pretrained output network (facenet-pytorch's weights) at its 48 x 48 input: its two PReLUs over
    46 x 46 x 32 and 21 x 21 x 64 maps are rewritten (the three smaller ones are not) in the FP32 artifact; in the
    INT8 one the first, after a 3-channel convolution, is split by sign instead (int8: ``split_prelu``) and the
    second, after a convolution too costly to double, is rewritten and kept float; the outputs match torch's; the
    kernel reader gives the same element-wise kernels as from the graph with PRelu nodes, less the split one, which
    reads as its doubled convolution with a Relu and a 1 x 1 mix; ONNX Runtime's counters of the rewritten nodes
    give each rewritten PReLU its time (in_context.kernel_times), as one row."""
    from benchmarks.zoo.models import mtcnn_onet

    model = mtcnn_onet().eval()
    x = torch.rand(1, 3, 48, 48) * 2 - 1
    with torch.no_grad():
        want = [t.numpy() for t in model(x)]
    plain = export_onnx(model, x, tmp_path / "plain.onnx", tmp_path / "export.log")
    plain_kernels = read(plain, "onnx")[0]
    assert sum(n.op_type == "PRelu" for n in onnx.load(str(plain)).graph.node) == 5
    first = Kernel("eltwise", 46, 46, 32, 32, 1)
    for precision, tol, rewritten in (("fp32", 1e-4, 2), ("int8", 0.1, 1)):
        d = lower(model, (3, 48, 48), "onnx", precision, tmp_path / precision, "onet", tmp_path / f"w{precision}")
        graph = onnx.load(str(d / "model.onnx")).graph
        marked = [n for n in graph.node if MARK in n.name]
        tiles = ["Expand"] if precision == "int8" else []  # tile_slopes: INT8 only
        assert sorted(n.op_type for n in marked) == sorted(["Relu", "Min", "Mul", "Add", *tiles] * rewritten)
        assert sum(n.op_type == "PRelu" for n in graph.node) == 3
        split = [n for n in graph.node if SPLIT in n.name and n.op_type == "Conv"]
        assert [n.name.split(SPLIT)[1] for n in split] == (["conv", "mix"] if precision == "int8" else [])
        if precision == "int8":  # kept float: no quantize or dequantize between the rewritten nodes
            made = {o: n.op_type for n in graph.node for o in n.output}
            assert all(made.get(i) in (None, "Relu", "Min", "Mul", "Expand") for n in marked
                       if n.op_type in ("Mul", "Add") for i in n.input)
        ks, unmodelled = read(d / "model.onnx", "onnx")
        assert unmodelled == {}
        want_types = Counter(k.type for k in plain_kernels) + (Counter(conv=1) if precision == "int8" else Counter())
        assert Counter(k.type for k in ks) + (Counter(eltwise=1) if precision == "int8" else Counter()) == want_types
        want_eltwise = Counter(k for k in plain_kernels if k.type == "eltwise")
        if precision == "int8":
            want_eltwise -= Counter([first])
            assert Kernel("conv", 48, 48, 3, 64, 3, act=1) in ks and Kernel("conv", 46, 46, 64, 32, 1) in ks
        assert Counter(k for k in ks if k.type == "eltwise") == want_eltwise, precision
        sess = _session(d / "model.onnx", profile=True)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        for g, w in zip(got, want):
            assert np.abs(g - w).max() <= tol * max(1.0, np.abs(w).max()), precision
        for _ in range(5):
            sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        times = kernel_times(ks, ort_layers(sess)[1], "onnx")
        big = [i for i, k in enumerate(ks) if k.type == "eltwise" and k.hin * k.win * k.cin >= MIN_ELEMENTS]
        assert [ks[i] for i in big] == [first, Kernel("eltwise", 21, 21, 64, 64, 1)][2 - rewritten:]
        assert all((times[i] or 0) > 0 for i in big), (precision, times)


@pytest.mark.slow
def test_int8_slopes_are_repeated_along_the_width_as_the_session_loads(tmp_path):
    """MTCNN O-Net (pretrained) at 48 x 48 in an INT8 file: its one PReLU over 16384 elements or more that stays
    float (64 x 21 x 21: the 3 x 3 convolution before it is too costly to double, so it is not split by sign) gets its
    slopes through an Expand to 1 x C x 1 x W, which the file stores as C values and ONNX Runtime folds as it loads (no
    Expand left in its optimized graph: the channels-last Mul then broadcasts over H alone); the outputs equal those
    of the same file with the slopes as they were, bit for bit; the FP32 file keeps them untouched."""
    import shutil

    from benchmarks.zoo.models import mtcnn_onet

    model = mtcnn_onet().eval()
    d = lower(model, (3, 48, 48), "onnx", "int8", tmp_path / "int8", "onet", tmp_path / "w8")
    m = onnx.load(str(d / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    expands = [n for n in m.graph.node if n.op_type == "Expand"]
    assert [inits[n.input[1]].tolist() for n in expands] == [[1, 64, 1, 21]]
    assert [inits[n.input[0]].size for n in expands] == [64]
    assert "1 slope(s) repeated along the width" in json.loads((d / "model.json").read_text())["meta"]["route"]
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
    assert not any(n.op_type == "Expand" for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    # the same file, the slopes as they were
    for n in expands:
        mul = next(c for c in m.graph.node if n.output[0] in c.input)
        mul.input[1] = n.input[0]
    for n in expands:
        m.graph.node.remove(n)
    onnx.save(m, str(tmp_path / "untiled.onnx"))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 48)).astype(np.float32)
    got, want = (_session(p).run(None, {"input": x}) for p in (d / "model.onnx", tmp_path / "untiled.onnx"))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert tile_slopes(tmp_path / "untiled.onnx") == 1  # and the function itself tiles them again
    f = lower(model, (3, 48, 48), "onnx", "fp32", tmp_path / "fp32", "onet", tmp_path / "w32")
    shutil.copyfile(f / "model.onnx", tmp_path / "fp32.onnx")
    assert not any(n.op_type == "Expand" for n in onnx.load(str(tmp_path / "fp32.onnx")).graph.node)


class _Blocks(torch.nn.Module):
    """Convolutions followed by PReLUs, some of which split_prelu takes and some not."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.a, self.pa = nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8)  # 27 + 16 extra MACs: split
        self.b, self.pb = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.PReLU()  # no bias, one slope: split
        self.c, self.pc = nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.PReLU()  # depthwise: kept
        self.d, self.pd = nn.Conv2d(8, 32, 3, padding=1), nn.PReLU(32)  # 72 + 64: split
        self.e, self.pe = nn.Conv2d(32, 32, 3, padding=1), nn.PReLU(32)  # 288 + 64 > SPLIT_MAX_MACS: kept
        self.f, self.pf = nn.Conv2d(32, 8, 1), nn.PReLU(8)  # its output used twice: kept
        with torch.no_grad():
            for p in (self.pa, self.pd, self.pe, self.pf):
                p.weight.copy_(torch.linspace(-1.3, 1.3, p.weight.numel()))

    def forward(self, x):
        x = self.pd(self.d(self.pc(self.c(self.pb(self.b(self.pa(self.a(x))))))))
        t = self.f(self.pe(self.e(x)))
        return self.pf(t) + t


def test_split_prelu_computes_the_same_function_and_takes_only_what_pays(tmp_path):
    """A PReLU after a plain convolution that feeds it alone, within SPLIT_MAX_MACS, becomes the convolution doubled
    by its negation, a Relu and a 1 x 1 mix: the same outputs (negative and > 1 slopes, a convolution without bias, a
    slope shared through an Identity); a depthwise convolution's, a too costly one's and a convolution's used twice
    keep their PRelu; a second pass finds nothing more to split."""
    model = _Blocks().eval()
    x = torch.randn(1, 3, 20, 24)
    path = export_onnx(model, x, tmp_path / "m.onnx", tmp_path / "export.log")
    before = _session(path).run(None, {"input": x.numpy()})[0]
    names = {n.input[0]: n.name for n in onnx.load(str(path)).graph.node if n.op_type == "PRelu"}
    assert len(names) == 6
    unnamed = onnx.load(str(path))  # another converter's file: nodes without names
    for n in unnamed.graph.node:
        n.name = ""
    onnx.save(unnamed, str(tmp_path / "unnamed.onnx"))
    assert len(split_prelu(tmp_path / "unnamed.onnx")) == 3
    onnx.save(onnx.load(str(path)), str(tmp_path / "kept.onnx"))  # a layer the recipe keeps float stays a PReLU
    assert len(split_prelu(tmp_path / "kept.onnx", keep={names[next(iter(names))]})) == 2
    np.testing.assert_allclose(_session(tmp_path / "unnamed.onnx").run(None, {"input": x.numpy()})[0], before,
                               rtol=1e-5, atol=1e-5)
    split = split_prelu(path)
    assert len(split) == 3 and split_prelu(path) == []
    graph = onnx.load(str(path)).graph
    kept = [n for n in graph.node if n.op_type == "PRelu"]
    assert len(kept) == 3 and not set(split) & {n.name for n in kept}
    assert sorted(n.name.split(SPLIT)[1] for n in graph.node if SPLIT in n.name) == sorted(["conv", "mix", "relu"] * 3)
    after = _session(path).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(after, model(x).numpy(), rtol=1e-4, atol=1e-4)
    one_d = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 5, padding=2), torch.nn.PReLU(8)).eval()  # a 1 x 1 mix over L
    with torch.no_grad():
        one_d[1].weight.copy_(torch.linspace(-1.3, 1.3, 8))
        y = torch.randn(1, 4, 50)
        path = export_onnx(one_d, y, tmp_path / "one_d.onnx", tmp_path / "export.log")
        assert len(split_prelu(path)) == 1
        np.testing.assert_allclose(_session(path).run(None, {"input": y.numpy()})[0], one_d(y).numpy(), atol=1e-5)


def test_int8_mix_weights_are_the_slopes_on_their_own_grid(tmp_path):
    """In a calibrated INT8 file each split's 1 x 1 mix holds 1 and -slope on the int8 grid that rounds the slope
    best (``regrid_mix``), not the quantizer's 7-bit one per channel (up to 0.008 off for these slopes): the weight
    1 exact and every slope within 0.001."""
    from edgeship.targets.onnx_align import _Graph

    model = _Blocks().eval()
    d = lower(model, (3, 20, 24), "onnx", "int8", tmp_path / "int8", "blocks", tmp_path / "w")
    graph = onnx.load(str(d / "model.onnx")).graph
    gr = _Graph(graph)
    mixes = [n for n in graph.node if n.name.endswith(SPLIT + "mix")]
    assert len(mixes) == 3
    for n in mixes:
        dq = gr.producer[n.input[1]]
        q, scale = gr.inits[dq.input[0]], gr.inits[dq.input[1]]
        assert q.dtype == np.int8
        w = (q.astype(np.float32) * scale.reshape(-1, 1, 1, 1)).reshape(len(scale), -1)
        slope = getattr(model, "p" + n.name.split("/")[1][1]).weight.detach().numpy()
        c = np.arange(len(scale))
        np.testing.assert_allclose(w[c, 2 * c], 1, atol=1e-6)
        np.testing.assert_allclose(w[c, 2 * c + 1], -np.broadcast_to(slope, c.shape), atol=1e-3)


def test_split_prelu_of_a_qat_export_keeps_its_grid(tmp_path):
    """A QAT export (weights int8 behind DequantizeLinear, a QuantizeLinear -> DequantizeLinear pair between each
    convolution and its PReLU) is split where the float file is, with its quantization written in: ONNX Runtime
    runs those three blocks as int8 convolutions (no float PReLU, Q or DQ left there) and the other three PReLUs
    float as before; the outputs stay as near the fake-quantized torch model's as the unsplit file's (the halves
    round on the trained grid, the slopes on the best int8 grid); the ONNX INT8 lowering of a QAT model does it
    and says so, and the kernel reader models every node."""
    import shutil

    from edgeship.calibration.preprocess import Preprocessing
    from edgeship.calibration.quant import QuantSettings
    from edgeship.pipeline.qat import QAT, calibrate_ranges, prepare_qat
    from edgeship.recipe import TargetSpec
    from edgeship.targets.base import LowerContext, get_backend
    from edgeship.targets.onnx_int8 import float_ops

    torch.manual_seed(0)
    model = _Blocks().eval()
    x = torch.randn(64, 3, 20, 24)
    qat = prepare_qat(model, x[:1])
    calibrate_ranges(qat, x)
    qat.eval()
    plain = export_onnx(qat, x[:1], tmp_path / "qat.onnx", tmp_path / "export.log")
    path = tmp_path / "split.onnx"
    shutil.copyfile(plain, path)
    assert len(split_prelu(path)) == 3 and split_prelu(path) == []
    before, after = float_ops(plain), float_ops(path)
    assert Counter(n["op"] for n in before["float_ops"]) == {"PRelu": 6}
    assert Counter(n["op"] for n in after["float_ops"]) == {"PRelu": 3}
    assert after["op_counts"]["QLinearConv"] == before["op_counts"]["QLinearConv"] + 3
    assert after["op_counts"]["QuantizeLinear"] == before["op_counts"]["QuantizeLinear"] - 3
    xt = torch.randn(16, 3, 20, 24)
    with torch.no_grad():
        want = qat(xt).numpy()
    errors = []
    for p in (plain, path):
        s = _session(p)
        got = np.concatenate([s.run(None, {"input": xt[i:i + 1].numpy()})[0] for i in range(len(xt))])
        errors.append(float(np.abs(got - want).mean()))
    assert errors[1] <= 1.5 * errors[0] and errors[1] < 0.01 * float(np.abs(want).mean())
    ctx = LowerContext(target=TargetSpec(name="t", format="onnx", precision="int8"), input_shape=(3, 20, 24),
                       calib=x.numpy(), preprocessing=Preprocessing(), labels=(), quant=QuantSettings(qat=True),
                       log_path=tmp_path / "lower.log", work_dir=tmp_path, threads=1,
                       learned=QAT.learned_quantization(qat))
    (tmp_path / "out").mkdir()
    art = get_backend("onnx", "int8").lower(qat, ctx, tmp_path / "out")
    assert "3 PReLU(s) after a convolution split by sign" in art.meta["route"]
    assert Counter(n["op"] for n in float_ops(art.path)["float_ops"]) == {"PRelu": 3}
    assert read(art.path, "onnx")[1] == {}


@pytest.mark.slow
def test_mtcnn_pnet_int8_runs_every_prelu_as_int8_convolutions(tmp_path, monkeypatch):
    """MTCNN P-Net (pretrained) at 48 x 64: in the INT8 file its three PReLUs (after convolutions of 3, 10 and 16
    input channels) are split by sign, so no operator runs in float (ONNX Runtime's optimized graph), the route says
    so, and the kernel reader models every node; the outputs stay as near torch's as those of the file with the
    PReLUs left float (mean error at most 1.5x that file's on real photo crops); the FP32 file has no split."""
    from benchmarks.zoo.make_data import crops
    from benchmarks.zoo.models import mtcnn_pnet
    from edgeship.targets import onnx_prelu
    from edgeship.targets.onnx_int8 import float_ops

    model = mtcnn_pnet().eval()
    d = lower(model, (3, 48, 64), "onnx", "int8", tmp_path / "int8", "pnet", tmp_path / "w8")
    graph = onnx.load(str(d / "model.onnx")).graph
    assert not any(n.op_type == "PRelu" or MARK in n.name for n in graph.node)
    assert sum(n.name.endswith(SPLIT + "mix") for n in graph.node) == 3
    assert "3 PReLU(s) after a convolution split by sign" in json.loads((d / "model.json").read_text())["meta"]["route"]
    assert float_ops(d / "model.onnx")["n_float_ops"] == 0
    assert read(d / "model.onnx", "onnx")[1] == {}
    monkeypatch.setattr(onnx_prelu, "SPLIT_MAX_MACS", -1)
    kept = lower(model, (3, 48, 64), "onnx", "int8", tmp_path / "kept", "pnet", tmp_path / "wk")
    assert float_ops(kept / "model.onnx")["n_float_ops"] > 0
    f = lower(model, (3, 48, 64), "onnx", "fp32", tmp_path / "fp32", "pnet", tmp_path / "w32")
    assert not any(SPLIT in n.name for n in onnx.load(str(f / "model.onnx")).graph.node)
    x = (crops(8, 48, 3, width=64).astype(np.float32) - 127.5) / 128
    with torch.no_grad():
        want = [model(torch.from_numpy(x))[i].numpy() for i in range(2)]
    errors = {}
    for name, art in (("split", d), ("kept", kept)):
        s = _session(art / "model.onnx")
        got = [np.concatenate(o) for o in zip(*(s.run(None, {"input": xi[None]}) for xi in x))]
        errors[name] = [float(np.abs(g - w).mean()) for g, w in zip(got, want)]
    assert all(e < 0.05 for e in errors["split"]), errors
    assert all(s <= 1.5 * k for s, k in zip(errors["split"], errors["kept"])), errors
