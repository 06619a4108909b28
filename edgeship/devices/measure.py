"""Latency and memory of a run's artifacts measured on this machine.

Every artifact runs in a FRESH Python subprocess (``bench_runner.py``, the same script that is
copied to devices) with its own runtime and a fixed thread count: warm-up, then N timed runs.
Nothing the parent process imported (torch, the other runtimes) is in the child, so the peak RSS
and the cold load time are the artifact's runtime alone. Results are marked ``source: host``.

``run_artifacts`` is how a finished run's artifacts are found: the run record's OK targets, each read
from its sidecar (``Artifact.from_sidecar``), with the test samples and host outputs a device is verified
against (``verify/``, written by export).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from pydantic import ValidationError
from rich.markup import escape

from edgeship.devices import budgets, predictor
from edgeship.devices.catalog import HOST
from edgeship.devices.catalog import get as get_device
from edgeship.errors import EdgeshipError, TargetError
from edgeship.progress import info
from edgeship.record import FP32_REFS, FP32_REFS_DIR, REPORT, VERIFY_DIR, Measurement, RunRecord, SpeedVsFP32
from edgeship.rundir import inside
from edgeship.targets.base import FLOAT_PRECISIONS, Artifact

RUNNER = Path(__file__).with_name("bench_runner.py")
# the runner and the files it loads beside itself: what a device gets
RUNNER_FILES = tuple(RUNNER.with_name(n) for n in ("bench_runner.py", "device_verify.py", "layer_profile.py",
                                                   "litert_timer.py", "bench_many.py"))
MARKER = "EDGESHIP_BENCH "
DEFAULT_RUNS, DEFAULT_WARMUP = 50, 5
DEFAULT_PROFILE_RUNS = 20  # then runs with the runtime's per-layer counters, on a separately loaded copy
# keys copied from the runner's JSON into a stored measurement
MAX_REPORT = 16 << 20  # a runner's report is a few KB (the samples): a longer line is not one
KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "samples_ms", "load_ms",
        "first_run_ms", "peak_rss_mb", "rss_before_load_mb", "arena_mb", "size_bytes", "threads", "runs",
        "warmup", "runtime", "runtime_version", "input_shape", "input_dtype", "inference_precision", "verification",
        "profile")


@dataclass
class RunArtifact:
    """One OK artifact of a finished run, where it lies now."""

    name: str
    device: str
    format: str
    precision: str
    dir: Path
    files: list[str]  # relative to dir, model.json included
    main: str
    samples: Path | None = None  # verify/samples.npz: test samples a device runs (None: a run from before them)
    reference: Path | None = None  # verify/<target>.npz: this artifact's outputs on them on the host


def run_artifacts(record: RunRecord, only: list[str] | None = None) -> list[RunArtifact]:
    """The run's OK artifacts (optionally only the named targets); none at all is bad input."""
    run_dir = record.run_dir
    targets = record.targets
    if only:
        unknown = sorted(set(only) - {t.name for t in targets})
        if unknown:
            raise EdgeshipError(f"no target named {', '.join(unknown)} in {run_dir}",
                                f"use one of: {', '.join(t.name for t in targets) or '(the run has none)'}")
        targets = [t for t in targets if t.name in only]
    found = []
    for t in targets:
        sidecar = inside(run_dir, f"targets/{t.name}/model.json", f"{run_dir / REPORT}: target {t.name!r}")
        if not t.ok or not sidecar.is_file():
            continue
        art = Artifact.from_sidecar(sidecar)
        files = art.files or [art.main, "model.json"]
        samples, reference = (inside(run_dir, f"{VERIFY_DIR}/{name}", f"{run_dir / REPORT}: target {t.name!r}")
                              for name in ("samples.npz", f"{t.name}.npz"))  # not a link out of the run either
        found.append(RunArtifact(t.name, t.device, t.format, t.precision, art.dir, files, art.main,
                                 *((samples, reference) if samples.is_file() and reference.is_file() else ())))
    if not found:
        raise EdgeshipError(f"{run_dir} has no artifacts to measure" + (f" among {', '.join(only)}" if only else ""),
                            "run `edgeship export RECIPE` and check that at least one target succeeded")
    return found


