"""Where the latency predictor misses (issue 16): its error on predictor.json's evaluation architectures, split by
whether the architecture's weights fit in one core's L2 cache.

    .venv/bin/python benchmarks/predictor_by_weights.py            # reads benchmarks/results/predictor.json
    .venv/bin/python benchmarks/predictor_by_weights.py --predictor-json F --out G

Why: a calibration probe is one kernel, whose weights stay in the cache between the timed runs; a whole network
whose weights exceed the cache reads them from L3 or memory on every inference. The pretrained MobileNetV2 (14 MB
of FP32 weights) was under-predicted on ONNX Runtime FP32 by 20-24 % (predictor_zoo.json), three times the median
error on the random architectures. This rebuilds each evaluation architecture from its seed (``archs.random_arch``,
as benchmarks/predictor.py drew it), counts its weight bytes at the configuration's precision (4 per FP32 weight,
1 per INT8 weight), and compares the median signed error (predicted / measured - 1) of the architectures whose
weights exceed this machine's L2 cache per core (from sysfs; ``--cache-kb`` to override) with that of the others.
Nothing is timed: the measurements are predictor.json's. Writes benchmarks/results/predictor_by_weights.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, command_line, environment, write_json  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--predictor-json", type=Path, default=RESULTS / "predictor.json")
    ap.add_argument("--cache-kb", type=int, help="the L2 cache per core (default: this machine's, from sysfs)")
    ap.add_argument("--out", type=Path, default=RESULTS / "predictor_by_weights.json")
    args = ap.parse_args(argv)
    import json

    import torch
    from scipy.stats import spearmanr

    from edgeship.devices.archs import random_arch
    from edgeship.devices.calibrate import l2_cache_kb

    torch.set_num_threads(1)
    cache_kb = args.cache_kb or l2_cache_kb()
    if cache_kb is None:
        raise SystemExit("this machine's L2 cache size is unknown (no /sys/devices/system/cpu/cpu0/cache): "
                         "give --cache-kb")
    data = json.loads(args.predictor_json.read_text())
    params = {name: sum(p.numel() for p in random_arch(a["seed"]).model.parameters())
              for name, a in data["archs"].items()}
    rows: dict[str, dict] = {}
    pairs: dict[str, list[tuple[float, float]]] = {}  # (weight KB, error) per configuration
    for r in data["rows"]:
        key = f"{r['config']}:{r['threads']}"
        weight_kb = params[r["arch"]] * (4 if r["config"].endswith("fp32") else 1) / 1024
        side = "weights_beyond_l2" if weight_kb > cache_kb else "weights_within_l2"
        rows.setdefault(key, {"weights_beyond_l2": [], "weights_within_l2": []})[side].append(r["error_pct"])
        pairs.setdefault(key, []).append((weight_kb, r["error_pct"]))
    summary = {}
    for key, sides in rows.items():
        summary[key] = {side: {"n": len(errs),
                               "median_error_pct": round(statistics.median(errs), 2) if errs else None,
                               "within_10pct": round(sum(abs(e) <= 10 for e in errs) / len(errs), 4) if errs else None}
                        for side, errs in sides.items()}
        # does the error grow with the weights on either side of the cache (negative: the more weights, the more
        # under-predicted)? Spearman's rank correlation over every architecture of the configuration
        rho = spearmanr([w for w, _ in pairs[key]], [e for _, e in pairs[key]]).statistic
        summary[key]["spearman_error_vs_weights"] = round(float(rho), 3)
        print(f"{key}: beyond L2 {summary[key]['weights_beyond_l2']}, within {summary[key]['weights_within_l2']}")
    write_json(args.out, {
        "benchmark": "predictor_by_weights", "command": command_line(), "environment": environment(),
        "source": str(args.predictor_json.relative_to(Path.cwd()) if args.predictor_json.is_absolute()
                      and args.predictor_json.is_relative_to(Path.cwd()) else args.predictor_json),
        "l2_cache_kb_per_core": cache_kb,
        "method": "weights = the evaluation architecture's parameters rebuilt from its seed, x 4 bytes (FP32) or 1 "
                  "(INT8); error = predicted / measured p50 - 1 as predictor.json states it; nothing timed; "
                  "spearman_error_vs_weights: rank correlation of error and weight bytes over every architecture",
        "archs_params": params, "summary": summary})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
