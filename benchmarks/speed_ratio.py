"""How steady is export's `speed_vs_fp32` (an INT8 artifact and the same format's FP32 artifact timed side by side),
against the same ratio read off two separately timed processes (what comparing two exports' latency figures gives),
on a quiet machine and on a busy one (two processes switching between spinning and sleeping for 20-300 ms, so that
the machine's speed changes under the timing: what a shared CI runner does)?

Models (pretrained weights a package ships, deployment-size inputs): torchvision's MobileNetV2 at 224 x 224 and MTCNN
P-Net at 288 x 384 (whose ONNX Runtime INT8 file ran about as fast as FP32 when results/speed_ratio.json was
written: a ratio near 1 is where a gate's answer is most fragile; since its PReLUs are split by sign, 3865432, it
runs about 1.3x as fast), each lowered by edgeship's backends to ONNX INT8 (calibrated on photo crops) and FP32, and
MobileNetV2 to OpenVINO INT8 and FP32 too.

Per repeat, for each pair: ``side``: export's own call, ``devices.measure.time_beside`` (``SPEED_PROCESSES`` fresh
processes, blocks of ``SPEED_RUNS`` runs of each in turn, ``SPEED_ROUNDS`` blocks and ``SPEED_MIN_S`` seconds of each
at least), the ratio the median over the processes of FP32 p50 / INT8 p50, as ``speed_vs_fp32`` takes it;
``separate``: export's host measurement of each (``measure_host``: one fresh process, ``DEFAULT_RUNS`` runs) one
after the other, FP32 p50 / INT8 p50. The two methods alternate within a repeat, their order swapped each
repeat. Reported per pair, condition and method: the ratios, their median, range and spread (max / min - 1), and
each ratio's distance from the quiet side-by-side median.

    .venv/bin/python benchmarks/speed_ratio.py [--repeats 8] [--models ...] [--out benchmarks/results/speed_ratio.json]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import random
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from benchlib import RESULTS, ROOT, command_line, environment, loadavg, write_json

sys.path.insert(0, str(ROOT))
from benchmarks.zoo.make_data import crops  # noqa: E402

WORK = Path("/tmp/speed_ratio")
# name: (factory, input shape, formats)
MODELS = {"mobilenet_v2_224": ("benchmarks.zoo.models:mobilenet_v2", (3, 224, 224), ("onnx", "openvino")),
          "mtcnn_pnet_288x384": ("benchmarks.zoo.models:mtcnn_pnet", (3, 288, 384), ("onnx",))}
CONDITIONS = ("quiet", "busy")


def lower_pairs(work: Path, names: list[str]) -> list[dict]:
    """Each model of ``names`` lowered at INT8 (calibrated on 64 photo crops) and FP32 to each of its formats."""
    import torch

    from edgeship.devices.calibrate import _context
    from edgeship.models.load import import_factory
    from edgeship.targets.base import get_backend

    pairs = []
    for name in names:
        factory, shape, formats = MODELS[name]
        torch.manual_seed(0)
        model = import_factory(factory)().eval()
        calib = (crops(64, shape[1], 0, width=shape[2]).astype(np.float32) - 127.5) / 128
        for fmt in formats:
            dirs = {}
            for precision in ("fp32", "int8"):
                ctx = _context(name, fmt, precision, shape, work / f"w_{name}_{fmt}_{precision}", 0)
                ctx.calib = calib
                ctx.work_dir.mkdir(parents=True)
                d = work / f"{name}_{fmt}_{precision}"
                d.mkdir(parents=True)
                get_backend(fmt, precision).lower(model, ctx, d)
                dirs[precision] = d
            pairs.append({"pair": f"{name}/{fmt}", "model": name, "format": fmt, "input": list(shape),
                          "dirs": {k: str(v) for k, v in dirs.items()}})
    return pairs


def _spin(seed: int, stop) -> None:
    """Busy for 20-300 ms, asleep for 20-300 ms, until ``stop`` is set."""
    rng = random.Random(seed)
    while not stop.is_set():
        end = time.perf_counter() + rng.uniform(0.02, 0.3)
        while time.perf_counter() < end:
            pass
        time.sleep(rng.uniform(0.02, 0.3))


class Busy:
    """Two spinning processes for the duration of a ``with`` block."""

    def __enter__(self):
        self.stop = mp.Event()
        self.procs = [mp.Process(target=_spin, args=(i, self.stop), daemon=True) for i in range(2)]
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for p in self.procs:
            p.join(5)


def side(pair: dict, seed: int) -> float:
    """Export's own call (``time_beside``, as ``speed_vs_fp32`` makes it): the median ratio over its processes."""
    from edgeship.devices.measure import time_beside

    _, ratios = time_beside(Path(pair["dirs"]["int8"]), {"fp32": Path(pair["dirs"]["fp32"])}, 1, seed)
    return statistics.median(ratios["fp32"])