def runner_args(python: str, runner: str, bundle: str, threads: int, runs: int, warmup: int,
                verify: tuple[str, str] | None = None, profile: int = 0, min_s: float = 0.0) -> list[str]:
    """The runner's command line; ``verify``: (samples, host outputs) to check the runtime's outputs against;
    ``profile``: runs with the runtime's per-layer counters after the timed ones; ``min_s``: after ``runs``, run on
    until the timed runs add up to that many seconds."""
    return [python, runner, "--dir", bundle, "--threads", str(int(threads)), "--runs", str(int(runs)),
            "--warmup", str(int(warmup)), *(("--samples", verify[0], "--reference", verify[1]) if verify else ()),
            *(("--profile", str(int(profile))) if profile else ()),
            *(("--min-seconds", f"{float(min_s):g}") if min_s else ())]


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def parse_runner_output(stdout: str, target: str = "artifact", where: str = "this machine") -> dict | None:
    """The runner's JSON line, or None when it printed none (it crashed before reporting). A report that is not
    one JSON object of standard JSON (NaN and Infinity are refused here, before anything could store them) is a
    TargetError naming what is wrong with it."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            bad = f"{target}: the benchmark on {where} reported "
            fix = "check the device's runner output (edgeship's bench_runner.py prints one JSON object)"
            if len(line) > MAX_REPORT:
                raise TargetError(bad + f"{len(line):,} characters, not a measurement", fix)
            try:
                raw = json.loads(line[len(MARKER):], parse_constant=_no_constant)
            except ValueError as e:
                raise TargetError(bad + f"invalid JSON ({said(e, 120)})", fix) from None
            except RecursionError:
                raise TargetError(bad + "JSON nested too deep to be a measurement", fix) from None
            if not isinstance(raw, dict):
                raise TargetError(bad + f"a JSON {type(raw).__name__}, not an object", fix)
            return raw
    return None


def said(text: object, limit: int = 300) -> str:
    """Text a device sent, safe to print in one line: printable characters only (no terminal escapes), cut short."""
    flat = "".join(c if c.isprintable() else " " for c in str(text))
    return " ".join(flat.split())[:limit]


def to_measurement(raw: dict, source: str, where: str = "", name: str = "", **extra: Any) -> Measurement:
    """The runner's report as a typed measurement; a report of the wrong shape (a broken or hostile
    device) is one line naming the bad key."""
    try:
        return Measurement.model_validate({"source": source, **{k: raw.get(k) for k in KEYS},
                                           "facts": raw.get("facts") or {}, **extra})
    except ValidationError as e:
        err = e.errors()[0]
        key = said(".".join(str(p) for p in err["loc"]), 80)
        raise TargetError(f"{name or said(raw.get('target') or 'artifact', 80)}: the benchmark"
                          f"{' on ' + where if where else ''} reported an invalid {key} ({said(err['msg'], 120)})",
                          "check the device's runner output; measurements must be finite numbers") from None


def runner_failure(target: str, raw: dict | None, stderr: str, where: str, python: str,
                   provision: str = "") -> EdgeshipError:
    """Turn a failed runner into one clear line (the missing package named; ``provision``: the command that
    sets the device up)."""
    if raw and raw.get("error") == "missing_package":
        pkg = said(raw.get("package") or "?", 80)
        problem = (f"{target}: {where} has no Python package {pkg} (module {said(raw.get('module') or '?', 80)}) "
                   f"for {said(raw.get('python') or python, 200)}")
        fix = (f"run `{provision}` (the runtimes from wheels this machine fetches for the device), or " if provision
               else "") + f"on {where}: {python} -m pip install {pkg}"
        return EdgeshipError(problem, fix) if pkg == "numpy" else TargetError(problem, fix)
    msg = said(raw.get("message") if raw else (stderr.strip().splitlines() or ["no output"])[-1])
    return TargetError(f"{target}: the benchmark failed on {where}: {msg}",
                       "check that the artifact runs there with the same runtime version")


def measure_host(art: RunArtifact, threads: int, runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP,
                 timeout: float = 600, profile: int = DEFAULT_PROFILE_RUNS, min_s: float = 0.0) -> Measurement:
    """Measure one artifact in a fresh subprocess of this Python (then profile its layers: ``profile`` runs);
    ``min_s``: at least ``runs`` runs, and more until they add up to ``min_s`` seconds."""
    cmd = runner_args(sys.executable, str(RUNNER), str(art.dir), threads, runs, warmup, profile=profile, min_s=min_s)
    raw = _run_here(art.name, cmd, threads, timeout, "the host benchmark", "lower --runs or check the artifact")
    return to_measurement(raw, "host", "this machine", art.name)


def _run_here(name: str, cmd: list[str], threads: int, timeout: float, what: str, fix: str) -> dict:
    """The runner's report from ``cmd`` run on this machine (OMP_NUM_THREADS=``threads``); a timeout, a crash or a
    failed run is one TargetError."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="3")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{name}: {what} took longer than {timeout:.0f} s", fix) from None
    raw = parse_runner_output(p.stdout, name)
    if p.returncode != 0 or not raw or not raw.get("ok"):
        raise runner_failure(name, raw, p.stderr, "this machine", sys.executable)
    return raw


