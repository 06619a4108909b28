"""Three rewrites of edgeship's ONNX Runtime INT8 files, each left out to time it (issue 20 item 4: fix what the
profiles show), on pretrained models and deployment-size inputs.

- ``widen``: a plain convolution with fewer than 16 output channels widened to 16 where only convolutions read it
  (``onnx_align.align_narrow``): MTCNN P-Net's first convolution (10 outputs) took 2.3 of 6 ms.
- ``stem_pad``: an RGB stem's quantized input padded from 3 to 4 channels (``onnx_align.pad_stem_input``): MLAS's int8
  convolution over a 3-channel input took 0.24 ms of MobileNetV2-224's 1.6 ms at one thread, twice a 4-channel one.
- ``tile``: a rewritten PReLU's slopes repeated along the width (``onnx_prelu.tile_slopes``): ONNX Runtime runs an
  INT8 file's float Mul channels-last, where a per-channel slope broadcasts in spans of C elements (MTCNN P-Net's
  first PReLU Mul: 0.87 ms of 7.0 ms).

Each model is lowered by edgeship's ONNX backends (INT8: every rewrite that applies; FP32 for reference); the other
INT8 contenders are built here from the same quantized graph with the rewrites off (``plain``) or, where two or more
apply, each one left out (``no_<rewrite>``); every contender gives the outputs of edgeship's file bit for bit on
photo crops (the one built with every rewrite is checked to be edgeship's file and not timed again). Latency:
edgeship's host measurement (a fresh process per measurement, fixed threads, warm-up then timed runs), round-robin
over every contender of every model in an order rotated each repeat, 1 and 2 threads; speed-ups are taken within a
repeat (median and range over repeats). The first repeat records each contender's per-layer profile.

    .venv/bin/python benchmarks/ort_stem.py [--repeats 5] [--out benchmarks/results/ort_stem.json]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from benchlib import RESULTS, ROOT, command_line, environment, write_json
from ort_int8_small import measure

sys.path.insert(0, str(ROOT))
from benchmarks.zoo.make_data import crops  # noqa: E402

WORK = Path("/tmp/ort_stem")
# name: (factory, input shape, weights)
MODELS = {
    "mobilenet_v2_224": ("benchmarks.zoo.models:mobilenet_v2", (3, 224, 224), "torchvision ImageNet (pretrained)"),
    "mobilenet_v2_96": ("benchmarks.zoo.models:mobilenet_v2", (3, 96, 96), "torchvision ImageNet (pretrained)"),
    "resnet18_224": ("edgeship.models.zoo:ResNet18", (3, 224, 224), "random (seeded)"),
    "mtcnn_pnet_288x384": ("benchmarks.zoo.models:mtcnn_pnet", (3, 288, 384), "facenet-pytorch (pretrained)"),
    "mtcnn_onet_48": ("benchmarks.zoo.models:mtcnn_onet", (3, 48, 48), "facenet-pytorch (pretrained)"),
    "mtcnn_rnet_24": ("benchmarks.zoo.models:mtcnn_rnet", (3, 24, 24), "facenet-pytorch (pretrained)"),
    "mobilenetv2_035_96": ("edgeship.models.zoo:MobileNetV2Standard", (3, 96, 96), "random (seeded), width 0.35"),
}
KWARGS = {"mobilenetv2_035_96": {"width_mult": 0.35, "num_classes": 2, "input_size": (96, 96)}}


# ------------------------------------------------------------------------------------------- variants
REWRITES = ("tile", "widen", "stem_pad")


def variant(quantized: Path, out: Path, on: set[str]) -> dict[str, int]:
    """The INT8 file as edgeship's calibration route finishes it from ``quantized`` (``quantize_onnx``'s output),
    with only the rewrites ``on`` of REWRITES (depthwise alignment always); how many places each changed."""
    import onnx

    from edgeship.targets.onnx import compact
    from edgeship.targets.onnx_align import align_depthwise, align_narrow, pad_stem_input
    from edgeship.targets.onnx_prelu import tile_slopes

    shutil.copyfile(quantized, out)
    done = {"tile": tile_slopes(out) if "tile" in on else 0}
    m = onnx.load(str(out))
    align_depthwise(m)
    done["widen"] = sum(bool(r["widened"]) for r in align_narrow(m)) if "widen" in on else 0
    done["stem_pad"] = len(pad_stem_input(m)) if "stem_pad" in on else 0
    onnx.save(m, str(out))
    compact(out)
    return done


def variants(model, ctx, work: Path, meta: dict) -> list[dict]:
    """Contenders beside edgeship's own file: ``plain`` (none of REWRITES) and, where two or more apply, each one
    left out; ``all`` (every rewrite, built here) must equal edgeship's file."""
    from edgeship.targets.base import Artifact
    from edgeship.targets.onnx import export_onnx
    from edgeship.targets.onnx_int8 import quantize_onnx
    from edgeship.targets.onnx_prelu import vectorize_prelu

    fp32 = export_onnx(model, ctx.examples, work / "fp32.onnx", work / "log.txt", sig=ctx.signature)
    vector = vectorize_prelu(fp32)
    quantize_onnx(fp32, work / "quantized.onnx", ctx.calib, ctx.quant, work, work / "log.txt", vector)
    probe = work / "probe.onnx"
    applies = [r for r, n in variant(work / "quantized.onnx", probe, set(REWRITES)).items() if n]
    wanted = {"all": set(applies), "plain": set()} | (
        {f"no_{r}": set(applies) - {r} for r in applies} if len(applies) > 1 else {})
    out = []
    for name, on in wanted.items():
        d = work / name
        d.mkdir(parents=True)
        done = variant(work / "quantized.onnx", d / "model.onnx", on)
        Artifact(name, "onnx", "int8", d, "model.onnx", ["model.onnx"], meta).write_sidecar()
        out.append({"contender": name, "precision": "int8", "dir": str(d), "rewrites": done,
                    "size_bytes": (d / "model.onnx").stat().st_size})
    return out


