"""`prune`'s spatial_weight: at the same MACs, how much faster is the INT8 model when the channels on large
feature maps are pruned harder? (Accuracy after recovery training is a peers.py question: see the
recipes in benchmarks/recipes/sweep/ with spatial_weight.)

    .venv/bin/python benchmarks/spatial_weight.py
    .venv/bin/python benchmarks/spatial_weight.py --weights 0 0.5 1 --macs 0.5 0.45
    .venv/bin/python benchmarks/spatial_weight.py --formats onnx   # time ONNX Runtime alone

The demo's structure: the MobileNetV2-style reference model (seeded weights: latency does not depend on
them), the four blocks `drop_blocks` removes from the trained checkpoint, then `prune` to each
macs_ratio with each spatial_weight (round_to 4, 3 steps, no fine-tuning), post-training INT8 for
ONNX Runtime, OpenVINO and LiteRT with `edgeship export`. Each
artifact is timed by edgeship's bench_runner (a fresh subprocess, 1 thread, 300 runs), the artifacts
interleaved and rotated over 5 repeats; speed-ups are the median over repeats of each repeat's ratio to the
spatial_weight 0 model at the same macs_ratio. Writes benchmarks/results/spatial_weight.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from benchlib import RESULTS, ROOT, command_line, environment, write_json

FORMATS = ("onnx", "openvino", "tflite")
# the blocks drop_blocks removes from the trained demo checkpoint (runs/fashion_mnist/report.json); named
# here because on seeded weights its greedy choice would differ
DEMO_DROPPED = ["features.3", "features.6", "features.8", "features.7.conv.1"]


def recipe(weights: Path, macs: float, w: float, out: Path, formats=FORMATS) -> dict:
    return {
        "name": out.name, "seed": 0,
        "model": {"zoo": "mobilenetv2", "args": {"width_mult": 1.0}, "weights": str(weights)},
        "input": {"shape": [1, 28, 28], "preprocessing": {"scale": 1 / 255, "mean": [0.2860], "std": [0.3530]}},
        "data": {"source": {"kind": "fashion_mnist"}, "val_size": 256, "calib_size": 256, "test_size": 256,
                 "seed": 0},
        "passes": [{"name": "drop_blocks", "blocks": 4, "samples": 256, "candidates": DEMO_DROPPED},
                   {"name": "prune", "macs_ratio": macs, "spatial_weight": w, "importance": "l2", "round_to": 4,
                    "steps": 3, "fine_tune": {"epochs": 0}}],
        "targets": [{"name": f"{f}-int8", "format": f, "precision": "int8", "max_accuracy_drop": 100.0}
                    for f in FORMATS if f == "onnx" or f in formats],
        "output": str(out),
    }


def p50(art_dir: Path, fmt: str, threads: int, runs: int, **measure) -> float:
    """The artifact's p50 from edgeship's host measurement (a fresh bench_runner subprocess; ``measure``: more
    options of ``measure_host``, such as ``profile=0``)."""
    from edgeship.devices.measure import RunArtifact, measure_host

    art = RunArtifact(art_dir.parent.parent.name + "/" + art_dir.name, "host", fmt, "int8", art_dir, [], "")
    return float(measure_host(art, threads, runs, 20, **measure).p50_ms)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--macs", type=float, nargs="+", default=[0.5, 0.45, 0.4])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS),
                    help="the INT8 artifacts to time (default: all three; ONNX is always exported: the widths are "
                         "read from it)")
    ap.add_argument("--out", type=Path, default=RESULTS / "spatial_weight.json")
    args = ap.parse_args(argv)
    if 0.0 not in args.weights:
        args.weights = [0.0, *args.weights]
    os.chdir(ROOT)
    import torch

    from edgeship.api import export
    from edgeship.models.zoo import ZOO

    rows: dict[tuple[float, float], dict] = {}
    with tempfile.TemporaryDirectory(prefix="spatial-weight-") as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        torch.save(ZOO["mobilenetv2"](width_mult=1.0).state_dict(), tmp / "seeded.pt")
        for macs in args.macs:
            for w in args.weights:
                name = f"m{macs}_w{w}"
                want = recipe(tmp / "seeded.pt", macs, w, tmp / name, args.formats)
                (tmp / f"{name}.yaml").write_text(yaml.safe_dump(want))
                record = export(tmp / f"{name}.yaml", quiet=True, measure=False)
                report = record.model_dump(mode="json")
                if not record.ok:
                    print(f"{name}: export failed", file=sys.stderr)
                    return 1
                prune = next(s for s in report["stages"] if s["stage"].endswith("prune"))
                rows[(macs, w)] = {"macs_ratio": macs, "spatial_weight": w, "macs": prune["macs"],
                                   "params": prune["params"], "conv_widths": conv_widths(tmp / name),
                                   "p50_repeats": {f: [] for f in args.formats}}
        arts = [(key, f) for key in rows for f in args.formats]
        for rep in range(args.repeats):
            k = rep * len(arts) // args.repeats
            for key, f in arts[k:] + arts[:k]:
                d = tmp / f"m{key[0]}_w{key[1]}" / "targets" / f"{f}-int8"
                rows[key]["p50_repeats"][f].append(p50(d, f, args.threads, args.runs))
            print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)
    for (macs, w), row in rows.items():
        base = rows[(macs, 0.0)]["p50_repeats"]
        row["p50_ms"] = {f: round(statistics.median(v), 4) for f, v in row["p50_repeats"].items()}
        row["speedup_vs_uniform"] = {
            f: round(statistics.median(b / a for a, b in zip(row["p50_repeats"][f], base[f])), 3)
            for f in args.formats}
        print(f"macs_ratio {macs} spatial_weight {w}: MACs {row['macs']:,}, p50 {row['p50_ms']}, "
              f"vs uniform {row['speedup_vs_uniform']}", file=sys.stderr)
    write_json(args.out, {"benchmark": "spatial_weight", "command": command_line(), "environment": environment(),
                          "method": {"threads": args.threads, "formats": args.formats, "runs": args.runs,
                                     "repeats": args.repeats,
                                     "model": "mobilenetv2 (seeded), drop_blocks 4, prune round_to 4, 3 steps, "
                                              "no fine-tuning; post-training INT8"},
                          "rows": list(rows.values())})
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def conv_widths(run_dir: Path) -> list[int]:
    """Output channels of each convolution in the exported INT8 ONNX model (the structure pruned)."""
    import onnx

    model = onnx.load(str(run_dir / "targets" / "onnx-int8" / "model.onnx"))
    return [int(t.dims[0]) for t in model.graph.initializer if len(t.dims) == 4]


if __name__ == "__main__":
    sys.exit(main())
