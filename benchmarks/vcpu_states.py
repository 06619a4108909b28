"""The speed states of this VM's second vCPU, as a 2-thread timing of a small model meets them.

One small ONNX model (three 3x3 convolutions of 32 channels over 28x28x3, ReLU) is timed in fresh ONNX Runtime
processes, alternating 1 and 2 intra-op threads (``--pairs`` of each; 20 warm-up and 100 timed runs, p50), with or
without pinning (``--pin``: the worker thread to the second vCPU by ``session.intra_op_thread_affinities``, the
main thread to the first); each 2-thread process also records which vCPU each of its busy threads last ran on.

    .venv/bin/python benchmarks/vcpu_states.py [--pin] [--out benchmarks/results/vcpu_states.json]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, command_line, environment, write_json  # noqa: E402

CHILD = r"""
import os, sys, time, numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = int(sys.argv[2]); so.inter_op_num_threads = 1
pin = sys.argv[3] == "pin" and so.intra_op_num_threads == 2
if pin:
    so.add_session_config_entry("session.intra_op_thread_affinities", "2")
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
if pin:
    os.sched_setaffinity(0, {0})
x = np.random.rand(1, 3, 28, 28).astype(np.float32); n = s.get_inputs()[0].name
for _ in range(20): s.run(None, {n: x})
ts = []
for _ in range(100):
    t = time.perf_counter(); s.run(None, {n: x}); ts.append(time.perf_counter() - t)
cpus = []
for tid in os.listdir("/proc/self/task"):
    f = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
    if int(f[11]) > 0:
        cpus.append(int(f[36]))
print(np.median(ts) * 1e3, sorted(cpus))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--pin", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS / "vcpu_states.json")
    args = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        layers = [m for i in range(3) for m in (torch.nn.Conv2d(3 if i == 0 else 32, 32, 3, padding=1),
                                               torch.nn.ReLU())]
        torch.onnx.export(torch.nn.Sequential(*layers).eval(), (torch.rand(1, 3, 28, 28),), str(path), dynamo=False)
        rows = []
        for i in range(args.pairs):
            for threads in (1, 2):
                out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(threads),
                                      "pin" if args.pin else "-"], capture_output=True, text=True, check=True)
                p50, cpus = out.stdout.strip().split(" ", 1)
                rows.append({"pair": i, "threads": threads, "p50_ms": round(float(p50), 4), "busy_thread_cpus": cpus})
    one = [r["p50_ms"] for r in rows if r["threads"] == 1]
    two = [r["p50_ms"] for r in rows if r["threads"] == 2]
    summary = {"one_thread_ms": {"min": min(one), "median": statistics.median(one), "max": max(one)},
               "two_threads_ms": sorted(two), "two_over_one_median": round(statistics.median(two) /
                                                                         statistics.median(one), 3)}
    print(summary)
    write_json(args.out, {"command": command_line(), "environment": environment(), "pin": args.pin,
                          "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
