"""Time to the first report (issue 20, item 6): `make demo` on a fresh clone, phase by phase.

    .venv/bin/python benchmarks/demo_time.py [--branch BRANCH] [--out benchmarks/results/demo_time.json]

Clones this repository's BRANCH (default: the checked-out one) into a temporary directory and runs there
what a new user runs: `make demo` (setup: Debian packages if missing, a new .venv, the pinned set from PyPI;
then `edgeship train --if-missing`, then `edgeship export` on the demo recipe). Each line make prints is
timestamped; a phase starts at the line make echoes before its command, so the phases are exactly make's.
Records wall and CPU time (user + system of the whole process tree) per phase and the load average sampled
every 5 s: on a shared machine the wall time means something only with the load it ran under, while the CPU
seconds divided by the cores bound what an idle machine would take from below. Then the report's test top-1
per artifact and the budget verdict. Also the CPU other jobs took meanwhile (benchlib.CpuShare: the load average
counts stopped and SCHED_IDLE jobs that take nothing) and whether the uv package cache was empty at the start
(`--cold-cache` empties it, as on a fresh machine). Bar: under 10 minutes in all, INT8 top-1 the same or better
than before.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

from benchlib import RESULTS, ROOT, CpuShare, LoadSampler, command_line, environment, loadavg, write_json

BAR_S = 600.0
PHASES = (("setup", "scripts/bootstrap.sh"), ("train", "edgeship train"), ("export", "edgeship export"))


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_make_demo(clone: Path, log: Path) -> dict:
    marks: list[tuple[str, float]] = []
    t0, cpu0 = time.perf_counter(), cpu_children()
    with log.open("w") as f, LoadSampler() as loads:
        proc = subprocess.Popen(["make", "demo"], cwd=clone, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.perf_counter() - t0
            f.write(f"{now:8.1f} {line}")
            for name, marker in PHASES:
                if marker in line and name not in dict(marks):
                    marks.append((name, now))
        code = proc.wait()
    wall, cpu = time.perf_counter() - t0, cpu_children() - cpu0
    starts = dict(marks)
    starts.setdefault("setup", 0.0)
    order = [n for n, _ in PHASES if n in starts]
    phases = {n: round((starts[order[i + 1]] if i + 1 < len(order) else wall) - starts[n], 1)
              for i, n in enumerate(order)}
    return {"exit_code": code, "wall_s": round(wall, 1), "cpu_s_process_tree": round(cpu, 1), "phases_wall_s": phases,
            "loadavg_1min_samples": loads.summary()}


def report_facts(run_dir: Path) -> dict:
    path = run_dir / "report.json"
    if not path.is_file():
        return {}
    r = json.loads(path.read_text())
    verdict = r.get("budgets") or {}
    results = verdict.get("results") or []
    return {
        "baseline_top1_test": (r.get("baseline") or {}).get("top1_test"),
        "final_top1_test": (r.get("final") or {}).get("top1_test"),
        "stages": [{k: s.get(k) for k in ("stage", "wall_s", "cached", "top1_val", "macs")}
                   for s in r.get("stages", [])],
        "targets": [{"name": t["name"], "format": t.get("format"), "precision": t.get("precision"),
                     "status": t.get("status"), "top1_test": (t.get("verify") or {}).get("top1"),
                     "wall_s": t.get("wall_s")} for t in r.get("targets", [])],
        "export_wall_s_recorded": r.get("wall_s"),
        "budgets": {"passed": verdict.get("passed"), "checks": len(results),
                    "met": sum(1 for b in results if b.get("passed"))},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    branch = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.strip()
    ap.add_argument("--branch", default=branch)
    ap.add_argument("--out", type=Path, default=RESULTS / "demo_time.json")
    ap.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary directory)")
    ap.add_argument("--cold-cache", action="store_true",
                    help="install into the new .venv from an empty uv cache (UV_CACHE_DIR in a temporary "
                         "directory), as on a fresh machine: the packages come from the network")
    args = ap.parse_args()
    env = environment()
    with tempfile.TemporaryDirectory(prefix="demo-time-") as tmp:
        clone = args.keep or Path(tmp) / "edgeship"
        subprocess.run(["git", "clone", "--quiet", "--branch", args.branch, str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True,
                                check=True).stdout.strip()
        log = Path(tmp) / "make_demo.log"
        if args.cold_cache:
            os.environ["UV_CACHE_DIR"] = str(Path(tmp) / "uv-cache")  # make's environment: setup sees it
        cache = Path(os.environ.get("UV_CACHE_DIR") or Path.home() / ".cache" / "uv")
        package_cache = {"uv_cache": str(cache), "empty_at_start": not (cache.exists() and any(cache.iterdir()))}
        with CpuShare() as share:
            run = run_make_demo(clone, log)
        facts = report_facts(clone / "runs" / "fashion_mnist")
        tail = log.read_text().splitlines()[-30:]
    result = {"benchmark": "demo_time", "command": command_line(), "branch": args.branch, "commit": commit,
              "environment_at_start": env, "loadavg_at_end": loadavg(), "package_cache": package_cache,
              "cpu_of_other_jobs": share.result(), "make_demo": run, "report": facts,
              "bar_s": BAR_S, "met_time": run["exit_code"] == 0 and run["wall_s"] < BAR_S, "log_tail": tail}
    write_json(args.out, result)
    print(json.dumps({k: run[k] for k in ("exit_code", "wall_s", "cpu_s_process_tree", "phases_wall_s")}))


if __name__ == "__main__":
    main()
