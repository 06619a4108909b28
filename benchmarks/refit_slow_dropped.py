"""Refit a predictor run's calibrations without the architecture processes still slow after their retries.

``benchmarks/predictor.py --keep DIR`` keeps each configuration's kernel data set; the run's results file holds the
evaluation. This script refits every configuration twice from those data sets, as kept and with each architecture
process dropped whose speed (the median over the architectures of the speeds the data set keeps per process) is
over 1.25x the fastest process's, when another is not. That approximates ``anchors.steady``'s rule since commit
2a52a9c (over 1.25x each anchor's lower quartile over the calibration's chunks), whose raw anchor times a kept data
set no longer holds. Both fits are scored on the run's 30 evaluation architectures, without measuring anything.
The kept data sets of ``predictor_epyc_p23.json`` are committed
(``benchmarks/data/predictor_epyc_p23_keep.tar.xz``, 0.5 MB):

    .venv/bin/python benchmarks/refit_slow_dropped.py --data benchmarks/data/predictor_epyc_p23_keep.tar.xz \\
        --run benchmarks/results/predictor_epyc_p23.json --out benchmarks/results/refit_slow_dropped_p23.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402

MAX_SPEED = 1.25


def drop_slow(data: dict) -> int:
    """Drop, in place, every architecture process whose median speed over the architectures is over MAX_SPEED times
    the fastest process's, if one is not; the number dropped."""
    n = min(len(a["speed"]) for a in data["archs"])
    speed = [statistics.median(a["speed"][j] for a in data["archs"]) for j in range(n)]
    slow = {j for j in range(n) if speed[j] > MAX_SPEED * min(speed)}
    if not slow or len(slow) == n:
        return 0
    for a in data["archs"]:
        keep = [j for j in range(len(a["speed"])) if j not in slow]
        a["p50_ms"] = statistics.median(a["raw_p50_ms"][j] / a["speed"][j] for j in keep)
        a["p90_ms"] = statistics.median(a["raw_p90_ms"][j] / a["speed"][j] for j in keep)
        for k in ("raw_p50_ms", "raw_p90_ms", "speed"):
            a[k] = [a[k][j] for j in keep]
    return len(slow)


def open_keep(data: Path, tmp: str) -> Path:
    """predictor.py's --keep directory, or the one a .tar.xz of it holds (extracted into ``tmp``). A .tar.xz of a
    ``--calibrated`` run that kept only its evaluation architectures' kernels names, in ``calibration_from``, the
    .tar.xz beside it that holds the calibration's data sets (the same for every run judging that calibration)."""
    if data.is_file():
        with tarfile.open(data) as tar:
            tar.extractall(tmp, filter="data")
        keep = next(Path(tmp).rglob("eval_kernels.json")).parent
        if (ref := keep / "calibration_from").is_file():
            calibration = open_keep(data.parent / ref.read_text().strip(), str(Path(tmp) / "calibration"))
            for f in calibration.glob("*.json"):
                if not (keep / f.name).exists():
                    f.rename(keep / f.name)
        return keep
    return data


def kept_runs(pairs: list[tuple[Path, Path]]) -> Iterator[tuple[str, dict, Path, dict]]:
    """Each ``--pair``'s run file name, run, kept directory (extracted for the loop's turn) and its evaluation
    architectures' kernels."""
    for data, run_path in pairs:
        with tempfile.TemporaryDirectory() as tmp:
            keep = open_keep(data, tmp)
            yield (run_path.name, json.loads(run_path.read_text()), keep,
                   json.loads((keep / "eval_kernels.json").read_text()))


def pair_arguments(doc: str, out: Path, configs: str = "configuration keys",
                   extra: Callable[[argparse.ArgumentParser], object] | None = None
                   ) -> tuple[argparse.Namespace, int | None]:
    """The refit scripts' arguments (kept data sets paired with their runs, and any ``extra`` adds) and the L2
    cache size to refit with."""
    from edgeship.devices.calibrate import l2_cache_kb

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--pair", nargs=2, action="append", type=Path, required=True, metavar=("DATA", "RUN"),
                    help="a --keep directory (or .tar.xz of it) and the predictor.py result file of that run")
    ap.add_argument("--configs", nargs="*", help=f"{configs} (default: every one of each run)")
    ap.add_argument("--cache-kb", type=int, help="the L2 cache per core (KiB) of the machine the runs were "
                    "calibrated on, for the correction's cache term (default: this machine's; the AMD EPYC runs p23 "
                    "and p24 saw 1024, this VM also boots with 512)")
    ap.add_argument("--without-image-term", action="store_true", help="fit the correction without its image-input "
                    "term (predictor.IMAGE_TERM), as calibrations before it did: to reproduce such a run's figures")
    ap.add_argument("--out", type=Path, default=out)
    if extra is not None:
        extra(ap)
    args = ap.parse_args()
    if args.without_image_term:
        from edgeship.devices import predictor

        predictor.IMAGE_TERM = False
    return args, args.cache_kb or l2_cache_kb()


def evaluate(cfg, run: dict, kernels: dict, key: str) -> dict:
    """A refitted configuration's p50 error on the run's evaluation architectures of ``key`` (nothing measured:
    their measured p50 is the run's)."""
    from edgeship.devices.kernels import Kernel

    fmt, precision, t = key.split(":")
    errs: list[float] = []
    for r in run["rows"]:
        if r["config"] == f"{fmt}:{precision}" and r["threads"] == int(t):
            ks = [Kernel(**x) for x in kernels[f"{r['arch']}-{fmt}-{precision}:{t}"]]
            errs.append(cfg.p50.apply(ks, cfg.kernel_ms(ks)) / r["measured_p50_ms"] - 1)
    return {"n": len(errs), "within_10pct": round(sum(abs(e) <= 0.1 for e in errs) / len(errs), 4),
            "mape_pct": round(100 * statistics.mean(abs(e) for e in errs), 2),
            "median_error_pct": round(100 * statistics.median(errs), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="predictor.py's --keep directory, or a .tar.xz of it")
    ap.add_argument("--run", type=Path, required=True, help="the predictor.py result file of that run")
    ap.add_argument("--configs", nargs="*", help="configuration keys (default: every one of the run)")
    ap.add_argument("--out", type=Path, default=RESULTS / "refit_slow_dropped.json")
    args = ap.parse_args()

    from edgeship.devices.calibrate import fit, l2_cache_kb

    run = json.loads(args.run.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        keep = open_keep(args.data, tmp)
        kernels = json.loads((keep / "eval_kernels.json").read_text())
        out = {}
        for key in args.configs or list(run["summary"]):
            fmt, precision, t = key.split(":")
            text = (keep / f"{fmt}-{precision}-{t}.json").read_text()
            out[key] = {}
            for mode in ("as_kept", "slow_processes_dropped"):
                data = json.loads(text)
                dropped = drop_slow(data) if mode != "as_kept" else 0
                # as the run's calibration fitted it (p23 predates the correction fitted on every architecture)
                cfg = fit(data, fmt, precision, int(t), 0, l2_cache_kb(), refit_all=False)
                out[key][mode] = {
                    "processes_dropped": dropped,
                    "validation": {"within_10pct": cfg.error_p50.within_10pct, "mape_pct": cfg.error_p50.mape_pct},
                    "evaluation": evaluate(cfg, run, kernels, key)}
                print(key, mode, out[key][mode], flush=True)
    write_json(args.out, {"environment": environment(), "run": str(args.run), "data": str(args.data),
                          "max_speed": MAX_SPEED, "summary": out})


if __name__ == "__main__":
    main()
