"""Size scaling (issue 4, "every INT8 artifact at most 1/3.5 of the FP32 artifact's size"): how the INT8 /
FP32 size ratio of each format depends on the model, and where that bar can hold at all.

    .venv/bin/python benchmarks/size_scaling.py            # the zoo at several widths (a few minutes)
    .venv/bin/python benchmarks/size_scaling.py --models mobilenetv2:1.0 resnet:1.0

An INT8 file holds one byte per weight, but also, per output channel, a float scale and a float (or int32)
bias, plus the graph itself; an FP32 file holds four bytes per weight and the graph. So the ratio tends to
1/4 only when weights per output channel are many (dense 3x3 convolutions over wide inputs) and the graph
is small next to the tensors. For each model this exports FP32 and INT8 (post-training, each backend's own
quantizer over 256 Fashion-MNIST calibration images) artifacts of all three formats with `edgeship export`
and records their sizes (the files a device loads, edgeship's sidecar JSON excluded), the ratio per
format, and the model's weights per output channel.

Sizes depend on the architecture only, so the models are seeded random initializations (no training: the
run takes minutes); their accuracy is not a result and is not recorded (the accuracy gate is off). The
trained demo model's ratios are in pipeline_cost.json (compressed) and targets.json (PTQ).
Writes benchmarks/results/size_scaling.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml
from benchlib import RESULTS, ROOT, command_line, device_bytes, environment, onnx_breakdown, write_json

BAR = 1 / 3.5
FORMATS = ("onnx", "openvino", "tflite")
# name:width -> zoo arguments (MobileNetV2 and ResNet-20 at width 1.0 are the reference models' shapes)
MODELS = {
    "mobilenetv2:0.5": ("mobilenetv2", {"width_mult": 0.5}),
    "mobilenetv2:1.0": ("mobilenetv2", {"width_mult": 1.0}),
    "mobilenetv2:2.0": ("mobilenetv2", {"width_mult": 2.0}),
    "mobilenetv2:4.0": ("mobilenetv2", {"width_mult": 4.0}),
    "resnet:1.0": ("resnet", {"depth": 20, "width_mult": 1.0}),
    "resnet:2.0": ("resnet", {"depth": 20, "width_mult": 2.0}),
    "resnet:4.0": ("resnet", {"depth": 20, "width_mult": 4.0}),
    "small_cnn:16": ("small_cnn", {"width": 16}),
    "small_cnn:64": ("small_cnn", {"width": 64}),
}


def recipe(zoo: str, args: dict, weights: Path, out: Path) -> dict:
    return {
        "name": "size_scaling", "seed": 0,
        "model": {"zoo": zoo, "args": args, "weights": str(weights)},
        "input": {"shape": [1, 28, 28],
                  "preprocessing": {"scale": 1 / 255, "mean": [0.2860], "std": [0.3530]}},
        "data": {"source": {"kind": "fashion_mnist"}, "val_size": 256, "calib_size": 256, "test_size": 256,
                 "seed": 0},
        "passes": [],
        "targets": [{"name": f"{fmt}-{prec}", "format": fmt, "precision": prec, "max_accuracy_drop": 100.0}
                    for fmt in FORMATS for prec in ("fp32", "int8")],
        "output": str(out),
    }


def weights_per_channel(model) -> float:
    """Weights of conv/linear layers per output channel (the quantity the INT8/FP32 ratio depends on)."""
    from torch import nn

    weights = channels = 0
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            weights += m.weight.numel()
            channels += m.weight.shape[0]
    return round(weights / channels, 1)


def measure(name: str, tmp: Path) -> dict:
    import torch

    from edgeship.api import export
    from edgeship.models.load import model_stats
    from edgeship.models.zoo import ZOO

    zoo, zargs = MODELS[name]
    torch.manual_seed(0)
    model = ZOO[zoo](**zargs)
    stats = model_stats(model, (1, 28, 28))
    stem = name.replace(":", "_")
    torch.save(model.state_dict(), tmp / f"{stem}.pt")  # export wants weights: the seeded initialization
    path = tmp / f"{stem}.yaml"
    path.write_text(yaml.safe_dump(recipe(zoo, zargs, tmp / f"{stem}.pt", tmp / stem), sort_keys=False))
    t0 = time.perf_counter()
    report = export(path, quiet=True, measure=False).model_dump(mode="json")
    code = 0 if all(t["status"] == "ok" for t in report["targets"]) else 1
    row = {"model": name, "zoo": zoo, "args": zargs, "params": stats["params"],
           "weights_per_output_channel": weights_per_channel(model), "exit_code": code,
           "wall_s": round(time.perf_counter() - t0, 1), "formats": {}}
    by = {(t["format"], t["precision"]): t for t in report["targets"]}
    for fmt in FORMATS:
        fp32, int8 = by.get((fmt, "fp32"), {}), by.get((fmt, "int8"), {})
        cell = {"status": [fp32.get("status"), int8.get("status")]}
        for prec, t in (("fp32", fp32), ("int8", int8)):
            cell[f"{prec}_bytes"] = device_bytes(tmp / stem, t["files"]) if t.get("status") == "ok" else None
        if cell["fp32_bytes"] and cell["int8_bytes"]:
            cell["ratio"] = round(cell["int8_bytes"] / cell["fp32_bytes"], 4)
            cell["bar_met"] = cell["ratio"] <= BAR
        if fmt == "onnx" and int8.get("status") == "ok":
            cell["int8_onnx_bytes"] = onnx_breakdown(tmp / stem / "targets" / "onnx-int8" / "model.onnx")
        row["formats"][fmt] = cell
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--out", type=Path, default=RESULTS / "size_scaling.json")
    args = ap.parse_args(argv)
    import os

    os.chdir(ROOT)
    result = {"benchmark": "size_scaling", "command": command_line(), "bar": round(BAR, 4),
              "environment": environment(), "models": []}
    with tempfile.TemporaryDirectory(prefix="size-scaling-") as tmp:
        for name in args.models:
            row = measure(name, Path(tmp))
            result["models"].append(row)
            cells = ", ".join(f"{fmt} {c.get('ratio')}" for fmt, c in row["formats"].items())
            print(f"{name}: {row['params']:,} params, {row['weights_per_output_channel']} weights/channel; "
                  f"INT8/FP32 {cells}", file=sys.stderr)
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
