"""PReLU on ONNX Runtime: its PRelu kernel's time follows the signs of its input, and what edgeship's rewrite
(``edgeship.targets.onnx_prelu``: a PReLU over 16384 elements or more as Relu(x) + slope * Min(x, 0)) gains on
MTCNN's pretrained networks (facenet-pytorch's weights).

1. ``signs``: one PRelu over a 1 x 56 x 48 x 48 map, per-channel slopes, inputs with 0 %, 50 % and 100 % negative
   elements, against the rewritten graph on the same inputs (one process, 1 thread, ``--micro-runs`` timed runs
   after 50 warm-up runs; medians).
2. ``models``: MTCNN P-Net at 288 x 384 (the first level of its image pyramid for a 640 x 480 frame and 20 px faces),
   R-Net at 24 x 24, O-Net at 48 x 48, each lowered by edgeship's ONNX backends (FP32; INT8: ONNX Runtime's
   quantize_static on random calibration samples) three times: as shipped (``rewritten``), with the rewrite off
   (``prelu``: onnx_prelu.MIN_ELEMENTS set beyond any map) and with every PReLU rewritten (``all``: 0). Latency:
   edgeship's host measurement (``measure_host``: a fresh process per measurement, the runner's own random
   inputs), the three artifacts one after the other, order alternating, ``--repeats`` times at 1 and 2 threads;
   the speed-up is the median over repeats of prelu p50 / rewritten p50 within a repeat (``speedup_all``: prelu /
   all). Outputs: the largest difference between the rewritten and the prelu artifact on the same 8 random inputs
   (bit-identical expected).

    .venv/bin/python benchmarks/prelu_ort.py [--repeats 5] [--out benchmarks/results/prelu_ort.json]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from benchlib import RESULTS, command_line, environment, loadavg, write_json  # noqa: E402

MODELS = (("mtcnn_pnet", (3, 288, 384)), ("mtcnn_rnet", (3, 24, 24)), ("mtcnn_onet", (3, 48, 48)))
# the shipped rule, the rewrite off, and every PReLU with a constant slope rewritten (``speedup_all``)
VARIANTS = {"rewritten": 16384, "prelu": 1 << 62, "all": 0}


def signs(runs: int) -> list[dict]:
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from edgeship.targets.onnx_prelu import vectorize_prelu

    shape = [1, 56, 48, 48]
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prelu.onnx"
        slope = numpy_helper.from_array(np.linspace(-0.5, 1.2, 56).reshape(56, 1, 1).astype(np.float32), "s")
        g = helper.make_graph([helper.make_node("PRelu", ["x", "s"], ["y"], name="p")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, shape)], [slope])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sessions = {"prelu": ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])}
        vectorize_prelu(path)
        sessions["rewritten"] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        for negative in (0.0, 0.5, 1.0):
            x = np.abs(rng.standard_normal(shape)).astype(np.float32)
            x[rng.random(shape) < negative] *= -1
            row: dict = {"negative_fraction": negative, "elements": int(np.prod(shape))}
            for name, s in sessions.items():
                for _ in range(50):
                    s.run(None, {"x": x})
                ts = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    s.run(None, {"x": x})
                    ts.append(time.perf_counter() - t0)
                row[f"{name}_us"] = round(statistics.median(ts) * 1e6, 1)
            row["same_output"] = bool(np.array_equal(sessions["prelu"].run(None, {"x": x})[0],
                                                     sessions["rewritten"].run(None, {"x": x})[0]))
            print(row, file=sys.stderr)
            out.append(row)
    return out


def lowered(work: Path) -> list[dict]:
    import onnx
    import onnxruntime as ort

    from benchmarks.zoo import models as zoo
    from edgeship.devices.calibrate import lower
    from edgeship.targets import onnx_prelu

    rows = []
    for name, shape in MODELS:
        model = getattr(zoo, name)().eval()
        for precision in ("fp32", "int8"):
            dirs = {}
            for variant, limit in VARIANTS.items():
                default, onnx_prelu.MIN_ELEMENTS = onnx_prelu.MIN_ELEMENTS, limit
                try:
                    dirs[variant] = lower(model, shape, "onnx", precision, work / f"{name}-{precision}-{variant}",
                                          name, work / f"w-{name}-{precision}-{variant}")
                finally:
                    onnx_prelu.MIN_ELEMENTS = default
            graph = onnx.load(str(dirs["rewritten"] / "model.onnx")).graph
            x = np.random.default_rng(1).uniform(-1, 1, (8, 1, *shape)).astype(np.float32)
            outs = {}
            for variant, d in dirs.items():
                s = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
                outs[variant] = [s.run(None, {s.get_inputs()[0].name: xi}) for xi in x]
            diff = max(float(np.abs(a - b).max()) for ra, rb in zip(outs["rewritten"], outs["prelu"])
                       for a, b in zip(ra, rb))
            rows.append({"model": name, "input": list(shape), "precision": precision,
                         "prelus_rewritten": sum(onnx_prelu.MARK + "add" in n.name for n in graph.node),
                         "prelus_kept": sum(n.op_type == "PRelu" for n in graph.node),
                         "max_abs_output_difference": diff, "dirs": {k: str(v) for k, v in dirs.items()}})
    return rows


def measure(rows: list[dict], repeats: int, runs: int) -> None:
    from edgeship.devices.measure import RunArtifact, measure_host

    for r in range(repeats):
        for row in rows:
            for t in (1, 2):
                order = ("prelu", "rewritten", "all") if (r + t) % 2 == 0 else ("all", "rewritten", "prelu")
                for variant in order:
                    d = Path(row["dirs"][variant])
                    art = RunArtifact(d.name, "host", "onnx", row["precision"], d, [], "")
                    p50 = measure_host(art, t, runs, 10, profile=0).p50_ms
                    row.setdefault("p50_ms", {}).setdefault(f"{variant}:{t}", []).append(round(p50, 4))
        print(f"repeat {r + 1}/{repeats} done (load average {loadavg()})", file=sys.stderr)
    for row in rows:
        row["speedup"], row["speedup_all"] = {}, {}
        for t in (1, 2):
            for key, variant in (("speedup", "rewritten"), ("speedup_all", "all")):
                per = [a / b for a, b in zip(row["p50_ms"][f"prelu:{t}"], row["p50_ms"][f"{variant}:{t}"])]
                row[key][str(t)] = {"median": round(statistics.median(per), 3), "min": round(min(per), 3),
                                    "max": round(max(per), 3)}
        row.pop("dirs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--micro-runs", type=int, default=300)
    ap.add_argument("--out", type=Path, default=RESULTS / "prelu_ort.json")
    args = ap.parse_args()
    started, load = time.time(), loadavg()
    micro = signs(args.micro_runs)
    work = Path(tempfile.mkdtemp(prefix="prelu_ort_"))
    try:
        rows = lowered(work)
        measure(rows, args.repeats, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, {"environment": environment(), "command": command_line(), "loadavg_start": load,
                          "loadavg_end": loadavg(), "seconds": round(time.time() - started, 1),
                          "repeats": args.repeats, "runs": args.runs, "signs": micro, "models": rows})


if __name__ == "__main__":
    main()