def lowered(name: str, work: Path) -> list[dict]:
    """Lower model ``name`` (INT8 calibrated on photo crops, FP32) and build its contenders."""
    import torch

    from edgeship.devices.calibrate import _context
    from edgeship.models.load import import_factory
    from edgeship.targets.base import get_backend

    factory, shape, _ = MODELS[name]
    torch.manual_seed(0)
    model = import_factory(factory)(**KWARGS.get(name, {})).eval()
    calib = (crops(64, shape[1], 0, width=shape[2]).astype(np.float32) - 127.5) / 128
    rows = []
    for precision in ("fp32", "int8"):
        ctx = _context(name, "onnx", precision, shape, work / f"w_{name}_{precision}", 0)
        ctx.calib = calib
        ctx.work_dir.mkdir(parents=True)
        d = work / f"{name}_{precision}"
        d.mkdir(parents=True)
        art = get_backend("onnx", precision).lower(model, ctx, d)
        if precision == "fp32":
            rows.append({"contender": "fp32", "precision": "fp32", "dir": str(d), "route": art.meta.get("route", ""),
                         "size_bytes": art.path.stat().st_size})
        else:
            rows.append({"contender": "edgeship", "precision": "int8", "dir": str(d), "route": art.meta["route"],
                         "size_bytes": art.path.stat().st_size})
            rows += variants(model, ctx, work / name, art.meta)
    x = calib[:8]
    outs = {r["contender"]: _run(Path(r["dir"]) / "model.onnx", x) for r in rows if r["precision"] == "int8"}
    for r in rows:
        if r["precision"] == "int8":
            r["outputs_equal_edgeship"] = all(np.array_equal(a, b) for a, b in zip(outs[r["contender"]],
                                                                                     outs["edgeship"]))
    edgeship = next(r for r in rows if r["contender"] == "edgeship")
    edgeship["rewrites"] = next(r for r in rows if r["contender"] == "all")["rewrites"]
    # the file built here with every rewrite is edgeship's own (checked above): timed once, as edgeship's
    return [dict(r, model=name) for r in rows if r["contender"] != "all"]


# single convolutions over an image input (the rule's evidence): (name, input channels, output channels, kernel,
# stride, H, W); the gray ones are the demo's stem (Fashion-MNIST, 28x28) and the same at 96x96
CONVS = [(f"conv3x3_{c}", 3, c, 3, 1, 143, 191) for c in (8, 12, 16, 24, 32, 64)] + [
    ("mnv2_stem_224", 3, 32, 3, 2, 224, 224), ("resnet_stem_224", 3, 64, 7, 2, 224, 224),
    ("gray_stem_28", 1, 32, 3, 1, 28, 28), ("gray_stem_96", 1, 32, 3, 2, 96, 96),
    ("two_channel_96", 2, 32, 3, 2, 96, 96)]


