"""Measuring on an Android phone over adb: the ``.tflite`` is pushed and TFLite's own ``benchmark_model`` binary
runs it (its path on the device is configurable). Its text output is parsed by ``parse_benchmark_model``; a second
run with ``--enable_op_profiling=true`` gives each operator's time on the phone (``parse_op_profile``), so the
profiler never slows the timed runs. Measurements are marked ``source: device``."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edgeship.devices import layer_profile
from edgeship.devices.measure import DEFAULT_PROFILE_RUNS, RunArtifact
from edgeship.devices.remote import quote_cmd
from edgeship.errors import EdgeshipError, TargetError
from edgeship.record import LayerProfile, Measurement


@dataclass
class AdbTarget:
    serial: str
    adb: str = "adb"
    benchmark_binary: str = "/data/local/tmp/benchmark_model"
    device_dir: str = "/data/local/tmp/edgeship"
    extra_flags: list[str] = field(default_factory=lambda: ["--use_xnnpack=true"])

    def base(self) -> list[str]:
        return [self.adb, "-s", self.serial]

    def mkdir_cmd(self) -> list[str]:
        return [*self.base(), "shell", quote_cmd(["mkdir", "-p", self.device_dir])]

    def device_path(self, name: str) -> str:
        return f"{self.device_dir}/{name}.tflite"

    def push_cmd(self, local: Path, name: str) -> list[str]:
        return [*self.base(), "push", str(local), self.device_path(name)]  # adb push does not use a shell

    def bench_cmd(self, name: str, threads: int, runs: int, warmup: int, op_profiling: bool = False) -> list[str]:
        flags = [self.benchmark_binary, f"--graph={self.device_path(name)}", f"--num_threads={int(threads)}",
                 f"--num_runs={int(runs)}", f"--warmup_runs={int(warmup)}", *self.extra_flags,
                 *(["--enable_op_profiling=true"] if op_profiling else [])]
        return [*self.base(), "shell", quote_cmd(flags)]  # adb shell hands one string to the device's sh

    def cleanup_cmd(self, name: str) -> list[str]:
        return [*self.base(), "shell", quote_cmd(["rm", "-f", self.device_path(name)])]

    FACTS_SCRIPT = ("echo model=$(getprop ro.product.model); echo soc=$(getprop ro.soc.model); "
                    "echo android=$(getprop ro.build.version.release); echo uname=$(uname -a); "
                    "echo governor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null); "
                    "echo temp=$(cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null)")

    def facts_cmd(self) -> list[str]:
        return [*self.base(), "shell", self.FACTS_SCRIPT]  # a fixed script: no user input inside


_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


def _log_lines(text: str) -> list[str]:
    """benchmark_model's lines without their log prefixes (``INFO:``, logcat's ``I tflite  :``)."""
    return [re.sub(r"^.*?\b(?:INFO|I tflite\s*):\s*", "", ln) if re.search(r"\b(?:INFO|I tflite\s*):", ln) else ln
            for ln in text.splitlines()]


def parse_op_profile(text: str) -> list[dict]:
    """The operator table ``benchmark_model --enable_op_profiling=true`` prints: the "Run Order" table of the
    regular runs (under "Operator-wise Profiling Info for Regular Benchmark Runs"; builds before that title print
    it alone), the primary graph's, one row per operator in execution order: {type, name, avg_ms (per run),
    calls (per run)}. The initialization table and the "Delegate internal" one hold no operator's run time. Columns
    are read by the header's names (older builds have a ``[start]`` column); [] where no such table was printed."""
    rows: list[dict] = []
    section, table, header = "", "", None
    for ln in _log_lines(text):
        if "Profiling Info for Benchmark Initialization" in ln:
            section = "init"
        elif "Operator-wise Profiling Info" in ln:
            section = "run"
        elif ln.strip().startswith("Delegate internal"):
            section = "delegate"
        title = re.match(r"^\s*=+\s*(.*?)\s*=+\s*$", ln)
        if title:
            if rows:
                break
            table, header = title.group(1), None
            continue
        cells = [c.strip() for c in ln.split("\t") if c.strip()]
        if table != "Run Order" or section in ("init", "delegate") or not cells:
            if rows and not cells:
                break
            continue
        if header is None:
            header = cells if "[node type]" in cells and "[Name]" in cells else None
            continue
        if len(cells) != len(header):
            break
        row = dict(zip(header, cells))
        try:
            avg, calls = float(row["[avg ms]"]), float(row.get("[times called]", 1))
        except (KeyError, ValueError):
            break
        if not (math.isfinite(avg) and math.isfinite(calls) and avg >= 0 and calls >= 0):
            break  # a time no runtime reports: the table ends here
        rows.append({"type": row["[node type]"], "name": row["[Name]"], "avg_ms": avg, "calls": calls})
    return rows


