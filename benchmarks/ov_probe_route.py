"""Does the route of OpenVINO INT8 probes matter to the latency predictor (issue 16)?

The calibration lowers each OpenVINO INT8 one-kernel probe by reading the probe's ONNX INT8 file (ONNX Runtime's
quantizer) with OpenVINO (``calibrate.lower(via_onnx=...)``: a second or less each), while an export, and so every
architecture the predictor is judged on, quantizes with NNCF (a second or more each). This lowers the same
probes both ways and times the two files of every probe side by side in one ``bench_runner --many`` process
(rounds in a new order each), ``--repeats`` processes per thread count: per kernel type, the NNCF file's p50
against the ONNX-route file's, next to how far the same file's repeats differ.

    .venv/bin/python benchmarks/ov_probe_route.py                   # -> benchmarks/results/ov_probe_route.json
    .venv/bin/python benchmarks/ov_probe_route.py --probes 12 --out /tmp/r.json
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, command_line, environment, loadavg, runner_many, write_json  # noqa: E402


def timed(arts: Path, threads: int, seed: int) -> dict[str, float]:
    return {k: v["p50_ms"] for k, v in runner_many(arts, threads, seed)["results"].items() if "error" not in v}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=100, help="kernel configurations (calibrate.probe_kernels)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "ov_probe_route.json")
    args = ap.parse_args()

    import torch

    from edgeship.devices.archs import probe
    from edgeship.devices.calibrate import lower, probe_kernels

    torch.set_num_threads(1)
    ks = probe_kernels(args.probes, seed=7)  # a seed the calibration's default (0) does not draw
    work = Path(tempfile.mkdtemp(prefix="edgeship-ov-route-"))
    try:
        arts = work / "arts"
        arts.mkdir()
        cost = {"onnx_int8_s": 0.0, "openvino_via_onnx_s": 0.0, "openvino_nncf_s": 0.0}
        for i, k in enumerate(ks):
            m, shape = probe(k)
            name = f"p{i:04d}"
            t = time.perf_counter()
            lower(m, shape, "onnx", "int8", work / "onnx" / name, name, work, seed=i)
            cost["onnx_int8_s"] += time.perf_counter() - t
            t = time.perf_counter()
            lower(m, shape, "openvino", "int8", arts / f"{name}-onnx", name, work,
                  via_onnx=work / "onnx" / name / "model.onnx")
            cost["openvino_via_onnx_s"] += time.perf_counter() - t
            t = time.perf_counter()
            lower(m, shape, "openvino", "int8", arts / f"{name}-nncf", name, work, seed=i)
            cost["openvino_nncf_s"] += time.perf_counter() - t
        load_before = loadavg()
        threads = [int(t) for t in args.threads.split(",")]
        raw = {t: [timed(arts, t, seed) for seed in range(args.repeats)] for t in threads}
        load_after = loadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows, summary = [], {}
    for t in threads:
        per_type: dict[str, list[tuple[float, float]]] = {}
        for i, k in enumerate(ks):
            via = [r.get(f"p{i:04d}-onnx") for r in raw[t]]
            nncf = [r.get(f"p{i:04d}-nncf") for r in raw[t]]
            if None in via or None in nncf:
                continue
            ratio = statistics.median(nncf) / statistics.median(via)
            spread = max(via) / min(via) - 1
            rows.append({"threads": t, "kernel": k.to_dict(), "onnx_route_p50_ms": via, "nncf_p50_ms": nncf,
                         "nncf_over_onnx_route": round(ratio, 4)})
            per_type.setdefault(k.type, []).append((ratio, spread))
        summary[str(t)] = {
            typ: {"n": len(v), "median_ratio": round(statistics.median(r for r, _ in v), 3),
                  "min_ratio": round(min(r for r, _ in v), 3), "max_ratio": round(max(r for r, _ in v), 3),
                  "repeat_spread_median_pct": round(100 * statistics.median(s for _, s in v), 1)}
            for typ, v in sorted(per_type.items())}
        print(f"{t} thread(s): " + "; ".join(f"{typ} {s['median_ratio']}x ({s['min_ratio']}-{s['max_ratio']})"
                                           for typ, s in summary[str(t)].items()), flush=True)
    write_json(args.out, {
        "command": command_line(), "environment": environment(),
        "loadavg_before_measuring": load_before, "loadavg_after": load_after,
        "method": {"probes": len(ks), "probe_seed": 7, "threads": threads, "repeats": args.repeats,
                   "runs": 10, "rounds": 10,
                   "ratio": "median over repeats of the NNCF file's p50 / the same of the ONNX-route file"},
        "lowering_s": {k: round(v, 1) for k, v in cost.items()},
        "lowering_s_per_probe": {k: round(v / len(ks), 3) for k, v in cost.items()},
        "summary": summary, "rows": rows,
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
