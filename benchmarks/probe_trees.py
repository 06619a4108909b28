"""Extremely randomized trees against random forests for the probes' forests (issue 16), without remeasuring.

Refits a calibration from the kernel data sets ``benchmarks/predictor.py --keep DIR`` kept (with the evaluation
architectures' kernels, ``eval_kernels.json``) with each kind of probe forest, and scores both on that run's
measurements: on the calibration's own validation architectures (as the predictor file states its error) and on
the 30 evaluation architectures, each prediction scaled by its process's anchor speed (the predictor's own error,
without the machine's drift between calibration and measurement).

    .venv/bin/python benchmarks/probe_trees.py --keep DIR --run benchmarks/results/predictor_epyc_p17.json \\
        --out benchmarks/results/probe_trees.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, required=True, help="predictor.py's --keep directory")
    ap.add_argument("--run", type=Path, required=True, help="the predictor.py result file of that run")
    ap.add_argument("--out", type=Path, default=RESULTS / "probe_trees.json")
    args = ap.parse_args()

    from edgeship.devices.calibrate import fit, l2_cache_kb
    from edgeship.devices.kernels import Kernel
    from edgeship.devices.predictor import TREES

    run = json.loads(args.run.read_text())
    kernels = json.loads((args.keep / "eval_kernels.json").read_text())
    out = {}
    for key in run["summary"]:
        fmt, precision, t = key.split(":")
        data = (args.keep / f"{fmt}-{precision}-{t}.json").read_text()
        out[key] = {}
        for trees in TREES:
            cfg = fit(json.loads(data), fmt, precision, int(t), 0, l2_cache_kb(), trees)
            errs = []
            for r in run["rows"]:
                if r["config"] == f"{fmt}:{precision}" and r["threads"] == int(t):
                    ks = [Kernel(**x) for x in kernels[f"{r['arch']}-{fmt}-{precision}:{t}"]]
                    p = cfg.p50.apply(ks, cfg.kernel_ms(ks))
                    errs.append(statistics.median(p * f for f in r["speeds"]) / r["measured_p50_ms"] - 1)
            within = sum(abs(e) <= 0.1 for e in errs) / len(errs)
            out[key][trees] = {
                "validation": {"within_10pct": cfg.error_p50.within_10pct, "mape_pct": cfg.error_p50.mape_pct},
                "eval_at_speed": {"n": len(errs), "within_10pct": round(within, 4),
                                  "mape_pct": round(100 * statistics.mean(abs(e) for e in errs), 2)}}
            print(key, trees, out[key][trees], flush=True)
    write_json(args.out, {"environment": environment(), "run": str(args.run), "summary": out})


if __name__ == "__main__":
    main()
