"""Why LiteRT's INT8 .tflite is no faster than its FP32 one on this host (issue 20, item 4), with the evidence:

1. ``layers``: single convolutions of MobileNetV2's and ResNet-18's shapes at 224x224, each converted twice by
   TFLiteConverter (FP32, and the documented full-integer PTQ: per-channel int8 weights, int8 activations and
   I/O), timed with LiteRT's interpreter and its default XNNPACK delegate: the same layer in both precisions;
2. ``models``: the 224x224 models' FP32 .tflite, edgeship's INT8 .tflite and TFLiteConverter's own full-integer
   PTQ of the same float graph (scale.py's LiteRT peer), each with XNNPACK and without it (LiteRT's builtin
   kernels), plus the INT8 .tflite lowered by the current code (``edgeship export``) when the scale run's files
   predate it; and each file's graph: operators, quantization (per-channel weights, I/O types, QUANTIZE /
   DEQUANTIZE left) and which operators XNNPACK took (bench_runner's profile of LiteRT, layer_profile.py).

Method (benchmarks/peers.py's): every timing in a fresh process (``--worker``), interleaved (A, B, A, B ...), 1 and 2
threads, medians of per-run ratios taken within one repeat; load averages recorded. Run under ``chrt --idle 0``
on a shared machine: then absolute times depend on what else runs; only the ratios mean something.

    chrt --idle 0 .venv/bin/python benchmarks/litert_int8.py            # -> benchmarks/results/litert_int8.json
    chrt --idle 0 .venv/bin/python benchmarks/litert_int8.py --parts layers --repeats 2

The models part reads the 224x224 artifacts of ``benchmarks/scale.py --quick`` (runs/bench/scale_quick) and
exports the two random-weight recipes' tflite targets again with the current code (runs/bench/litert_int8).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from benchlib import RESULTS, ROOT, command_line, environment, loadavg, write_json

# (name, kind, H=W of the input, in channels, out channels, kernel, stride): layers of the two 224x224 models
LAYERS = [
    ("resnet18 stem 7x7/2 3->64 @224", "conv", 224, 3, 64, 7, 2),
    ("mobilenetv2 stem 3x3/2 3->32 @224", "conv", 224, 3, 32, 3, 2),
    ("resnet18 3x3 64->64 @56", "conv", 56, 64, 64, 3, 1),
    ("resnet18 3x3 128->128 @28", "conv", 28, 128, 128, 3, 1),
    ("resnet18 3x3 256->256 @14", "conv", 14, 256, 256, 3, 1),
    ("resnet18 3x3 512->512 @7", "conv", 7, 512, 512, 3, 1),
    ("mobilenetv2 1x1 24->144 @56", "conv", 56, 24, 144, 1, 1),
    ("mobilenetv2 dw3x3 144 @56", "dw", 56, 144, 144, 3, 1),
    ("mobilenetv2 1x1 144->24 @56", "conv", 56, 144, 24, 1, 1),
    ("mobilenetv2 dw3x3/2 96 @112", "dw", 112, 96, 96, 3, 2),
    ("mobilenetv2 1x1 320->1280 @7", "conv", 7, 320, 1280, 1, 1),
    # ResNet-18's 3x3/2 max pool, padded by 1 (torch's -inf padding is not TF's SAME here) as the lowering did it
    # before (MIRROR_PAD, which XNNPACK does not take) and as it does now (copies of the edge rows and columns)
    ("resnet18 maxpool 3x3/2, pad as MIRROR_PAD @112", "pool_mirror", 112, 64, 64, 3, 2),
    ("resnet18 maxpool 3x3/2, pad as edge copies @112", "pool_edge", 112, 64, 64, 3, 2),
]
MODELS = {"mobilenetv2_224": "mobilenetv2_224_random.yaml", "resnet18_224": "resnet18_224_random.yaml"}
SCALE_WORK = ROOT / "runs" / "bench" / "scale_quick"
WORK = ROOT / "runs" / "bench" / "litert_int8"


# --------------------------------------------------------------------------------------------- worker
def worker(path: str, threads: int, mode: str, runs: int) -> dict:
    """Median ms of ``runs`` invocations after 5 warm-up ones (this process times one file, then exits)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    builtin = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # LiteRT's own kernels, no XNNPACK
    kw = {} if mode == "xnnpack" else {"experimental_op_resolver_type": builtin}
    it = Interpreter(model_path=path, num_threads=threads, **kw)
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        x = rng.normal(size=d["shape"]) * 40 if d["dtype"] == np.int8 else rng.normal(size=d["shape"])
        it.set_tensor(d["index"], np.clip(x, -128, 127).astype(d["dtype"]))
    for _ in range(5):
        it.invoke()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        it.invoke()
        ts.append(time.perf_counter() - t)
    return {"p50_ms": round(1e3 * statistics.median(ts), 4), "min_ms": round(1e3 * min(ts), 4)}


