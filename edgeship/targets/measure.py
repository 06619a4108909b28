"""Latency and memory of each artifact measured on this machine.

Every artifact runs in a FRESH Python subprocess (``bench_runner.py``, the same script that is
copied to devices) with its own runtime and a fixed thread count: warm-up, then N timed runs.
Nothing the parent process imported (torch, the other runtimes) is in the child, so the peak RSS
and the cold load time are the artifact's runtime alone. Results are marked ``source: host``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from edgeship.errors import EdgeshipError, TargetError

RUNNER = Path(__file__).with_name("bench_runner.py")
MARKER = "EDGESHIP_BENCH "
DEFAULT_RUNS, DEFAULT_WARMUP = 50, 5
# keys copied from the runner's JSON into a stored measurement (the report.json contract)
KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "samples_ms", "load_ms",
        "first_run_ms", "peak_rss_mb", "rss_before_load_mb", "arena_mb", "size_bytes", "threads", "runs",
        "warmup", "runtime", "runtime_version", "input_shape", "input_dtype", "inference_precision")


def runner_args(python: str, runner: str, bundle: str, threads: int, runs: int, warmup: int) -> list[str]:
    return [python, runner, "--dir", bundle, "--threads", str(int(threads)), "--runs", str(int(runs)),
            "--warmup", str(int(warmup))]


def parse_runner_output(stdout: str) -> Optional[dict]:
    """The runner's JSON line, or None when it printed none (it crashed before reporting)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    return None


def to_measurement(raw: dict, source: str, **extra) -> dict:
    m = {"source": source, **{k: raw.get(k) for k in KEYS}, "facts": raw.get("facts") or {}, "method": None}
    m.update(extra)
    return m


def runner_failure(target: str, raw: Optional[dict], stderr: str, where: str, python: str) -> EdgeshipError:
    """Turn a failed runner into one clear line (the missing package named)."""
    if raw and raw.get("error") == "missing_package":
        pkg = raw["package"]
        problem = (f"{target}: {where} has no Python package {pkg} (module {raw['module']}) for {raw.get('python') or python}")
        fix = f"on {where}: {python} -m pip install {pkg}"
        return EdgeshipError(problem, fix) if pkg == "numpy" else TargetError(problem, fix)
    msg = raw.get("message") if raw else (stderr.strip().splitlines() or ["no output"])[-1]
    return TargetError(f"{target}: the benchmark failed on {where}: {msg}",
                       "check that the artifact runs there with the same runtime version")


def measure_host(art, threads: int, runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP,
                 timeout: float = 600) -> dict:
    """Measure one artifact (rundir.RunArtifact) in a fresh subprocess of this Python."""
    cmd = runner_args(sys.executable, str(RUNNER), str(art.dir), threads, runs, warmup)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="3")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{art.name}: the host benchmark took longer than {timeout:.0f} s",
                          "lower --runs or check the artifact") from None
    raw = parse_runner_output(p.stdout)
    if p.returncode != 0 or not raw or not raw.get("ok"):
        raise runner_failure(art.name, raw, p.stderr, "this machine", sys.executable)
    return to_measurement(raw, "host")


def measure_all_host(run_dir: Path, report: dict, only: Optional[list[str]] = None, threads: Optional[int] = None,
                     runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP, quiet: bool = False) -> dict[str, str]:
    """Measure every OK artifact of ``report`` on the host and store it; returns {target: error}."""
    from edgeship.progress import info
    from edgeship.targets import devices, rundir

    host = devices.get(devices.HOST)
    t = threads or host.threads
    errors = {}
    for art in rundir.artifacts(run_dir, report, only):
        try:
            m = measure_host(art, t, runs, warmup)
            rundir.store(report, art.name, m)
            if not quiet:
                info(f"host {art.name}: p50 {m['p50_ms']:.3f} ms, p90 {m['p90_ms']:.3f} ms, "
                     f"peak RSS {m['peak_rss_mb']:.0f} MB ({t} thread{'s' if t > 1 else ''}, {runs} runs)")
        except TargetError as e:
            errors[art.name] = str(e)
            info(f"[red]host measurement of {art.name} failed:[/red] {e}")
    if errors:
        report.setdefault("measurement_errors", {}).update({k: {"host": v} for k, v in errors.items()})
    return errors


def measure_and_check(report: dict, run_dir: Path, only: Optional[list[str]] = None, runs: int = DEFAULT_RUNS,
                      quiet: bool = False) -> None:
    """The end of `edgeship export`: host-measure the OK artifacts (of ``only``), then the budget
    verdict over every target of the report (source host)."""
    from edgeship.targets import budgets

    ok = [t["name"] for t in report.get("targets", []) if t.get("status") == "ok" and (not only or t["name"] in only)]
    if ok:
        measure_all_host(run_dir, report, ok, runs=runs, quiet=quiet)
    report["budgets"] = budgets.evaluate(report, "host")
