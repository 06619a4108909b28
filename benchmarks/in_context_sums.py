"""Do a runtime's per-layer times add up to its timed p50? (issue 16, issue 20 item 3)

A calibration fits its kernel forests on the in-context times of its fitting architectures (``devices.in_context``):
OpenVINO's PERF_COUNT, ONNX Runtime's profiler, LiteRT's C API profiler (``devices.litert_timer``, XNNPACK's
operators in whole microseconds truncated, +0.5 us each). Each such architecture was also timed without counters
(its ``p50_ms``). This script reads the kernel data sets a ``benchmarks/predictor.py --keep DIR`` run kept and says,
per configuration: how many fitting architectures carry per-layer times, on how many the layers were matched to the
kernels read from the file (``paired``: some kernel got a time; LiteRT's operators pair by type and order, all
kernels or none), and the sum of the layers' times over the p50 (median, 10th and 90th percentile, range).

    .venv/bin/python benchmarks/predictor.py --keep /tmp/keep ...
    .venv/bin/python benchmarks/in_context_sums.py /tmp/keep --out benchmarks/results/in_context_sums.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402


def summary(data: dict, fmt: str) -> dict:
    from edgeship.devices import in_context
    from edgeship.devices.kernels import Kernel

    fitting = [a for a in data["archs"] if a["role"] == "fit"]
    ratios, paired = [], 0
    for a in (a for a in fitting if a.get("layers")):
        ks = [Kernel(**k) for k in a["kernels"]]
        times = in_context.kernel_times(ks, a["layers"], fmt)
        paired += any(t is not None for t in times)
        ratios.append(sum(float(r["us"]) for r in a["layers"] if r.get("us") is not None) / 1e3 / a["p50_ms"])
    if len(ratios) < 2:
        return {"fitting": len(fitting), "with_layers": len(ratios), "paired": paired}
    tenths = statistics.quantiles(ratios, n=10, method="inclusive")
    return {"fitting": len(fitting), "with_layers": len(ratios), "paired": paired,
            "sum_over_p50": {"median": round(statistics.median(ratios), 4), "p10": round(tenths[0], 4),
                             "p90": round(tenths[-1], 4), "min": round(min(ratios), 4), "max": round(max(ratios), 4)}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("keep", type=Path, help="the --keep directory of a benchmarks/predictor.py run")
    ap.add_argument("--out", type=Path, default=RESULTS / "in_context_sums.json")
    args = ap.parse_args()
    configs = {}
    for path in sorted(args.keep.glob("*-*-*.json")):
        fmt, precision, threads = path.stem.rsplit("-", 2)
        configs[f"{fmt}:{precision}:{threads}"] = summary(json.loads(path.read_text()), fmt)
        print(path.stem, configs[f"{fmt}:{precision}:{threads}"])
    if not configs:
        raise SystemExit(f"{args.keep}: no kernel data sets (FORMAT-PRECISION-THREADS.json) from predictor.py --keep")
    write_json(args.out, {"benchmark": "in_context_sums", "keep": str(args.keep), "environment": environment(),
                          "configs": configs})
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
