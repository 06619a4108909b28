"""Element-wise kernels' correction weights: one per class, or with the other kernels, scored on unseen
architectures (nothing is measured: the kept run's measured p50s are compared with each refitted prediction).

A calibration with element-wise kernels (``kernels.ELTWISE``; random architectures with ``archs.EXTRAS``) fits the
correction from kernel sums to a model's latency with a weight per kernel group. This refits a kept run
(``benchmarks/predictor.py --keep DIR``) two ways: ``shared`` (element-wise kernels weigh with the adds, pools and
classifiers, as the run was calibrated) and ``per_class`` (a weight per class: ``fitting.fit``'s default), and scores
each on the run's evaluation architectures, those with extras and those without apart, beside the error each states.

    .venv/bin/python benchmarks/refit_eltwise_groups.py \\
        --pair benchmarks/data/predictor_eltwise_zen5_keep.tar.xz benchmarks/results/predictor_eltwise_zen5.json
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402
from refit_in_context_1d import cache_of  # noqa: E402
from refit_slow_dropped import kept_runs, pair_arguments  # noqa: E402

MODES = {"shared": {"eltwise_groups": False}, "per_class": {"eltwise_groups": True}}


def scored(errs: list[float]) -> dict:
    return {"n": len(errs), "within_10pct": round(sum(abs(e) <= 0.1 for e in errs) / len(errs), 4),
            "mape_pct": round(100 * statistics.mean(abs(e) for e in errs), 2)} if errs else {"n": 0}


def main() -> None:
    args, cache = pair_arguments(__doc__, RESULTS / "refit_eltwise_groups.json")

    import json

    from edgeship.devices import predictor as pred
    from edgeship.devices.fitting import fit
    from edgeship.devices.kernels import Kernel

    out: dict[str, dict] = {}
    for name, run, keep, kernels in kept_runs(args.pair):
        extras = {a for a, d in run["archs"].items() if " +" in d.get("description", "")}
        for key in args.configs or run["summary"]:
            fmt, precision, t = key.split(":")
            data = json.loads((keep / f"{fmt}-{precision}-{t}.json").read_text())
            for mode, options in MODES.items():
                pf = pred.new_file("refit", {})
                cfg = pf.configs[pred.key(fmt, precision, int(t))] = fit(data, fmt, precision, int(t), 0,
                                                                         cache_of(keep, cache), **options)
                errs: dict[str, list[float]] = {"with_extras": [], "without": []}
                for r in run["rows"]:
                    if f"{r['config']}:{r['threads']}" == key:
                        ks = [Kernel(**x) for x in kernels[f"{r['arch']}-{fmt}-{precision}:{t}"]]
                        e = pred.predict_kernels(pf, ks, fmt, precision, int(t)).p50_ms / r["measured_p50_ms"] - 1
                        errs["with_extras" if r["arch"] in extras else "without"].append(e)
                row = {"all": scored(errs["with_extras"] + errs["without"]),
                       **{k: scored(v) for k, v in errs.items()},
                       "stated": {"mape_pct": cfg.error_p50.mape_pct, "within_10pct": cfg.error_p50.within_10pct},
                       "weights": {g: round(v, 3) for g, v in cfg.p50.b.items()}}
                out.setdefault(name, {}).setdefault(key, {})[mode] = row
                print(name, key, mode, row, flush=True)
    write_json(args.out, {"environment": environment(), "pairs": [[str(d), str(r)] for d, r in args.pair],
                          "runs": out})


if __name__ == "__main__":
    main()
