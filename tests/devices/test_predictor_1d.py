"""1-D convolutions in the latency predictor: read alike from every format (a torch Conv1d, and a 2-D convolution
whose kernel and input are one wide, as CREPE's), sampled as probes and architectures, and named as left out by a
predictor calibrated without them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from edgeship.devices import predictor as pred
from edgeship.devices.archs import macs, probe, random_arch_1d
from edgeship.devices.calibrate import ONE_D_FORMATS, lower, probe_kernels
from edgeship.devices.kernels import ACTS, Kernel, read

CONFIGS = [("onnx", "fp32", "model.onnx"), ("onnx", "int8", "model.onnx"), ("openvino", "int8", "model.xml"),
           ("tflite", "int8", "model.tflite")]


class _Audio(nn.Module):
    """A raw-waveform stem as CREPE's (a 2-D convolution with a 64x1 kernel over a 512x1 signal, stride 4), then
    1-D layers: a depthwise-separable pair, a residual block, a global pool and a classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, (64, 1), (4, 1), (30, 0)), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv1d(32, 32, 11, 2, 5, groups=32), nn.BatchNorm1d(32), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv1d(32, 64, 1), nn.BatchNorm1d(64), nn.ReLU())
        self.res = nn.Sequential(nn.Conv1d(64, 64, 5, padding=2), nn.BatchNorm1d(64))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stem(x.unsqueeze(3)).squeeze(3)
        x = self.pw(self.dw(x))
        x = torch.relu(self.res(x) + x)
        return self.fc(x.mean(-1))


EXPECTED = [Kernel("conv1d", 512, 1, 1, 32, 64, 4, ACTS["relu"]), Kernel("dwconv1d", 128, 1, 32, 32, 11, 2),
            Kernel("conv1d", 64, 1, 32, 64, 1, 1), Kernel("conv1d", 64, 1, 64, 64, 5, 1), Kernel("add", 64, 1, 64, 64),
            Kernel("gpool", 64, 1, 64, 64), Kernel("fc", cin=64, cout=10)]


@pytest.mark.slow
def test_every_format_reads_a_1d_model_as_the_same_kernels(tmp_path):
    """A Conv1d (a 3-D tensor in ONNX and OpenVINO, a one-wide CONV_2D in TFLite) and a 64x1 kernel over a one-wide
    signal are 1-D convolutions of ``k`` taps, whatever the format; the residual add and the mean over time are the
    add and global pool kernels; the transposes litert-torch puts around each TFLite convolution to keep the torch
    layout are copy kernels (``eltwise`` of class 3), and nothing is left out."""
    torch.manual_seed(0)
    model = _Audio().eval()
    for fmt, precision, main in CONFIGS:
        d = lower(model, (1, 512), fmt, precision, tmp_path / f"{fmt}-{precision}", "m", tmp_path)
        ks, unmodelled = read(d / main, fmt)
        copies = [k for k in ks if k.type == "eltwise"]
        ks = [k for k in ks if k.type != "eltwise"]
        assert [replace(k, act=0, sin=0) for k in ks] == [replace(k, act=0) for k in EXPECTED], (fmt, precision, ks)
        assert ks[0].act == ACTS["relu"] and ks[3].act == ACTS["none"], (fmt, ks)  # the stem's ReLU, the res's none
        assert unmodelled == {} and {k.k for k in copies} <= {3} and (fmt == "tflite" or not copies), (fmt, copies)
    assert ks[0].macs == 128 * 32 * 64 and ks[0].weights == 32 * 64 and ks[1].macs == 64 * 32 * 11


