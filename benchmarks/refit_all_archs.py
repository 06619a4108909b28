"""The correction fitted on the fitting architectures alone, or on the validation ones too, scored on unseen ones.

A calibration measures its correction's error on 20 validation architectures it was not fitted on; since then the
correction it stores is fitted again on all 80 (``calibrate.fit``'s ``refit_all``), as cross-validation fits its
final model on every fold. This script refits kept data sets (``benchmarks/predictor.py --keep DIR``) both ways and
scores each on that run's 30 evaluation architectures, which neither saw: nothing is measured, the runs' measured
p50s are compared with both predictions. The stated (held-out) error is the same for both.

    .venv/bin/python benchmarks/refit_all_archs.py \\
        --pair benchmarks/data/predictor_epyc_p23_keep.tar.xz benchmarks/results/predictor_epyc_p23.json \\
        --pair benchmarks/data/predictor_epyc_p24_keep.tar.xz benchmarks/results/predictor_epyc_p24.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402
from refit_slow_dropped import evaluate, kept_runs, pair_arguments  # noqa: E402


def main() -> None:
    args, cache = pair_arguments(__doc__, RESULTS / "refit_all_archs.json")

    from edgeship.devices.calibrate import fit

    out: dict[str, dict] = {}
    lower = same_or_more = n = 0
    for name, run, keep, kernels in kept_runs(args.pair):
        out[name] = {}
        for key in args.configs or list(run["summary"]):
            fmt, precision, t = key.split(":")
            text = (keep / f"{fmt}-{precision}-{t}.json").read_text()
            row = {}
            for mode, refit_all in (("fit_archs_only", False), ("fit_and_validation_archs", True)):
                cfg = fit(json.loads(text), fmt, precision, int(t), 0, cache, refit_all=refit_all)
                row[mode] = {"correction_archs": cfg.correction_archs or cfg.n_fit_archs,
                             "stated": {"within_10pct": cfg.error_p50.within_10pct,
                                        "mape_pct": cfg.error_p50.mape_pct},
                             "evaluation": evaluate(cfg, run, kernels, key)}
            before, after = (row[m]["evaluation"] for m in ("fit_archs_only", "fit_and_validation_archs"))
            n += 1
            lower += after["mape_pct"] < before["mape_pct"]
            same_or_more += after["within_10pct"] >= before["within_10pct"]
            out[name][key] = row
            print(name, key, {m: (r["evaluation"]["within_10pct"], r["evaluation"]["mape_pct"])
                               for m, r in row.items()}, flush=True)
    summary = {"configurations": n, "evaluation_mape_lower": lower, "evaluation_within_10pct_same_or_higher":
               same_or_more}
    print(summary)
    write_json(args.out, {"environment": environment(), "l2_cache_kb": cache,
                          "pairs": [[str(d), str(r)] for d, r in args.pair],
                          "summary": summary, "runs": out})


if __name__ == "__main__":
    main()
