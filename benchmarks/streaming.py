"""Benchmark: peak RAM of `edgeship train` on an .npz loaded whole against the same file streamed
(`data.source.stream: true`: memory-mapped, read per batch).

    .venv/bin/python benchmarks/streaming.py [--tile 4] [--train-size 30000] [--work /tmp/bench_stream]
        [--out benchmarks/results/streaming.json]

The data: Fashion-MNIST's 60k training images repeated ``--tile`` times in one uncompressed .npz (uint8,
(N, 28, 28)), so the file is larger than the training split the model sees (``--train-size``): a loaded run
holds the whole pool in memory, a streamed one the batches it reads. Each run is a fresh `python -m edgeship
--json train` process (small_cnn, 1 epoch); its peak RSS is the training loop's own getrusage at the end, which
covers loading. The machine is shared: wall times are recorded with os.getloadavg() and carry no claim.

Writes benchmarks/results/streaming.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from benchlib import ROOT, command_line, environment, loadavg, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=4)
    ap.add_argument("--train-size", type=int, default=30000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_stream"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "streaming.json")
    args = ap.parse_args()
    from edgeship.calibration.datasets import load_fashion_mnist

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "fashion_tiled.npz"
    train, _ = load_fashion_mnist(None)
    x, y = np.tile(train.x[:, 0], (args.tile, 1, 1)), np.tile(train.y, args.tile)
    np.savez(data, x=x, y=y)
    del x, y, train
    rows = []
    for stream in (False, True):
        recipe = {
            "name": "stream_bench", "seed": 0,
            "model": {"zoo": "small_cnn", "args": {"width": 8}, "weights": str(args.work / f"ckpt_{stream}.pt")},
            "input": {"shape": [1, 28, 28], "preprocessing": {"scale": 1 / 255, "mean": [0.286], "std": [0.353]}},
            "data": {"source": {"kind": "npz", "path": str(data), "stream": stream}, "val_size": 1000,
                     "calib_size": 100, "test_size": 2000, "train_size": args.train_size, "test_fraction": 0.05},
            "train": {"epochs": 1, "batch_size": 256, "lr": 0.003},
            "output": str(args.work / "runs" / "x"),
        }
        path = args.work / f"recipe_{stream}.yaml"
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        before = loadavg()
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "edgeship", "--json", "train", str(path)], capture_output=True,
                           text=True, cwd=ROOT, env=os.environ)
        if p.returncode != 0:
            raise SystemExit(p.stderr[-3000:])
        m = json.loads(p.stdout)
        rows.append({"stream": stream, "peak_rss_mb": m["peak_rss_mb_per_process"][0], "test_top1": m["test_top1"],
                     "train_samples": m["train_samples"], "fit_wall_s": m["wall_s"],
                     "command_wall_s": round(time.perf_counter() - t0, 1), "loadavg_before": before,
                     "loadavg_after": loadavg()})
        print(rows[-1], file=sys.stderr)
    write_json(args.out, {
        "command": command_line(), "environment": environment(),
        "data": {"file": "Fashion-MNIST train x tile, uint8 (N, 28, 28), np.savez", "tile": args.tile,
                 "samples": int(60000 * args.tile), "file_mb": round(data.stat().st_size / 2**20, 1)},
        "runs": rows,
        "note": "peak RSS of the whole `edgeship train` process (getrusage at the end of training: covers loading "
                "the data, building the splits and training); times on a shared 2-core machine carry no claim",
    })
    data.unlink()
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
