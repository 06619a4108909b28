"""ONNX Runtime INT8: a convolution's PReLU split by sign (``edgeship.targets.onnx_prelu.split_prelu``) against the
PReLU left float, as ONNX Runtime's quantizer leaves it; the evidence for ``SPLIT_MAX_MACS``.

1. ``layers``: one convolution + PReLU (slopes -0.5 to 1.2) + a 1 x 1 convolution, over maps of deployment size,
   for a range of the split's extra multiply-adds per element ((C_in / groups) x kernel area + 2 C): ordinary,
   pointwise and depthwise convolutions. INT8 (calibrated on random normal samples) with every PReLU split
   (``all``, a depthwise convolution's too, which the shipped rule never splits) and with none (``none``).
2. ``models``: MTCNN's pretrained P-Net (288 x 384), R-Net (24 x 24) and O-Net (48 x 48), calibrated on 64 crops of
   real photos ((x - 127.5) / 128), as edgeship lowers them today (``shipped``: ``SPLIT_MAX_MACS`` as it is), with
   every PReLU after a convolution split (``all``) and none (``none``), and the FP32 file. Outputs: each INT8
   file's largest and mean absolute difference from the FP32 file on 16 other crops, and for the face probability
   the share of cells whose face/no-face call (p > 0.5) agrees with FP32's.
3. ``qat``: the same networks fake-quantized as the qat pass does before fine-tuning (``prepare_qat``, ranges
   observed on the 64 crops), lowered by the QAT route (the QDQ export, no calibration) with the shipped rule
   (``shipped``) and with no split (``none``), and the FP32 file; outputs against the fake-quantized torch model
   and the FP32 file.

Latency as export times INT8 against FP32 (``devices.measure.time_beside``): every contender of one model side by
side in 3 fresh processes, blocks of 5 runs each in turn, at 1 and 2 threads; a ratio is another contender's p50
over the reference's (``none`` for ``layers``, ``shipped`` for ``models``) in the same process, the median over
processes and ``--repeats``.

    .venv/bin/python benchmarks/prelu_split.py [--repeats 3] [--parts layers models qat] [--out ...]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from benchlib import RESULTS, command_line, environment, loadavg, time_rows, write_json  # noqa: E402

from benchmarks.zoo.make_data import crops  # noqa: E402

# (name, input channels, output channels, kernel, groups, H, W)
LAYERS = [("stem3x3_3to16_96", 3, 16, 3, 1, 96, 96), ("stem3x3_3to32_96", 3, 32, 3, 1, 96, 96),
          ("conv3x3_16_48", 16, 16, 3, 1, 48, 48), ("conv3x3_24_48", 24, 24, 3, 1, 48, 48),
          ("conv3x3_32_48", 32, 32, 3, 1, 48, 48), ("pw_96_24", 96, 96, 1, 1, 24, 24),
          ("conv3x3_64_24", 64, 64, 3, 1, 24, 24), ("pw_32_48", 32, 32, 1, 1, 48, 48),
          ("pw_64_24", 64, 64, 1, 1, 24, 24), ("pw_128_14", 128, 128, 1, 1, 14, 14),
          ("dw3x3_32_48", 32, 32, 3, 32, 48, 48), ("dw3x3_128_14", 128, 128, 3, 128, 14, 14)]
MODELS = (("mtcnn_pnet", (3, 288, 384)), ("mtcnn_rnet", (3, 24, 24)), ("mtcnn_onet", (3, 48, 48)))
ALL, NONE = 1 << 62, -1


def layer_model(cin: int, c: int, k: int, groups: int):
    import torch
    from torch import nn

    torch.manual_seed(0)
    prelu = nn.PReLU(c)
    with torch.no_grad():
        prelu.weight.copy_(torch.linspace(-0.5, 1.2, c))
    return nn.Sequential(nn.Conv2d(cin, c, k, padding=k // 2, groups=groups), prelu, nn.Conv2d(c, c, 1)).eval()


def lower_int8(model, shape, calib, limit: int, out: Path, work: Path, grouped: bool = False,
               qat: bool = False) -> tuple[Path, str]:
    from edgeship.calibration.quant import QuantSettings
    from edgeship.devices.calibrate import _context
    from edgeship.pipeline.qat import QAT
    from edgeship.targets import onnx_prelu
    from edgeship.targets.base import get_backend

    ctx = _context(out.name, "onnx", "int8", shape, work / "w" / out.name, 0)
    if calib is not None:
        ctx.calib = calib
    if qat:  # a fake-quantized model: its QDQ export, no calibration
        ctx.quant, ctx.learned = QuantSettings(qat=True), QAT.learned_quantization(model)
    ctx.work_dir.mkdir(parents=True)
    out.mkdir(parents=True)
    defaults = onnx_prelu.SPLIT_MAX_MACS, onnx_prelu.SPLIT_GROUPED
    onnx_prelu.SPLIT_MAX_MACS, onnx_prelu.SPLIT_GROUPED = limit, grouped
    try:
        art = get_backend("onnx", "int8").lower(model, ctx, out)
    finally:
        onnx_prelu.SPLIT_MAX_MACS, onnx_prelu.SPLIT_GROUPED = defaults
    return out, art.meta["route"]


def lower_fp32(model, shape, out: Path, work: Path) -> Path:
    from edgeship.devices.calibrate import lower

    return lower(model, shape, "onnx", "fp32", out, out.name, work / "w")


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    outs = [s.run(None, {name: xi[None]}) for xi in x]
    return [np.concatenate([o[i] for o in outs]) for i in range(len(outs[0]))]


def split_count(route: str) -> int:
    marker = " PReLU(s) after a convolution split by sign"
    return int(route.split(marker)[0].rsplit("; ", 1)[-1]) if marker in route else 0


def layers(work: Path, repeats: int, only: list[str] | None = None) -> list[dict]:
    from edgeship.targets import onnx_prelu

    rows = []
    for name, cin, c, k, groups, h, w in LAYERS:
        if only and name not in only:
            continue
        model, shape = layer_model(cin, c, k, groups), (cin, h, w)
        dirs, split = {}, {}
        for v, limit in (("none", NONE), ("all", ALL)):  # ``all`` splits a grouped convolution's PReLU too
            dirs[v], route = lower_int8(model, shape, None, limit, work / f"{name}-{v}", work, grouped=v == "all")
            split[v] = split_count(route)
        row = {"layer": name, "input": list(shape), "out_channels": c, "kernel": k, "groups": groups,
               "extra_macs_per_element": cin // groups * k * k + 2 * c, "split": split,
               "shipped_rule_splits": groups == 1 and cin // groups * k * k + 2 * c <= onnx_prelu.SPLIT_MAX_MACS,
               **time_rows(dirs, "none", repeats)}
        print(row, file=sys.stderr)
        rows.append(row)
    return rows


def mtcnn(only: list[str] | None):
    """(name, input shape, pretrained model, 64 calibration crops, 16 test crops) of each MTCNN network asked for."""
    from benchmarks.zoo import models as zoo

    for name, shape in MODELS:
        if not only or name in only:
            yield (name, shape, getattr(zoo, name)().eval(),
                   (crops(64, shape[1], 0, width=shape[2]).astype(np.float32) - 127.5) / 128,
                   (crops(16, shape[1], 1, width=shape[2]).astype(np.float32) - 127.5) / 128)


def models(work: Path, repeats: int, only: list[str] | None = None) -> list[dict]:
    from edgeship.targets import onnx_prelu

    rows = []
    for name, shape, model, calib, test in mtcnn(only):
        dirs, routes = {}, {}
        for v, limit in (("shipped", onnx_prelu.SPLIT_MAX_MACS), ("none", NONE), ("all", ALL)):
            dirs[v], routes[v] = lower_int8(model, shape, calib, limit, work / f"{name}-{v}", work)
        dirs["fp32"] = lower_fp32(model, shape, work / f"{name}-fp32", work)
        ref = _run(dirs["fp32"] / "model.onnx", test)
        row: dict = {"model": name, "input": list(shape), "split": {v: split_count(r) for v, r in routes.items()},
                     "outputs_vs_fp32": {}}
        for v in ("shipped", "none", "all"):
            got = _run(dirs[v] / "model.onnx", test)
            faces = [i for i, o in enumerate(ref) if o.shape[1] == 2]  # the (no face, face) softmax
            row["outputs_vs_fp32"][v] = {
                "max_abs": round(max(float(np.abs(a - b).max()) for a, b in zip(got, ref)), 4),
                "mean_abs": round(float(np.mean([np.abs(a - b).mean() for a, b in zip(got, ref)])), 5),
                "face_call_agreement": round(float(np.mean([((got[i][:, 1] > 0.5) == (ref[i][:, 1] > 0.5)).mean()
                                                            for i in faces])), 4)}
        row["size_bytes"] = {v: (d / "model.onnx").stat().st_size for v, d in dirs.items()}
        row.update(time_rows(dirs, "shipped", repeats))
        print(row, file=sys.stderr)
        rows.append(row)
    return rows


def qat_models(work: Path, repeats: int, only: list[str] | None = None) -> list[dict]:
    """MTCNN's networks as the qat pass's fake quantization gives them before fine-tuning (``prepare_qat``, ranges
    observed on the 64 calibration crops; the pass itself fine-tunes single-output classifiers only), lowered by the
    ONNX INT8 route of a QAT model with the shipped rule (``shipped``) and with no PReLU split (``none``) beside
    the FP32 file; outputs against the fake-quantized torch model (the graph's own function) and the FP32 file."""
    import torch

    from edgeship.pipeline.qat import calibrate_ranges, prepare_qat
    from edgeship.targets import onnx_prelu

    rows = []
    for name, shape, model, calib, test in mtcnn(only):
        qat = prepare_qat(model, torch.from_numpy(calib[:1]))
        calibrate_ranges(qat, torch.from_numpy(calib), batch_size=16)
        qat.eval()
        dirs, routes = {}, {}
        for v, limit in (("shipped", onnx_prelu.SPLIT_MAX_MACS), ("none", NONE)):
            dirs[v], routes[v] = lower_int8(qat, shape, None, limit, work / f"qat-{name}-{v}", work, qat=True)
        dirs["fp32"] = lower_fp32(model, shape, work / f"qat-{name}-fp32", work)
        with torch.no_grad():
            own = [np.concatenate([o[i].numpy() for o in (qat(torch.from_numpy(xi[None])) for xi in test)])
                   for i in range(len(_run(dirs["fp32"] / "model.onnx", test[:1])))]
        refs = {"qat_torch": own, "fp32": _run(dirs["fp32"] / "model.onnx", test)}
        row: dict = {"model": name, "input": list(shape), "split": {v: split_count(r) for v, r in routes.items()},
                     "outputs": {}}
        for v in ("shipped", "none"):
            got = _run(dirs[v] / "model.onnx", test)
            row["outputs"][v] = {f"mean_abs_vs_{k}": round(float(np.mean([np.abs(a - b).mean()
                                                                          for a, b in zip(got, ref)])), 5)
                                 for k, ref in refs.items()}
            faces = [i for i, o in enumerate(refs["fp32"]) if o.shape[1] == 2]
            row["outputs"][v]["face_call_agreement_vs_fp32"] = round(float(np.mean(
                [((got[i][:, 1] > 0.5) == (refs["fp32"][i][:, 1] > 0.5)).mean() for i in faces])), 4)
        row["size_bytes"] = {v: (d / "model.onnx").stat().st_size for v, d in dirs.items()}
        row.update(time_rows(dirs, "shipped", repeats))
        print(row, file=sys.stderr)
        rows.append(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", nargs="+", default=["layers", "models", "qat"], choices=["layers", "models", "qat"])
    ap.add_argument("--layers", nargs="+", choices=[r[0] for r in LAYERS], help="only these layers")
    ap.add_argument("--models", nargs="+", choices=[m[0] for m in MODELS], help="only these models")
    ap.add_argument("--out", type=Path, default=RESULTS / "prelu_split.json")
    args = ap.parse_args(argv)
    from edgeship.targets import onnx_prelu

    started, load = time.time(), loadavg()
    work = Path(tempfile.mkdtemp(prefix="prelu_split_"))
    result: dict = {"benchmark": "prelu_split", "environment": environment(), "command": command_line(),
                    "split_max_macs": onnx_prelu.SPLIT_MAX_MACS, "repeats": args.repeats, "loadavg_start": load}
    try:
        if "layers" in args.parts:
            result["layers"] = layers(work, args.repeats, args.layers)
        if "models" in args.parts:
            result["models"] = models(work, args.repeats, args.models)
        if "qat" in args.parts:
            result["qat"] = qat_models(work, args.repeats, args.models)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(loadavg_end=loadavg(), seconds=round(time.time() - started, 1))
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
