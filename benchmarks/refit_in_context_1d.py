"""1-D convolutions' forests on their times inside the fitting architectures (the runtimes' per-layer counters), or
on the one-kernel probes, scored on unseen 1-D architectures.

A calibration fits a kernel type's forest on its times inside the fitting architectures where the runtime's counters
give at least ``in_context.MIN_SAMPLES`` of them (``fitting.fit``). LiteRT's 1-D convolutions were fitted that way
(its profiler's operators pair with the kernels by order), ONNX Runtime's and OpenVINO's were not (their counters'
(N, C, L) or (N, L, C) shapes fitted no kernel; now they do). This script refits kept data sets
(``benchmarks/predictor.py --keep DIR``) of runs judged on 1-D architectures (``--one-d``) four ways, at every
thread count of the run (``fitting.fit``'s ``one_d_in_context`` and ``one_d_base``): ``probes`` (the 1-D forests on
the probes; at 2 threads a 1-D model is the one-thread prediction scaled as a 2-D one: the default but for LiteRT),
``probes_own_ratio`` (the same forests; at 2 threads the 1-D models' one-thread prediction with a weight of its own:
LiteRT's default), ``probes_own_sums`` (the same forests; at 2 threads the 1-D kernels on their own 2-thread sums)
and ``in_context`` (the 1-D forests on the counters' times and, at 2 threads, their own sums: LiteRT's calibration
before). Each is scored on the run's 30
evaluation architectures, which none saw (nothing is measured: the run's measured p50s are compared with each
prediction), beside the error it states for 1-D models (``family_errors``).

    .venv/bin/python benchmarks/refit_in_context_1d.py \\
        --pair benchmarks/data/predictor_1d_epyc_keep.tar.xz benchmarks/results/predictor_1d_epyc.json \\
        --pair benchmarks/data/predictor_1d_tflite_epyc_keep.tar.xz benchmarks/results/predictor_1d_tflite_epyc.json \\
        --pair benchmarks/data/predictor_1d_tflite_zen5_keep.tar.xz benchmarks/results/predictor_1d_tflite_zen5.json

(each kept run refitted with the L2 cache it was calibrated with, from its predictor file)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402
from refit_base_threads import evaluate  # noqa: E402
from refit_slow_dropped import kept_runs, pair_arguments  # noqa: E402

# fitting.fit's options per mode: the 1-D forests in context or not, and how a 1-D model's one-thread prediction
# stands in at 2 threads (the default now: ``probes_own_ratio`` for LiteRT, ``probes`` for the others)
MODES = {"probes": {"one_d_in_context": False, "one_d_base": "never"},
         "probes_own_ratio": {"one_d_in_context": False, "one_d_base": "own_ratio"},
         "probes_own_sums": {"one_d_in_context": False, "one_d_base": "always"},
         "in_context": {"one_d_in_context": True, "one_d_base": "in_context"}}


def cache_of(keep: Path, default: int | None) -> int | None:
    """The L2 cache (KiB per core) the kept run was calibrated with (its predictor file, ``host.json``), else
    ``default``."""
    import json

    path = keep / "host.json"
    if path.is_file():
        for cfg in json.loads(path.read_text())["configs"].values():
            if cfg["p50"].get("cache_kb"):
                return int(cfg["p50"]["cache_kb"])
    return default


def main() -> None:
    args, cache = pair_arguments(__doc__, RESULTS / "refit_in_context_1d.json")

    import json

    from edgeship.devices import predictor as pred
    from edgeship.devices.fitting import fit

    out: dict[str, dict] = {}
    totals: dict = {"configurations": 0, "at_least_90pct": dict.fromkeys(MODES, 0),
                    "mape_sum": dict.fromkeys(MODES, 0.0)}
    caches: dict[str, int | None] = {}
    for name, run, keep, kernels in kept_runs(args.pair):
        out[name] = {}
        caches[name] = cache_of(keep, cache)
        configs = sorted({k.rsplit(":", 1)[0] for k in (args.configs or run["summary"])})
        for config in configs:
            fmt, precision = config.split(":")
            threads = sorted(int(k.rsplit(":", 1)[1]) for k in run["summary"] if k.rsplit(":", 1)[0] == config)
            for mode in MODES:
                pf = pred.new_file("refit", {})
                base = None
                for t in threads:
                    data = json.loads((keep / f"{fmt}-{precision}-{t}.json").read_text())
                    cfg = fit(data, fmt, precision, t, 0, caches[name], base=base if t > 1 else None,
                              **MODES[mode])
                    pf.configs[pred.key(fmt, precision, t)] = cfg
                    if t == 1:
                        base = (cfg, data)
                for t in threads:
                    key = f"{config}:{t}"
                    cfg = pf.configs[pred.key(fmt, precision, t)]
                    one_d = cfg.family_errors.get("1d")
                    row = {"evaluation": evaluate(pf, run, kernels, key), "in_context": cfg.in_context,
                           "base_2d": cfg.p50.base_2d,
                           "stated_1d": {"n_archs": one_d.p50.n_archs, "within_10pct": one_d.p50.within_10pct,
                                         "mape_pct": one_d.p50.mape_pct} if one_d else None}
                    out[name].setdefault(key, {})[mode] = row
                    print(name, key, mode, row, flush=True)
        for rows in out[name].values():
            totals["configurations"] += 1
            for m in MODES:
                totals["at_least_90pct"][m] += rows[m]["evaluation"]["within_10pct"] >= 0.9
                totals["mape_sum"][m] = round(totals["mape_sum"][m] + rows[m]["evaluation"]["mape_pct"], 2)
    print(totals)
    write_json(args.out, {"environment": environment(), "l2_cache_kb": caches,
                          "pairs": [[str(d), str(r)] for d, r in args.pair], "summary": totals, "runs": out})


if __name__ == "__main__":
    main()
