"""Target backends benchmark (issue 4): every ONNX / OpenVINO artifact of the Fashion-MNIST model,
post-training quantized with each calibration method its quantizer offers, run with its own runtime
on the test split. Bar: every INT8 artifact within 1 pt of the torch model's top-1 and at most 1/3.5
of the FP32 ONNX file's size.

    .venv/bin/python benchmarks/targets.py            # the demo checkpoint (trained if missing), full test set
    .venv/bin/python benchmarks/targets.py --test-size 2000   # the same on 2000 test images (minutes)
    .venv/bin/python benchmarks/targets.py --quick    # 12k training images, 2 epochs, 2000 test images
    .venv/bin/python benchmarks/targets.py --quick --weights CKPT   # an existing checkpoint of the model

Writes benchmarks/results/targets{_quick}.json and .md. Accuracy and size only: latency belongs to
`edgeship profile`.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml
from benchlib import device_bytes, onnx_breakdown

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# (format, precision, calibration method or None, options)
VARIANTS = [
    ("onnx", "fp32", None, {}),
    ("onnx", "int8", "minmax", {}),
    ("onnx", "int8", "percentile", {}),
    ("onnx", "int8", "entropy", {}),
    ("openvino", "fp32", None, {}),
    ("openvino", "fp16", None, {}),
    ("openvino", "int8", "minmax", {}),
    ("openvino", "int8", "minmax", {"fast_bias_correction": True}),
    ("openvino", "int8", "percentile", {}),
    ("openvino", "int8", "mse", {}),
]


def recipe(args) -> dict:
    r = yaml.safe_load((ROOT / "recipes" / "fashion_mnist.yaml").read_text())
    r = copy.deepcopy(r)
    r["name"] = "bench_targets" + ("_quick" if args.quick else "")
    r["passes"] = []  # post-training quantization of the trained model
    r["train"] = {**r.get("train", {}), "threads": args.threads}
    if args.quick:  # the same split and schedule as benchmarks/compress.py --quick: one shared checkpoint
        r["data"].update({"train_size": 12000, "val_size": 1000, "test_size": 2000, "calib_size": 512})
        r["train"]["epochs"] = 2
        r["model"]["weights"] = str(ROOT / "checkpoints" / "bench_fashion_mnist_mobilenetv2_quick.pt")
    if args.weights:
        r["model"]["weights"] = str(args.weights)
    if args.test_size:
        r["data"]["test_size"] = args.test_size
    r["output"] = str(ROOT / "runs" / "bench" / r["name"])
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--samples", type=int, default=512, help="calibration samples")
    ap.add_argument("--weights", type=Path, help="use (or train into) this checkpoint instead")
    ap.add_argument("--test-size", type=int, help="a seeded subset of the test split")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from edgeship.api import train
    from edgeship.calibration.quant import QuantSettings
    from edgeship.pipeline.training import predict, top1
    from edgeship.recipe import Recipe, TargetSpec
    from edgeship.run import calib_subset, prepare
    from edgeship.targets import openvino as ov_backend
    from edgeship.targets.base import LowerContext, get_backend
    from edgeship.targets.verify import compare, run_batched

    r = recipe(args)
    tmp = Path(tempfile.mkdtemp(prefix="bench-targets-"))
    try:
        recipe_path = tmp / "recipe.yaml"
        recipe_path.write_text(yaml.safe_dump(r, sort_keys=False))
        if not Path(r["model"]["weights"]).is_file():
            print(f"training {r['model']['weights']} ...", file=sys.stderr)
            train(recipe_path, quiet=True)
        rec = Recipe.model_validate(r)
        prep = prepare(rec)
        labels, model, pre, data = prep.labels, prep.model, prep.preprocessing, prep.data
        x_test, y = data["test"].x.numpy(), data["test"].y.numpy()
        torch_logits = predict(model, data["test"].x).numpy()
        torch_top1 = top1(torch_logits, y)
        rows, fp32_size = [], None
        for fmt, precision, method, opts in VARIANTS:
            quant = QuantSettings(samples=args.samples, method=method or "minmax", seed=rec.seed)
            work = tmp / f"{fmt}-{precision}-{method}-{len(rows)}"
            (work / "out").mkdir(parents=True)
            (work / "work").mkdir()
            ctx = LowerContext(target=TargetSpec(name=work.name, format=fmt, precision=precision),
                               input_shape=tuple(rec.input.shape), calib=calib_subset(data["calib"], quant)[0],
                               preprocessing=pre, labels=labels, quant=quant, log_path=work / "log.txt",
                               work_dir=work / "work", threads=args.threads)
            saved = ov_backend.FAST_BIAS_CORRECTION
            ov_backend.FAST_BIAS_CORRECTION = opts.get("fast_bias_correction", saved)
            backend = get_backend(fmt, precision)
            t0 = time.perf_counter()
            try:
                art = backend.lower(copy.deepcopy(model), ctx, work / "out")
            finally:
                ov_backend.FAST_BIAS_CORRECTION = saved
            lower_s = time.perf_counter() - t0
            m = compare(run_batched(backend.load(art, threads=args.threads), x_test, quiet=True)[0], torch_logits, y)
            size = device_bytes(art.dir, art.files)
            if (fmt, precision) == ("onnx", "fp32"):
                fp32_size = size
            audit = backend.op_audit(art)
            extra = {"bytes": onnx_breakdown(art.path)} if fmt == "onnx" else {}
            rows.append({"format": fmt, "precision": precision, "method": method, **opts,
                         "top1": m["top1"], "drop_pt": round((torch_top1 - m["top1"]) * 100, 2),
                         "agreement": m["agreement"], "max_abs_logit_diff": m["max_abs_logit_diff"],
                         "size_bytes": size, "size_vs_fp32_onnx": round(size / fp32_size, 4),
                         "float_compute_ops": None if audit is None else len(audit["float_compute_ops"]),
                         "float_ops": None if audit is None else audit["n_float_ops"],
                         "lower_s": round(lower_s, 1), **extra})
            print(json.dumps(rows[-1]), file=sys.stderr)
        int8 = [x for x in rows if x["precision"] == "int8"]
        result = {"recipe": r, "test_samples": int(len(y)), "torch_top1": torch_top1,
                  "calibration_samples": args.samples, "rows": rows,
                  "bar": {"int8_within_1pt": all(x["drop_pt"] <= 1.0 for x in int8),
                          "int8_size_at_most_1_over_3.5": all(x["size_vs_fp32_onnx"] <= 1 / 3.5 for x in int8)}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "targets" + ("_quick" if args.quick else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Target backends on Fashion-MNIST ({result['test_samples']} test images, torch top-1 "
             f"{torch_top1:.4f}, {args.samples} calibration samples)", "",
             "| format | precision | calibration | top-1 | drop (pt) | agreement | max abs logit err | size (KiB) "
             "| size / FP32 ONNX | float convs/matmuls | lower (s) |", "|" + "---|" * 11]
    for x in rows:
        method = (x["method"] or "-") + (" (fast bias corr.)" if x.get("fast_bias_correction") else "")
        floats = "-" if x["float_compute_ops"] is None else x["float_compute_ops"]
        lines.append(f"| {x['format']} | {x['precision']} | {method} | {x['top1']:.4f} | {x['drop_pt']:.2f} | "
                     f"{x['agreement']:.4f} | {x['max_abs_logit_diff']:.3f} | {x['size_bytes'] / 1024:.0f} | "
                     f"{x['size_vs_fp32_onnx']:.3f} | {floats} | {x['lower_s']} |")
    lines += ["", f"Bar: INT8 within 1 pt: {result['bar']['int8_within_1pt']}; INT8 size <= 1/3.5 of FP32: "
              f"{result['bar']['int8_size_at_most_1_over_3.5']}", "", "ONNX bytes by content (KiB):"]
    for x in rows:
        if x["format"] == "onnx" and x["method"] in (None, "minmax"):
            parts = ", ".join(f"{k} {v / 1024:.0f}" for k, v in x["bytes"].items())
            lines.append(f"- {x['precision']}: {parts}")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(result["bar"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
