"""How torch's OpenMP wait policy changes the cost of a fine-tuning step on a busy machine (issue 20, item 6).

    .venv/bin/python benchmarks/omp_wait.py [--steps 6] [--repeats 2]

Times training steps (AdamW, batch 128, channels_last: what distill and QAT run) of the demo's MobileNetV2 on
28x28 inputs, each configuration in a fresh process (OMP_WAIT_POLICY is read when torch loads), interleaved:
2 threads with libgomp's default policy, 2 threads with OMP_WAIT_POLICY=PASSIVE (what the CLI sets when the
1-minute load average exceeds the cores), 1 thread. The first 2 steps of each process are warm-up. Records the
load average around every process: the result means something only with the load it ran under.
Writes benchmarks/results/omp_wait.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchlib import RESULTS, command_line, environment, loadavg, write_json

CONFIGS = {"2 threads, default wait policy": (2, None), "2 threads, OMP_WAIT_POLICY=PASSIVE": (2, "PASSIVE"),
           "1 thread": (1, None)}

CHILD = """
import json, sys, time, torch
from edgeship.models.zoo import MobileNetV2
from edgeship.perf import to_channels_last, tune_allocator
torch.set_num_threads(int(sys.argv[1])); torch.manual_seed(0); tune_allocator()
m = MobileNetV2().to(memory_format=torch.channels_last).train()
opt = torch.optim.AdamW(m.parameters(), 1e-3)
x, y = to_channels_last(torch.randn(128, 1, 28, 28)), torch.randint(0, 10, (128,))
times = []
for _ in range(int(sys.argv[2]) + 2):
    t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(m(x), y)
    opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - t0)
print(json.dumps(times[2:]))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    runs: dict[str, list] = {name: [] for name in CONFIGS}
    for _ in range(args.repeats):
        for name, (threads, policy) in CONFIGS.items():
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            before = loadavg()
            out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(args.steps)], env=env,
                                 capture_output=True, text=True, check=True).stdout
            steps = json.loads(out.strip().splitlines()[-1])
            runs[name].append({"step_s": [round(s, 3) for s in steps], "loadavg_before": before,
                               "loadavg_after": loadavg()})
            print(f"{name}: median step {sorted(steps)[len(steps) // 2]:.3f} s (load {before[0]})", flush=True)
    summary = {name: round(sorted(s for r in rs for s in r["step_s"])[len(rs) * args.steps // 2], 3)
               for name, rs in runs.items()}
    write_json(RESULTS / "omp_wait.json", {
        "benchmark": "omp_wait", "command": command_line(), "environment": environment(),
        "model": "MobileNetV2 (demo, width 1.0), 28x28x1, batch 128, AdamW, channels_last",
        "median_step_s": summary, "runs": runs})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
