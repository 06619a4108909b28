"""Why edgeship's INT8 ONNX artifact of the 96x96 MobileNetV2 (width 0.35, pruned to half its MACs; recipe
benchmarks/recipes/fashion_mnist_mnv2_96.yaml) was no faster than the FP32 unpruned model on ONNX Runtime (issue
20 item 4; scale.json: p50 0.603 ms INT8 against 0.396 ms FP32 at 1 thread), and what changes that.

Variants of the same INT8 file (the recipe's QAT route: the compressed model's fake quantization exported as QDQ,
nothing recalibrated), each built here from the artifact of a finished `edgeship export` run:

- ``int8_current``: the artifact as it was lowered before the alignment rule;
- ``int8_dw16``: every depthwise convolution widened with zero channels to a multiple of 16
  (``edgeship.targets.onnx_align.align_depthwise``; outputs bit-identical);
- ``int8_stem_float``: the 3-channel stem convolution kept float (its weights dequantized; the input's Q/DQ gone);
- ``int8_first2_float``: the stem and the first depthwise convolution kept float (the first N=2 convolutions
  excluded from quantization, as ``nodes_to_exclude`` would);
- ``int8_dw16_stem_float``: both;
- ``int8_dw16_stem4``: aligned, and the stem's input padded from 3 to 4 channels (a Pad of the quantized input
  with its zero point, a zero weight column): MLAS's symmetric convolution kernel wants input channels in
  multiples of 4;

against ``fp32_unpruned`` (the FP32 artifact of the unpruned model). Not built: QOperator instead of QDQ (ONNX
Runtime fuses each DQ -> Conv -> Q group into the same QLinearConv the QOperator format writes: the optimized graph
of the QDQ file has 52 QLinearConv and no float Conv, so the kernels are the same), and activation/weight types or
per-tensor depthwise weights: those are calibration (quantize_static) settings, while this artifact is the QAT
route's; what picks MLAS's kernel is the channel count (see the module docstring of edgeship/targets/onnx_int8.py).

Latency: edgeship's host measurement (``edgeship.devices.measure.measure_host``: a fresh process per measurement,
fixed threads, warm-up then timed runs), interleaved over every contender in an order rotated each repeat, 1 and 2
threads; the first repeat also records each contender's per-layer profile (ONNX Runtime's profiler, after the timed
runs). Ratios are taken within one repeat (the median over repeats is reported): the machine is shared and this
script runs at SCHED_IDLE, so absolute milliseconds move with the load (recorded per repeat: load average and the
CPU others took). Accuracy: top-1 of every variant on the recipe's test split, agreement with ``int8_current`` and
the largest logit difference from it.

    chrt --idle 0 .venv/bin/python benchmarks/ort_int8_small.py --run-dir RUN --fp32-dir DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from benchlib import RESULTS, ROOT, CpuShare, command_line, environment, loadavg, write_json

RECIPE = ROOT / "benchmarks" / "recipes" / "fashion_mnist_mnv2_96.yaml"
WORK = Path("/tmp/ort_int8_small")
VARIANTS = ("int8_current", "int8_dw16", "int8_stem_float", "int8_first2_float", "int8_dw16_stem_float",
            "int8_dw16_stem4")


# ------------------------------------------------------------------------------------------- variants
def _prune(model) -> None:
    from edgeship.targets.onnx_align import set_nodes

    set_nodes(model.graph, list(model.graph.node))


def convs_in_order(model) -> list:
    return [n for n in model.graph.node if n.op_type == "Conv"]


def keep_float(model, convs: list) -> None:
    """The convolutions ``convs`` (consecutive, the first reading the graph input through Q/DQ) computed in float:
    weights dequantized to float initializers, the Q/DQ pair before each of them bypassed."""
    from onnx import numpy_helper

    from edgeship.targets.onnx_align import _Graph

    gr = _Graph(model.graph)
    names = {c.name for c in convs}
    for c in convs:
        w, dq = gr.weight(c.input[1])
        if dq is not None:
            scale = gr.inits[dq.input[1]].astype(np.float32)
            zp = gr.inits[dq.input[2]].astype(np.float32) if len(dq.input) > 2 and dq.input[2] else 0
            shape = [-1] + [1] * (w.ndim - 1) if scale.size > 1 else []
            wf = (w.astype(np.float32) - np.reshape(zp, shape)) * np.reshape(scale, shape)
            name = f"{c.input[1]}_float"
            model.graph.initializer.append(numpy_helper.from_array(wf.astype(np.float32), name))
            c.input[1] = name
        dq_in = gr.producer.get(c.input[0])
        q = gr.producer.get(dq_in.input[0]) if dq_in is not None and dq_in.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = q.input[0]  # the float tensor before the pair: the graph input, or a float convolution's (activation)
        p, up = gr.producer.get(src), src
        while p is not None and p.op_type != "Conv" and p.op_type in ("Clip", "Relu"):
            up = p.input[0]
            p = gr.producer.get(up)
        if p is None and src in {i.name for i in model.graph.input} or p is not None and p.name in names:
            c.input[0] = src
    _prune(model)


def build_variant(name: str, src: Path, meta: dict, out: Path) -> dict:
    import onnx

    from edgeship.targets.base import Artifact
    from edgeship.targets.onnx_align import align_depthwise, pad_stem_input

    m = onnx.load(str(src))
    info: dict = {"name": name}
    if "dw16" in name:
        rows = align_depthwise(m)
        info["aligned"] = [r for r in rows if r["aligned"]]
        info["not_aligned"] = [r for r in rows if not r["aligned"]]
    convs = convs_in_order(m)  # after the alignment, which rewrites the node list
    if name.endswith("stem_float"):
        keep_float(m, convs[:1])
        info["float_convs"] = [convs[0].name]
    if name == "int8_first2_float":
        keep_float(m, convs[:2])
        info["float_convs"] = [c.name for c in convs[:2]]
    if name.endswith("stem4"):
        pad_stem_input(m, min_cout=1)
    onnx.checker.check_model(m)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out / "model.onnx"))
    # no runtime_config: the float convolutions here read no DequantizeLinear, so ONNX Runtime's
    # WeightBiasQuantization leaves them float anyway, and turning it off would leave every QAT convolution
    # (float biases) unfused, in float
    Artifact(name, "onnx", "int8", out, "model.onnx", ["model.onnx"], meta).write_sidecar()
    return info


def runtime_graph(path: Path, disabled: list[str] | None) -> dict:
    """The op types ONNX Runtime runs (its optimized graph, extended level) and the float convolutions in it."""
    from edgeship.targets.onnx_int8 import float_ops

    audit = float_ops(path, disabled)
    return {"op_counts": audit.get("op_counts"), "float_compute_ops": audit.get("float_compute_ops")}


# ------------------------------------------------------------------------------------------- blocks
# (expanded channels C, H=W): inverted-residual blocks 16 -> C (1x1) -> C (depthwise 3x3) -> 16 (1x1), C not a
# multiple of 16 (what pruning to multiples of 4 or 8 leaves), from 4 (widened 4x) to 216 (widened by 8); with
# and without a multiple of 8 (MLAS's generic depthwise kernel does 16 and 8 channels per vector, the rest one by one)
BLOCKS = [(4, 48), (8, 48), (12, 48), (20, 48), (24, 48), (36, 24), (40, 24), (56, 24), (60, 24), (88, 12), (92, 12),
          (120, 12), (124, 12), (212, 6), (216, 6)]


def build_blocks(work: Path) -> list[dict]:
    """Each block quantized by edgeship's calibration route (``quantize_onnx``: QDQ, per-channel, U8S8), then the
    same file aligned (``align_depthwise``): two contenders per block, the same outputs."""
    import onnx
    import torch

    from edgeship.calibration.quant import QuantSettings
    from edgeship.targets.base import Artifact
    from edgeship.targets.onnx import export_onnx
    from edgeship.targets.onnx_align import align_depthwise
    from edgeship.targets.onnx_int8 import quantize_onnx

    nn = torch.nn
    rows = []
    for c, h in BLOCKS:
        torch.manual_seed(0)
        block = nn.Sequential(nn.Conv2d(16, c, 1), nn.ReLU6(), nn.Conv2d(c, c, 3, padding=1, groups=c), nn.ReLU6(),
                              nn.Conv2d(c, 16, 1)).eval()
        calib = np.random.default_rng(0).normal(size=(64, 16, h, h)).astype(np.float32)
        d = work / "blocks" / f"c{c}_h{h}"
        d.mkdir(parents=True, exist_ok=True)
        fp32 = export_onnx(block, torch.from_numpy(calib[:1]), d / "fp32.onnx", d / "log.txt")
        for aligned in (False, True):
            out = d / ("aligned" if aligned else "plain")
            out.mkdir(exist_ok=True)
            quantize_onnx(fp32, out / "model.onnx", calib, QuantSettings(), d, d / "log.txt")
            if aligned:
                m = onnx.load(str(out / "model.onnx"))
                assert align_depthwise(m)[0]["aligned"]
                onnx.save(m, str(out / "model.onnx"))
            meta = {"inputs": [{"name": "input", "shape": [1, 16, h, h], "dtype": "float32", "layout": "NCHW"}]}
            Artifact(out.name, "onnx", "int8", out, "model.onnx", ["model.onnx"], meta).write_sidecar()
        rows.append({"channels": c, "hw": h, "aligned_to": -(-c // 16) * 16, "dirs": [str(d / "plain"),
                                                                                   str(d / "aligned")]})
    return rows


def measure_blocks(rows: list[dict], repeats: int, runs: int, warmup: int) -> list[dict]:
    """Per repeat and block, the plain and the aligned file timed one after the other (order alternating), 1 thread."""
    from edgeship.devices.measure import RunArtifact, measure_host

    log = []
    for r in range(repeats):
        with CpuShare() as share:
            for b in rows:
                p50 = {}
                for d in (b["dirs"] if r % 2 == 0 else b["dirs"][::-1]):
                    art = RunArtifact(Path(d).name, "host", "onnx", "int8", Path(d), [], "")
                    p50[Path(d).name] = measure_host(art, 1, runs, warmup, profile=0).p50_ms
                b.setdefault("p50_plain_ms", []).append(p50["plain"])
                b.setdefault("p50_aligned_ms", []).append(p50["aligned"])
        log.append({"repeat": r + 1, "loadavg_after": loadavg(), "cpu": share.result()})
        print(f"  blocks repeat {r + 1}/{repeats} done (load average {loadavg()})", file=sys.stderr)
    for b in rows:
        per = [a / c for a, c in zip(b["p50_plain_ms"], b["p50_aligned_ms"])]
        b["speedup_aligned"] = {"per_repeat": [round(v, 3) for v in per], "median": round(statistics.median(per), 3),
                                "min": round(min(per), 3)}
        b["p50_plain_ms"] = [round(v, 4) for v in b["p50_plain_ms"]]
        b["p50_aligned_ms"] = [round(v, 4) for v in b["p50_aligned_ms"]]
    return log


# ------------------------------------------------------------------------------------------- accuracy
def test_split(recipe: Path) -> tuple[np.ndarray, np.ndarray]:
    """The recipe's test split, preprocessed as the model sees it (edgeship.run.prepare's data, without the model)."""
    from edgeship.api import load_recipe
    from edgeship.calibration.datasets import load_splits
    from edgeship.pipeline.training import TensorData

    rec = load_recipe(recipe)
    splits = load_splits(rec.data, rec.input, len(rec.labels) if rec.labels else None)
    test = TensorData.from_array(splits.test, rec.input.preprocessing_obj())
    return test.x.numpy(), test.y.numpy()


def logits_of(path: Path, meta: dict, x: np.ndarray) -> np.ndarray:
    from edgeship.targets.onnx import ort_runner

    run = ort_runner(path, 2, meta.get("runtime_config"))
    return np.concatenate([run(x[i:i + 100])[0] for i in range(0, len(x), 100)])


# ------------------------------------------------------------------------------------------- latency
def measure(contenders: list[dict], threads: list[int], repeats: int, runs: int, warmup: int) -> list[dict]:
    """Round-robin over the contenders (order rotated each repeat), each thread count in turn; the first repeat
    profiles every contender's layers after its timed runs. One record per repeat: load and CPU taken by others."""
    from peers import profile_summary

    from edgeship.devices.measure import DEFAULT_PROFILE_RUNS, RunArtifact, measure_host

    log = []
    for c in contenders:
        c["p50_repeats"] = {str(t): [] for t in threads}
    for r in range(repeats):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        before = loadavg()
        with CpuShare() as share:
            for t in threads:
                for c in order:
                    art = RunArtifact(c["name"], "host", "onnx", c["precision"], Path(c["dir"]), [], "")
                    m = measure_host(art, t, runs, warmup, profile=DEFAULT_PROFILE_RUNS if r == 0 else 0)
                    c["p50_repeats"][str(t)].append(m.p50_ms)
                    if m.profile is not None:
                        c.setdefault("profile", {})[str(t)] = profile_summary(m.profile, top=10)
        log.append({"repeat": r + 1, "order": [c["name"] for c in order], "loadavg_before": before,
                    "loadavg_after": loadavg(), "cpu": share.result()})
        print(f"  repeat {r + 1}/{repeats} done (load average {loadavg()})", file=sys.stderr)
    return log