def parse_benchmark_model(text: str) -> dict:
    """Parse TFLite ``benchmark_model`` output (plain, ``INFO:``-prefixed or logcat lines). Times in ms."""
    lines = _log_lines(text)
    stats = []  # one per "Running benchmark ..." block: warm-up first, then the timed runs
    for ln in lines:
        m = re.search(r"\bcount=(\d+)(.*)", ln)
        if m:
            kv = {k: float(v) for k, v in re.findall(rf"\b([a-z0-9_]+)=({_NUM})", m.group(2))}
            kv["count"] = int(m.group(1))
            if "(all same)" in ln:
                kv.update({k: kv["curr"] for k in ("first", "min", "max", "avg")}, std=0.0)
            stats.append(kv)
    out: dict = {"init_ms": None, "first_ms": None, "warmup_avg_ms": None, "avg_ms": None}
    for ln in lines:
        m = re.search(r"inference timings in us:(.*)", ln, re.IGNORECASE)
        if m:
            parts = dict((k.strip().lower(), float(v))
                         for k, v in re.findall(rf"([A-Za-z() ]+):\s*({_NUM})", m.group(1)))
            out.update(init_ms=_ms(parts.get("init")), first_ms=_ms(parts.get("first inference")),
                       warmup_avg_ms=_ms(parts.get("warmup (avg)") or parts.get("warmup")),
                       avg_ms=_ms(parts.get("inference (avg)") or parts.get("no stats")))
        m = re.search(rf"Initialized session in ({_NUM})\s*ms", ln)
        if m and out["init_ms"] is None:
            out["init_ms"] = float(m.group(1))
        m = re.search(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                      rf"init=({_NUM}) overall=({_NUM})", ln)
        if m:
            out["memory_init_mb"], out["memory_overall_mb"] = float(m.group(1)), float(m.group(2))
        m = re.search(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})", ln)
        if m:
            out["peak_memory_mb"] = float(m.group(1))
        m = re.search(r"(?:Num threads|#threads used for CPU inference): \[(\d+)\]", ln)
        if m:
            out["threads"] = int(m.group(1))
        m = re.search(rf"The input model file size \(MB\): ({_NUM})", ln)
        if m:
            out["model_size_mb"] = float(m.group(1))
    if not stats:
        raise EdgeshipError("benchmark_model printed no timing statistics (no 'count=' line)",
                            "run the same command by hand with adb shell and read its error")
    timed = stats[-1]
    out.update(count=timed["count"], mean_ms=_ms(timed.get("avg")), std_ms=_ms(timed.get("std")),
               min_ms=_ms(timed.get("min")), max_ms=_ms(timed.get("max")), median_ms=_ms(timed.get("median")),
               p5_ms=_ms(timed.get("p5")), p95_ms=_ms(timed.get("p95")),
               warmup_count=stats[0]["count"] if len(stats) > 1 else 0)
    if out["avg_ms"] is None:
        out["avg_ms"] = out["mean_ms"]
    return out


def _ms(us) -> float | None:
    return None if us is None else round(float(us) / 1000.0, 4)


def adb_measurement(parsed: dict, size_bytes: int, threads: int, facts: dict) -> Measurement:
    """benchmark_model reports mean/std/min/max (newer builds also p5/median/p95), no raw samples."""
    mean, std = parsed["mean_ms"], parsed["std_ms"] or 0.0
    if parsed.get("p95_ms") is not None:
        p90, p90_method = parsed["p95_ms"], "p95 reported by benchmark_model (an upper bound of p90)"
    else:
        p90, p90_method = (round(mean + 1.2816 * std, 4),
                           "mean + 1.28 std (normal approximation; benchmark_model reports no percentiles)")
    p50 = parsed["median_ms"] if parsed.get("median_ms") is not None else mean
    peak = parsed.get("peak_memory_mb") or parsed.get("memory_overall_mb")
    return Measurement(source="device", p50_ms=p50, p90_ms=p90, p99_ms=parsed["max_ms"], mean_ms=mean, std_ms=std,
                       min_ms=parsed["min_ms"], max_ms=parsed["max_ms"], samples_ms=[], load_ms=parsed["init_ms"],
                       first_run_ms=parsed["first_ms"], peak_rss_mb=peak, arena_mb=None, size_bytes=size_bytes,
                       threads=parsed.get("threads") or threads, runs=parsed["count"],
                       runtime="tflite benchmark_model", transport="adb",
                       p50_method=("median reported" if parsed.get("median_ms") is not None
                                   else "mean (no median reported)"),
                       p90_method=p90_method, p99_method="max of the timed runs (an upper bound)",
                       memory_method="benchmark_model memory footprint (MB), approximate", facts=facts)


def parse_adb_facts(text: str) -> dict:
    facts = {}
    for ln in text.splitlines():
        k, sep, v = ln.partition("=")
        if sep and k.strip() in ("model", "soc", "android", "uname", "governor", "temp"):
            facts[k.strip()] = v.strip() or None
    if facts.get("temp"):
        try:
            facts["temperature_c"] = {"zone0": round(int(facts.pop("temp")) / 1000, 1)}
        except ValueError:
            pass
    facts.pop("temp", None)
    return facts


