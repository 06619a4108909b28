"""In-context forests with the probes beyond their reach: refitted on kept calibrations and scored on the run's
evaluation architectures and on the pretrained models of a predictor_zoo.py run (nothing timed here).

A kernel type's forest is fitted on its times inside the fitting architectures (``in_context``) when it has
enough of them. Those architectures all end in a classifier of 10 outputs, so the in-context fc forest saw only
16-256 x 10 layers and its linear base, extrapolated to MobileNetV2's 1280 x 1000 classifier, gave 3.2 ms where
a probe of that shape took 0.29 ms (ONNX Runtime FP32, AVX2 EPYC): the whole model over-predicted by 20 %.
Now the probes of more MACs or more traffic than any in-context kernel of the type join its in-context times
(``fitting.beyond``). Both ways, per configuration: the predictor's
p50 error on the run's 30 evaluation architectures (their measured p50 is the run's) and on each zoo model the
configuration models whole (no operator left out; measured p50 from the zoo run, its artifact lowered again here
as predictor_zoo.py lowers it), and how many probes joined each type. At 2 threads the configuration rests on its
1-thread prediction (``fitting.fit``'s ``base``), refitted the same way.

    .venv/bin/python benchmarks/refit_probes_beyond.py \\
        --pair benchmarks/data/predictor_epyc_p26_keep.tar.xz benchmarks/results/predictor_epyc_p26.json \\
        --zoo benchmarks/results/predictor_zoo_epyc_p26.json --cache-kb 512
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, write_json  # noqa: E402
from refit_base_threads import scored, tally  # noqa: E402
from refit_slow_dropped import kept_runs, pair_arguments  # noqa: E402

MODES = ("in_context_only", "probes_beyond")


def zoo_kernels(zoo: dict, work: Path, configs: list[str] | None) -> dict[str, list]:
    """Kernels of each zoo model and configuration (of ``configs``' formats and precisions, None: all) the zoo run
    predicted whole, lowered again as it lowers them."""
    from benchmarks.predictor_zoo import lower_zoo
    from benchmarks.zoo import models
    from edgeship.devices.kernels import read

    out = {}
    for r in zoo["rows"]:
        key = f"{r['model']}:{r['config']}"
        if r["left_out"] or key in out or (configs and not any(c.startswith(f"{r['config']}:") for c in configs)):
            continue
        d = work / key.replace(":", "-")
        lower_zoo(getattr(models, r["model"])().eval(), r["model"], *r["config"].split(":"), d, work)
        main = json.loads((d / "model.json").read_text())["main"]
        out[key] = read(d / main, r["config"].split(":")[0])[0]
    return out


def zoo_errors(pf, zoo: dict, kernels: dict, key: str) -> dict[str, float]:
    """Each zoo model's p50 error (%) under a refitted predictor file, against the zoo run's measurement."""
    from edgeship.devices.predictor import predict_kernels

    fmt, precision, t = key.split(":")
    return {r["model"]: round(100 * (predict_kernels(pf, kernels[f"{r['model']}:{r['config']}"], fmt, precision,
                                                     int(t)).p50_ms / r["measured_p50_ms"] - 1), 2)
            for r in zoo["rows"] if r["config"] == f"{fmt}:{precision}" and r["threads"] == int(t)
            and f"{r['model']}:{r['config']}" in kernels}


def main() -> None:
    args, cache = pair_arguments(__doc__, RESULTS / "refit_probes_beyond.json", "configuration keys",
                                 lambda ap: ap.add_argument("--zoo", type=Path, help="a predictor_zoo.py result file "
                                                            "(of the same device) whose models are scored too"))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # benchmarks.zoo

    from edgeship.devices import fitting, in_context
    from edgeship.devices import predictor as pred

    zoo = json.loads(args.zoo.read_text()) if args.zoo else {"rows": []}
    with tempfile.TemporaryDirectory(prefix="edgeship-refit-") as work:
        zk = zoo_kernels(zoo, Path(work), args.configs)
    beyond, joined = fitting.beyond, {}

    def counting(ks, ms, probe_ks, probe_ms):  # the probes each in-context forest took in
        out = beyond(ks, ms, probe_ks, probe_ms)
        if ks:
            joined[ks[0].type] = len(out[0]) - len(ks)
        return out

    out: dict[str, dict] = {}
    totals = {m: {"at_least_90pct": 0, "mape_sum": 0.0} for m in MODES} | {"configurations": 0}
    for name, run, keep, kernels in kept_runs(args.pair):
        out[name] = {}
        for key in args.configs or [k for k in run["summary"] if k.split(":")[0] in in_context.FORMATS]:
            fmt, precision, t = key.split(":")
            one = json.loads((keep / f"{fmt}-{precision}-1.json").read_text())
            many = json.loads((keep / f"{fmt}-{precision}-{t}.json").read_text())
            row = {}
            for mode in MODES:
                fitting.beyond = counting if mode == "probes_beyond" else lambda ks, ms, *_: (ks, ms)
                pf = pred.new_file("refit", {})
                joined.clear()
                pf.configs[pred.key(fmt, precision, 1)] = base = fitting.fit(one, fmt, precision, 1, 0, cache)
                if t != "1":
                    joined.clear()  # this configuration's own forests'
                cfg = base if t == "1" else fitting.fit(many, fmt, precision, int(t), 0, cache, base=(base, one))
                pf.configs[key] = cfg
                row[mode] = {**scored(pf, cfg, run, kernels, key),
                             "zoo_error_pct": zoo_errors(pf, zoo, zk, key),
                             **({"probes_joined": dict(joined)} if mode == "probes_beyond" else {})}
            fitting.beyond = beyond
            tally(totals, row, MODES)
            out[name][key] = row
            print(name, key, {m: (r["evaluation"]["within_10pct"], r["evaluation"]["mape_pct"], r["zoo_error_pct"])
                              for m, r in row.items()}, row["probes_beyond"]["probes_joined"], flush=True)
    for m in MODES:
        totals[m]["mean_mape_pct"] = round(totals[m].pop("mape_sum") / max(1, totals["configurations"]), 2)
        zoo_abs = [abs(e) for runs in out.values() for r in runs.values() for e in r[m]["zoo_error_pct"].values()]
        totals[m]["zoo_mape_pct"] = round(statistics.mean(zoo_abs), 2) if zoo_abs else None
    print(totals)
    write_json(args.out, {"environment": environment(), "l2_cache_kb": cache, "zoo": str(args.zoo or ""),
                          "pairs": [[str(d), str(r)] for d, r in args.pair], "summary": totals, "runs": out})


if __name__ == "__main__":
    main()