def separate(pair: dict) -> float:
    from edgeship.devices.measure import DEFAULT_RUNS, DEFAULT_WARMUP, RunArtifact, measure_host

    p50 = {}
    for precision in ("int8", "fp32"):
        art = RunArtifact(precision, "host", pair["format"], precision, Path(pair["dirs"][precision]), [], "")
        p50[precision] = measure_host(art, 1, DEFAULT_RUNS, DEFAULT_WARMUP, profile=0).p50_ms
    return p50["fp32"] / p50["int8"]


def summary(values: list[float], reference: float) -> dict:
    return {"ratios": [round(v, 4) for v in values], "median": round(statistics.median(values), 4),
            "min": round(min(values), 4), "max": round(max(values), 4),
            "spread_pct": round(100 * (max(values) / min(values) - 1), 1),
            "max_off_quiet_side_pct": round(100 * max(abs(v / reference - 1) for v in values), 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    ap.add_argument("--out", type=Path, default=RESULTS / "speed_ratio.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    pairs = lower_pairs(WORK, args.models)
    got: dict = {p["pair"]: {c: {"side": [], "separate": []} for c in CONDITIONS} for p in pairs}
    log = []
    for r in range(args.repeats):
        for condition in CONDITIONS:
            before = loadavg()
            with Busy() if condition == "busy" else contextlib.nullcontext():
                for p in pairs:
                    methods = [("side", lambda p=p, r=r: side(p, r)), ("separate", lambda p=p: separate(p))]
                    for method, run in (methods if r % 2 == 0 else methods[::-1]):
                        got[p["pair"]][condition][method].append(run())
            log.append({"repeat": r + 1, "condition": condition, "loadavg_before": before, "loadavg_after": loadavg()})
        print(f"  repeat {r + 1}/{args.repeats} done", file=sys.stderr)
    rows = []
    for p in pairs:
        g = got[p["pair"]]
        reference = statistics.median(g["quiet"]["side"])
        rows.append({**{k: v for k, v in p.items() if k != "dirs"},
                     **{f"{c}_{m}": summary(g[c][m], reference) for c in CONDITIONS for m in ("side", "separate")}})
    from edgeship.devices.measure import DEFAULT_RUNS, SPEED_MIN_S, SPEED_PROCESSES, SPEED_ROUNDS, SPEED_RUNS

    write_json(args.out, {
        "benchmark": "speed_ratio", "command": command_line(), "environment": environment(),
        "method": {"repeats": args.repeats, "threads": 1,
                   "side": {"processes": SPEED_PROCESSES, "block_runs": SPEED_RUNS, "blocks": SPEED_ROUNDS,
                            "min_s": SPEED_MIN_S, "ratio": "median over the processes of FP32 p50 / INT8 p50"},
                   "separate": {"processes": 1, "runs": DEFAULT_RUNS,
                                "ratio": "FP32 p50 / INT8 p50, each its own fresh process"},
                   "busy": "two processes each spinning 20-300 ms, then sleeping 20-300 ms (2-core machine)"},
        "log": log, "rows": rows, "wall_s": round(time.perf_counter() - t0, 1)})
    for row in rows:
        print(row["pair"], {k: (v["median"], v["spread_pct"]) for k, v in row.items() if isinstance(v, dict)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
