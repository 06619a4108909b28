"""Benchmark: how far INT8 MobileNetV2 (torchvision's ImageNet weights) can agree with the float model's top-1 on the
corpus's crops (benchmarks/zoo/mobilenet_v2.yaml: its three INT8 cells in benchmarks/results/zoo.json agreed on 80%,
88% and 77% of the 75 test crops against the 95% the default tolerance asks).

    .venv/bin/python benchmarks/mobilenet_int8.py [--out benchmarks/results/mobilenet_int8.json]

The data and splits are the recipe's own (``edgeship.run.prepare``: the same 200 calibration and 75 test crops, with
ImageNet's mean/std, so calibration and test are one distribution). Each tool quantizes the same FP32 model twice, with
its own defaults (what a user of the tool gets) and with the settings edgeship's backend uses for the recipe:

- ONNX Runtime ``quantize_static`` (QDQ): defaults (MinMax, per-tensor, S8S8), MinMax per-channel U8S8 without and
  with 7-bit weights, and edgeship's (``edgeship.targets.onnx_int8.quantize_onnx``: percentile 99.99, per-channel,
  U8S8, 7-bit weights);
- NNCF ``quantize`` on the OpenVINO model: defaults, and edgeship's (``nncf_parameters``: percentile ranges);
- PT2E with litert-torch's ``PT2EQuantizer`` (per-channel symmetric, its observers; the quantizer the TFLite INT8
  target uses), run as the converted torch program (the TFLite cell itself: 0.77).

Per case: top-1 agreement with the torch model on the 75 test crops, its Wilson 95% interval, the agreement on the
crops where the float model's top-1 leads its second by >= 0.1 in probability, and how often the INT8 top-1 is in the
float top-5; plus the float model's own confidence on the crops (a near tie flips under any small perturbation).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import ROOT, command_line, environment, loadavg, write_json

sys.path.insert(0, str(ROOT))
MARGIN = 0.1


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(float(c - h), 4), round(float(c + h), 4)]


def judge(out: np.ndarray, ref: np.ndarray) -> dict:
    import torch

    top = torch.from_numpy(ref).softmax(1).topk(5, 1)
    margin = (top.values[:, 0] - top.values[:, 1]).numpy()
    agree = out.argmax(1) == ref.argmax(1)
    sure = margin >= MARGIN
    return {"agreement": round(float(agree.mean()), 4), "agreement_ci95": wilson(int(agree.sum()), len(agree)),
            f"agreement_margin_ge_{MARGIN}": round(float(agree[sure].mean()), 4), "n_margin_ge": int(sure.sum()),
            "int8_top1_in_float_top5": round(float((top.indices.numpy() == out.argmax(1)[:, None]).any(1).mean()), 4),
            "disagreement_margins": sorted(round(float(m), 3) for m in margin[~agree])}


def ort_cases(model, calib: np.ndarray, test: np.ndarray, ref: np.ndarray, work: Path) -> dict:
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgeship.calibration.quant import QuantSettings
    from edgeship.targets.onnx import export_onnx
    from edgeship.targets.onnx_int8 import OrtCalibrationReader, graph_input_names, quantize_onnx

    fp32, pre = work / "fp32.onnx", work / "pre.onnx"
    export_onnx(model, torch.from_numpy(test[:1]), fp32, work / "export.log")
    quant_pre_process(str(fp32), str(pre))
    mm = CalibrationMethod.MinMax
    cases = {"ort_defaults (MinMax, per-tensor, S8S8)": {"calibrate_method": mm},
             "ort MinMax per-channel U8S8": {"calibrate_method": mm, "per_channel": True,
                                             "activation_type": QuantType.QUInt8},
             "ort MinMax per-channel U8S8 7-bit weights": {"calibrate_method": mm, "per_channel": True,
                                                           "activation_type": QuantType.QUInt8, "reduce_range": True},
             "edgeship onnx-int8 (percentile 99.99, per-channel U8S8, 7-bit weights)": None}
    out = {}
    for i, (name, kw) in enumerate(cases.items()):
        q = work / f"int8_{i}.onnx"
        if kw is None:
            quantize_onnx(fp32, q, calib, QuantSettings(method="percentile", percentile=99.99), work, work / "q.log")
        else:
            reader = OrtCalibrationReader(calib, graph_input_names(fp32), batch_size=1)
            quantize_static(str(pre), str(q), reader, quant_format=QuantFormat.QDQ, **kw)
        s = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
        res = np.concatenate([s.run(None, {s.get_inputs()[0].name: test[i:i + 15]})[0]
                              for i in range(0, len(test), 15)])
        out[name] = judge(res, ref)
        print(name, out[name], flush=True)
    return out


def nncf_cases(model, calib: np.ndarray, test: np.ndarray, ref: np.ndarray) -> dict:
    import nncf
    import openvino as ov
    import torch

    from edgeship.calibration.quant import QuantSettings
    from edgeship.targets.openvino import nncf_dataset, nncf_parameters

    om = ov.convert_model(model, example_input=torch.from_numpy(test[:1]),
                          input=[(ov.PartialShape([-1, 3, 224, 224]), ov.Type.f32)])
    cases = {"nncf_defaults": {}, "edgeship openvino-int8 (percentile 99.99)":
             nncf_parameters(QuantSettings(method="percentile", percentile=99.99))}
    out = {}
    for name, params in cases.items():
        q = nncf.quantize(om.clone(), nncf_dataset([calib]), subset_size=len(calib), **params)
        compiled = ov.Core().compile_model(q, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        out[name] = judge(compiled(test)[compiled.outputs[0]], ref)
        print(name, out[name], flush=True)
    return out


def pt2e_case(model, calib: np.ndarray, test: np.ndarray, ref: np.ndarray) -> dict:
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    with torch.no_grad():
        prepared = prepare_pt2e(torch.export.export(model.eval(), (torch.from_numpy(calib[:1]),)).module(), quantizer)
        for i in range(len(calib)):
            prepared(torch.from_numpy(calib[i:i + 1]))
        q = convert_pt2e(prepared, fold_quantize=False)
        res = torch.cat([q(torch.from_numpy(test[i:i + 1])) for i in range(len(test))]).numpy()
    name = "pt2e litert PT2EQuantizer (per-channel symmetric)"
    out = {name: judge(res, ref)}
    print(name, out[name], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mobilenet_int8.json")
    args = ap.parse_args()
    import torch

    from edgeship.recipe import parse_recipe
    from edgeship.run import prepare

    torch.set_num_threads(1)
    p = prepare(parse_recipe(ROOT / "benchmarks" / "zoo" / "mobilenet_v2.yaml")[0])
    calib, test = p.data["calib"].x.numpy(), p.data["test"].x.numpy()
    with torch.no_grad():
        ref = p.model(torch.from_numpy(test)).numpy()
    probs = torch.from_numpy(ref).softmax(1).topk(2, 1).values.numpy()
    before, t0 = loadavg(), time.time()
    result: dict = {"command": command_line(), "environment": environment(),
                    "data": {"calibration_crops": len(calib), "test_crops": len(test),
                             "source": "benchmarks/zoo/mobilenet_v2.yaml (the recipe's own seeded split)"},
                    "float_model_on_test": {
                        "top1_prob_quartiles": np.percentile(probs[:, 0], [25, 50, 75]).round(3).tolist(),
                        "top1_minus_top2_prob_quartiles": np.percentile(probs[:, 0] - probs[:, 1],
                                                                        [25, 50, 75]).round(3).tolist(),
                        "distinct_top1_classes": len(set(ref.argmax(1).tolist()))}}
    print(result["float_model_on_test"], flush=True)
    result["cases"] = pt2e_case(p.model, calib, test, ref)
    result["cases"].update(nncf_cases(p.model, calib, test, ref))
    with tempfile.TemporaryDirectory(prefix="edgeship-mnv2-") as tmp:
        result["cases"].update(ort_cases(p.model, calib, test, ref, Path(tmp)))
    result["loadavg"] = {"before": before, "after": loadavg(), "wall_s": round(time.time() - t0, 1)}
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