@pytest.mark.slow
def test_every_format_reads_a_1d_pool_as_a_pool_along_the_length(tmp_path):
    """A MaxPool1d over (N, C, L) (a 3-D pooling in ONNX and OpenVINO, a pool over a height-one map in the TFLite
    lowering) is the same pool kernel in every format, its window along the length, not an operator left out."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 16, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(16, 24, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(24, 3)).eval()
    expected = [Kernel("conv1d", 100, 1, 4, 16, 5, 1), Kernel("pool", 100, 1, 16, 16, 2, 2),
                Kernel("conv1d", 50, 1, 16, 24, 3, 1), Kernel("gpool", 50, 1, 24, 24), Kernel("fc", cin=24, cout=3)]
    for fmt, precision, main in CONFIGS:
        d = lower(model, (4, 100), fmt, precision, tmp_path / f"{fmt}-{precision}", "m", tmp_path)
        ks, unmodelled = read(d / main, fmt)
        assert [replace(k, act=0, sin=0) for k in ks] == expected and not unmodelled, (fmt, precision, ks, unmodelled)


@pytest.mark.slow
@pytest.mark.parametrize("fmt,precision,main", [("onnx", "int8", "model.onnx"), ("onnx", "fp32", "model.onnx"),
                                                 ("openvino", "int8", "model.xml")])
def test_onnx_runtime_and_openvino_counters_give_1d_kernels_their_time_inside_the_model(tmp_path, fmt, precision,
                                                                                       main):
    """A 1-D fitting architecture runs with the runtime's per-layer counters (the real runner) and each 1-D
    convolution read from the artifact gets the time of the layer the runtime ran for it: ONNX Runtime's INT8
    kernels in (N, L, C), its float ones and OpenVINO's in (N, C, L), OpenVINO's depthwise ones as its group
    convolutions. Before, no 1-D layer fitted a kernel and their forests were the probes' alone."""
    from edgeship.devices import calibrate as cal
    from edgeship.devices import in_context

    archs = tmp_path / "archs"
    a = random_arch_1d(250_000)  # depthwise-separable pairs with long kernels, dense convolutions, residual adds
    lower(a.model, a.input_shape, fmt, precision, archs / "fit250000", "m", tmp_path)
    rows = cal.measure_layers(cal.Plan("host", [(fmt, precision)], [1], log=print), fmt, archs, 1)["fit250000"]
    ks = read(archs / "fit250000" / main, fmt)[0]
    times = in_context.kernel_times(ks, rows, fmt)
    one_d = [(k, t) for k, t in zip(ks, times) if k.type in ("conv1d", "dwconv1d")]
    assert {k.type for k, _ in one_d} == {"conv1d", "dwconv1d"}
    assert all(t is not None and t > 0 for _, t in one_d), (fmt, rows, one_d)
    assert all(t is not None and t > 0 for k, t in zip(ks, times) if k.type in ("gpool", "fc")), times


def test_an_image_convolution_with_a_non_square_kernel_is_still_left_out_and_named(tmp_path):
    """A 3x1 kernel over a 2-D image (Inception's factorized convolutions) is neither a square 2-D convolution nor a
    1-D one: no probe sampled it, so it is named, with its kernel, instead of predicted as something else."""
    model = nn.Sequential(nn.Conv2d(3, 8, (3, 1), padding=(1, 0)), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2)).eval()
    d = lower(model, (3, 16, 16), "onnx", "fp32", tmp_path / "m", "m", tmp_path)
    ks, unmodelled = read(d / "model.onnx", "onnx")
    assert [k.type for k in ks] == ["gpool", "fc"] and unmodelled == {"Conv (3x1 kernel)": 1}


def test_the_calibration_samples_1d_probes_and_architectures():
    """The probes hold 1-D convolutions (dense and depthwise, short kernels and CREPE's long strided ones) drawn from
    1-D architectures, each a Conv1d model over (channels, length); the 1-D architectures are audio and sensor
    models under the MAC cap."""
    ks = probe_kernels(400)
    one_d = [k for k in ks if k.type in ("conv1d", "dwconv1d")]
    assert {k.type for k in one_d} == {"conv1d", "dwconv1d"} and max(k.k for k in one_d) >= 128
    assert all(k.win == 1 for k in one_d) and max(k.hin for k in one_d) >= 4000
    assert {k.act for k in one_d} == set(ACTS.values())  # as the 2-D ones: a runtime may not fuse them all alike
    m, shape = probe(Kernel("dwconv1d", 1000, 1, 32, 32, 11, 2, ACTS["relu6"]))
    conv = m[0][0]
    assert isinstance(conv, nn.Conv1d) and conv.groups == 32 and shape == (32, 1000)
    assert isinstance(m[0][-1], nn.ReLU6) and m(torch.zeros(1, *shape)).shape == (1, 32)
    for seed in range(250_000, 250_006):
        a = random_arch_1d(seed)
        assert len(a.input_shape) == 2 and macs(a.model, a.input_shape) <= 250e6
        assert a.model(torch.zeros(1, *a.input_shape)).shape == (1, 10)
    assert set(ONE_D_FORMATS) == {"onnx", "openvino", "tflite"}  # every format: the torch.fx lowering takes Conv1d


