"""Start-up time of the commands that read runs: `edgeship --help`, `devices`, `check RUN`, `report RUN`
(the issue-14 bar: `--help` under 2 s on a warm cache), beside the import time of torch alone, which every
command paid before the CLI stopped importing it; and reading the digits set (what every command on a digits recipe
does first) from scikit-learn's bundled file, beside scikit-learn's own loader, which the commands used before.

Each command runs as a fresh process (the installed console script, as a user runs it) `--repeats` times after one
warm-up; the median wall time is kept. The run directory is a real tiny run exported here (digits, FP32 ONNX).

    .venv/bin/python benchmarks/cli_startup.py      # -> benchmarks/results/cli_startup.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from benchlib import environment  # noqa: E402


def timed(cmd: list[str], repeats: int, cwd: Path) -> dict:
    subprocess.run(cmd, capture_output=True, cwd=cwd, check=False)  # warm the page cache
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, cwd=cwd)
        walls.append(time.perf_counter() - t0)
    return {"command": " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd)),
            "exit_code": p.returncode, "median_s": round(statistics.median(walls), 3),
            "min_s": round(min(walls), 3), "max_s": round(max(walls), 3), "repeats": repeats}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cli_startup.json")
    args = ap.parse_args(argv)
    exe = str(Path(sys.executable).with_name("edgeship"))
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        tmp = Path(tmp)
        recipe = (REPO / "recipes" / "digits.yaml").read_text().replace("checkpoints/", f"{tmp}/checkpoints/")
        (tmp / "digits.yaml").write_text(recipe)
        for cmd in (["train", "digits.yaml", "--if-missing"], ["export", "digits.yaml", "--runs", "5"]):
            subprocess.run([exe, "--quiet", *cmd], cwd=tmp, check=True, capture_output=True)
        rows = [timed([exe, "--help"], args.repeats, tmp), timed([exe, "devices"], args.repeats, tmp),
                timed([exe, "check", "runs/digits"], args.repeats, tmp),
                timed([exe, "report", "runs/digits"], args.repeats, tmp),
                timed([sys.executable, "-c", "import torch"], args.repeats, tmp),
                timed([sys.executable, "-c", "from edgeship.calibration.datasets import load_digits; load_digits()"],
                      args.repeats, tmp),
                timed([sys.executable, "-c", "from sklearn.datasets import load_digits; load_digits()"], args.repeats,
                      tmp)]
    rows[-3]["command"] = "python -c 'import torch' (what every command paid before)"
    rows[-2]["command"] = "python: the digits read by edgeship (scikit-learn's file, not imported)"
    rows[-1]["command"] = "python: the digits read by scikit-learn (what a digits recipe's commands paid before)"
    result = {"benchmark": "cli_startup", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "environment": environment(), "rows": rows,
              "bar": {"help_median_s": 2.0}, "met": {"help": rows[0]["median_s"] < 2.0}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"{r['command']:60s} median {r['median_s']:.3f} s (exit {r['exit_code']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