def profile_adb(arts: list[RunArtifact], target: AdbTarget, threads: int, runs: int, warmup: int, timeout: float = 600,
                on_result=None, layers: int = DEFAULT_PROFILE_RUNS,
                layer_rows: dict[str, list[dict]] | None = None) -> tuple[dict[str, Measurement], dict[str, str]]:
    """Time each ``.tflite`` with benchmark_model, then (``layers`` > 0) run it again that many times with op
    profiling (its profiler slows every run: never the timed ones) for the measurement's layer profile; with
    ``layer_rows``, each artifact's rows in execution order go there too (a calibration's in-context times)."""
    if shutil.which(target.adb) is None:
        raise EdgeshipError(f"{target.adb} not found on this machine",
                            "install Android platform-tools (Debian: apt-get install adb) or pass --adb-path")

    def run(cmd, what):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EdgeshipError(f"adb: {what} on {target.serial} took longer than {timeout:.0f} s",
                                "check the device (adb devices)") from None
        if p.returncode != 0 and ("device" in p.stderr and "not found" in p.stderr or "no devices" in p.stderr):
            raise EdgeshipError(f"adb: device {target.serial} not found", "check `adb devices` and the serial")
        return p

    tfl = [a for a in arts if a.format == "tflite"]
    errors = {a.name: f"{a.name}: --adb runs TFLite's benchmark_model; this is a {a.format} artifact (skipped)"
              for a in arts if a.format != "tflite"}
    if not tfl:
        raise EdgeshipError("--adb measures .tflite artifacts and the run has none",
                            "add a tflite target to the recipe")
    facts = parse_adb_facts(run(target.facts_cmd(), "reading device facts").stdout)
    run(target.mkdir_cmd(), "mkdir")
    results = {}
    for a in tfl:
        try:
            p = run(target.push_cmd(a.dir / a.main, a.name), "push")
            if p.returncode != 0:
                raise TargetError(f"{a.name}: adb push failed: {p.stderr.strip()[:200]}",
                                  "check free space on the device")
            p = run(target.bench_cmd(a.name, threads, runs, warmup), "benchmark_model")
            text = p.stdout + "\n" + p.stderr
            if "not found" in text and "count=" not in text:
                raise EdgeshipError(f"benchmark_model not found at {target.benchmark_binary} on {target.serial}",
                                    "push TFLite's benchmark_model binary there "
                                    "(adb push ... && adb shell chmod +x ...) or pass --benchmark-binary")
            parsed = parse_benchmark_model(text)
            m = adb_measurement(parsed, (a.dir / a.main).stat().st_size, threads, {**facts, "serial": target.serial})
            if layers > 0:
                p = run(target.bench_cmd(a.name, threads, layers, warmup, op_profiling=True), "op profiling")
                ops = parse_op_profile(p.stdout + "\n" + p.stderr)
                if ops:
                    source, rows = layer_profile.tflite_benchmark_ops(ops, layers)
                    m.profile = LayerProfile.model_validate(layer_profile.layer_profile(source, rows,
                                                                                        a.precision == "int8"))
                    if layer_rows is not None:
                        layer_rows[a.name] = rows
            results[a.name] = m
            if on_result:
                on_result(a.name, results[a.name])
        except TargetError as e:
            errors[a.name] = str(e)
        finally:
            run(target.cleanup_cmd(a.name), "cleanup")
    return results, errors


# ----------------------------------------------------------------------------------- a calibration over adb
def _calibration_artifacts(directory: Path, device: str, prefix: str = "") -> list[RunArtifact]:
    arts = []
    for d in sorted(p for p in directory.iterdir() if (p / "model.json").is_file() and
                    not p.name.startswith("_anchor") and p.name.startswith(prefix)):
        meta = json.loads((d / "model.json").read_text())
        arts.append(RunArtifact(d.name, device, meta["format"], meta["precision"], d, meta["files"], meta["main"]))
    return arts


def time_many(directory: Path, device: str, target: AdbTarget, threads: int, runs: int) -> dict[str, dict]:
    """A calibration's artifacts under ``directory``: one ``benchmark_model`` run each, one after another (no
    chunks, so no anchors: speed 1); {name: {p50_ms, p90_ms}}."""
    ok, _bad = profile_adb(_calibration_artifacts(directory, device), target, threads, runs, 3, layers=0)
    return {name: {"p50_ms": m.p50_ms or m.mean_ms, "p90_ms": m.p90_ms or m.max_ms} for name, m in ok.items()}


def time_layers(archs: Path, device: str, target: AdbTarget, threads: int, runs: int) -> dict[str, list[dict]]:
    """The fitting architectures' operators timed by benchmark_model's op profiling (``runs`` profiled runs each,
    after one timed run)."""
    rows: dict[str, list[dict]] = {}
    profile_adb(_calibration_artifacts(archs, device, "fit"), target, threads, 1, 3, layers=runs, layer_rows=rows)
    return rows
