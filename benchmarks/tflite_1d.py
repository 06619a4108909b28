"""TFLite for 1-D models: edgeship's torch.fx lowering (a height-one image, input (N, L, C)) against litert-torch's
route (torch.export, the torch layout (N, C, L) kept with transposes), which 1-D models took until the twenty-ninth
session. Per random 1-D architecture (``archs.random_arch_1d``: raw waveforms with long strided stems, feature frames
with depthwise-separable and residual blocks) and precision (FP32, INT8):

1. the wall time of lowering it (``tflite`` backend ``lower``: conversion and, for INT8, calibration on 64 random
   samples; one process, models lowered in turn, litert-torch imported before the first; the first torch.fx lowering
   also imports TensorFlow, about 20 s: the summary gives medians);
2. the operators of the file (TRANSPOSE count), and the predictor's reading of it (kernels, operators left out);
3. agreement of the INT8 file's top class with torch's on random signals, and the largest FP32 difference;
4. the p50 latency, both routes' files timed interleaved in one ``bench_runner --many`` process per thread count.

The litert-torch files are made by forcing that route (``tflite.lowering_problem`` patched to name a reason), as a
model outside the lowering's operators takes it.

    .venv/bin/python benchmarks/tflite_1d.py                 # -> benchmarks/results/tflite_1d.json
    .venv/bin/python benchmarks/tflite_1d.py --archs 2 --out /tmp/t.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import RESULTS, command_line, environment, loadavg, runner_many, write_json

SEED = 450_000  # benchmarks/predictor.py's 1-D evaluation architectures (EVAL_SEED_1D)
ROUTES = ("torch.fx", "litert-torch")


def lowered(a, route: str, precision: str, out: Path, work: Path) -> float:
    """Lower architecture ``a`` to TFLite by ``route`` into ``out``; the wall time (s)."""
    from edgeship.devices.calibrate import lower
    from edgeship.targets import tflite

    keep = tflite.lowering_problem
    if route == "litert-torch":
        tflite.lowering_problem = lambda model, ctx: "forced by benchmarks/tflite_1d.py"  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        lower(a.model, a.input_shape, "tflite", precision, out, out.name, work)
        return time.perf_counter() - t0
    finally:
        tflite.lowering_problem = keep


def described(a, d: Path, precision: str) -> dict:
    """The file's operators, the predictor's reading, and its outputs against torch's."""
    import torch

    from edgeship.devices.kernels import read
    from edgeship.targets.base import Artifact, get_backend
    from edgeship.targets.tflite import open_interpreter

    meta = json.loads((d / "model.json").read_text())
    ops = [op["op_name"] for op in open_interpreter(d / "model.tflite", delegates=False)._get_ops_details()]
    ks, left = read(d / "model.tflite", "tflite")
    x = np.random.default_rng(7).normal(size=(64, *a.input_shape)).astype(np.float32)
    with torch.no_grad():
        ref = a.model(torch.from_numpy(x)).numpy()
    art = Artifact(meta["target"], "tflite", precision, d, meta["main"], meta["files"], meta["meta"])
    got = get_backend("tflite", precision).load(art, threads=1)(x)[0]
    return {"route": meta["meta"]["route"], "operators": len(ops), "transposes": ops.count("TRANSPOSE"),
            "kernels": len(ks), "left_out": left, "size_bytes": (d / "model.tflite").stat().st_size,
            "top1_agreement": round(float((got.argmax(1) == ref.argmax(1)).mean()), 4),
            "max_abs_diff": round(float(np.abs(got - ref).max()), 6)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=8)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", type=Path, default=RESULTS / "tflite_1d.json")
    args = ap.parse_args()

    import torch

    from edgeship.devices.archs import macs, random_arch_1d

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="edgeship-tflite-1d-"))
    arts = work / "arts"
    rows: list[dict] = []
    try:
        import litert_torch  # noqa: F401  (imported once, before the first timed lowering of that route)

        for i in range(args.archs):
            a = random_arch_1d(SEED + i)
            for precision in ("fp32", "int8"):
                for route in ROUTES:
                    name = f"a{i:03d}-{precision}-{'fx' if route == 'torch.fx' else 'litert'}"
                    row = {"arch": f"a{i:03d}", "seed": a.seed, "description": a.description,
                           "input": list(a.input_shape), "macs": macs(a.model, a.input_shape),
                           "precision": precision, "route_asked": route}
                    try:
                        row["lower_s"] = round(lowered(a, route, precision, arts / name, work), 2)
                        row.update(described(a, arts / name, precision))
                    except Exception as e:  # a route refusing an architecture: recorded, not hidden
                        shutil.rmtree(arts / name, ignore_errors=True)
                        row["error"] = str(e)[:300]
                    rows.append({"name": name, **row})
                    print(name, {k: row.get(k) for k in ("lower_s", "transposes", "top1_agreement", "error")},
                          flush=True)
        load_before = loadavg()
        timed: dict[int, dict] = {}
        for t in [int(x) for x in args.threads.split(",")]:
            raw = runner_many(arts, t, seed=t, runs=20, rounds=args.rounds)
            timed[t] = {k: v["p50_ms"] for k, v in raw["results"].items() if "p50_ms" in v}
        for r in rows:
            r["p50_ms"] = {str(t): round(v[r["name"]], 4) for t, v in timed.items() if r["name"] in v}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = {}
    for precision in ("fp32", "int8"):
        fx = {r["arch"]: r for r in rows if r["precision"] == precision and r["route_asked"] == "torch.fx"}
        lt = {r["arch"]: r for r in rows if r["precision"] == precision and r["route_asked"] == "litert-torch"}
        both = [k for k in fx if k in lt and "error" not in fx[k] and "error" not in lt[k]]
        s: dict = {"archs": len(both), "fx_errors": sum("error" in r for r in fx.values()),
                   "litert_errors": sum("error" in r for r in lt.values())}
        if both:
            s["lower_s_median"] = {"torch.fx": statistics.median(fx[k]["lower_s"] for k in both),
                                   "litert-torch": statistics.median(lt[k]["lower_s"] for k in both)}
            s["transposes_median"] = {"torch.fx": statistics.median(fx[k]["transposes"] for k in both),
                                      "litert-torch": statistics.median(lt[k]["transposes"] for k in both)}
            s["top1_agreement_min"] = {"torch.fx": min(fx[k]["top1_agreement"] for k in both),
                                       "litert-torch": min(lt[k]["top1_agreement"] for k in both)}
            for t in timed:
                ratios = [lt[k]["p50_ms"][str(t)] / fx[k]["p50_ms"][str(t)] for k in both
                          if str(t) in fx[k]["p50_ms"] and str(t) in lt[k]["p50_ms"]]
                if ratios:
                    s[f"litert_over_fx_p50_{t}t"] = {"median": round(statistics.median(ratios), 3),
                                                     "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
        summary[precision] = s
    write_json(args.out, {"command": command_line(), "environment": environment(), "loadavg_before_timing": load_before,
                          "loadavg_after": loadavg(), "method": __doc__.split("\n\n")[0], "summary": summary,
                          "rows": rows})
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
