"""Depth probe (issue 7, "what would close the speed bar"): would removing whole residual blocks, on top of
channel pruning, make the demo's INT8 ONNX artifact >= 2.5x faster than the FP32 unpruned model while
staying within 0.5 pt of its top-1? Not a pass yet: an experiment with the existing passes.

    .venv/bin/python benchmarks/depth_probe.py                    # drop 2 and 4 of MobileNetV2's 4 residual blocks
    .venv/bin/python benchmarks/depth_probe.py --drop features.6,features.8
    .venv/bin/python benchmarks/depth_probe.py --drop features.3,features.5,features.6,features.8 --round-to 4 \
        --out benchmarks/results/depth_probe_round_to_4.json

For each variant, the demo checkpoint with the named InvertedResidual blocks replaced by identities goes
through the demo's passes (prune to ~0.33 of the ORIGINAL model's MACs, distill and QAT from the original
model as teacher) into one ONNX INT8 target; `edgeship export` verifies it on the 10k test images and
measures it on the host (fresh process, 1 thread). The FP32 unpruned model is measured the same way in the
same script. Writes benchmarks/results/depth_probe.json.

The recorded depth_probe*.json came from the demo recipe of commit c22d791 (channel pruning only, round_to 8,
distill 3 epochs); the demo recipe now has the `drop_blocks` pass, which this probe skips (it removes the
blocks it is told to), and its prune/distill settings, so a rerun today differs. The sweep
(benchmarks/recipes/sweep/, BENCHMARKS.md) is the pass-based successor of this probe.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import yaml
from benchlib import RESULTS, ROOT, command_line, environment, loadavg, write_json

DEMO = ROOT / "recipes" / "fashion_mnist.yaml"


def mobilenetv2_without_blocks(checkpoint: str, drop: list[str], **kwargs):
    """The factory the probe's recipes name: the trained model, the listed blocks replaced by identities."""
    import torch

    from edgeship.models.zoo import ZOO
    from edgeship.pipeline.depth import replace_by_identity

    model = ZOO["mobilenetv2"](**kwargs)
    state = torch.load(checkpoint, weights_only=True)
    model.load_state_dict(state.get("state_dict", state))
    for name in drop:
        block = model.get_submodule(name)
        if not getattr(block, "use_res", False):
            raise ValueError(f"{name} is not a residual block: removing it would change the shapes")
        replace_by_identity(model, name)
    return model


def variant_recipe(base: dict, drop: list[str], out: Path, macs_ratio: float) -> dict:
    r = copy.deepcopy(base)
    r["name"] = f"depth_probe_{len(drop)}"
    ckpt = str((ROOT / base["model"]["weights"]).resolve())
    teacher = {"zoo": base["model"]["zoo"], "args": base["model"]["args"], "weights": ckpt}
    r["model"] = {"factory": "depth_probe:mobilenetv2_without_blocks",
                  "args": {**base["model"]["args"], "checkpoint": ckpt, "drop": drop}}
    passes = []
    for p in copy.deepcopy(base["passes"]):
        if p["name"] == "drop_blocks":  # the probe removes its own blocks (the demo recipe now has this pass)
            continue
        if p["name"] == "prune":
            if macs_ratio >= 1.0:
                continue
            p["macs_ratio"] = round(macs_ratio, 4)
        if p["name"] in ("distill", "qat"):
            p["teacher"] = teacher
        passes.append(p)
    r["passes"] = passes
    r["targets"] = [{"name": "onnx-int8", "format": "onnx", "precision": "int8", "max_accuracy_drop": 100.0}]
    r["output"] = str(out)
    return r


def run(recipe: dict, path: Path, runs: int) -> dict:
    from edgeship.api import export

    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    t0 = time.perf_counter()
    report = export(path, quiet=True, measure=True, runs=runs).model_dump(mode="json")
    code = 0 if all(t["status"] == "ok" for t in report["targets"]) else 1
    t = report["targets"][0]
    m = (report.get("measurements") or {}).get(t["name"], {}).get("host") or {}
    return {"exit_code": code, "wall_s": round(time.perf_counter() - t0, 1), "target": t["name"],
            "status": t["status"], "top1": (t.get("verify") or {}).get("top1"),
            "baseline_macs": report["baseline"]["macs"], "final_macs": report["final"]["macs"],
            "final_params": report["final"]["params"], "final_top1_torch": report["final"]["top1_test"],
            "p50_ms": m.get("p50_ms"), "threads": m.get("threads"), "size_bytes": t.get("size_bytes"),
            "stages": [{k: s.get(k) for k in ("stage", "top1_val", "macs", "wall_s")} for s in report["stages"]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drop", action="append", help="comma-separated block names (repeatable: one variant each)")
    ap.add_argument("--runs", type=int, default=200, help="timed runs per host measurement")
    ap.add_argument("--recipe", type=Path, default=DEMO, help="the recipe whose model, data and passes are used")
    ap.add_argument("--round-to", type=int, help="override the prune pass's round_to (8 in the demo)")
    ap.add_argument("--out", type=Path, default=RESULTS / "depth_probe.json")
    args = ap.parse_args(argv)
    variants = [d.split(",") for d in args.drop] if args.drop else \
        [["features.6", "features.8"], ["features.3", "features.5", "features.6", "features.8"]]
    import os

    os.chdir(ROOT)
    from edgeship.models.load import model_stats

    args.recipe = args.recipe.resolve()
    base = yaml.safe_load(args.recipe.read_text())
    if args.round_to:
        for p in base["passes"]:
            if p["name"] == "prune":
                p["round_to"] = args.round_to
    shape = tuple(base["input"]["shape"])
    env = environment()
    recipe_path = args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT) else args.recipe
    result = {"benchmark": "depth_probe", "command": command_line(), "recipe": str(recipe_path),
              "environment": env, "variants": []}
    with tempfile.TemporaryDirectory(prefix="depth-probe-") as tmp:
        tmp = Path(tmp)
        ref = copy.deepcopy(base)
        ref.update(name="depth_probe_fp32", passes=[], output=str(tmp / "fp32"),
                   targets=[{"name": "onnx-fp32", "format": "onnx", "precision": "fp32"}])
        result["fp32_unpruned"] = run(ref, tmp / "fp32.yaml", args.runs)
        orig_macs = result["fp32_unpruned"]["baseline_macs"]
        for drop in variants:
            dropped = mobilenetv2_without_blocks(str(ROOT / base["model"]["weights"]), drop, **base["model"]["args"])
            ratio = 0.33 * orig_macs / model_stats(dropped, shape)["macs"]
            print(f"drop {drop}: prune to {min(ratio, 1):.3f} of the dropped model's MACs", file=sys.stderr)
            row = run(variant_recipe(base, drop, tmp / f"v{len(drop)}", ratio), tmp / f"v{len(drop)}.yaml", args.runs)
            fp = result["fp32_unpruned"]
            row.update(drop=drop, macs_vs_original=round(row["final_macs"] / orig_macs, 4),
                       drop_pt_vs_fp32=round(100 * (fp["top1"] - row["top1"]), 2) if row["top1"] else None,
                       speedup_vs_fp32=round(fp["p50_ms"] / row["p50_ms"], 2) if row["p50_ms"] else None)
            result["variants"].append(row)
            print(f"  top-1 {row['top1']} ({row['drop_pt_vs_fp32']} pt below FP32), p50 {row['p50_ms']} ms, "
                  f"{row['speedup_vs_fp32']}x", file=sys.stderr)
    result["loadavg_after"] = loadavg()
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
