"""OpenVINO IR (FP32, FP16, INT8 via NNCF on the OpenVINO model, INT8 from a QAT model's QDQ)
through the shared backend template, plus what only this backend does."""

from __future__ import annotations

import json

import numpy as np
import openvino as ov
import pytest
from template import BackendTemplate, context, digits_task, qat_model

from edgeship.calibration.quant import QuantSettings
from edgeship.errors import TargetError
from edgeship.targets.base import get_backend
from edgeship.targets.openvino import compact_xml, convert_qat, float_layers, share_constants
from helpers import x86_has_vnni


class OpenVINOTemplate(BackendTemplate):
    FORMAT = "openvino"
    RUNTIME_MODULE = RUNTIME_PACKAGE = "openvino"

    def embedded_description(self, art):
        model = ov.Core().read_model(str(art.path))
        return json.loads(model.get_rt_info(["edgeship", "description"]).astype(str))

    def test_compiled_with_thread_count_and_f32(self, lowered):
        compiled = lowered["backend"].compile(lowered["art"], threads=1)
        assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
        assert compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32  # not bf16, even where the CPU has it


class TestOpenVINOFP32(OpenVINOTemplate):
    PRECISION = "fp32"


class TestOpenVINOFP16(OpenVINOTemplate):
    PRECISION = "fp16"

    def test_ir_weights_are_fp16(self, lowered):
        xml = (lowered["art"].dir / "model.xml").read_text()
        assert 'element_type="f16"' in xml


class TestOpenVINOInt8(OpenVINOTemplate):
    PRECISION = "int8"
    QUANTIZED_IO = ("input",)  # NNCF leaves the logits in float (quantize_outputs=False)

    def test_ir_holds_int8_weights_and_quantizers(self, lowered):
        model = ov.Core().read_model(str(lowered["art"].path))
        types = [op.get_type_name() for op in model.get_ops()]
        assert types.count("FakeQuantize") >= 3
        int8_consts = [op for op in model.get_ops() if op.get_type_name() == "Constant"
                       and op.get_element_type().get_type_name() in ("i8", "u8")]
        assert len(int8_consts) >= 4  # the convolutions' and the classifier's weights


class TestOpenVINOInt8MSE(TestOpenVINOInt8):
    QUANT = QuantSettings(method="mse")


class TestOpenVINOInt8Percentile(TestOpenVINOInt8):
    QUANT = QuantSettings(method="percentile", percentile=99.99)


class TestOpenVINOInt8QAT(TestOpenVINOInt8):
    QAT = True
    QUANTIZED_IO = ("input", "output")  # the qat pass quantizes the logits too

    def test_route_is_qat_export(self, lowered):
        assert lowered["art"].meta["route"].startswith("qat")