def test_a_predictor_calibrated_without_1d_kernels_names_them_as_left_out():
    """A configuration with no 1-D forest (TFLite's, or a file calibrated before them) predicts the kernels it has
    and names the 1-D ones as left out, so no budget passes on the prediction; a correction fitted without a 1-D
    group weighs 1-D kernels as dense convolutions."""
    grid = [(h, c) for h in (8, 16, 32) for c in (8, 16, 32)]
    kinds = {t: [Kernel(t, h, h, c, c, 3, 1) for h, c in grid] for t in ("conv", "gpool")}
    kinds["fc"] = [Kernel("fc", cin=c * h, cout=c) for h, c in grid]
    stats = pred.ErrorStats(n=20, n_archs=20, mape_pct=4.0, within_10pct=0.95, upper_pct=8.0, max_abs_pct=12.0)
    unit = pred.Correction(a=0, b={"conv": 1.0, "dwconv": 1.0, "other": 1.0}, c=0)
    cfg = pred.ConfigPredictor(format="tflite", precision="int8", threads=1, forests={
        t: pred.fit_forest(ks, [k.macs / 1e7 + 0.01 for k in ks]) for t, ks in kinds.items()}, p50=unit, p90=unit,
        error_p50=stats, error_p90=stats, n_probes=27, n_fit_archs=3)
    pf = pred.new_file("rpi4", {})
    pf.configs[pred.key("tflite", "int8", 1)] = cfg
    ks = [Kernel("conv", 16, 16, 16, 16, 3, 1), Kernel("conv1d", 1000, 1, 16, 32, 9, 2),
          Kernel("dwconv1d", 500, 1, 32, 32, 9, 1), Kernel("gpool", 500, 1, 32, 32), Kernel("fc", cin=32, cout=10)]
    m = pred.predict_kernels(pf, ks, "tflite", "int8", 1, {"TRANSPOSE": 2})
    assert m.prediction is not None and m.prediction.kernels == 3
    assert m.prediction.unmodelled_ops == {"TRANSPOSE": 2, "conv1d (not calibrated)": 1,
                                           "dwconv1d (not calibrated)": 1}
    assert "LEAVES OUT" in (m.method or "") and "conv1d (not calibrated) x1" in (m.method or "")
    without = pred.predict_kernels(pf, [ks[0], *ks[3:]], "tflite", "int8", 1)
    assert m.p50_ms == without.p50_ms  # the 1-D kernels add nothing they were not calibrated for
    assert unit.weight("conv1d") == 1.0 and pred.Correction(a=0, b={"conv": 2.5}, c=0).weight("conv1d") == 2.5
    assert pred.group_of(ks[1]) == pred.group_of(ks[2]) == "conv1d"


