"""Helpers shared by benchmarks/peers.py and benchmarks/pipeline_cost.py: recipe derivation for
--quick runs, the machine's facts, and result files written atomically."""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# the reference models on Fashion-MNIST (the demo recipe holds the MobileNetV2-style one)
RECIPES = {
    "mobilenetv2": ROOT / "recipes" / "fashion_mnist.yaml",
    "resnet": ROOT / "benchmarks" / "recipes" / "fashion_mnist_resnet.yaml",
}
# --quick on Fashion-MNIST: the split and schedule benchmarks/compress.py --quick and
# benchmarks/targets.py --quick use, so their `bench_fashion_mnist_<model>_quick.pt` checkpoints are shared
QUICK_DATA = {"train_size": 12000, "val_size": 1000, "test_size": 2000, "calib_size": 512}
QUICK_EPOCHS, QUICK_PASS_SAMPLES = 2, 3000


def quick_recipe(recipe: dict, model_name: str) -> dict:
    """Reduced data and schedules (minutes, not a verdict). Fashion-MNIST recipes get the quick split and
    their own quick checkpoint; every recipe's passes are capped at 1 epoch and QUICK_PASS_SAMPLES samples."""
    r = copy.deepcopy(recipe)
    if r["data"]["source"]["kind"] == "fashion_mnist":
        r["data"].update(QUICK_DATA)
        r.setdefault("train", {})["epochs"] = QUICK_EPOCHS
        r["model"]["weights"] = str(ROOT / "checkpoints" / f"bench_fashion_mnist_{model_name}_quick.pt")
    for p in r.get("passes", []):
        for cfg in (p, p.get("fine_tune") or {}):
            if cfg.get("samples"):
                cfg["samples"] = min(cfg["samples"], QUICK_PASS_SAMPLES)
            if "epochs" in cfg:
                cfg["epochs"] = min(cfg["epochs"], 1)
    return r


