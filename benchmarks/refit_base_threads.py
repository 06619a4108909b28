"""The multi-thread correction on the kernel sums, or on the same runtime's one-thread prediction, scored on unseen
architectures.

At 2 threads a calibration used to fit its correction on the 2-thread kernel forests' sums; since then, where the
same runtime and precision were calibrated at 1 thread, it weighs that configuration's prediction in their place
(``fitting.fit``'s ``base``). This script refits kept data sets (``benchmarks/predictor.py --keep DIR``) both ways
and scores each on that run's 30 evaluation architectures, which neither saw: nothing is measured, the runs'
measured p50s are compared with both predictions (and the held-out validation error each states is reported).

    .venv/bin/python benchmarks/refit_base_threads.py \\
        --pair benchmarks/data/predictor_epyc_p23_keep.tar.xz benchmarks/results/predictor_epyc_p23.json \\
        --pair benchmarks/data/predictor_epyc_p24_keep.tar.xz benchmarks/results/predictor_epyc_p24.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402
from refit_slow_dropped import kept_runs, pair_arguments  # noqa: E402


def evaluate(pf, run: dict, kernels: dict, key: str) -> dict:
    """A refitted predictor file's p50 error on the run's evaluation architectures of ``key`` (``predict_kernels``,
    as a user's prediction is made)."""
    from edgeship.devices.kernels import Kernel
    from edgeship.devices.predictor import predict_kernels

    fmt, precision, t = key.split(":")
    errs: list[float] = []
    fastest: list[float] = []  # against each architecture's least p50 over its repeats (a noisy run's other measure)
    for r in run["rows"]:
        if r["config"] == f"{fmt}:{precision}" and r["threads"] == int(t):
            ks = [Kernel(**x) for x in kernels[f"{r['arch']}-{fmt}-{precision}:{t}"]]
            p50 = predict_kernels(pf, ks, fmt, precision, int(t)).p50_ms
            errs.append(p50 / r["measured_p50_ms"] - 1)
            fastest.append(p50 / min(r.get("repeats_p50_ms") or [r["measured_p50_ms"]]) - 1)
    return {"n": len(errs), "within_10pct": round(sum(abs(e) <= 0.1 for e in errs) / len(errs), 4),
            "mape_pct": round(100 * statistics.mean(abs(e) for e in errs), 2),
            "median_error_pct": round(100 * statistics.median(errs), 2),
            "within_10pct_of_fastest": round(sum(abs(e) <= 0.1 for e in fastest) / len(fastest), 4)}


def multi_thread_keys(args, run: dict) -> list[str]:
    """The multi-thread configurations asked for (default: every one the run judged)."""
    return args.configs or [k for k in run["summary"] if not k.endswith(":1")]


def multi_thread_runs(args, cache: int | None, **fit_options):
    """Each ``--pair``'s multi-thread configurations asked for, with their kept data sets and 1-thread base
    (``with_base``): (run file name, run, kernels, key, one, many, file, fitted 1-thread configuration)."""
    for name, run, keep, kernels in kept_runs(args.pair):
        for key in multi_thread_keys(args, run):
            yield (name, run, kernels, key, *with_base(keep, key, cache, **fit_options))


def with_base(keep: Path, key: str, cache: int | None, **fit_options):
    """A configuration's kept data sets at 1 thread and at ``key``'s, and a file holding the 1-thread one fitted
    (``fit_options``: ``fitting.fit``'s): (one, many, file, fitted 1-thread configuration)."""
    from edgeship.devices import predictor as pred
    from edgeship.devices.fitting import fit

    fmt, precision, t = key.split(":")
    one, many = ((json.loads((keep / f"{fmt}-{precision}-{n}.json").read_text())) for n in (1, t))
    pf = pred.new_file("refit", {})
    pf.configs[pred.key(fmt, precision, 1)] = base = fit(one, fmt, precision, 1, 0, cache, **fit_options)
    return one, many, pf, base


def scored(pf, cfg, run: dict, kernels: dict, key: str) -> dict:
    """A refitted configuration's evaluation on the run's architectures and the held-out error it states."""
    return {"evaluation": evaluate(pf, run, kernels, key),
            "stated": {"within_10pct": cfg.error_p50.within_10pct, "mape_pct": cfg.error_p50.mape_pct}}


def tally(totals: dict, row: dict, modes: tuple[str, ...]) -> None:
    """Count one configuration's row into the modes' totals (configurations at >= 90 %, the MAPE's sum)."""
    totals["configurations"] += 1
    for m in modes:
        totals[m]["at_least_90pct"] += row[m]["evaluation"]["within_10pct"] >= 0.9
        totals[m]["mape_sum"] += row[m]["evaluation"]["mape_pct"]


def main() -> None:
    args, cache = pair_arguments(__doc__, RESULTS / "refit_base_threads.json", "multi-thread configuration keys")

    from edgeship.devices.fitting import fit

    out: dict[str, dict] = {}
    totals = {"configurations": 0, "mape_lower": 0, "within_10pct_same_or_higher": 0, "at_least_90pct": {}}
    for name, run, kernels, key, one, many, pf, base in multi_thread_runs(args, cache):
        fmt, precision, t = key.split(":")
        row = {}
        for mode, b in (("kernel_sums", None), ("one_thread_prediction", (base, one))):
            cfg = fit(many, fmt, precision, int(t), 0, cache, base=b)
            pf.configs[key] = cfg
            row[mode] = {"stated": {"within_10pct": cfg.error_p50.within_10pct,
                                    "mape_pct": cfg.error_p50.mape_pct},
                         "evaluation": evaluate(pf, run, kernels, key)}
        before, after = (row[m]["evaluation"] for m in ("kernel_sums", "one_thread_prediction"))
        totals["configurations"] += 1
        totals["mape_lower"] += after["mape_pct"] < before["mape_pct"]
        totals["within_10pct_same_or_higher"] += after["within_10pct"] >= before["within_10pct"]
        for m in row:
            totals["at_least_90pct"][m] = totals["at_least_90pct"].get(m, 0) + \
                (row[m]["evaluation"]["within_10pct"] >= 0.9)
        out.setdefault(name, {})[key] = row
        print(name, key, {m: (r["evaluation"]["within_10pct"], r["evaluation"]["mape_pct"],
                          r["stated"]["within_10pct"]) for m, r in row.items()}, flush=True)
    print(totals)
    write_json(args.out, {"environment": environment(), "l2_cache_kb": cache,
                          "pairs": [[str(d), str(r)] for d, r in args.pair],
                          "summary": totals, "runs": out})


if __name__ == "__main__":
    main()
