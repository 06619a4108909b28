"""Benchmark (issue 4, TFLite): the demo model lowered to every TFLite precision and verified with
LiteRT on the Fashion-MNIST test split: top-1 against the torch model, agreement, size against the
FP32 .tflite, operators left in float.

Bar: every INT8 file within 1 pt of the torch model's top-1 and at most 1/3.5 of the FP32 file.

    .venv/bin/python benchmarks/tflite_fashion_mnist.py                      # demo checkpoint, 2000 test images
    .venv/bin/python benchmarks/tflite_fashion_mnist.py --weights other.pt --test-size 10000

Variants: the recipe as it is (its passes end with `qat`), and post-training quantization of the
same pruned and distilled model (`qat` replaced by `calibrate`: min/max per-channel, per-tensor,
percentile). The stage cache is shared, so pruning and distillation run once. Writes
benchmarks/results/tflite_fashion_mnist.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "fp16", "dynamic_int8", "int8", "int8_float_io")
CALIBRATE = {"name": "calibrate"}
VARIANTS = {  # name -> (what replaces the recipe's qat pass, precisions); None: the recipe as it is
    "recipe": (None, PRECISIONS),
    "ptq": (CALIBRATE, ("fp32", "int8")),
    "ptq_per_tensor": ({**CALIBRATE, "per_channel": False}, ("fp32", "int8")),
    "ptq_percentile": ({**CALIBRATE, "method": "percentile", "percentile": 99.99}, ("fp32", "int8")),
}


def run_variant(base: dict, variant: str, tmp: Path) -> list[dict]:
    from edgeship.api import export

    extra, precisions = VARIANTS[variant]
    r = copy.deepcopy(base)
    r["name"] = f"bench_tflite_{variant}"
    r["targets"] = [{"name": f"tflite-{p}", "device": "host", "format": "tflite", "precision": p} for p in precisions]
    if extra is not None:  # post-training quantization of the same pruned and distilled model
        r["passes"] = [p for p in r.get("passes") or [] if p["name"] not in ("qat", "calibrate")] + [extra]
    r["output"] = str(tmp / variant)
    path = tmp / f"{variant}.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    report = export(path, quiet=True, measure=False).model_dump(mode="json")
    rows = []
    for t in report["targets"]:
        v = t.get("verify") or {}
        audit = t.get("op_audit") or {}
        rows.append({"variant": variant, "precision": t["precision"], "status": t["status"], "error": t["error"],
                     "top1": v.get("top1"), "torch_top1": v.get("torch_top1"),
                     "drop_pt": v.get("accuracy_drop_pt"), "agreement": v.get("agreement"),
                     "max_abs_logit_diff": v.get("max_abs_logit_diff"), "size_bytes": t.get("size_bytes"),
                     "float_ops_inside": audit.get("float_ops_inside"), "lower_s": t.get("lower_s"),
                     "n_test": v.get("n")})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "fashion_mnist.yaml"))
    ap.add_argument("--weights", default=None, help="checkpoint to use instead of the recipe's")
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tflite_fashion_mnist.json"))
    args = ap.parse_args()

    import torch

    from edgeship.run import machine_facts

    torch.set_num_threads(args.threads)
    base = yaml.safe_load(Path(args.recipe).read_text())
    if args.weights:
        base["model"]["weights"] = str(Path(args.weights).resolve())
    base["data"]["test_size"] = args.test_size
    base.setdefault("train", {})["threads"] = args.threads
    t0 = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        for variant in args.variants.split(","):
            rows += run_variant(base, variant, Path(tmp))
    for r in rows:  # against the FP32 file of the same variant
        fp32 = next((x["size_bytes"] for x in rows if x["precision"] == "fp32" and x["variant"] == r["variant"]), None)
        r["fp32_size_over_size"] = round(fp32 / r["size_bytes"], 3) if r["size_bytes"] and fp32 else None
        if r["precision"].startswith("int8"):
            r["passed"] = (r["status"] == "ok" and r["drop_pt"] is not None and r["drop_pt"] <= 1.0
                           and (r["fp32_size_over_size"] or 0) >= 3.5)
    result = {"recipe": args.recipe, "model": base["model"], "test_size": args.test_size, "rows": rows,
              "bar": {"max_drop_pt": 1.0, "min_fp32_size_over_int8_size": 3.5},
              "wall_s": round(time.perf_counter() - t0, 1), "machine": machine_facts().model_dump()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(f"{'variant':<11} {'precision':<14} {'status':<7} {'top1':>7} {'torch':>7} {'drop':>6} {'agree':>7} "
          f"{'KiB':>8} {'fp32/x':>7}")
    for r in rows:
        f = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
        print(f"{r['variant']:<11} {r['precision']:<14} {r['status']:<7} {f(r['top1'], '.4f'):>7} "
              f"{f(r['torch_top1'], '.4f'):>7} {f(r['drop_pt'], '.2f'):>6} {f(r['agreement'], '.4f'):>7} "
              f"{f(r['size_bytes'] and r['size_bytes'] / 1024, '.1f'):>8} {f(r['fp32_size_over_size'], '.2f'):>7}")


if __name__ == "__main__":
    main()