def ratios(contenders: list[dict], threads: list[int]) -> None:
    """Per repeat: every contender's p50 against int8_current's and fp32_unpruned's from the same repeat."""
    by = {c["name"]: c for c in contenders}
    for c in contenders:
        c["p50_ms"] = {}
        for ref, key in (("int8_current", "speedup_vs_int8_current"), ("fp32_unpruned", "speedup_vs_fp32_unpruned")):
            c[key] = {}
            for t in map(str, threads):
                per = [a / b for a, b in zip(by[ref]["p50_repeats"][t], c["p50_repeats"][t])]
                c[key][t] = {"per_repeat": [round(v, 3) for v in per], "median": round(statistics.median(per), 3),
                             "min": round(min(per), 3)}
        for t in map(str, threads):
            c["p50_ms"][t] = round(statistics.median(c["p50_repeats"][t]), 4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, default=Path("/tmp/ortq/mobilenetv2_96_edgeship"),
                    help="a finished `edgeship export` run of the recipe (its targets/onnx-int8)")
    ap.add_argument("--fp32-dir", type=Path, default=Path("/tmp/ortq/mobilenetv2_96_fp32/targets/onnx-fp32"),
                    help="the FP32 ONNX artifact of the unpruned model")
    ap.add_argument("--recipe", type=Path, default=RECIPE, help="the recipe whose test split measures top-1")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--out", type=Path, default=RESULTS / "ort_int8_small.json")
    ap.add_argument("--parts", nargs="+", choices=("model", "blocks"), default=["model", "blocks"])
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.work.exists():
        shutil.rmtree(args.work)
    result = {"benchmark": "ort_int8_small", "command": command_line(), "environment": environment()}
    if "blocks" in args.parts:
        blocks = build_blocks(args.work)
        result["blocks"] = {"what": "inverted-residual blocks 16 -> C -> C (depthwise 3x3) -> 16, quantized by "
                                    "quantize_onnx (calibration route, random normal data), then aligned "
                                    "(align_depthwise); fresh process per measurement, 1 thread; speedup = plain "
                                    "p50 / aligned p50 in the same repeat",
                            "repeats_log": measure_blocks(blocks, args.repeats, args.runs, args.warmup),
                            "rows": blocks}
    if "model" in args.parts:
        result["model"] = model_part(args)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def model_part(args) -> dict:
    src_dir = args.run_dir / "targets" / "onnx-int8"
    meta = json.loads((src_dir / "model.json").read_text())["meta"]
    contenders = [{"name": "fp32_unpruned", "precision": "fp32", "dir": str(args.fp32_dir),
                   "source": str(args.fp32_dir)}]
    for v in VARIANTS:
        info = build_variant(v, src_dir / "model.onnx", meta, args.work / v)
        contenders.append({**info, "precision": "int8", "dir": str(args.work / v), "source": str(src_dir)})
    x, y = test_split(args.recipe)
    ref = None
    for c in contenders:
        path = Path(c["dir"]) / "model.onnx"
        cmeta = json.loads((Path(c["dir"]) / "model.json").read_text())["meta"]
        disabled = (cmeta.get("runtime_config") or {}).get("disabled_optimizers")
        c["size_bytes"] = path.stat().st_size
        c["runtime_graph"] = runtime_graph(path, disabled)
        logits = logits_of(path, cmeta, x)
        if c["name"] == "int8_current":
            ref = logits
        c["top1_test"] = round(float((logits.argmax(1) == y).mean()), 4)
        c["logits"] = logits
        print(f"  {c['name']}: top-1 {c['top1_test']}, {c['size_bytes']} bytes", file=sys.stderr)
    for c in contenders:
        logits = c.pop("logits")
        if c["precision"] == "int8":
            c["agreement_with_int8_current"] = round(float((logits.argmax(1) == ref.argmax(1)).mean()), 4)
            c["max_abs_logit_diff_vs_int8_current"] = round(float(np.abs(logits - ref).max()), 6)
            cur = next(d for d in contenders if d["name"] == "int8_current")["top1_test"]
            c["top1_minus_int8_current_pt"] = round(100 * (c["top1_test"] - cur), 2)
    log = measure(contenders, args.threads, args.repeats, args.runs, args.warmup)
    ratios(contenders, args.threads)
    return {
        "method": {"repeats": args.repeats, "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
                   "measurement": "edgeship.devices.measure.measure_host: fresh process per measurement",
                   "interleaving": "round-robin over the contenders, order rotated each repeat",
                   "speedup": "per repeat: reference p50 / contender p50 (same repeat); median and min over repeats",
                   "profile": "per-layer counters of the first repeat, after its timed runs (profile_summary)",
                   "accuracy": f"top-1 on the recipe's test split ({len(y)} images), batches of 100, 2 threads",
                   "scheduling": "run under chrt --idle 0 on a shared 2-core machine: compare ratios, not ms"},
        "run_dir": str(args.run_dir), "recipe": str(args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT)
                                                    else args.recipe),
        "artifact_route": meta.get("route"), "repeats_log": log, "contenders": contenders}


if __name__ == "__main__":
    raise SystemExit(main())
