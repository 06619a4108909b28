"""How the latency predictor's timing method compares with one model per process (issue 16's 2-thread rows).

    .venv/bin/python benchmarks/many_vs_single.py              # 8 architectures x 3 INT8 runtimes, 3 repeats
    .venv/bin/python benchmarks/many_vs_single.py --archs 4 --repeats 2

Calibration and benchmarks/predictor.py time many artifacts in one ``bench_runner --many`` process (blocks of runs
of each in turn); an application runs one model per process. This lowers the first ``--archs`` of predictor.py's
evaluation architectures (random_arch seeds from EVAL_SEED) to ONNX Runtime, OpenVINO and LiteRT INT8 and times
every artifact three ways in each repeat, at 1 and 2 threads, always through ``bench_runner --many --priority`` (so
the process setup is the same): ``single`` (a process holding that one artifact), ``runtime`` (a process per runtime
holding its artifacts) and ``mixed`` (one process holding all, as predictor.py's evaluation does). The modes' order
rotates per repeat. Per runtime, thread count and mode: the median over artifacts and repeats of the mode's p50 over
``single``'s p50 from the same repeat, and how far ``single``'s own p50 moved between repeats (the machine's drift
over minutes). Writes benchmarks/results/many_vs_single.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, CpuShare, command_line, environment, loadavg, runner_many, write_json  # noqa: E402

CONFIGS = [("onnx", "int8"), ("openvino", "int8"), ("tflite", "int8")]
MODES = ["single", "runtime", "mixed"]


def groups(names: list[str], mode: str) -> list[list[str]]:
    """The artifact sets timed together in one process under ``mode``."""
    if mode == "single":
        return [[n] for n in names]
    if mode == "runtime":
        return [[n for n in names if f"-{fmt}-" in n] for fmt, _ in CONFIGS]
    return [names]


def timed(arts: Path, group: list[str], threads: int, seed: int, runs: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="many-vs-single-") as tmp:
        for n in group:
            os.symlink(arts / n, Path(tmp) / n)
        raw = runner_many(Path(tmp), threads, seed, runs, rounds)
    return {n: raw["results"][n]["p50_ms"] for n in group}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10, help="timed runs per block")
    ap.add_argument("--rounds", type=int, default=10, help="blocks of each artifact per process")
    ap.add_argument("--out", type=Path, default=RESULTS / "many_vs_single.json")
    args = ap.parse_args(argv)
    import torch
    from predictor import EVAL_SEED

    from edgeship.devices.archs import random_arch
    from edgeship.devices.calibrate import lower

    torch.set_num_threads(1)
    env, t_start = environment(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-many-vs-single-") as tmp:
        arts = Path(tmp) / "arts"
        archs = {}
        for i in range(args.archs):
            a = random_arch(EVAL_SEED + i)
            archs[f"a{i:03d}"] = {"seed": a.seed, "input": list(a.input_shape), "description": a.description}
            for fmt, precision in CONFIGS:
                lower(a.model, a.input_shape, fmt, precision, arts / f"a{i:03d}-{fmt}-{precision}", "x",
                      Path(tmp) / "work", seed=i)
        names = sorted(d.name for d in arts.iterdir())
        p50: dict = {t: {m: {n: [] for n in names} for m in MODES} for t in (1, 2)}
        log = []
        for r in range(args.repeats):
            for t in (1, 2):
                with CpuShare() as share:
                    for mode in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
                        for group in groups(names, mode):
                            for n, v in timed(arts, group, t, r, args.runs, args.rounds).items():
                                p50[t][mode][n].append(v)
                log.append({"repeat": r + 1, "threads": t, "loadavg_after": loadavg(), "cpu": share.result()})
                print(f"repeat {r + 1}/{args.repeats}, {t} thread(s) done (load average {loadavg()})",
                      file=sys.stderr)
    summary = {}
    for fmt, precision in CONFIGS:
        mine = [n for n in names if f"-{fmt}-" in n]
        for t in (1, 2):
            row: dict = {}
            for mode in MODES[1:]:
                ratios = [a / b for n in mine for a, b in zip(p50[t][mode][n], p50[t]["single"][n])]
                row[f"{mode}_over_single"] = {"median": round(statistics.median(ratios), 3),
                                              "range": [round(min(ratios), 3), round(max(ratios), 3)]}
            drift = [max(v) / min(v) for v in (p50[t]["single"][n] for n in mine)]
            row["single_max_over_min_across_repeats"] = {"median": round(statistics.median(drift), 3),
                                                         "max": round(max(drift), 3)}
            summary[f"{fmt}:{precision}:{t}"] = row
    write_json(args.out, {
        "benchmark": "many_vs_single", "command": command_line(), "environment": env,
        "method": " ".join(__doc__.split("\n\n")[2].split()), "runs": args.runs, "rounds": args.rounds,
        "repeats": args.repeats, "wall_s": round(time.perf_counter() - t_start, 1), "log": log, "archs": archs,
        "summary": summary, "p50_ms": {str(t): v for t, v in p50.items()}})
    print(f"wrote {args.out}", file=sys.stderr)
    for k, v in summary.items():
        print(k, v, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