def measure_thread_scaling(art: RunArtifact, counts: list[int], rounds: int = 10, runs: int = 20,
                           warmup: int = DEFAULT_WARMUP, seed: int = 0, timeout: float = 600) -> dict:
    """One artifact at several thread counts in ONE fresh process (``bench_runner.py --thread-counts``), timed in
    ``rounds`` alternating rounds of ``runs`` runs each: {"scaling": {count: median over rounds of the first count's
    p50 / this count's}, "results": {count: runner summary with "round_p50_ms"}, ...}. Separate processes minutes
    apart put the machine's drift into such a ratio; runs milliseconds apart do not."""
    if len(set(counts)) < 2 or min(counts) < 1:
        raise ValueError("measure_thread_scaling: at least two different thread counts >= 1")
    cmd = [sys.executable, str(RUNNER), "--dir", str(art.dir), "--thread-counts", *map(str, counts),
           "--rounds", str(int(rounds)), "--runs", str(int(runs)), "--warmup", str(int(warmup)), "--seed", str(seed)]
    return _run_here(art.name, cmd, max(counts), timeout, f"timing {len(counts)} thread counts",
                     "lower the rounds or runs")


def measure_rounds(arts: list[RunArtifact], threads: int, rounds: int, runs: int = DEFAULT_RUNS,
                   warmup: int = DEFAULT_WARMUP, seed: int = 0, min_s: float = 0.0) -> dict[str, list[Measurement]]:
    """Each artifact timed in ``rounds`` rounds; a round visits every artifact once, in a new seeded order, each
    visit a fresh subprocess (``measure_host``, no layer profile). On a shared machine a burst of other work then
    falls on one round of an artifact, not on all its runs, and artifacts timed together meet the same load.
    {artifact name: its measurements, one per round, in the order timed}."""
    if len({a.name for a in arts}) != len(arts):
        raise ValueError("measure_rounds: artifact names must differ")
    rng = random.Random(seed)
    out: dict[str, list[Measurement]] = {a.name: [] for a in arts}
    for _ in range(rounds):
        order = list(arts)
        rng.shuffle(order)
        for a in order:
            out[a.name].append(measure_host(a, threads, runs, warmup, profile=0, min_s=min_s))
    return out


def measure_interleaved(dirs: dict[str, Path], threads: int, processes: int, runs: int = 5, rounds: int = 20,
                        warmup: int = DEFAULT_WARMUP, seed: int = 0, min_s: float = 0.0,
                        timeout: float = 3600) -> dict[str, list[dict]]:
    """Artifacts timed side by side on this machine: ``processes`` fresh processes of ``bench_runner.py --many``,
    each loading all of them and timing blocks of ``runs`` runs of each in turn (a new seeded order per block),
    ``rounds`` blocks at least and on until every artifact's runs add up to ``min_s`` seconds. Runs a few
    milliseconds apart meet the same machine: on a shared VM whose speed drifts by 1.5x over seconds, two copies of
    one model timed so differ by about 1 % in p90 where separate processes differ by 5-15 %. ``seed`` may be
    negative (the runner's input seed may not: it is taken modulo 2**31). {name: one runner summary (p50_ms,
    p90_ms, runs, ...) per process}."""
    out: dict[str, list[dict]] = {name: [] for name in dirs}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryDirectory(prefix="edgeship-interleaved-") as tmp:
        for name, d in dirs.items():
            os.symlink(Path(d).resolve(), Path(tmp) / name)
        for k in range(processes):
            cmd = [sys.executable, str(RUNNER), "--many", tmp, "--threads", str(threads), "--runs", str(runs),
                   "--rounds", str(rounds), "--warmup", str(warmup), "--seed", str((seed * 1000 + k) % 2**31),
                   "--min-seconds", str(min_s), "--priority"]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
            except subprocess.TimeoutExpired:
                raise TargetError(f"timing {', '.join(dirs)} side by side took longer than {timeout:.0f} s",
                                  "lower the search's timing.min_round_s") from None
            raw = parse_runner_output(p.stdout)
            if p.returncode != 0 or not raw or not raw.get("ok"):
                raise runner_failure(", ".join(dirs), raw, p.stderr, "this machine", sys.executable)
            for name in dirs:
                r = raw["results"].get(name) or {"error": "not timed"}
                if "error" in r:
                    raise TargetError(f"{name}: the runtime refused it when timed side by side: {r['error']}",
                                      "check the artifact with `edgeship profile`")
                out[name].append(r)
    return out


