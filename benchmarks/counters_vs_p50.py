"""Do OpenVINO's per-layer counters give a layer the time it takes inside a timed loop? (issue 16)

A calibration fits its kernel forests on the fitting architectures' in-context times (``devices.in_context``), read
from OpenVINO's counters (PERF_COUNT). The counters hold the last inference only, so the runner reads them after an
inference; reading them runs Python code between two inferences that a timed loop does not. For random
architectures (``archs.random_arch``, the calibration's fitting seeds) lowered to OpenVINO INT8 as a calibration
lowers them, this script compares, at 1 and 2 threads, in one process per architecture:

- ``p50_ms``: the p50 of a timed loop without counters (what a calibration fits the correction to);
- ``every_run``: the sum of the layers' middle-mean times, the counters read after every inference (the runner until
  the sixteenth session);
- ``after_warm``: the same with each counted inference following ``layer_profile.WARM_RUNS`` uncounted ones
  (``layer_profile.ov_counted``, the runner now).

    .venv/bin/python benchmarks/counters_vs_p50.py            # -> benchmarks/results/counters_vs_p50.json
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, environment, loadavg, write_json  # noqa: E402


def request(ov, core, xml: Path, input_shape: tuple[int, ...], config: dict, rng):
    """An infer request of the IR at ``xml`` with its input bound once to a random frame, as the runner binds it,
    warmed up."""
    model = core.read_model(str(xml))
    if model.inputs[0].get_partial_shape().is_dynamic:
        model.reshape([1, *input_shape])
    r = core.compile_model(model, "CPU", config).create_infer_request()
    for k, port in enumerate(r.model_inputs):
        x = rng.integers(0, 255, list(port.get_shape())).astype(port.get_element_type().to_dtype())
        r.set_input_tensor(k, ov.Tensor(x))
    for _ in range(20):
        r.infer()
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=12)
    ap.add_argument("--runs", type=int, default=100, help="counted inferences (and timed runs x 3)")
    ap.add_argument("--out", type=Path, default=RESULTS / "counters_vs_p50.json")
    args = ap.parse_args()

    import numpy as np
    import openvino as ov
    import torch

    from edgeship.devices import layer_profile as lp
    from edgeship.devices.archs import random_arch
    from edgeship.devices.calibrate import SEEDS, lower

    sys.path.insert(0, str(Path(lp.__file__).parent))
    import bench_runner as br  # the runner as a device runs it (its siblings loaded by path)

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows, work = [], Path(tempfile.mkdtemp(prefix="edgeship-counters-"))
    for i in range(args.archs):
        a = random_arch(SEEDS["fit"] + i)
        d = lower(a.model, a.input_shape, "openvino", "int8", work / f"a{i}", f"a{i}", work)
        xml = d / json.loads((d / "model.json").read_text())["main"]
        for threads in (1, 2):
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
            core = ov.Core()

            plain, times = request(ov, core, xml, a.input_shape, config, rng), []
            for _ in range(3 * args.runs):
                t = time.perf_counter_ns()
                plain.infer()
                times.append((time.perf_counter_ns() - t) / 1e6)
            sums = {}
            for mode in ("every_run", "after_warm"):
                counting, counted = request(ov, core, xml, a.input_shape, {**config, "PERF_COUNT": True}, rng), {}
                for _ in range(args.runs):
                    if mode == "every_run":  # as the runner did: the module loaded and the counters read each run
                        counting.infer()
                        br._sibling("layer_profile").ov_count(counting, counted)
                    else:
                        lp.ov_counted(counting, counted)
                sums[mode] = sum(r["us"] for r in lp.ov_layers(counted)[1]) / 1e3
            p50 = statistics.median(times)
            rows.append({"arch": f"fit{SEEDS['fit'] + i}", "description": a.description, "threads": threads,
                         "p50_ms": round(p50, 4), **{f"{m}_ms": round(v, 4) for m, v in sums.items()},
                         **{f"{m}_over_p50": round(v / p50, 3) for m, v in sums.items()}})
            print(rows[-1], flush=True)
    summary = {}
    for threads in (1, 2):
        mine = [r for r in rows if r["threads"] == threads]
        small = [r for r in mine if r["p50_ms"] < 0.2]
        summary[str(threads)] = {m: {"median_over_p50": round(statistics.median(r[f"{m}_over_p50"] for r in mine), 3),
                                     "range_over_p50": [min(r[f"{m}_over_p50"] for r in mine),
                                                        max(r[f"{m}_over_p50"] for r in mine)],
                                     "median_over_p50_below_0.2ms": round(statistics.median(
                                         r[f"{m}_over_p50"] for r in small), 3) if small else None}
                                 for m in ("every_run", "after_warm")}
    shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, {"environment": environment(), "loadavg_after": loadavg(), "warm_runs": lp.WARM_RUNS,
                          "runs": args.runs, "summary": summary, "rows": rows})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
