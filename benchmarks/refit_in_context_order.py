"""In-context kernel times given by work, not by the file's order, where shapes cannot tell kernels apart: refitted
on kept calibrations and scored on architectures none of the fits saw.

A basic block's 1x1 shortcut and its first 3x3 convolution read and write the same shapes. ``in_context``
used to give each layer of the runtime's counters to the first kernel, in the file's order, whose shapes it fits;
ONNX Runtime runs the 3x3 first, so the shortcut took the 3x3's time and the 3x3 the shortcut's. Now kernels of a
type whose layers could be swapped take those times in the order of their MACs (``in_context._by_work``). This
script refits each kept data set (``benchmarks/predictor.py --keep DIR``) both ways and reports, per configuration:
the in-context convolution forest's error on the fitting architectures' own layer times (5-fold by architecture,
1x1 and larger kernels apart), and the predictor's p50 error on the run's 30 evaluation architectures (their
measured p50s are the run's: nothing is timed here). At 2 threads the configuration rests on its 1-thread
prediction (``fitting.fit``'s ``base``), refitted the same way.

    .venv/bin/python benchmarks/refit_in_context_order.py \\
        --pair benchmarks/data/predictor_epyc_p23_keep.tar.xz benchmarks/results/predictor_epyc_p23.json \\
        --pair benchmarks/data/predictor_epyc_p24_keep.tar.xz benchmarks/results/predictor_epyc_p24.json \\
        --cache-kb 1024
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402
from refit_base_threads import scored, tally  # noqa: E402
from refit_slow_dropped import kept_runs, pair_arguments  # noqa: E402

MODES = ("file_order", "by_work")


def forest_cv(data: dict, fmt: str, folds: int = 5) -> dict:
    """The in-context convolution forest's error on held-out fitting architectures' layer times."""
    from edgeship.devices import in_context
    from edgeship.devices import predictor as pred

    archs = [a for a in data["archs"] if a["role"] == "fit" and a.get("layers")]
    order = np.random.default_rng(0).permutation(len(archs))
    rows = []
    for held in np.array_split(order, folds):
        train = [a for i, a in enumerate(archs) if i not in set(held)]
        ks, ms = in_context.samples(train, "conv", fmt)
        forest = pred.fit_forest(ks, ms, 0)
        tk, tm = in_context.samples([archs[i] for i in held], "conv", fmt)
        rows += [(k.k, m, float(y)) for k, m, y in zip(tk, tm, forest.latency_ms(tk))]
    out = {}
    for name, sel in (("1x1", lambda k: k == 1), ("larger", lambda k: k > 1)):
        m = np.array([r[1] for r in rows if sel(r[0])])
        y = np.array([r[2] for r in rows if sel(r[0])])
        out[name] = {"n": len(m), "mape_pct": round(float(np.mean(np.abs(y / m - 1))) * 100, 2),
                     "median_error_pct": round(float(np.median(y / m - 1)) * 100, 2),
                     "sum_predicted_over_measured": round(float(y.sum() / m.sum()), 4)}
    return out


def main() -> None:
    args, cache = pair_arguments(__doc__, RESULTS / "refit_in_context_order.json", "configuration keys")

    from edgeship.devices import in_context
    from edgeship.devices import predictor as pred
    from edgeship.devices.fitting import fit

    by_work = in_context._by_work
    out: dict[str, dict] = {}
    totals = {m: {"at_least_90pct": 0, "mape_sum": 0.0} for m in MODES} | {"configurations": 0}
    for name, run, keep, kernels in kept_runs(args.pair):
        out[name] = {}
        keys = args.configs or [k for k in run["summary"] if k.split(":")[0] in in_context.FORMATS
                                and k.split(":")[0] != "tflite"]  # LiteRT pairs by order alone
        for key in keys:
            fmt, precision, t = key.split(":")
            one = json.loads((keep / f"{fmt}-{precision}-1.json").read_text())
            many = json.loads((keep / f"{fmt}-{precision}-{t}.json").read_text())
            row = {}
            for mode in MODES:
                in_context._by_work = by_work if mode == "by_work" else lambda ks, times, owner, fmt: times
                pf = pred.new_file("refit", {})
                pf.configs[pred.key(fmt, precision, 1)] = base = fit(one, fmt, precision, 1, 0, cache)
                cfg = base if t == "1" else fit(many, fmt, precision, int(t), 0, cache, base=(base, one))
                pf.configs[key] = cfg
                row[mode] = {**scored(pf, cfg, run, kernels, key),
                             "conv_forest_cv": forest_cv(many, fmt)}
            in_context._by_work = by_work
            tally(totals, row, MODES)
            out[name][key] = row
            print(name, key, {m: (r["evaluation"]["within_10pct"], r["evaluation"]["mape_pct"],
                              r["conv_forest_cv"]["larger"]["mape_pct"]) for m, r in row.items()},
                  flush=True)
    for m in MODES:
        totals[m]["mean_mape_pct"] = round(totals[m].pop("mape_sum") / max(1, totals["configurations"]), 2)
    print(totals)
    write_json(args.out, {"environment": environment(), "l2_cache_kb": cache,
                          "pairs": [[str(d), str(r)] for d, r in args.pair], "summary": totals, "runs": out})


if __name__ == "__main__":
    main()