def layer_lines(name: str, m: Measurement, top: int = 3) -> list[str]:
    """What a measurement's layer profile tells a user at the prompt: its slowest layers, and the compute layers of
    an INT8 artifact that ran in float kernels."""
    p = m.profile
    if p is None:
        return []
    out = []
    if p.total_ms:
        slow = ", ".join(f"{r.op} {r.ms:.3f} ms ({r.share or 0:.0%})" for r in p.layers[:top] if r.ms is not None)
        out.append(f"  {name}: slowest layers {slow} of {p.total_ms:.3f} ms summed over {p.layer_count} layers")
    if p.float_fallbacks:
        out.append(f"[yellow]{name}: {len(p.float_fallbacks)} of {p.compute_layers} compute layers ran in float "
                   f"kernels: {', '.join(p.float_fallbacks[:3])}[/yellow]")
    if p.not_delegated:  # LiteRT: what its XNNPACK delegate left to the builtin kernels, and what that cost
        left = set(p.not_delegated)
        kinds = Counter(n.split(":", 1)[-1] for n in p.not_delegated)
        ms = sum(r.ms or 0 for r in p.layers if r.name in left)
        share = f", {ms:.3f} of {p.total_ms:.3f} ms" if p.total_ms else ""
        out.append(f"[yellow]{name}: {len(left)} operators outside XNNPACK ran in LiteRT's builtin kernels{share}: "
                   f"{', '.join(f'{k} x{c}' for k, c in kinds.most_common(3))}[/yellow]")
    return out


def measure_all_host(record: RunRecord, only: list[str] | None = None, threads: int | None = None,
                     runs: int = DEFAULT_RUNS, warmup: int = DEFAULT_WARMUP, quiet: bool = False) -> dict[str, str]:
    """Measure every OK artifact of ``record`` on the host and store it in the record; returns {target: error}."""
    t = threads or get_device(HOST).threads
    errors = {}
    for art in run_artifacts(record, only):
        try:
            m = measure_host(art, t, runs, warmup)
            record.store(art.name, m)
            if not quiet:
                info(f"host {art.name}: p50 {m.p50_ms:.3f} ms, p90 {m.p90_ms:.3f} ms, "
                     f"peak RSS {m.peak_rss_mb or 0:.0f} MB ({t} thread{'s' if t > 1 else ''}, {runs} runs)")
                for line in layer_lines(art.name, m):
                    info(line)
        except TargetError as e:
            errors[art.name] = str(e)
            record.store_error(art.name, "host", str(e))
            info(f"[red]host measurement of {art.name} failed:[/red] {escape(str(e))}")
    return errors


def measure_and_check(record: RunRecord, only: list[str] | None = None, runs: int = DEFAULT_RUNS,
                      quiet: bool = False) -> None:
    """The end of `edgeship export`: host-measure the OK artifacts (of ``only``) and time the INT8/FP16 ones beside
    their FP32 references, then the budget verdict over every target of the record, each on its own device's
    numbers: a target for another device has its latency and RAM budgets unverified until it is measured there
    (`edgeship profile --ssh/--adb`), not failed."""
    ok = [t.name for t in record.targets if t.ok and (not only or t.name in only)]
    if ok:
        measure_all_host(record, ok, runs=runs, quiet=quiet)
        for art in run_artifacts(record, ok):
            speed_vs_fp32(record, art, get_device(HOST).threads, quiet)
        predict_calibrated(record, ok, quiet=quiet)
    record.budgets = budgets.evaluate(record, "auto")


SPEED_PROCESSES, SPEED_RUNS, SPEED_ROUNDS, SPEED_MIN_S = 3, 5, 10, 0.3
TIMED = "timed"  # the artifact's key in ``time_beside``'s p50s


def quantized_slower(s: SpeedVsFP32 | None, precision: str) -> bool:
    """Whether a quantized artifact ran slower than its own model's FP32 one (an FP16 file is a size format on most
    CPUs: OpenVINO's CPU plugin runs it in FP32), what export's note and report.html's red mark say."""
    return bool(s and s.compressed_model is not None and s.compressed_model < 1 and precision not in FLOAT_PRECISIONS)


