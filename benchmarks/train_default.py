"""Benchmark: how long `edgeship train` takes on the demo recipe and the test top-1 it reaches.

Bar (issue 2): the default MobileNetV2-style model reaches >= 90% top-1 on the Fashion-MNIST
test set within 5 minutes on 2 CPU cores. Run on an otherwise idle machine:

    .venv/bin/python benchmarks/train_default.py [--recipe recipes/fashion_mnist.yaml]

Writes benchmarks/results/train_default.json. The checkpoint goes to a temporary path, so
the cached demo checkpoint is untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "fashion_mnist.yaml"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_default.json"))
    args = ap.parse_args()

    from edgeship.api import train
    from edgeship.run import machine_facts

    recipe = yaml.safe_load(Path(args.recipe).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        recipe["model"]["weights"] = str(Path(tmp) / "ckpt.pt")
        path = Path(tmp) / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe))
        load1 = os.getloadavg()[0]
        t0 = time.perf_counter()
        metrics = train(path, quiet=True)
        total = time.perf_counter() - t0
    result = {
        "recipe": args.recipe, "model": recipe["model"], "train": recipe.get("train"),
        "test_top1": metrics["test_top1"], "val_top1_per_epoch": metrics["val_top1_per_epoch"],
        "fit_wall_s": metrics["wall_s"], "total_wall_s": round(total, 1), "threads": metrics["threads"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loadavg_1min_at_start": load1, "machine": machine_facts().model_dump(),
        "bar": {"top1": 0.90, "seconds": 300},
        "passed": metrics["test_top1"] >= 0.90 and total <= 300,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("test_top1", "fit_wall_s", "total_wall_s", "passed")}))


if __name__ == "__main__":
    main()
