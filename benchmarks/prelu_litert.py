"""A PReLU's slopes on LiteRT: one slope against a slope per channel, by channel count.

litert-torch writes a PReLU as RELU, MUL, MUL, SUB (float, also inside an INT8 file); with a slope per channel,
each its own (as trained models hold them: MTCNN's), the slopes are a (1, 1, 1, C) tensor that XNNPACK broadcasts
per position of the channels-last map; one slope (or PyTorch's equal initial slopes, which LiteRT folds into one)
is a scalar. For each channel count, a model of a 1x1 depthwise convolution (so LiteRT runs the PReLU
channels-last, as after any convolution in a model), the PReLU and a global pool over a ``--size`` map, lowered by
edgeship's TFLite INT8 backend with one slope and with per-channel slopes drawn in [-0.5, 0.5]; each file timed by
edgeship's runner (``bench_runner --profile``, a fresh process, 1 thread, ``--runs`` timed runs, then as many with
LiteRT's per-operator profiler): the model's p50 and the slowest MUL (the slopes' one), in ms and per position.
Why the latency predictor's PReLUs are per-channel (``archs.trained_prelu``; notes.md).

    .venv/bin/python benchmarks/prelu_litert.py [--size 118 158] [--out benchmarks/results/prelu_litert.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from benchlib import RESULTS, command_line, environment, loadavg, write_json  # noqa: E402

CHANNELS = (4, 8, 10, 12, 16, 24, 32, 64)


def timed(directory: Path, runs: int) -> dict:
    r = subprocess.run([sys.executable, "-m", "edgeship.devices.bench_runner", "--dir", str(directory), "--runs",
                        str(runs), "--profile", str(runs)], capture_output=True, text=True, check=True)
    res = json.loads(r.stdout.strip().splitlines()[-1].split("EDGESHIP_BENCH ", 1)[1])
    muls = [layer["ms"] for layer in res["profile"]["layers"] if layer["op"].startswith("Multiply")]
    return {"p50_ms": res["p50_ms"], "slowest_mul_ms": max(muls), "profile_source": res["profile"]["source"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, nargs=2, default=(118, 158), help="the map's height and width (default: "
                   "MTCNN P-Net's first PReLU at 120 x 160)")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--out", type=Path, default=RESULTS / "prelu_litert.json")
    args = p.parse_args()
    import torch
    from torch import nn

    from edgeship.devices.calibrate import lower

    h, w = args.size
    env, load = environment(), loadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in CHANNELS:
            row: dict = {"channels": c, "positions": h * w}
            for slopes in ("one", "per_channel"):
                prelu = nn.PReLU(1 if slopes == "one" else c)
                with torch.no_grad():
                    prelu.weight.copy_(torch.rand(prelu.weight.shape, generator=torch.Generator().manual_seed(c)) - 0.5)
                model = nn.Sequential(nn.Conv2d(c, c, 1, groups=c), prelu, nn.AdaptiveAvgPool2d(1), nn.Flatten())
                d = lower(model.eval(), (c, h, w), "tflite", "int8", Path(tmp) / f"{c}-{slopes}", f"c{c}",
                          Path(tmp) / "work")
                t = timed(d, args.runs)
                row[slopes] = {**t, "mul_ns_per_position": round(t["slowest_mul_ms"] * 1e6 / (h * w), 2)}
            row["mul_ratio"] = round(row["per_channel"]["slowest_mul_ms"] / row["one"]["slowest_mul_ms"], 2)
            print(row, file=sys.stderr)
            rows.append(row)
    write_json(args.out, {"command": command_line(), "environment": env, "loadavg_before": load,
                          "loadavg_after": loadavg(), "map": [h, w], "runs": args.runs, "method": __doc__,
                          "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