def test_a_1d_model_at_two_threads_weighs_its_own_kernel_sums_or_ratio_where_the_correction_says_so():
    """At two threads the correction scales the one-thread prediction; a second thread that gains a 1-D model less
    than a 2-D one (a 1-D model here takes 0.9x its one-thread time at two threads, a 2-D one 0.5x) is then missed by
    that ratio. With ``base_2d`` the 1-D kernels weigh by their own two-thread sums and the ratio is the 2-D part's;
    with ``base_1d`` the 1-D models' one-thread prediction has a weight of its own: each fit recovers both ratios,
    and the prediction of a new 1-D model follows them; a file without them is read as before."""
    rng = np.random.default_rng(0)
    archs, base_all, base_2d, measured = [], [], [], []
    for i in range(24):
        one_d = i % 3 == 0
        conv = Kernel("conv1d" if one_d else "conv", 64, 1 if one_d else 64, 16, 16, 3, 1)
        ks = [conv, Kernel("fc", cin=16, cout=10)]
        t1 = float(rng.uniform(1.0, 5.0))  # the one-thread time of the convolution; the fc 0.01 ms
        t2 = 0.9 * t1 if one_d else 0.5 * t1
        archs.append((ks, [t2, 0.01]))  # the two-thread kernel forests' times
        base_all.append(t1 + 0.01)
        base_2d.append(0.01 if one_d else t1 + 0.01)
        measured.append(t2 + 0.005)
    scaled = pred.fit_correction(archs, measured, base=base_all)
    own = pred.fit_correction(archs, measured, base=base_2d, base_2d=True)
    assert own.base_2d and not scaled.base_2d
    assert own.base == pytest.approx(0.5, rel=0.02) and own.b["conv1d"] == pytest.approx(1.0, rel=0.02)
    err = lambda c, base: [abs(c.apply(ks, ms, b) / m - 1) for (ks, ms), b, m in zip(archs, base, measured)]  # noqa: E731
    assert max(err(own, base_2d)) < 0.02 < max(err(scaled, base_all))
    with pytest.raises(ValueError):  # a file's fit without 1-D architectures cannot weigh them on their own
        pred.fit_correction(archs[1:3], measured[1:3], base=base_2d[1:3], base_2d=True)
    # ``base_1d``: the 1-D models' one-thread prediction with a weight of its own (0.9 here, 0.5 for the rest)
    ratio = pred.fit_correction(archs, measured, base=base_all, base_1d=True)
    assert ratio.base == pytest.approx(0.5, rel=0.02) and ratio.base_1d == pytest.approx(0.9, rel=0.02)
    assert max(err(ratio, base_all)) < 0.02 and scaled.base_1d is None
    few = [i for i in range(24) if i % 3 or i < 9]  # 3 1-D architectures: too few for a weight of their own
    alone = pred.fit_correction([archs[i] for i in few], [measured[i] for i in few], base=[base_all[i] for i in few],
                                base_1d=True)
    assert alone.base_1d is None and pred.Correction.model_validate(
        {"a": 0.0, "b": {}, "c": 0.0, "base": 0.5}).apply(*archs[0], base_all[0]) == pytest.approx(0.5 * base_all[0])


def _stats(n: int, upper: float) -> pred.ErrorStats:
    return pred.ErrorStats(n=3 * n, n_archs=n, mape_pct=upper / 2, within_10pct=0.9, upper_pct=upper,
                           max_abs_pct=2 * upper)


def _onnx_fp32_file() -> pred.PredictorFile:
    """An ONNX FP32 predictor with 2-D and 1-D convolution forests and no family errors (a file before them)."""
    grid = [(h, c) for h in (8, 16, 32) for c in (8, 16, 32)]
    kinds = {t: [Kernel(t, h, h if t == "conv" else 1, c, c, 3, 1) for h, c in grid] for t in ("conv", "conv1d")}
    kinds["fc"] = [Kernel("fc", cin=c * h, cout=c) for h, c in grid]
    kinds["gpool"] = [Kernel("gpool", h, 1, c, c) for h, c in grid]
    unit = pred.Correction(a=0, b=dict.fromkeys(pred.GROUPS, 1.0), c=0)
    cfg = pred.ConfigPredictor(format="onnx", precision="fp32", threads=1, forests={
        t: pred.fit_forest(ks, [k.macs / 1e7 + 0.01 for k in ks]) for t, ks in kinds.items()}, p50=unit, p90=unit,
        error_p50=_stats(30, 8.0), error_p90=_stats(30, 9.0), n_probes=36, n_fit_archs=3)
    pf = pred.new_file("rpi4", {})
    pf.configs[pred.key("onnx", "fp32", 1)] = cfg
    return pf


