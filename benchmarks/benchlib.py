"""Helpers shared by benchmarks/peers.py and benchmarks/pipeline_cost.py: recipe derivation for
--quick runs, the machine's facts, and result files written atomically."""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# the reference models on Fashion-MNIST (the demo recipe holds the MobileNetV2-style one)
RECIPES = {
    "mobilenetv2": ROOT / "recipes" / "fashion_mnist.yaml",
    "resnet": ROOT / "benchmarks" / "recipes" / "fashion_mnist_resnet.yaml",
}
# --quick on Fashion-MNIST: the split and schedule benchmarks/compress.py --quick and
# benchmarks/targets.py --quick use, so their `bench_fashion_mnist_<model>_quick.pt` checkpoints are shared
QUICK_DATA = {"train_size": 12000, "val_size": 1000, "test_size": 2000, "calib_size": 512}
QUICK_EPOCHS, QUICK_PASS_SAMPLES = 2, 3000


def quick_recipe(recipe: dict, model_name: str) -> dict:
    """Reduced data and schedules (minutes, not a verdict). Fashion-MNIST recipes get the quick split and
    their own quick checkpoint; every recipe's passes are capped at 1 epoch and QUICK_PASS_SAMPLES samples."""
    r = copy.deepcopy(recipe)
    if r["data"]["source"]["kind"] == "fashion_mnist":
        r["data"].update(QUICK_DATA)
        r.setdefault("train", {})["epochs"] = QUICK_EPOCHS
        r["model"]["weights"] = str(ROOT / "checkpoints" / f"bench_fashion_mnist_{model_name}_quick.pt")
    for p in r.get("passes", []):
        for cfg in (p, p.get("fine_tune") or {}):
            if cfg.get("samples"):
                cfg["samples"] = min(cfg["samples"], QUICK_PASS_SAMPLES)
            if "epochs" in cfg:
                cfg["epochs"] = min(cfg["epochs"], 1)
    return r


def environment() -> dict:
    """Machine facts (edgeship.run.machine_facts), CPU features, load average and runtime versions."""
    from importlib import metadata

    from edgeship.run import machine_facts
    from edgeship.targets.bench_runner import cpu_features

    try:
        features = cpu_features(Path("/proc/cpuinfo").read_text())
    except OSError:
        features = []
    versions = {}
    for pkg in ("onnxruntime", "openvino", "nncf", "tensorflow", "ai-edge-litert", "onnx", "torch-pruning", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {**machine_facts(), "cpu_features": features, "runtime_versions": versions,
            "loadavg": [round(v, 2) for v in os.getloadavg()],
            "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def command_line() -> str:
    return " ".join([".venv/bin/python", *[str(a) for a in sys.argv]])