def environment() -> dict:
    """Machine facts (edgeship.run.machine_facts), CPU features, load average and runtime versions."""
    from importlib import metadata

    from edgeship.devices.bench_runner import cpu_features
    from edgeship.run import machine_facts

    try:
        features = cpu_features(Path("/proc/cpuinfo").read_text())
    except OSError:
        features = []
    versions = {}
    for pkg in ("onnxruntime", "openvino", "nncf", "tensorflow", "ai-edge-litert", "onnx", "torch-pruning", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {**machine_facts().model_dump(), "cpu_features": features, "runtime_versions": versions,
            "loadavg": [round(v, 2) for v in os.getloadavg()],
            "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _busy_cpu_s() -> float:
    """CPU-seconds every core of the machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """How much of the machine other work took while a benchmark measured: the busy CPU-seconds of every core
    minus this process's and its children's. A load average lags by a minute and counts jobs that do not run
    (stopped, or at SCHED_IDLE behind the benchmark); this counts the cycles others actually used.

        with CpuShare() as share: ...   # then share.result()"""

    def __enter__(self) -> CpuShare:
        self._busy, self._own, self._t = _busy_cpu_s(), self._own_cpu_s(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._busy, self._own, self._t = (_busy_cpu_s() - self._busy, self._own_cpu_s() - self._own,
                                          time.perf_counter() - self._t)

    @staticmethod
    def _own_cpu_s() -> float:
        import resource

        return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                     resource.getrusage(resource.RUSAGE_CHILDREN)))

    def result(self) -> dict:
        others = max(0.0, self._busy - self._own)
        cores = os.cpu_count() or 1
        return {"wall_s": round(self._t, 1), "busy_cpu_s": round(self._busy, 1), "own_cpu_s": round(self._own, 1),
                "others_cpu_s": round(others, 1), "others_mean_cores": round(others / max(self._t, 1e-9), 2),
                "cores": cores}


class LoadSampler:
    """The 1-minute load average sampled every ``every_s`` seconds while the block runs (``summary()`` after):
    on a shared machine a wall time means something only with the load it ran under."""

    def __init__(self, every_s: float = 5.0):
        self.every_s, self.samples = every_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        s = self.samples
        return {"n": len(s), "min": min(s, default=None), "mean": round(sum(s) / len(s), 2) if s else None,
                "max": max(s, default=None)}


def runner_many(directory: Path, threads: int, seed: int, runs: int = 10, rounds: int = 10) -> dict:
    """Every artifact directory under ``directory`` timed interleaved in one ``bench_runner --many`` process at
    ``threads`` (ahead of other work where it may, ``--priority``): the runner's report (``results`` per
    artifact, ``anchors`` per chunk, ``priority``). A failed measurement stops the benchmark with its message."""
    import subprocess

    from edgeship.devices.measure import RUNNER, parse_runner_output

    n = sum(1 for _ in directory.iterdir())
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run([sys.executable, str(RUNNER), "--many", str(directory), "--threads", str(threads), "--runs",
                        str(runs), "--rounds", str(rounds), "--chunk", str(n), "--warmup", "3", "--seed", str(seed),
                        "--priority"], capture_output=True, text=True, env=env, timeout=7200)
    raw = parse_runner_output(p.stdout)
    if not raw or not raw.get("ok"):
        raise SystemExit(f"measurement failed: {(raw or {}).get('message') or p.stderr[-2000:]}")
    return raw


def process_speed(pf):
    """``speed(fmt, precision, threads, anchors)``: a measuring process's speed, its anchors against their
    calibration times in the predictor file ``pf`` (``anchors.chunk_speed``; 1 = the calibration's speed)."""
    from edgeship.devices import predictor as pred
    from edgeship.devices.anchors import chunk_speed

    def speed(fmt: str, precision: str, t: int, anchored: dict) -> float:
        cfg = pf.configs[pred.key(fmt, precision, t)]
        return chunk_speed({n: anchored[f"{n}-{fmt}-{precision}"] for n in cfg.anchors}, cfg.anchors)
    return speed


def runner_per_config(cdir, configs: list[tuple[str, str]], threads: list[int], repeats: int, runs: int = 10,
                      rounds: int = 10, speed=None, max_speed: float = 1.25, retries: int = 3,
                      rejected: list | None = None) -> tuple[dict, dict, set]:
    """Per thread count, one dict per repeat of every artifact's runner summary, and of the anchors', with each
    configuration's directory (``cdir(fmt, precision)``: its artifacts and its anchors) timed in a ``runner_many``
    process of its own, the configurations' order rotated per repeat; and the priorities the runner got. One
    runtime per process, as in an application and as the calibration times its probes: with every runtime in one
    process LiteRT's 2-thread p50 came out 1.84x and OpenVINO's 1.35x what the same files take one per process
    (benchmarks/many_vs_single.py).

    With ``speed(fmt, precision, threads, anchors)`` (the process's anchors against their calibration times, 1 =
    the calibration's speed), a process whose anchors ran more than ``max_speed`` times slower measured a machine
    in another state than the one calibrated (on the AMD EPYC's 2 vCPUs, a process either ran at 0.98-1.07 or at
    1.41-1.69, nothing between: the second vCPU lost part of its time): it is measured again in a new process, up
    to ``retries`` times, the fastest kept. The new processes run once every repeat at that thread count has run
    (a retry right after a slow process met the same state: it lasts minutes), one round of retries after
    another. Every process set aside is appended to ``rejected`` (configuration, threads, repeat, the retry round
    that set it aside, speed, its p50s), so the results file says how many were, how slow, and what the figures
    would have been with them."""
    measured: dict[int, list[dict]] = {}
    anchors: dict[int, list[dict]] = {}
    priority: set = set()
    for t in threads:
        kept: dict[tuple[int, str, str], tuple[dict, float]] = {}  # (repeat, fmt, precision): (raw, speed)

        def run(fmt: str, precision: str, seed: int, t: int = t) -> tuple[dict, float]:
            raw = runner_many(cdir(fmt, precision), t, seed, runs, rounds)
            priority.add(raw.get("priority"))
            return raw, speed(fmt, precision, t, raw["anchors"][0]) if speed else 1.0

        for r in range(repeats):
            for k in range(len(configs)):
                fmt, precision = configs[(r + k) % len(configs)]
                kept[r, fmt, precision] = run(fmt, precision, r)
        for attempt in range(retries):
            for (r, fmt, precision), (raw, f) in list(kept.items()):
                if f <= max_speed:
                    continue
                new, g = run(fmt, precision, r + 1000 * (1 + attempt))
                if g < f:
                    kept[r, fmt, precision] = new, g
                lost, speed_lost = (raw, f) if g < f else (new, g)
                if rejected is not None:
                    rejected.append({"config": f"{fmt}:{precision}", "threads": t, "repeat": r, "attempt": attempt,
                                     "speed": round(speed_lost, 4),
                                     "p50_ms": {n: m["p50_ms"] for n, m in lost["results"].items() if "p50_ms" in m}})
        measured[t] = [{n: m for (rr, _, _), (raw, _) in kept.items() if rr == r for n, m in raw["results"].items()}
                       for r in range(repeats)]
        anchors[t] = [{n: m for (rr, _, _), (raw, _) in kept.items() if rr == r for n, m in raw["anchors"][0].items()}
                      for r in range(repeats)]
    return measured, anchors, priority


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def command_line() -> str:
    return " ".join([".venv/bin/python", *[str(a) for a in sys.argv]])


def onnx_breakdown(path: Path) -> dict:
    """Bytes of an ONNX file by what they hold: int8 weights, int32 biases, float scales/weights, the rest
    (graph, names, metadata). Shows why a small depthwise-heavy net cannot shrink 4x: per-channel
    scales and int32 biases cost as much per channel as a 3x3 depthwise kernel's int8 weights."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    out = {"int8_weights": 0, "int32_bias": 0, "float": 0, "zero_points": 0}
    for i in m.graph.initializer:
        a = numpy_helper.to_array(i)
        key = ("int8_weights" if a.ndim > 1 else "zero_points") if a.dtype.itemsize == 1 else \
            "int32_bias" if a.dtype.kind == "i" else "float"
        out[key] += a.nbytes
    out["graph_names_metadata"] = path.stat().st_size - sum(out.values())
    return out


def device_bytes(root: Path, files: list[str]) -> int:
    """Bytes of an artifact's files (``files`` relative to ``root``) that a device loads: edgeship's sidecar
    model.json is left out, so edgeship's and the peers' artifacts are compared alike."""
    return sum((Path(root) / f).stat().st_size for f in files if Path(f).name != "model.json")


def artifact_sizes(run_dir: Path, report: dict) -> dict:
    """Each target's size in bytes as export reports it (the files a device loads), export's own
    ``size_vs_fp32`` (the files a device loads against the same format's FP32 artifact of the input model and
    of the compressed model), and for ONNX files the bytes by content."""
    out = {}
    for t in (t for t in report.get("targets", []) if t.get("status") == "ok"):
        row = {"format": t["format"], "precision": t["precision"], "size_bytes": t["size_bytes"],
               "size_vs_fp32": t.get("size_vs_fp32")}
        main = run_dir / "targets" / t["name"] / "model.onnx"
        if t["format"] == "onnx" and main.is_file():
            row["onnx_bytes"] = onnx_breakdown(main)
        out[t["name"]] = row
    return out


SIZE_BAR = 1 / 3.5  # backends issue: an INT8 artifact at most 1/3.5 of the FP32 artifact


def size_bar(report: dict) -> dict:
    """The backends issue's size bar on an export report: every INT8 artifact's device files against the same
    format's FP32 artifact of the input model (what a user would ship without edgeship). The ratio against
    the compressed model's FP32 artifact (quantization's share alone) is listed beside it, not judged."""
    rows = {t["name"]: t.get("size_vs_fp32") or {} for t in report.get("targets", [])
            if t.get("status") == "ok" and t.get("precision", "").startswith("int8")}
    return {"bar": round(SIZE_BAR, 4), "against": "input_model", "targets": rows,
            "met": bool(rows) and all((r.get("input_model") or 1.0) <= SIZE_BAR for r in rows.values())}


def export_toggled(name: str, targets: list[str], module, work: Path, versions: dict[str, bool]) -> dict:
    """The corpus recipe ``benchmarks/zoo/<name>.yaml`` (its data built) exported once per version, each with
    ``module.ENABLED`` (a lowering rewrite's switch) as ``versions`` gives it, keeping ``targets`` only (all when
    empty): {version: its run}."""
    import yaml

    import edgeship
    from benchmarks.zoo import make_data

    os.chdir(ROOT)  # the recipe's paths are the repository's
    make_data.build(name)
    recipe = yaml.safe_load((ROOT / "benchmarks" / "zoo" / f"{name}.yaml").read_text())
    recipe["targets"] = [t for t in recipe["targets"] if not targets or t["name"] in targets]
    runs = {}
    for version, on in versions.items():
        recipe["output"] = str(work / f"{name}-{version}")
        module.ENABLED = on
        try:
            runs[version] = edgeship.export(recipe, quiet=True, measure=False)
        finally:
            module.ENABLED = True
    return runs


def run_parts(name: str, argv, parts: dict, add_args=None) -> int:
    """A benchmark's command line: ``--repeats``, ``--parts`` (of ``parts``: name -> function(work, args) returning
    the part's result, merged into the file as the part's key, or at the top when it returns ``{"": ...}``) and
    ``--out`` (results/<name>.json); ``add_args(parser)`` adds the script's own."""
    import argparse
    import shutil

    ap = argparse.ArgumentParser(description=f"benchmarks/{name}.py")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", nargs="+", default=list(parts), choices=list(parts))
    ap.add_argument("--out", type=Path, default=RESULTS / f"{name}.json")
    if add_args:
        add_args(ap)
    args = ap.parse_args(argv)
    started, load = time.time(), loadavg()
    work = Path(tempfile.mkdtemp(prefix=f"{name}_"))
    result: dict = {"benchmark": name, "environment": environment(), "command": command_line(),
                    "repeats": args.repeats}
    try:
        for part in args.parts:
            got = parts[part](work, args)
            result.update(got[""]) if "" in got else result.update({part: got})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(loadavg_start=load, loadavg_end=loadavg(), seconds=round(time.time() - started, 1))
    write_json(args.out, result)
    return 0


def time_rows(dirs: dict[str, Path], reference: str, repeats: int) -> dict:
    """``dirs``' artifacts timed side by side as export times INT8 against FP32 (``devices.measure.time_beside``,
    ``repeats`` times at 1 and 2 threads): per thread count each one's median p50 and its p50 over ``reference``'s."""
    from edgeship.devices.measure import time_beside

    out: dict = {}
    for t in (1, 2):
        ratios: dict[str, list[float]] = {}
        p50s: dict[str, list[float]] = {}
        for r in range(repeats):
            refs = {k: d for k, d in dirs.items() if k != reference}
            p50, rat = time_beside(dirs[reference], refs, t, seed=r)
            for k, v in rat.items():
                ratios.setdefault(k, []).extend(v)
            for k, v in p50.items():
                p50s.setdefault(reference if k == "timed" else k, []).extend(v)
        out[str(t)] = {"p50_ms": {k: round(statistics.median(v), 4) for k, v in p50s.items()},
                       f"p50_over_{reference}": {k: {"median": round(statistics.median(v), 3),
                                                     "min": round(min(v), 3), "max": round(max(v), 3)}
                                                 for k, v in ratios.items()}}
    return out
