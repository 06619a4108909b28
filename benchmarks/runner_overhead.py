"""What a Python call into OpenVINO costs besides the model: `request.infer({0: x})` (the data
dispatcher converts and copies the array on every call) against an input tensor bound once over a
buffer the caller writes each frame into (what benchmark_app and a C++ application do, and what
edgeship's bench_runner does since this benchmark). ONNX Runtime's `sess.run(None, feed)` is timed against
IO binding for comparison.

    .venv/bin/python benchmarks/runner_overhead.py

Exports the MobileNetV2-style and ResNet-20 reference models (seeded weights: latency does not depend on
them) to FP32 and post-training INT8 OpenVINO IR and ONNX with `edgeship export`, then in a fresh
subprocess per artifact and repeat times each call style (1 thread, 2000 calls, styles alternating, 5
repeats, median of the per-repeat p50s). Writes benchmarks/results/runner_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from benchlib import RESULTS, ROOT, command_line, environment, write_json

MODELS = {"mobilenetv2": ("mobilenetv2", {"width_mult": 1.0}), "resnet": ("resnet", {"depth": 20})}
ARTIFACTS = ("openvino-fp32", "openvino-int8", "onnx-fp32", "onnx-int8")

TIMER = r"""
import json, sys, time
import numpy as np
path, fmt, threads, runs, first = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
meta = json.load(open(sys.argv[6])).get("meta") or {}
if fmt == "openvino":
    import openvino as ov
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    config.update(meta.get("runtime_config") or {})
    model = core.read_model(path)
    ps = model.input(0).get_partial_shape()
    if ps.is_dynamic:
        model.reshape({model.input(0).get_any_name(): [d.get_length() if d.is_static else 1 for d in ps]})
    compiled = core.compile_model(model, "CPU", config)
    shape = list(compiled.input(0).get_shape())
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    r1, r2 = compiled.create_infer_request(), compiled.create_infer_request()
    buf = np.empty(shape, np.float32)
    r2.set_input_tensor(ov.Tensor(buf, shared_memory=True))
    def per_call():
        r1.infer({0: x}); return r1.get_output_tensor(0).data
    def bound():
        buf[...] = x; r2.infer(); return r2.get_output_tensor(0).data
    styles = {"infer(dict)": per_call, "bound input tensor": bound}
else:
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
    xv = ort.OrtValue.ortvalue_from_numpy(x)
    io = sess.io_binding(); io.bind_ortvalue_input(inp.name, xv); io.bind_output(out.name)
    def per_call():
        return sess.run(None, {inp.name: x})[0]
    def bound():
        sess.run_with_iobinding(io); return io.get_outputs()[0].numpy()
    styles = {"run(dict)": per_call, "io binding": bound}
order = list(styles) if first == "0" else list(reversed(styles))
p50 = {}
for name in order:
    f = styles[name]
    for _ in range(200):
        f()
    ts = []
    for _ in range(runs):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    p50[name] = float(np.median(ts) * 1e3)
print(json.dumps(p50))
"""


def recipe(zoo: str, args: dict, weights: Path, out: Path) -> dict:
    return {
        "name": "runner_overhead", "seed": 0,
        "model": {"zoo": zoo, "args": args, "weights": str(weights)},
        "input": {"shape": [1, 28, 28], "preprocessing": {"scale": 1 / 255, "mean": [0.2860], "std": [0.3530]}},
        "data": {"source": {"kind": "fashion_mnist"}, "val_size": 256, "calib_size": 256, "test_size": 256,
                 "seed": 0},
        "passes": [],
        "targets": [{"name": a, "format": a.split("-")[0], "precision": a.split("-")[1], "max_accuracy_drop": 100.0}
                    for a in ARTIFACTS],
        "output": str(out),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "runner_overhead.json")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    import torch

    from edgeship.api import export
    from edgeship.models.zoo import ZOO

    result = {"benchmark": "runner_overhead", "command": command_line(), "environment": environment(),
              "method": {"threads": args.threads, "runs": args.runs, "repeats": args.repeats,
                         "p50": "median over repeats of each repeat's p50 (ms)"},
              "models": {}}
    with tempfile.TemporaryDirectory(prefix="runner-overhead-") as tmp:
        tmp = Path(tmp)
        for name in args.models:
            zoo, zargs = MODELS[name]
            torch.manual_seed(0)
            torch.save(ZOO[zoo](**zargs).state_dict(), tmp / f"{name}.pt")
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(recipe(zoo, zargs, tmp / f"{name}.pt", tmp / name)))
            report = export(tmp / f"{name}.yaml", quiet=True, measure=False).model_dump(mode="json")
            code = 0 if all(t["status"] == "ok" for t in report["targets"]) else 1
            if code:
                print(f"{name}: export failed", file=sys.stderr)
                return 1
            rows = {}
            for art in ARTIFACTS:
                d = tmp / name / "targets" / art
                main_file = next(p for p in d.iterdir() if p.suffix in (".xml", ".onnx"))
                samples: dict[str, list[float]] = {}
                for rep in range(args.repeats):
                    p = subprocess.run([sys.executable, "-c", TIMER, str(main_file), art.split("-")[0],
                                        str(args.threads), str(args.runs), str(rep % 2), str(d / "model.json")],
                                       capture_output=True, text=True,
                                       env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
                    if p.returncode:
                        print(f"{name} {art}: the timer failed:\n{p.stderr[-2000:]}", file=sys.stderr)
                        return 1
                    for style, v in json.loads(p.stdout.strip().splitlines()[-1]).items():
                        samples.setdefault(style, []).append(round(v, 4))
                p50 = {s: round(statistics.median(v), 4) for s, v in samples.items()}
                per_call, bound = list(p50.values())
                rows[art] = {"p50_ms": p50, "p50_repeats": samples, "overhead_ms": round(per_call - bound, 4)}
                print(f"{name} {art}: {p50}", file=sys.stderr)
            for fmt in ("openvino", "onnx"):
                f32, i8 = rows[f"{fmt}-fp32"]["p50_ms"], rows[f"{fmt}-int8"]["p50_ms"]
                rows[f"{fmt}_int8_speedup"] = {s: round(f32[s] / i8[s], 3) for s in f32}
            result["models"][name] = rows
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