def time_beside(timed: Path, refs: dict[str, Path], threads: int,
                seed: int = 0) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The artifact in ``timed`` and its references ({name: artifact directory}) timed side by side as export times
    them (``measure_interleaved`` with the ``SPEED_*`` settings; a reference that is the artifact itself, or another
    reference, is timed once): ({TIMED or reference name: p50 per process}, {reference name: its p50 over the
    artifact's, per process})."""
    dirs, alias = {TIMED: timed}, {}
    for which, d in refs.items():
        alias[which] = next((k for k, v in dirs.items() if v.resolve() == d.resolve()), which)
        dirs.setdefault(alias[which], d)
    got = measure_interleaved(dirs, threads, SPEED_PROCESSES, SPEED_RUNS, SPEED_ROUNDS, seed=seed, min_s=SPEED_MIN_S)
    p50 = {TIMED: [r["p50_ms"] for r in got[TIMED]]} | {w: [r["p50_ms"] for r in got[alias[w]]] for w in refs}
    return p50, {w: [round(f / a, 4) for f, a in zip(p50[w], p50[TIMED])] for w in refs}


def speed_vs_fp32(record: RunRecord, art: RunArtifact, threads: int, quiet: bool = False) -> SpeedVsFP32 | None:
    """How many times faster than the same format's FP32 artifact of the input model and of the compressed model an
    INT8/FP16 host artifact runs on this machine: all of them timed side by side (``measure_interleaved``:
    ``SPEED_PROCESSES`` fresh processes, each timing blocks of ``SPEED_RUNS`` runs of each in turn, ``SPEED_ROUNDS``
    blocks and at least ``SPEED_MIN_S`` seconds of each), each ratio the median over the processes of FP32 p50 over
    this p50. A drifting machine moves both alike, where separately timed processes put its drift into the ratio.
    Stored on the target (``speed_vs_fp32``); None when there is nothing to compare with (an FP32 target, another
    device, references an export no longer has)."""
    base = record.run_dir / FP32_REFS_DIR / record.target(art.name).model
    refs = {w: base / f"{art.format}-{w}" for w in FP32_REFS} if art.precision != "fp32" and art.device == HOST \
        else {}
    refs = {w: d.resolve() for w, d in refs.items() if (d / "model.json").is_file()}
    if not refs:
        return None
    try:
        p50, ratios = time_beside(art.dir, refs, threads)
    except TargetError as e:
        s = SpeedVsFP32(threads=threads, processes=SPEED_PROCESSES, error=str(e))
        info(f"[yellow]{art.name}: timing it beside its FP32 references failed:[/yellow] {escape(str(e))}")
    else:
        s = SpeedVsFP32(threads=threads, processes=SPEED_PROCESSES, p50_ms=round(median(p50[TIMED]), 4),
                        **{f"{w}_ratios": ratios[w] for w in refs},
                        **{w: round(median(ratios[w]), 3) for w in refs},
                        **{f"{w}_p50_ms": round(median(p50[w]), 4) for w in refs})
        if not quiet:
            info(f"host {art.name} beside FP32 {art.format} ({SPEED_PROCESSES} processes, side by side): "
                 + ", ".join(f"{getattr(s, w):.2f}x as fast as the {w.replace('_', ' ')}'s" for w in refs))
        if quantized_slower(s, art.precision):
            audit = record.target(art.name).op_audit
            host = record.measurements_of(art.name).get(HOST)
            left = host.profile.not_delegated if host is not None and host.profile is not None else None
            why = ([f"{audit.n_float_ops} of its {audit.total_ops} operators run in float"] if audit and
                   audit.n_float_ops else []) + ([f"{len(left)} outside XNNPACK, in LiteRT's builtin kernels"]
                                                 if left else [])
            floats = f" ({'; '.join(why)})" if why else ""
            info(f"[yellow]note:[/yellow] {art.name} ({art.format} {art.precision}) ran slower than the same "
                 f"model's FP32 {art.format} artifact on this machine ({s.compressed_model:.2f}x as fast){floats}: "
                 "ship the FP32 artifact or another format for this model, or see the slowest layers in report.html")
    record.target(art.name).speed_vs_fp32 = s
    return s


def predict_calibrated(record: RunRecord, names: list[str], quiet: bool = False) -> None:
    """Predict the latency of each target for another device that has a calibrated predictor
    (``predictors/<device>.json``); a device without one is left alone (its budgets stay unverified)."""
    for art in run_artifacts(record, names):
        if art.device == HOST:
            continue
        try:
            pf = predictor.load(art.device)
            if pf is None:
                continue
            m = predictor.predict(pf, art.dir / art.main, art.format, art.precision, get_device(art.device).threads)
        except EdgeshipError as e:
            record.store_error(art.name, "predicted", str(e))
            continue
        record.store(art.name, m)
        if not quiet and m.prediction is not None:
            info(f"predicted {art.name} on {art.device}: p90 {m.p90_ms:.3f} ms (upper bound "
                 f"{m.prediction.p90_upper_ms:.3f} ms; MAPE {m.prediction.mape_pct:.1f}%)")
