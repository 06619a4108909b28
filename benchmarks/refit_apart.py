"""Element-wise kernels at more threads: within the one-thread prediction, or on their own kernel sums at that thread
count (``Correction.apart``, ``fitting.APART``), scored on unseen architectures.

At 2 threads a calibration weighs the same runtime's one-thread prediction in the kernel sums' place
(refit_base_threads.py): a second thread is assumed to gain on every kernel what it gains on the fitting
architectures. A softmax over a map does not (LiteRT runs an int8 one in its own single-threaded kernel), and three
architectures of predictor_zen4_p40.json with a score map, within 2 % at one thread, were predicted 12-21 % low at 2
threads. This script refits kept data sets (``benchmarks/predictor.py --keep DIR``) three ways: ``none`` (every kernel
within the one-thread prediction, as before), ``softmax`` (the softmax class apart) and ``every_class`` (every
element-wise class apart, each with a weight of its own), and scores each on that run's 30 evaluation architectures,
which none saw (nothing is measured: the run's measured p50s are compared with each prediction; the held-out
validation error each states is reported beside it). A configuration without element-wise kernels (ONNX Runtime's,
OpenVINO's: ``calibrate.ELTWISE_FORMATS``) is the same all three ways.

    .venv/bin/python benchmarks/refit_apart.py --configs tflite:int8:2 \\
        --pair benchmarks/data/predictor_zen4_p40_keep.tar.xz benchmarks/results/predictor_zen4_p40.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402
from refit_base_threads import evaluate, multi_thread_runs  # noqa: E402
from refit_slow_dropped import pair_arguments  # noqa: E402

MODES = {"none": (), "softmax": ("eltwise4",), "every_class": ("eltwise1", "eltwise2", "eltwise3", "eltwise4")}


def main() -> None:
    args, cache = pair_arguments(__doc__, RESULTS / "refit_apart.json", "multi-thread configuration keys")

    from edgeship.devices import fitting

    out: dict[str, dict] = {}
    shipped = fitting.APART
    try:
        for name, run, kernels, key, one, many, pf, base in multi_thread_runs(args, cache):
            fmt, precision, t = key.split(":")
            row = {}
            for mode, groups in MODES.items():
                fitting.APART = groups
                cfg = pf.configs[key] = fitting.fit(many, fmt, precision, int(t), 0, cache, base=(base, one))
                row[mode] = {"apart": cfg.p50.apart, "weights": {g: round(cfg.p50.b[g], 3) for g in cfg.p50.apart},
                             "base": round(cfg.p50.base, 3),
                             "stated": {"within_10pct": cfg.error_p50.within_10pct,
                                        "mape_pct": cfg.error_p50.mape_pct},
                             "evaluation": evaluate(pf, run, kernels, key)}
            out.setdefault(name, {})[key] = row
            print(name, key, {m: (r["evaluation"]["within_10pct"], r["evaluation"]["mape_pct"],
                                  r["stated"]["within_10pct"], r["stated"]["mape_pct"]) for m, r in row.items()},
                  flush=True)
    finally:
        fitting.APART = shipped
    write_json(args.out, {"environment": environment(), "l2_cache_kb": cache, "method": __doc__.split("\n\n")[1],
                          "shipped": list(shipped), "pairs": [[str(d), str(r)] for d, r in args.pair], "runs": out})


if __name__ == "__main__":
    main()