def timed(path: Path, threads: int, mode: str, runs: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", str(path), str(threads), mode, str(runs)],
                         capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if out.returncode != 0:
        raise SystemExit(f"worker failed on {path}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(files: dict[str, Path], cells: list[tuple[str, int, str]], repeats: int, runs: int) -> dict:
    """cells: (file key, threads, mode); each repeat times every cell once, in order, in fresh processes."""
    times: dict[tuple, list[float]] = {c: [] for c in cells}
    loads = [loadavg()]
    for r in range(repeats):
        for key, threads, mode in cells:
            times[(key, threads, mode)].append(timed(files[key], threads, mode, runs)["p50_ms"])
        loads.append(loadavg())
        print(f"  repeat {r + 1}/{repeats} (load {loads[-1]})", file=sys.stderr)
    return {"times": times, "loadavg": loads}


def ratio(times: dict, a: tuple, b: tuple) -> float | None:
    """Median over repeats of time(a) / time(b) from the same repeat: > 1 means b is faster."""
    pairs = [x / y for x, y in zip(times.get(a, []), times.get(b, [])) if x and y]
    return round(statistics.median(pairs), 3) if pairs else None


# --------------------------------------------------------------------------------------------- layers
def build_layer(tf, kind: str, hw: int, cin: int, cout: int, k: int, s: int, out: Path) -> dict[str, Path]:
    """One convolution (bias, ReLU6 fused by the converter) or one padded max pool (edgeship's lowering of the
    padding, then and now) as an FP32 and a full-integer INT8 .tflite."""
    from types import SimpleNamespace

    from edgeship.targets.torch2tf.lowering import Lowering

    rng = np.random.default_rng(0)
    if kind == "conv":
        w = (rng.normal(size=(k, k, cin, cout)) / np.sqrt(k * k * cin)).astype(np.float32)
    else:
        w = (rng.normal(size=(k, k, cin, 1)) / k).astype(np.float32)
    b = (rng.normal(size=(cout,)) * 0.1).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, hw, hw, cin], tf.float32)])
    def fn(x):
        if kind.startswith("pool"):
            pads = [[0, 0], [1, 1], [1, 1], [0, 0]]
            x = tf.pad(x, pads, mode="SYMMETRIC") if kind == "pool_mirror" else \
                Lowering._edge_pad(SimpleNamespace(tf=tf), x, pads)
            return tf.nn.max_pool2d(x, k, s, "VALID")
        if kind == "conv":
            y = tf.nn.conv2d(x, w, strides=[1, s, s, 1], padding="SAME")
        else:
            y = tf.nn.depthwise_conv2d(x, w, strides=[1, s, s, 1], padding="SAME")
        return tf.nn.relu6(tf.nn.bias_add(y, b))

    files = {}
    for precision in ("fp32", "int8"):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
        if precision == "int8":  # TFLite's documented full-integer post-training quantization
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: ([rng.normal(size=(1, hw, hw, cin)).astype(np.float32)]
                                                   for _ in range(8))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = conv.inference_output_type = tf.int8
        files[precision] = out / f"{kind}_{hw}_{cin}_{cout}_{k}_{s}_{precision}.tflite"
        files[precision].write_bytes(conv.convert())
    return files


