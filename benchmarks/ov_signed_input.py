"""Why the latency predictor misses OpenVINO INT8 models (issue 16): each dense convolution's time inside a model
against the time the predictor gives it, split by whether its input is quantized to signed int8.

    .venv/bin/python benchmarks/ov_signed_input.py --predictors DIR      # DIR/host.json: a calibration of this host
    .venv/bin/python benchmarks/ov_signed_input.py --predictors DIR --archs 10 --runs 100 --out F

NNCF quantizes an input that no ReLU bounds (a linear projection's output, a residual sum, the model's input) to
signed int8 and one after a ReLU to unsigned; ``kernels.read`` reports it as ``Kernel.sin`` (from the IR's
FakeQuantize ranges). A calibration probe is one convolution fed by the model's input, so the probes never show the
difference a model's graph makes. This lowers predictor.py's first evaluation architectures
(``archs.random_arch(400000 + i)``) to OpenVINO INT8 with edgeship's backend, runs each with OpenVINO's per-layer
counters (PERF_COUNT, 1 thread, after 20 warm-up runs), matches every convolution of the compiled model to its
kernel (by its input and output shapes), and compares the counter's median with the predictor's time for that kernel
(``ConfigPredictor.kernel_ms``: the probe's time less its trailing pool, overheads included, which the correction
then scales per group). A ratio that differs between the two groups is what a separate correction weight
(``predictor.GROUPS``: ``conv_signed``) takes up. Counters are not the latency a user meets (they leave out the
graph's own overheads); only their ratio between groups is used. Writes benchmarks/results/ov_signed_input.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, command_line, environment, write_json  # noqa: E402

EVAL_SEED = 400000  # benchmarks/predictor.py's evaluation architectures


def counters(xml: Path, input_shape: tuple[int, ...], runs: int) -> list[dict]:
    """The compiled model's convolutions in execution order: input/output shapes, input precision, median ms."""
    import numpy as np
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": 1, "PERF_COUNT": True,
                                                         "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    times: dict[str, list[float]] = {}
    for i in range(20 + runs):
        request.infer({0: x})
        if i >= 20:
            for p in request.get_profiling_info():
                if p.status == p.Status.EXECUTED:
                    times.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e3)
    out = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) not in ("Convolution", "GroupConvolution"):
            continue
        out.append({"in": list(op.input(0).get_partial_shape().to_shape()),
                    "out": list(op.output(0).get_partial_shape().to_shape()),
                    "kernel": info["primitiveType"].astype(str), "input_type": str(op.input(0).get_element_type()),
                    "ms": statistics.median(times.get(op.get_friendly_name(), [0.0]))})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictors", type=Path, required=True, help="the directory holding the calibration's file")
    ap.add_argument("--device", default="host")
    ap.add_argument("--archs", type=int, default=10)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", type=Path, default=RESULTS / "ov_signed_input.json")
    args = ap.parse_args(argv)
    import torch

    from edgeship.devices import predictor as pred
    from edgeship.devices.archs import random_arch
    from edgeship.devices.calibrate import lower
    from edgeship.devices.kernels import read

    torch.set_num_threads(1)
    pf = pred.load(args.device, args.predictors)
    if pf is None or pred.key("openvino", "int8", 1) not in pf.configs:
        sys.exit(f"error: {args.predictors} has no OpenVINO INT8 1-thread predictor for {args.device}; fix: "
                 "calibrate it (benchmarks/predictor.py --configs openvino:int8 --predictors DIR)")
    cfg = pf.configs[pred.key("openvino", "int8", 1)]
    rows, unmatched = [], 0
    with tempfile.TemporaryDirectory(prefix="ov-signed-") as tmp:
        for i in range(args.archs):
            a = random_arch(EVAL_SEED + i)
            d = lower(a.model, a.input_shape, "openvino", "int8", Path(tmp) / f"a{i}", f"a{i}", Path(tmp), seed=i)
            ks = read(d / "model.xml", "openvino")[0]
            predicted = cfg.kernel_ms(ks)
            free = [j for j, k in enumerate(ks) if k.type == "conv"]
            for c in counters(d / "model.xml", a.input_shape, args.runs):
                match = [j for j in free if (ks[j].cin, ks[j].hin, ks[j].cout, ks[j].hout) ==
                         (c["in"][1], c["in"][2], c["out"][1], c["out"][2])]
                if "_dw_" in c["kernel"]:
                    continue  # a depthwise convolution: not this question
                if not match:
                    unmatched += 1
                    continue
                k = ks[match[0]]
                free.remove(match[0])
                rows.append({"arch": f"a{i:03d}", "kernel": k.to_dict(), "signed_input": bool(k.sin),
                             "runtime_kernel": c["kernel"], "runtime_input_type": c["input_type"],
                             "counter_ms": round(c["ms"], 4), "predicted_ms": round(predicted[match[0]], 5),
                             "ratio": round(c["ms"] / predicted[match[0]], 3)})
            print(f"a{i:03d}: {sum(r['arch'] == f'a{i:03d}' for r in rows)} convolutions", file=sys.stderr)
    summary = {}
    for signed in (False, True):
        r = [x["ratio"] for x in rows if x["signed_input"] is signed]
        summary["signed" if signed else "unsigned"] = {
            "convolutions": len(r), "median_ratio": round(statistics.median(r), 3) if r else None,
            "quartiles": [round(q, 3) for q in statistics.quantiles(r, n=4)] if len(r) >= 2 else None,
            "counter_ms": round(sum(x["counter_ms"] for x in rows if x["signed_input"] is signed), 4),
            "predicted_ms": round(sum(x["predicted_ms"] for x in rows if x["signed_input"] is signed), 4)}
    agree = sum(("'int8_t'" in x["runtime_input_type"]) == x["signed_input"] for x in rows)
    write_json(args.out, {"benchmark": "ov_signed_input", "command": command_line(), "environment": environment(),
                          "method": {"archs": args.archs, "runs": args.runs, "threads": 1, "warmup": 20,
                                     "predictor": {"file": str(pred.path_for(args.device, args.predictors)),
                                                   "created": pf.created},
                                     "ratio": "per-layer counter median / the predictor's kernel time"},
                          "summary": summary, "unmatched": unmatched,
                          "reader_agrees_with_runtime": f"{agree}/{len(rows)}", "rows": rows})
    print(f"wrote {args.out}: {json.dumps(summary)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
