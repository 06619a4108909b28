"""What the benchmark scripts' tests (tests/bench/test_bench_*.py) share: the scripts' folder, a runner, quick passes.

They are collected first (`bench` sorts before the other folders): each file is minutes of work, and a worker that
starts the long files first does not leave the other idle at the end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import REPO

SCRIPTS = REPO / "benchmarks"
PASSES = [
    {"name": "prune", "macs_ratio": 0.5, "round_to": 4, "steps": 1, "fine_tune": {"epochs": 1, "samples": 400}},
    {"name": "distill", "epochs": 1, "samples": 400},
    {"name": "qat", "epochs": 1, "samples": 400, "calib_samples": 64},
]
REPEATS = 2


def run_script(name: str, *args) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, str(SCRIPTS / name), *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def bench_results() -> Path:
    return SCRIPTS / "results"