def layers_part(args, tmp: Path) -> list[dict]:
    import tensorflow as tf

    files, meta = {}, {}
    for name, kind, hw, cin, cout, k, s in LAYERS:
        for precision, path in build_layer(tf, kind, hw, cin, cout, k, s, tmp).items():
            files[(name, precision)] = path
        ho = -(-hw // s)
        macs = ho * ho * cout * k * k * (cin if kind == "conv" else 1) if not kind.startswith("pool") else None
        meta[name] = {"kind": kind, "input_hw": hw, "in_channels": cin, "out_channels": cout, "kernel": k,
                      "stride": s, "macs": macs}
    cells = [((name, p), t, "xnnpack") for t in args.threads for name, *_ in LAYERS for p in ("fp32", "int8")]
    keyed = {str(k): v for k, v in files.items()}
    res = interleaved(keyed, [(str(c[0]), c[1], c[2]) for c in cells], args.repeats, args.layer_runs)
    rows = []
    for name, *_ in LAYERS:
        row = {"layer": name, **meta[name], "p50_ms": {}, "int8_speedup": {}, "gmacs_per_s": {}}
        for t in args.threads:
            f, i = (str((name, "fp32")), t, "xnnpack"), (str((name, "int8")), t, "xnnpack")
            row["p50_ms"][str(t)] = {"fp32": statistics.median(res["times"][f]),
                                     "int8": statistics.median(res["times"][i])}
            row["int8_speedup"][str(t)] = ratio(res["times"], f, i)
            if meta[name]["macs"]:
                row["gmacs_per_s"][str(t)] = {p: round(meta[name]["macs"] / row["p50_ms"][str(t)][p] / 1e6, 2)
                                              for p in ("fp32", "int8")}
        rows.append(row)
    return rows, res["loadavg"]


# --------------------------------------------------------------------------------------------- models
def graph_facts(path: Path) -> dict:
    """Operators, quantization and XNNPACK's partitions of one .tflite (what LiteRT itself reports)."""
    sys.path.insert(0, str(ROOT / "edgeship" / "devices"))
    import layer_profile  # the profile bench_runner writes for LiteRT: which operators XNNPACK took
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    ops = [o for o in it._get_ops_details() if o["op_name"] != "DELEGATE"]
    hist: dict[str, int] = {}
    for o in ops:
        hist[o["op_name"]] = hist.get(o["op_name"], 0) + 1
    per_channel = per_tensor = 0
    for o in ops:
        if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(o["inputs"]) > 1:
            q = tensors[int(o["inputs"][1])].get("quantization_parameters") or {}
            n = len(q.get("scales", []))
            per_channel += n > 1
            per_tensor += n == 1
    _, rows = layer_profile.tflite_layers(it)
    summary = layer_profile.layer_profile("litert", rows, True)
    io = [str(np.dtype(d["dtype"])) for d in it.get_input_details() + it.get_output_details()]
    return {"file": str(path.relative_to(ROOT)), "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16], "ops": len(ops), "op_types": hist,
            "quantize_dequantize_ops": hist.get("QUANTIZE", 0) + hist.get("DEQUANTIZE", 0),
            "weights_per_channel": per_channel, "weights_per_tensor": per_tensor, "io_dtypes": io,
            "xnnpack_partitions": sum(o["op_name"] == "DELEGATE" for o in it._get_ops_details()),
            "ops_left_to_builtin_kernels": summary["not_delegated"],
            "int8_compute_layers": summary["int8_compute_layers"], "compute_layers": summary["compute_layers"]}


def export_current(model: str) -> dict[str, Path]:
    """The recipe's tflite targets (fp32 and int8) exported by the current code, `edgeship export --no-measure`."""
    rec = yaml.safe_load((ROOT / "benchmarks" / "recipes" / MODELS[model]).read_text())
    rec["name"] = f"litert_int8_{model}"
    rec["targets"] = [{"name": f"tflite-{p}", "format": "tflite", "precision": p, "max_accuracy_drop": 100.0}
                      for p in ("fp32", "int8")]
    rec["output"] = str(WORK / model)
    path = WORK / f"{model}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(rec, sort_keys=False))
    code = subprocess.run([str(ROOT / ".venv" / "bin" / "edgeship"), "--quiet", "export", str(path), "--no-measure"],
                          cwd=ROOT, capture_output=True, text=True).returncode
    if code not in (0, 1):
        raise SystemExit(f"edgeship export {path} failed (exit {code})")
    return {f"{k}_now": WORK / model / "targets" / f"tflite-{p}" / "model.tflite"
            for k, p in (("fp32", "fp32"), ("edgeship_int8", "int8"))}


def models_part(args) -> tuple[dict, list]:
    out, loads = {}, []
    for model in args.models:
        files = {"fp32": SCALE_WORK / f"{model}_fp32" / "targets" / "tflite-fp32" / "model.tflite",
                 "edgeship_int8": SCALE_WORK / f"{model}_edgeship" / "targets" / "tflite-int8" / "model.tflite",
                 "tfliteconverter_int8": SCALE_WORK / f"{model}_peers" / "peer-tflite" / "model.tflite"}
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise SystemExit(f"{missing[0]} is missing: run benchmarks/scale.py --quick --models {model} first")
        if not args.no_export:
            print(f"{model}: exporting the tflite targets with the current code", file=sys.stderr)
            files.update(export_current(model))
        cells = []
        for t in args.threads:
            cells += [(k, t, "xnnpack") for k in files]
        cells += [(k, 1, "builtin") for k in ("fp32", "edgeship_int8")]
        res = interleaved(files, cells, args.repeats, args.model_runs)
        loads += res["loadavg"]
        times = res["times"]
        row: dict = {"graphs": {k: graph_facts(p) for k, p in files.items()}, "p50_ms": {}, "speedup_vs_fp32": {},
                     "speedup_now_vs_scale_run": {}, "xnnpack_speedup_over_builtin_kernels": {},
                     "thread_scaling": {}}
        for key, t, mode in cells:
            row["p50_ms"].setdefault(f"{mode} {t}t", {})[key] = statistics.median(times[(key, t, mode)])
        for t in args.threads:
            x = lambda k, t=t: (k, t, "xnnpack")  # noqa: E731
            row["speedup_vs_fp32"][str(t)] = {  # each INT8 file against the FP32 file of the same lowering
                k: ratio(times, x("fp32_now" if k.endswith("_now") else "fp32"), x(k))
                for k in files if not k.startswith("fp32")}
            row["speedup_now_vs_scale_run"][str(t)] = {k: ratio(times, x(k), x(f"{k}_now"))
                                                       for k in ("fp32", "edgeship_int8") if f"{k}_now" in files}
        for k in (k for k in files if k != "tfliteconverter_int8"):
            if (k, 1, "builtin") in times:
                row["xnnpack_speedup_over_builtin_kernels"][k] = ratio(times, (k, 1, "builtin"), (k, 1, "xnnpack"))
            if {1, 2} <= set(args.threads):
                row["thread_scaling"][k] = ratio(times, (k, 1, "xnnpack"), (k, 2, "xnnpack"))
        out[model] = row
    return out, loads


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="+", default=["layers", "models"], choices=["layers", "models"])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--layer-runs", type=int, default=30)
    ap.add_argument("--model-runs", type=int, default=15)
    ap.add_argument("--no-export", action="store_true", help="time only the scale run's files")
    ap.add_argument("--out", type=Path, default=RESULTS / "litert_int8.json")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        path, threads, mode, runs = sys.argv[2:6]
        print(json.dumps(worker(path, int(threads), mode, int(runs))))
        return 0
    args = parse_args(argv)
    t0, env = time.perf_counter(), environment()
    result: dict = {"benchmark": "litert_int8", "command": command_line(), "environment": env,
                    "method": {"timing": "each cell a fresh process: 5 warm-up invocations, then the median of "
                                         f"{args.layer_runs} (layers) / {args.model_runs} (models); cells interleaved "
                                         f"in every repeat ({args.repeats}); ratios: median over repeats of the "
                                         "per-repeat ratio",
                               "delegation": "LiteRT's interpreter with its default XNNPACK delegate, num_threads as "
                                             "given; 'builtin': BUILTIN_WITHOUT_DEFAULT_DELEGATES (LiteRT's own "
                                             "kernels)",
                               "scheduling": "run under chrt --idle 0 on a shared 2-core machine: absolute times "
                                             "depend on the other jobs; compare the ratios"},
                    "cpu_flags": sorted({f for f in open("/proc/cpuinfo").read().split()
                                         if f.startswith(("avx", "fma", "f16c", "amx")) or "vnni" in f})}
    with tempfile.TemporaryDirectory(prefix="litert-int8-") as tmp:
        if "layers" in args.parts:
            result["layers"], result["layers_loadavg"] = layers_part(args, Path(tmp))
    if "models" in args.parts:
        result["models"], result["models_loadavg"] = models_part(args)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