def single_convs(work: Path) -> list[dict]:
    """Conv(cin -> c) + ReLU, quantized as edgeship's calibration route does, with and without the padded input (every
    output-channel count, ``min_cout=1``); FP32 beside them."""
    import onnx
    import torch

    from edgeship.calibration.quant import QuantSettings
    from edgeship.targets.base import Artifact
    from edgeship.targets.onnx import export_onnx
    from edgeship.targets.onnx_align import pad_stem_input
    from edgeship.targets.onnx_int8 import quantize_onnx

    rows = []
    for name, cin, cout, k, stride, h, w in CONVS:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, k, stride, k // 2), torch.nn.ReLU()).eval()
        x = ((crops(16, h, 0, width=w).astype(np.float32) - 127.5) / 128)[:, :cin]
        d = work / name
        d.mkdir(parents=True)
        fp32 = export_onnx(model, torch.from_numpy(x[:1]), d / "fp32.onnx", d / "log.txt")
        quantize_onnx(fp32, d / "plain.onnx", x, QuantSettings(), d, d / "log.txt")
        m = onnx.load(str(d / "plain.onnx"))
        assert pad_stem_input(m, min_cout=1)
        onnx.save(m, str(d / "padded.onnx"))
        for contender, f, precision in (("fp32", fp32, "fp32"), ("plain", d / "plain.onnx", "int8"),
                                        ("stem_pad", d / "padded.onnx", "int8")):
            (d / contender).mkdir()
            shutil.copyfile(f, d / contender / "model.onnx")
            Artifact(contender, "onnx", precision, d / contender, "model.onnx", ["model.onnx"], {}).write_sidecar()
            rows.append({"model": name, "contender": contender, "precision": precision, "dir": str(d / contender),
                         "conv": {"cin": cin, "cout": cout, "k": k, "stride": stride, "input": [h, w]}})
        outs = [_run(d / f, x[:4]) for f in ("plain.onnx", "padded.onnx")]
        rows[-1]["outputs_equal_edgeship"] = all(np.array_equal(a, b) for a, b in zip(*outs))
    return rows


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return [np.concatenate(o) for o in zip(*(s.run(None, {name: x[i: i + 1]}) for i in range(len(x))))]


# ------------------------------------------------------------------------------------------- timing
def ratios(rows: list[dict], threads: list[int]) -> None:
    """Per repeat: each contender's p50 against its model's ``plain`` (or ``edgeship``) and ``fp32`` p50s."""
    for c in rows:
        peers = {d["contender"]: d for d in rows if d["model"] == c["model"]}
        base = peers["plain"]
        c["p50_ms"] = {t: round(statistics.median(v), 4) for t, v in c["p50_repeats"].items()}
        for ref, key in ((base, "speedup_vs_plain"), (peers["fp32"], "speedup_vs_fp32")):
            c[key] = {}
            for t in map(str, threads):
                per = [a / b for a, b in zip(ref["p50_repeats"][t], c["p50_repeats"][t])]
                c[key][t] = {"median": round(statistics.median(per), 3), "min": round(min(per), 3),
                             "max": round(max(per), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", choices=list(MODELS), default=list(MODELS), help="none: the convolutions")
    ap.add_argument("--no-convs", action="store_true", help="leave out the single convolutions")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--out", type=Path, default=RESULTS / "ort_stem.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.work.exists():
        shutil.rmtree(args.work)
    rows = []
    for name in args.models:
        rows += lowered(name, args.work)
        print(f"  {name}: {[r['contender'] for r in rows if r['model'] == name]}", file=sys.stderr)
    if not args.no_convs:
        rows += single_convs(args.work / "convs")
    bad = [(r["model"], r["contender"]) for r in rows if r.get("outputs_equal_edgeship") is False]
    if bad:
        raise SystemExit(f"outputs differ from edgeship's file: {bad}")
    for r in rows:  # ort_int8_small's measurement names contenders by 'name'
        r["name"] = f"{r['model']}/{r['contender']}"
    log = measure(rows, args.threads, args.repeats, args.runs, args.warmup)
    ratios(rows, args.threads)
    result = {"benchmark": "ort_stem", "command": command_line(), "environment": environment(),
              "models": {k: {"factory": f, "input": list(s), "weights": w} for k, (f, s, w) in MODELS.items()
                         if k in args.models},
              "convs": "Conv(cin -> cout) + ReLU alone, random weights (seeded), quantized by quantize_onnx on 16 "
                       "crops (their first cin channels); stem_pad: pad_stem_input(min_cout=1) of the plain file",
              "method": {"repeats": args.repeats, "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
                         "measurement": "edgeship.devices.measure.measure_host: a fresh process per measurement",
                         "interleaving": "round-robin over every contender of every model, rotated each repeat",
                         "speedup": "per repeat: reference p50 / contender p50 (same repeat); median, min, max",
                         "calibration": "64 crops of real photos (benchmarks.zoo.make_data.crops), (x - 127.5) / 128",
                         "identity": "each contender's outputs on 8 crops equal the edgeship file's bit for bit"},
              "repeats_log": log, "rows": rows, "wall_s": round(time.perf_counter() - t0, 1)}
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