def test_a_1d_prediction_carries_the_1d_error_and_backs_no_budget_without_enough_1d_architectures():
    """A prediction carries the error of its model's family: a 1-D model's is the one measured on the validation
    architectures with 1-D convolutions, a 2-D model's that of the others. A 1-D model whose file has fewer than
    ``MIN_FAMILY_ARCHS`` 1-D ones behind it, or no family errors at all (a file before them, whose pooled error
    was mostly 2-D models'), gets its prediction but no budget passes on it: it is unverified and says why."""
    from edgeship.devices.budgets import _predicted_row
    from edgeship.record import BudgetResult

    pf = _onnx_fp32_file()
    cfg = pf.configs[pred.key("onnx", "fp32", 1)]
    two_d = [Kernel("conv", 16, 16, 16, 16, 3, 1), Kernel("fc", cin=16, cout=10)]
    one_d = [Kernel("conv1d", 500, 1, 16, 32, 9, 1), Kernel("fc", cin=32, cout=10)]

    def judged(ks: list[Kernel]) -> tuple:
        m = pred.predict_kernels(pf, ks, "onnx", "fp32", 1)
        row = BudgetResult(target="t", budget="latency_ms_p90", limit=1e6, passed=False, source="predicted")
        _predicted_row(row, "latency_ms_p90", m)
        assert m.prediction is not None
        return m, m.prediction, row

    m, p, row = judged(one_d)  # a file before family errors: the pooled error is not a 1-D model's
    assert p.unvalidated and p.error_family is None and row.status == "unverified" and not row.passed
    assert "no error of its own for 1-D models" in (m.method or "") and "no budget passes" in (m.method or "")
    m, p, row = judged(two_d)
    assert not p.unvalidated and p.upper_pct == 8.0 and row.status == "pass"
    cfg.family_errors = {"2d": pred.FamilyError(p50=_stats(20, 6.0), p90=_stats(20, 7.0)),
                         "1d": pred.FamilyError(p50=_stats(pred.MIN_FAMILY_ARCHS - 1, 30.0), p90=_stats(7, 35.0))}
    m, p, row = judged(one_d)
    assert p.unvalidated and f"only {pred.MIN_FAMILY_ARCHS - 1} 1-D" in p.unvalidated and row.status == "unverified"
    m, p, row = judged(two_d)  # the 2-D model's own error, not the pooled one
    assert p.error_family == "2d" and p.upper_pct == 6.0 and p.p90_upper_pct == 7.0 and row.status == "pass"
    cfg.family_errors["1d"] = pred.FamilyError(p50=_stats(12, 30.0), p90=_stats(12, 35.0))
    m, p, row = judged(one_d)
    assert not p.unvalidated and p.error_family == "1d" and p.n_validation == 12 and row.status == "pass"
    assert p.p90_upper_ms == pytest.approx(m.p90_ms * 1.35, rel=1e-3) and "12 1-D architectures" in (m.method or "")
    assert "12 unseen 1-D architectures" in (row.note or "")


def test_a_search_refuses_to_score_a_1d_model_on_an_error_without_enough_1d_architectures(tmp_path):
    """A search for a device it cannot reach scores candidates on the prediction's upper bound: a 1-D model whose
    predictor states no 1-D error stops it with one line and the fix, rather than ranking candidates on a bound
    that does not hold for them; with a 1-D error behind it, the candidate is scored."""
    from types import SimpleNamespace

    from edgeship.errors import EdgeshipError
    from edgeship.search import Search

    pf = _onnx_fp32_file()
    s = object.__new__(Search)
    s.spec, s.pf = SimpleNamespace(name="pi"), pf
    s.target = SimpleNamespace(format="onnx", precision="fp32")
    s.device = SimpleNamespace(name="rpi4", threads=1)
    s.ctx, s.recipe = SimpleNamespace(input_shape=(4, 100)), SimpleNamespace(seed=0)
    model = nn.Sequential(nn.Conv1d(4, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(16, 3)).eval()
    with pytest.raises(EdgeshipError, match="error does not hold for this model") as e:
        s._predicted(model, tmp_path / "c", finalist=False)
    assert "--calibrate --device rpi4" in (e.value.fix or "")
    pf.configs[pred.key("onnx", "fp32", 1)].family_errors["1d"] = pred.FamilyError(p50=_stats(12, 30.0),
                                                                                  p90=_stats(12, 35.0))
    scored = s._predicted(model, tmp_path / "d", finalist=False)
    assert scored.source == "predicted" and scored.latency_ms > 0
