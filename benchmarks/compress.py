"""Compression benchmark (issue 3): Fashion-MNIST, MobileNetV2-style and ResNet-style reference models,
prune to <= 1/3 of the baseline MACs -> distill -> QAT. Bar: final top-1 within 0.5 pt of FP32.

    .venv/bin/python benchmarks/compress.py                 # full: the recipe's settings, 60k images
    .venv/bin/python benchmarks/compress.py --quick         # reduced data/epochs (minutes, not a verdict)
    .venv/bin/python benchmarks/compress.py --models mobilenetv2 --threads 2

Each model gets a recipe derived from recipes/fashion_mnist.yaml (its `passes:` unless --passes-from
names another file); baselines are trained with `edgeship train` if their checkpoint is missing, then
`edgeship export` runs the passes (stage cache under the benchmark's run directory) and the QAT model is
exported as QDQ ONNX and run with ONNX Runtime. Writes benchmarks/results/compress.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = {
    "mobilenetv2": {"zoo": "mobilenetv2", "args": {"width_mult": 1.0}},
    "resnet": {"zoo": "resnet", "args": {"depth": 20, "width_mult": 1.0}},
}


def recipe_for(name: str, base: dict, args) -> dict:
    r = copy.deepcopy(base)
    r["name"] = f"bench_compress_{name}"
    spec = MODELS[name]
    suffix = "_quick" if args.quick else ""
    default_ckpt = ROOT / "checkpoints" / f"fashion_mnist_{name}.pt"
    ckpt = default_ckpt if (name == "mobilenetv2" and not args.quick) else \
        ROOT / "checkpoints" / f"bench_fashion_mnist_{name}{suffix}.pt"
    r["model"] = {"zoo": spec["zoo"], "args": spec["args"], "weights": str(ckpt)}
    r["train"] = {**r.get("train", {}), "threads": args.threads}
    if args.quick:  # a weaker baseline in minutes (12k images, 2 epochs); the passes run as the recipe says
        r["data"].update({"train_size": 12000, "val_size": 1000, "test_size": 2000, "calib_size": 512})
        r["train"]["epochs"] = 2
    # the QAT model lowered by the ONNX INT8 backend (QDQ export, no calibration), run by ONNX Runtime
    r["targets"] = [{"name": "onnx-qdq", "format": "onnx", "precision": "int8", "max_accuracy_drop": 1.0}]
    r["output"] = str(ROOT / "runs" / "bench" / f"compress_{name}{suffix}")
    return r


def run_one(name: str, base: dict, args, tmp: Path) -> dict:
    from edgeship.api import export, train

    recipe = recipe_for(name, base, args)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    trained = train(path, if_missing=True, quiet=args.quiet)
    report = export(path, quiet=args.quiet, measure=False).model_dump(mode="json")
    code = 0 if all(t["status"] == "ok" for t in report["targets"]) else 1
    base_r, final = report["baseline"], report["final"]
    target = report["targets"][0]
    stages = [{"stage": s["stage"], "top1_val": s["top1_val"], "macs": s["macs"], "params": s["params"],
               "wall_s": s["wall_s"], "cached": s["cached"]} for s in report["stages"]]
    compress_s = sum(s["wall_s"] for s in report["stages"])
    return {
        "model": name, "args": MODELS[name]["args"], "train_samples": report["data"]["sizes"].get("train"),
        "test_samples": report["data"]["sizes"].get("test"), "baseline_epochs": recipe["train"]["epochs"],
        "baseline_train_s": trained.get("wall_s"),  # from the checkpoint's metrics when it already existed
        "fp32_top1_test": base_r["top1_test"], "fp32_macs": base_r["macs"], "fp32_params": base_r["params"],
        "final_top1_test": final["top1_test"], "final_macs": final["macs"], "final_params": final["params"],
        "macs_ratio": round(final["macs"] / base_r["macs"], 4),
        "top1_drop_pt": round(100 * (base_r["top1_test"] - final["top1_test"]), 2),
        "onnx_qdq_top1": (target.get("verify") or {}).get("top1"), "onnx_qdq_status": target["status"],
        "onnx_qdq_kib": round(target.get("size_bytes", 0) / 1024, 1),
        "compress_s": round(compress_s, 1), "all_stages_cached": all(s["cached"] for s in stages),
        "stages": stages, "passes": recipe["passes"], "exit_code": code,
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Compression benchmark ({'quick, reduced settings' if meta['quick'] else 'full'})", "",
             f"{meta['created']}, {meta['machine']}, torch threads {meta['threads']}. "
             "Bar: final top-1 within 0.5 pt of the FP32 baseline at <= 1/3 of its MACs.", "",
             "| model | FP32 top-1 | final top-1 (torch QAT) | ONNX QDQ top-1 (ORT) | drop (pt) | MACs | MACs ratio | "
             "params | QDQ file KiB | compress s | bar |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = r["top1_drop_pt"] <= 0.5 and r["macs_ratio"] <= 1 / 3 + 1e-9
        qdq = f"{r['onnx_qdq_top1']:.4f}" if r["onnx_qdq_top1"] is not None else r["onnx_qdq_status"]
        lines.append(f"| {r['model']} | {r['fp32_top1_test']:.4f} | {r['final_top1_test']:.4f} | {qdq} | "
                     f"{r['top1_drop_pt']:+.2f} | {r['fp32_macs']:,} -> {r['final_macs']:,} | {r['macs_ratio']:.3f} | "
                     f"{r['fp32_params']:,} -> {r['final_params']:,} | {r['onnx_qdq_kib']} | {r['compress_s']}"
                     f"{' (cached)' if r['all_stages_cached'] else ''} | {'met' if ok else 'missed'} |")
    lines += ["", "Per stage (validation top-1):", ""]
    for r in rows:
        lines.append(f"- {r['model']}: " + ", ".join(f"{s['stage']} {s['top1_val']:.4f} ({s['wall_s']} s)"
                                                     for s in r["stages"]))
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--quick", action="store_true", help="reduced data and epochs (not a verdict)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes-from", type=Path, default=ROOT / "recipes" / "fashion_mnist.yaml")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)
    import platform
    import tempfile

    import torch

    torch.set_num_threads(args.threads)
    base = yaml.safe_load(args.passes_from.read_text())
    if not base.get("passes"):
        sys.exit(f"{args.passes_from} has no passes: list prune -> distill -> qat there")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            rows.append(run_one(name, base, args, Path(tmp)))
            print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("stages", "passes")}), flush=True)
    meta = {"created": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.machine()} {os.cpu_count()} cores",
            "threads": args.threads, "quick": args.quick, "command": " ".join(sys.argv)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compress.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (RESULTS / "compress.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
