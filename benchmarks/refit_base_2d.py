"""A 1-D model at more threads: its 1-D kernels within the one-thread prediction, or on their own kernel sums at that
thread count (``Correction.base_2d``), scored on unseen architectures.

At 2 threads a calibration weighs the same runtime's one-thread prediction in the kernel sums' place
(refit_base_threads.py): the second thread is assumed to gain on every model what it gains on the fitting
architectures, five in six of them 2-D. This script refits kept data sets (``benchmarks/predictor.py --keep DIR``)
of runs judged on 1-D architectures (``--one-d``) three ways, with ``fitting.fit``'s ``one_d_base``: ``never`` (the
one-thread prediction of the whole model, as before), ``in_context`` (the 1-D kernels on their own 2-thread sums
where their forests were fitted on in-context times: the default) and ``always``; each is scored on that run's 30
evaluation architectures, which neither saw (nothing is measured: the runs' measured p50s are compared with each
prediction; the held-out validation error each states is reported beside it).

    .venv/bin/python benchmarks/refit_base_2d.py \\
        --pair benchmarks/data/predictor_1d_epyc_keep.tar.xz benchmarks/results/predictor_1d_epyc.json \\
        --pair benchmarks/data/predictor_1d_tflite_epyc_keep.tar.xz benchmarks/results/predictor_1d_tflite_epyc.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402
from refit_base_threads import evaluate, multi_thread_runs  # noqa: E402
from refit_slow_dropped import pair_arguments  # noqa: E402

MODES = ("never", "in_context", "always")


def main() -> None:
    args, cache = pair_arguments(__doc__, RESULTS / "refit_base_2d.json", "multi-thread configuration keys")

    from edgeship.devices.fitting import fit

    out: dict[str, dict] = {}
    totals: dict = {"configurations": 0, "at_least_90pct": dict.fromkeys(MODES, 0)}
    # as p30 calibrated LiteRT: the 1-D forests on their in-context times, at 1 thread too (the base)
    for name, run, kernels, key, one, many, pf, base in multi_thread_runs(args, cache, one_d_in_context=True):
        fmt, precision, t = key.split(":")
        row = {}
        for mode in MODES:
            cfg = fit(many, fmt, precision, int(t), 0, cache, base=(base, one), one_d_base=mode,
                      one_d_in_context=True)
            pf.configs[key] = cfg
            row[mode] = {"base_2d": cfg.p50.base_2d, "in_context": cfg.in_context,
                         "stated": {"within_10pct": cfg.error_p50.within_10pct, "mape_pct": cfg.error_p50.mape_pct},
                         "evaluation": evaluate(pf, run, kernels, key)}
            totals["at_least_90pct"][mode] += row[mode]["evaluation"]["within_10pct"] >= 0.9
        totals["configurations"] += 1
        out.setdefault(name, {})[key] = row
        print(name, key, {m: (r["base_2d"], r["evaluation"]["within_10pct"], r["evaluation"]["mape_pct"],
                              r["stated"]["within_10pct"]) for m, r in row.items()}, flush=True)
    print(totals)
    write_json(args.out, {"environment": environment(), "l2_cache_kb": cache, "method": __doc__.split("\n\n")[1],
                          "pairs": [[str(d), str(r)] for d, r in args.pair], "summary": totals, "runs": out})


if __name__ == "__main__":
    main()