def test_entropy_is_a_clear_error_and_writes_nothing(tmp_path):
    ctx = context(tmp_path, "openvino", "int8", QuantSettings(method="entropy"))
    (tmp_path / "out").mkdir()
    with pytest.raises(TargetError, match=r"openvino int8 calibrates with minmax, percentile, mse, not 'entropy' "
                                          r"\(entropy is available on: onnx int8\)"):
        get_backend("openvino", "int8").lower(digits_task()["model"], ctx, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_op_audit_lists_float_layers_of_a_float_model(tmp_path):
    """The audit can fail: compiled from the FP32 IR, every convolution and the classifier run in f32."""
    ctx = context(tmp_path, "openvino", "fp32", QuantSettings())
    (tmp_path / "out").mkdir()
    backend = get_backend("openvino", "fp32")
    art = backend.lower(digits_task()["model"], ctx, tmp_path / "out")
    assert backend.op_audit(art) is None
    audit = float_layers(backend.compile(art, threads=1))
    assert len(audit["float_compute_ops"]) == 4


def test_compaction_keeps_outputs_and_shrinks_the_ir(tmp_path):
    """Shared constants and unindented XML: the same model, bit for bit, in fewer bytes. The QAT route
    gives each FakeQuantize four scalar limits, input and output ranges equal, so some must merge."""
    ctx = context(tmp_path, "openvino", "int8", QuantSettings(qat=True))
    om = convert_qat(qat_model(), ctx)
    ov.save_model(om, str(tmp_path / "plain" / "model.xml"), compress_to_fp16=False)
    consts = sum(op.get_type_name() == "Constant" for op in om.get_ops())
    merged = share_constants(om)
    assert merged > 0 and sum(op.get_type_name() == "Constant" for op in om.get_ops()) == consts - merged
    ov.save_model(om, str(tmp_path / "compact" / "model.xml"), compress_to_fp16=False)
    compact_xml(tmp_path / "compact" / "model.xml")
    plain, compact = ((tmp_path / d / "model.xml").read_text() for d in ("plain", "compact"))
    assert "\n\t" not in compact and len(compact) < 0.8 * len(plain)
    x = digits_task()["x_test"]
    core = ov.Core()
    outs = [core.compile_model(str(tmp_path / d / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]
            for d in ("plain", "compact")]
    np.testing.assert_array_equal(outs[0], outs[1])


def test_nncf_keeps_recurrent_operations_in_float(tmp_path):
    """NNCF quantizes an LSTM's weights and inputs: here the CPU plugin then refuses the model (its LSTMSequence wants
    constant weights); where it runs, the state drifts step by step. quantize() leaves recurrent operations in float
    and the rest INT8."""
    import nncf
    import torch

    from edgeship.targets.openvino import nncf_dataset, nncf_parameters, quantize, recurrent_ops

    class RowLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.lstm = torch.nn.LSTM(32, 16, batch_first=True)
            self.head = torch.nn.Linear(16, 10)

        def forward(self, x):
            rows = self.conv(x).permute(0, 2, 1, 3).flatten(2)  # (N, 8 rows, 4 * 8)
            return self.head(self.lstm(rows)[0][:, -1])

    torch.manual_seed(0)
    ctx = context(tmp_path, "openvino", "int8", QuantSettings())
    model = RowLSTM().eval()

    def feeding_lstm(om) -> set[str]:
        return {inp.get_source_output().get_node().get_type_name() for op in om.get_ops()
                if op.get_type_name() == "LSTMSequence" for inp in op.inputs()}

    om = ov.convert_model(model, example_input=torch.zeros(1, 1, 8, 8))
    assert recurrent_ops(om) == ["LSTMSequence"]
    with pytest.raises(RuntimeError, match="LSTMSequence node .* expects Constant"):  # NNCF quantized its weights
        nncf.quantize(om.clone(), nncf_dataset(ctx.calib), subset_size=len(ctx.calib), **nncf_parameters(ctx.quant))
    ours = quantize(om, ctx)
    assert "FakeQuantize" not in feeding_lstm(ours)
    assert any(op.get_type_name() == "FakeQuantize" for op in ours.get_ops())  # the convolution is still INT8


@pytest.mark.slow
def test_nncf_keeps_decomposed_recurrent_cells_in_float(tmp_path):
    """The PyTorch frontend decomposes an ``nn.LSTMCell`` into MatMul/Add/Sigmoid/Tanh/Multiply: no recurrent op type
    is left, so NNCF quantized the cell (weights, the state input) until recurrent_cell_ops named its ops; the
    convolution before it stays INT8."""
    import torch

    from edgeship.targets.openvino import quantize, recurrent_cell_ops, recurrent_ops

    class RowCell(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
            self.cell = torch.nn.LSTMCell(32, 16)
            self.head = torch.nn.Linear(16, 10)

        def forward(self, x):
            rows = self.conv(x).permute(0, 2, 1, 3).flatten(2)  # (N, 8 rows, 4 * 8)
            h = c = torch.zeros(x.shape[0], 16)
            for t in range(rows.shape[1]):
                h, c = self.cell(rows[:, t], (h, c))
            return self.head(h)

    torch.manual_seed(0)
    ctx = context(tmp_path, "openvino", "int8", QuantSettings())
    model = RowCell().eval()
    om = ov.convert_model(model, example_input=torch.zeros(1, 1, 8, 8))
    cells = recurrent_cell_ops(om, model)
    assert recurrent_ops(om) == [] and cells and all(n.startswith("__module.cell/") for n in cells)

    def quantized_cell_inputs(q) -> list[str]:  # cell ops reading an int8 activation (FakeQuantize) or weight
        def int8(node) -> bool:
            return node.get_type_name() == "FakeQuantize" or "/fq_weights" in node.get_friendly_name()

        return [op.get_friendly_name() for op in q.get_ops() if op.get_friendly_name() in set(cells)
                and any(int8(i.get_source_output().get_node()) for i in op.inputs())]

    assert quantized_cell_inputs(quantize(om.clone(), ctx))  # without the names, NNCF quantizes the cell
    ours = quantize(om, ctx, cells)
    assert quantized_cell_inputs(ours) == []
    assert any(op.get_type_name() == "FakeQuantize" for op in ours.get_ops())  # the convolution is still INT8


@pytest.mark.slow  # two nncf.quantize runs with full bias correction
def test_calibrated_weights_leave_room_for_x86_int16_sums(tmp_path, monkeypatch):
    """Without VNNI OpenVINO's x86 INT8 kernels add pairs of u8 x s8 products into a saturating int16
    (VPMADDUBSW). A second layer of large weights of one sign over the digits' pixels (the first, an identity,
    gets NNCF's default fix anyway): with the overflow fix on every layer (7-bit weights) the compiled IR computes
    what its FakeQuantize graph says (the same IR with the low-precision transformations off, as the Pi 4 runs it);
    with NNCF's default (the first layer only), on such a CPU, it does not."""
    import torch

    from edgeship.devices.bench_runner import LPT_OFF
    from edgeship.targets import openvino

    x = digits_task()["x_test"]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(64))
        model[1].bias.zero_()
        model[3].weight.uniform_(0.5, 1.0)
    model.eval()

    def departure(fix: str) -> float:
        monkeypatch.setattr(openvino, "OVERFLOW_FIX", fix)
        out = tmp_path / fix
        out.mkdir()
        backend = get_backend("openvino", "int8")
        art = backend.lower(model, context(tmp_path / f"ctx-{fix}", "openvino", "int8", QuantSettings()), out)
        got = backend.load(art, threads=1)(x)[0]
        graph = ov.Core().compile_model(str(art.path), "CPU", {**openvino.RUNTIME_CONFIG, **LPT_OFF})(x)[0]
        return float(np.abs(got - graph).max() / np.abs(graph).mean())

    assert openvino.OVERFLOW_FIX == "enable"
    # no saturation: far under the 0.1 a saturating layer shows (rounding alone: under 1e-3 on the AVX2 hosts this
    # was written on, 1.5e-3 on an AVX-512 VNNI one, whose int8 kernels round differently from the float graph)
    assert departure("enable") < 1e-2
    if not x86_has_vnni():  # the layer saturates VPMADDUBSW: this test would catch the 8-bit weights
        assert departure("first_layer_only") > 0.1


def test_unset_activation_scheme_is_symmetric_on_openvino(tmp_path):
    """A recipe that does not choose gets NNCF's PERFORMANCE preset (symmetric activation ranges: the CPU plugin runs
    depthwise convolutions with an activation zero point in a slower kernel, benchmarks/results/ov_activations.json);
    ``symmetric_activations: false`` still gives the asymmetric MIXED one. Read off the IR: the range of a signed
    activation (a convolution's output with no activation after it) is symmetric exactly when asked for."""
    import torch

    from edgeship.targets.openvino import quantize, symmetric_activations

    class Separable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pw, self.dw = torch.nn.Conv2d(1, 16, 1), torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.project, self.fc = torch.nn.Conv2d(16, 8, 1), torch.nn.Linear(8 * 64, 10)

        def forward(self, x):
            y = torch.nn.functional.relu6(self.dw(torch.nn.functional.relu6(self.pw(x))))
            return self.fc(self.project(y).flatten(1))  # the projection's output is signed

    torch.manual_seed(0)
    model = Separable().eval()

    def signed_ranges(quant: QuantSettings) -> list[tuple[float, float]]:
        om = quantize(ov.convert_model(model, example_input=torch.zeros(1, 1, 8, 8)),
                      context(tmp_path / str(quant.symmetric_activations), "openvino", "int8", quant))
        return [(float(op.input_value(1).get_node().get_data().min()),
                 float(op.input_value(2).get_node().get_data().max())) for op in om.get_ops()
                if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() == "Add"]

    assert symmetric_activations(QuantSettings())
    assert not symmetric_activations(QuantSettings(symmetric_activations=False))
    (lo, hi), = signed_ranges(QuantSettings())
    assert lo < 0 < hi and lo == pytest.approx(-hi * 128 / 127, rel=1e-5)
    (lo, hi), = signed_ranges(QuantSettings(symmetric_activations=False))
    assert lo < 0 < hi and abs(lo / hi + 128 / 127) > 0.05
