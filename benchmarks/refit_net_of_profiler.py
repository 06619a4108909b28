"""In-context kernel times net of what ONNX Runtime's profiler adds to each layer: refitted on kept calibrations and
scored on architectures none of the fits saw.

A calibration times each fitting architecture twice: without the profiler (its p50) and with ONNX Runtime's
profiler on, whose per-layer times fit the in-context forests (``in_context``). The profiler records timestamps and
an event per operator, so a layer's counted time holds that cost too, and a model of many small layers is counted
far above its p50 (the ``profiler_added_us_per_layer`` columns: each fitting architecture's layer times summed, less
its p50, over its layer count, for the smaller and the larger half of them by p50). The correction's per-kernel term
fitted that only on average, and models of small layers were over-predicted. This script refits each kept data set
(``benchmarks/predictor.py --keep DIR``) four ways and reports, per configuration, the held-out validation error
each fit states and its p50 error on the run's evaluation architectures (their measured p50s are the run's: nothing
is timed here; ``within_10pct_of_fastest`` scores against each architecture's least p50 over its repeats, the
measure a noisy run is read by):
- ``as_counted``: the layer times as the profiler gave them;
- ``net_everywhere``: each layer less its own architecture's excess per layer, whatever the data set;
- ``own_where_steady_over_all``: the same where that excess is steady over all the fitting architectures (its 10th
  percentile at least half its median): the rule of 56d7704, the ``shipped`` mode of this script's earlier version,
  which wrote ``refit_net_of_profiler.json`` and ``refit_net_of_profiler_p46.json``;
- ``shipped``: ``in_context.profiler_cost_ms``: one cost per layer, the median excess of the smaller half of the
  fitting architectures by p50, taken off every layer where it is steady there (10th and 90th percentiles within
  ``in_context.STEADY`` of the median). A large model's excess is mostly the noise between its two timings.
At 2 threads the configuration rests on its 1-thread prediction (``fitting.fit``'s ``base``), refitted the same way.
Runs that judged the same calibration share its fits. OpenVINO's and LiteRT's fits are the same every way (their
counters are not netted); their excess per layer is reported for comparison.

    .venv/bin/python benchmarks/refit_net_of_profiler.py --cache-kb 1024 \\
        --out benchmarks/results/refit_net_of_profiler_smaller_half.json \\
        --pair benchmarks/data/predictor_zen4_p40_keep.tar.xz benchmarks/results/predictor_zen4_p40.json \\
        --pair benchmarks/data/predictor_zen4_p42_keep.tar.xz benchmarks/results/predictor_zen4_p42.json \\
        --pair benchmarks/data/predictor_zen4_p43_keep.tar.xz benchmarks/results/predictor_zen4_p43.json \\
        --pair benchmarks/data/predictor_zen4_p44_keep.tar.xz benchmarks/results/predictor_zen4_p44.json \\
        --pair benchmarks/data/predictor_zen4_p45_keep.tar.xz benchmarks/results/predictor_zen4_p45.json \\
        --pair benchmarks/data/predictor_zen4_p46_keep.tar.xz benchmarks/results/predictor_zen4_p46.json \\
        --pair benchmarks/data/predictor_zen4_p47_keep.tar.xz benchmarks/results/predictor_zen4_p47.json \\
        --pair benchmarks/data/predictor_zen5_p37_keep.tar.xz benchmarks/results/predictor_zen5_p37.json \\
        --pair benchmarks/data/predictor_epyc_p26_keep.tar.xz benchmarks/results/predictor_epyc_p26.json \\
        --pair benchmarks/data/predictor_epyc_p28_keep.tar.xz benchmarks/results/predictor_epyc_p28.json

(p42-p47 judged p39's calibration, the same as p40's: their kept data hold only their evaluation architectures'
kernels and name p40's for the calibration. p44, p45 and p47 ran in a noisy state of the VM: their measured p50s are
noisy, but every way is scored on the same ones.)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402
from refit_base_threads import scored, tally  # noqa: E402
from refit_slow_dropped import kept_runs, pair_arguments  # noqa: E402

MODES = ("as_counted", "net_everywhere", "own_where_steady_over_all", "shipped")


def quantiles_us(archs: list[dict]) -> dict:
    """The excess per layer of ``archs`` (us): 10th, 50th and 90th percentiles."""
    from edgeship.devices.in_context import overhead_ms

    added = sorted(overhead_ms(a) * 1e3 for a in archs)
    q = statistics.quantiles(added, n=10)
    return {"n": len(added), "p10": round(q[0], 2), "median": round(statistics.median(added), 2),
            "p90": round(q[-1], 2)}


def added_per_layer(data: dict) -> dict | None:
    """The excess per layer over the fitting architectures (us), over the smaller and the larger half of them by
    p50, and the cost per layer the shipped rule takes off (None: not steady)."""
    from edgeship.devices.in_context import profiler_cost_ms

    fitting = sorted((a for a in data["archs"] if a["role"] == "fit" and a.get("layers")), key=lambda a: a["p50_ms"])
    if len(fitting) < 20:
        return None
    half = len(fitting) // 2
    cost = profiler_cost_ms(fitting)
    return {"smaller_half": quantiles_us(fitting[:half]) | {"p50_ms_up_to": round(fitting[half - 1]["p50_ms"], 3)},
            "larger_half": quantiles_us(fitting[half:]), "all": quantiles_us(fitting),
            "cost_taken_off_us": None if cost is None else round(cost * 1e3, 2)}


def own_excess(where_steady: bool):
    """``in_context.samples`` as the earlier rules made it: each layer less its own architecture's excess per layer
    (never below ``FLOOR`` of it), everywhere or where that excess is steady over all the fitting architectures."""
    from edgeship.devices import in_context
    from edgeship.devices.kernels import Kernel

    def steady_over_all(archs: list[dict]) -> bool:
        added = sorted(in_context.overhead_ms(a) for a in archs if a.get("layers"))
        median = added[len(added) // 2] if len(added) >= 10 else 0.0
        return median > 0 and added[len(added) // 10] >= 0.5 * median

    def samples(archs: list[dict], kind: str, fmt: str) -> tuple[list, list[float]]:
        net = fmt in in_context.NET_OF_PROFILER and (not where_steady or steady_over_all(archs))
        ks, ms = [], []
        for a in archs:
            if not a.get("layers"):
                continue
            arch_ks = [Kernel(**x) for x in a["kernels"]]
            added = max(in_context.overhead_ms(a), 0.0) if net else 0.0
            for k, t in zip(arch_ks, in_context.kernel_times(arch_ks, a["layers"], fmt)):
                if k.type == kind and t is not None and t > 0:
                    ks.append(k)
                    ms.append(max(t - added, in_context.FLOOR * t))
        return ks, ms

    return samples


def main() -> None:
    args, cache = pair_arguments(__doc__, RESULTS / "refit_net_of_profiler_smaller_half.json", "configuration keys")

    from edgeship.devices import in_context
    from edgeship.devices import predictor as pred
    from edgeship.devices.fitting import fit

    shipped = in_context.samples
    ways = {"as_counted": None, "net_everywhere": own_excess(False), "own_where_steady_over_all": own_excess(True),
            "shipped": shipped}
    out: dict[str, dict] = {}
    added: dict[str, dict] = {}
    fits: dict[tuple, tuple] = {}  # runs judging one calibration share its fits
    totals = {m: {"at_least_90pct": 0, "mape_sum": 0.0, "at_least_90pct_of_fastest": 0} for m in MODES} | {
        "configurations": 0}
    try:
        for name, run, keep, kernels in kept_runs(args.pair):
            out[name], added[name] = {}, {}
            for key in run["summary"]:
                fmt, precision, t = key.split(":")
                text = {n: (keep / f"{fmt}-{precision}-{n}.json").read_text() for n in {"1", t}}
                many = json.loads(text[t])
                added[name][key] = added_per_layer(many)
                if key not in (args.configs or [k for k in run["summary"] if k.startswith("onnx:")]):
                    continue
                one = json.loads(text["1"])
                row: dict[str, dict] = {}
                for mode in MODES:
                    way = ways[mode]
                    in_context.samples = way or shipped
                    saved = in_context.NET_OF_PROFILER
                    in_context.NET_OF_PROFILER = () if way is None else saved
                    at = (key, mode, hash(text["1"]), hash(text[t]))
                    if at not in fits:
                        base = fit(one, fmt, precision, 1, 0, cache)
                        fits[at] = base, (base if t == "1" else
                                          fit(many, fmt, precision, int(t), 0, cache, base=(base, one)))
                    in_context.samples, in_context.NET_OF_PROFILER = shipped, saved
                    base, cfg = fits[at]
                    pf = pred.new_file("refit", {})
                    pf.configs[pred.key(fmt, precision, 1)] = base
                    pf.configs[key] = cfg
                    row[mode] = scored(pf, cfg, run, kernels, key)
                tally(totals, row, MODES)
                for m in MODES:
                    totals[m]["at_least_90pct_of_fastest"] += row[m]["evaluation"]["within_10pct_of_fastest"] >= 0.9
                out[name][key] = row
                print(name, key, {m: (r["evaluation"]["within_10pct"], r["evaluation"]["mape_pct"],
                                      r["evaluation"]["within_10pct_of_fastest"], r["stated"]["within_10pct"])
                                  for m, r in row.items()}, flush=True)
    finally:
        in_context.samples = shipped
    for m in MODES:
        totals[m]["mean_mape_pct"] = round(totals[m].pop("mape_sum") / max(1, totals["configurations"]), 2)
    print(totals)
    write_json(args.out, {"environment": environment(), "l2_cache_kb": cache, "steady": list(in_context.STEADY),
                          "pairs": [[str(d), str(r)] for d, r in args.pair], "summary": totals,
                          "profiler_added_us_per_layer": added, "runs": out})


if __name__ == "__main__":
    main()
