"""Peers benchmark (issue 7): edgeship's full recipe (its passes, e.g. the demo's drop_blocks -> prune ->
distill -> QAT; one INT8 artifact per format) against what a user would otherwise run on the SAME trained
FP32 model, and the FP32 unpruned model on each runtime.

    .venv/bin/python benchmarks/peers.py                      # both reference models, full test split
    .venv/bin/python benchmarks/peers.py --quick              # reduced data and schedules (not a verdict)
    .venv/bin/python benchmarks/peers.py --models resnet --repeats 7
    .venv/bin/python benchmarks/peers.py --recipe mine=path/to/recipe.yaml --models mine

Contenders per model and runtime (ONNX Runtime, OpenVINO, LiteRT):
- fp32: the unpruned model, `edgeship export` with no passes and FP32 targets;
- edgeship: `edgeship export` of the recipe's passes with an INT8 target per format;
- peer: the runtime's default INT8 flow on the unpruned model (see PEER_FLOWS), written here as a user
  would, with the same calibration samples edgeship's QAT pass used.
Top-1 on the recipe's test split (Fashion-MNIST: all 10k). Latency: benchmarks of every artifact by
edgeship's host measurement (edgeship.targets.measure: fresh subprocess, fixed threads, warm-up then
timed runs), interleaved round-robin over all contenders, repeated; the median of the repeats' p50 is
reported, and each speed-up is the median over repeats of the ratio of two p50s from the same repeat.
Writes benchmarks/results/peers.json (peers_quick.json with --quick); make_report.py renders it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from benchlib import (
    RECIPES,
    RESULTS,
    ROOT,
    CpuShare,
    command_line,
    device_bytes,
    environment,
    loadavg,
    quick_recipe,
    write_json,
)

FORMATS = ("onnx", "openvino", "tflite")
RUNTIME_NAMES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO", "tflite": "LiteRT (TFLite)"}
EDGESHIP_PRECISION = {"onnx": "int8", "openvino": "int8", "tflite": "int8"}
PEER_FLOWS = {
    "onnx": "torch.onnx.export(model, (x,), path) with its defaults (torch 2.13: the dynamo exporter, static "
            "batch 1), then onnxruntime.quantization.quantize_static(fp32, int8, reader) with its defaults "
            "(QDQ, per-tensor int8 weights, int8 activations, MinMax) and a plain CalibrationDataReader, "
            "no quant_pre_process",
    "openvino": "openvino.convert_model(model, example_input=x, input=[(-1, C, H, W)]) (without input= every "
                "dimension is dynamic, and a 1x1 image cannot be benchmarked), then nncf.quantize(ov_model, "
                "nncf.Dataset(samples)) with its defaults (subset_size 300, fast bias correction, "
                "performance preset), openvino.save_model with its defaults",
    "tflite": "the float TF graph from edgeship's torch.fx -> TF lowering (edgeship.targets.torch2tf, what its "
              "tflite backend lowers before converting), then TFLiteConverter's documented full-integer PTQ: "
              "Optimize.DEFAULT, representative_dataset over the calibration samples, TFLITE_BUILTINS_INT8, "
              "int8 input and output; no edgeship pass",
}


# how bench_runner calls OpenVINO and how prune rounds widths (make_report marks sweep rows recorded
# before these were in the method)
OPENVINO_CALL = "input tensor bound once over a shared buffer, request.infer() (since commit 937dc5a)"
PRUNE_ROUNDING = "kept widths to the nearest multiple of round_to (since commit 0a627d7)"


# ------------------------------------------------------------------------------- recipes
def derive(base: dict, name: str, kind: str, work: Path) -> dict:
    """``kind`` "edgeship": the recipe's passes, one INT8 target per format; "fp32": no passes, FP32 targets."""
    r = copy.deepcopy(base)
    r["name"] = f"bench_peers_{name}_{kind}"
    if kind == "fp32":
        r["passes"] = []
        r["targets"] = [{"name": f"{fmt}-fp32", "format": fmt, "precision": "fp32"} for fmt in FORMATS]
    else:
        r["targets"] = [{"name": f"{fmt}-{EDGESHIP_PRECISION[fmt]}", "format": fmt,
                         "precision": EDGESHIP_PRECISION[fmt], "max_accuracy_drop": 100.0} for fmt in FORMATS]
    r["output"] = str(work / f"{name}_{kind}")
    return r


def write_recipe(recipe: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- peer flows
def _sidecar(name: str, fmt: str, out: Path, main: str, meta: dict):
    from edgeship.targets.base import Artifact

    files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "model.json")
    art = Artifact(name, fmt, "int8", out, main, files, meta)
    art.write_sidecar()
    return art


def peer_onnx(model, example, calib: np.ndarray, out: Path, log: Path):
    import onnx
    import torch
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    from edgeship.logs import captured

    class Reader(CalibrationDataReader):  # the plain reader ONNX Runtime's examples show
        def __init__(self, samples, input_name):
            self.it = iter([{input_name: s[None]} for s in samples])

        def get_next(self):
            return next(self.it, None)

    fp32 = out.parent / f".{out.name}-fp32" / "model.onnx"
    fp32.parent.mkdir(parents=True, exist_ok=True)
    with captured(log):
        torch.onnx.export(model, (example,), str(fp32))
        input_name = onnx.load(str(fp32)).graph.input[0].name
        quantize_static(str(fp32), str(out / "model.onnx"), Reader(calib, input_name))
    return _sidecar("peer-onnx", "onnx", out, "model.onnx", {"route": PEER_FLOWS["onnx"]})


def peer_openvino(model, example, calib: np.ndarray, out: Path, log: Path, input_shape):
    import nncf
    import openvino as ov

    from edgeship.logs import captured

    with captured(log):
        om = ov.convert_model(model, example_input=example, input=[(-1, *input_shape)])
        q = nncf.quantize(om, nncf.Dataset([s[None] for s in calib]))
        ov.save_model(q, str(out / "model.xml"))
    return _sidecar("peer-openvino", "openvino", out, "model.xml", {"route": PEER_FLOWS["openvino"]})


def peer_tflite(model, example, calib: np.ndarray, out: Path, log: Path, input_shape):
    import tensorflow as tf

    from edgeship.logs import captured
    from edgeship.targets import torch2tf

    nhwc = np.ascontiguousarray(calib.transpose(0, 2, 3, 1), np.float32)
    with captured(log):
        module, fn = torch2tf.Lowering(torch2tf.trace(model, example), input_shape).build()
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], module)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([s[None]] for s in nhwc)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        (out / "model.tflite").write_bytes(conv.convert())
    meta = {"route": PEER_FLOWS["tflite"], "inputs": [{"layout": "NHWC"}]}
    return _sidecar("peer-tflite", "tflite", out, "model.tflite", meta)


def peer_runner(art, threads: int):
    """(runner over normalized NCHW float32, batch size it accepts) with the artifact's own runtime."""
    if art.format == "onnx":
        import onnxruntime as ort

        from edgeship.targets.onnx import ort_runner

        so = ort.SessionOptions()
        so.log_severity_level = 3
        dim = ort.InferenceSession(str(art.path), so, providers=["CPUExecutionProvider"]).get_inputs()[0].shape[0]
        return ort_runner(art.path, threads), (dim if isinstance(dim, int) and dim > 0 else 500)
    if art.format == "openvino":
        from edgeship.targets.openvino import OpenVINO

        return OpenVINO().load(art, threads), 500
    from edgeship.targets.tflite import make_runner, open_interpreter

    return make_runner(open_interpreter(art.path, threads), "NHWC"), 500


def build_peers(recipe_path: Path, out: Path, samples: int, threads: int) -> list[dict]:
    """Every peer flow on the recipe's unpruned FP32 model; each verified on the test split."""
    import torch

    from edgeship.api import load_recipe
    from edgeship.calibration.quant import QuantSettings
    from edgeship.pipeline.training import predict
    from edgeship.run import calib_subset, prepare
    from edgeship.targets.verify import compare, run_batched

    rec = load_recipe(recipe_path)
    prep = prepare(rec)
    model, data = prep.model, prep.data
    model.eval()
    calib = calib_subset(data["calib"], QuantSettings(samples=samples, seed=rec.seed))[0]
    example = torch.from_numpy(calib[:1].copy())
    x_test, y = data["test"].x.numpy(), data["test"].y.numpy()
    torch_logits = predict(model, data["test"].x).numpy()
    rows = []
    for fmt in FORMATS:
        d = out / f"peer-{fmt}"
        d.mkdir(parents=True, exist_ok=True)
        log = out / f"peer-{fmt}.log"
        row = {"format": fmt, "flow": "peer", "precision": "int8", "route": PEER_FLOWS[fmt], "dir": str(d),
               "log": str(log), "calibration_samples": int(len(calib)), "status": "ok", "error": None}
        t0 = time.perf_counter()
        try:
            if fmt == "onnx":
                art = peer_onnx(model, example, calib, d, log)
            elif fmt == "openvino":
                art = peer_openvino(model, example, calib, d, log, tuple(rec.input.shape))
            else:
                art = peer_tflite(model, example, calib, d, log, tuple(rec.input.shape))
            row["lower_s"] = round(time.perf_counter() - t0, 2)
            runner, batch = peer_runner(art, threads)
            row["verify"] = compare(run_batched(runner, x_test, batch_size=batch, quiet=True)[0], torch_logits, y)
            row["size_bytes"] = device_bytes(art.dir, art.files)
        except Exception as e:  # one failed peer flow is a result, not a crash
            row.update(status="failed", error=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
        print(f"  peer {fmt}: {row['status']} top-1 {(row.get('verify') or {}).get('top1')}", file=sys.stderr)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------ edgeship flows
def export_rows(recipe_path: Path, flow: str) -> tuple[list[dict], dict]:
    """`edgeship export` (no host measurement: latency is measured interleaved below)."""
    from edgeship.api import export

    report = export(recipe_path, quiet=True, measure=False).model_dump(mode="json")
    return report_rows(report, flow), report


def report_rows(report: dict, flow: str) -> list[dict]:
    """One contender row per target of an export's run record (report.json)."""
    out = Path(report["recipe"]["output"])
    rows = []
    for t in report["targets"]:
        d = out / "targets" / t["name"]
        size = None
        if t["status"] == "ok":
            size = device_bytes(out, t["files"])
        rows.append({"format": t["format"], "flow": flow, "precision": t["precision"], "dir": str(d),
                     "status": t["status"], "error": t["error"], "verify": t.get("verify"), "size_bytes": size,
                     "lower_s": t.get("lower_s"), "op_audit_float_compute_ops":
                         len((t.get("op_audit") or {}).get("float_compute_ops") or []) if t.get("op_audit") else None})
    return rows


# ------------------------------------------------------------------------------ latency
def profile_summary(profile, top: int = 8) -> dict:
    """The runtime's per-layer counters of one measurement, cut to what a reader needs: the slowest ops and layers,
    the compute layers that ran in float kernels, and the layout conversions (transposes, reorders): their time
    where the runtime times layers (summed over every layer), their count where it lists them untimed (LiteRT
    without its C API profiler)."""
    p = profile.model_dump(mode="json")
    layers, by_op = p.get("layers") or [], p.get("by_op_ms") or {}
    timed = bool(by_op)
    layout = {op: ms for op, ms in by_op.items() if layout_op(op)}
    return {k: p.get(k) for k in ("source", "runs", "total_ms", "layer_count", "compute_layers", "int8_compute_layers",
                                  "float_fallbacks")} | {
        "by_op_ms": dict(sorted(by_op.items(), key=lambda kv: -kv[1])[:top]),
        "top_layers": [{k: r.get(k) for k in ("name", "op", "kernel", "precision", "ms", "share")}
                       for r in layers[:top]],
        "layout_ops_ms": layout if timed else None,
        "layout_conversion_ms": round(sum(layout.values()), 4) if timed else None,
        "layout_conversions": None if timed else sum(1 for r in layers if layout_op(str(r.get("op"))))}


# the ops that only move data between layouts (ONNX Runtime with its NCHWc reorders, OpenVINO's CPU plugin, LiteRT's
# op list; XNNPACK's operators as LiteRT's profiler names them: ``Transpose (ND, X32) Transpose``)
LAYOUT_OPS = {"Transpose", "ReorderInput", "ReorderOutput", "Reorder", "TRANSPOSE"}


def layout_op(op: str) -> bool:
    return op in LAYOUT_OPS or op.startswith("Transpose (")


def measure_interleaved(contenders: list[dict], threads: list[int], repeats: int, runs: int, warmup: int) -> None:
    """Round-robin over every contender (rotated each repeat so none always runs first), each thread
    count in turn; fills contender["p50_repeats"][threads] with one p50 per repeat. The first repeat also
    profiles every contender's layers (after its timed runs: the p50 is not affected), kept per thread count
    in contender["profile"]; later repeats skip profiling."""
    from edgeship.devices.measure import DEFAULT_PROFILE_RUNS, RunArtifact, measure_host
    from edgeship.errors import TargetError

    live = [c for c in contenders if c["status"] == "ok"]
    for c in live:
        c["p50_repeats"] = {str(t): [] for t in threads}
        c["peak_rss_mb"] = None
    for r in range(repeats):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for t in threads:
            for c in order:
                art = RunArtifact(c["id"], "host", c["format"], c["precision"], Path(c["dir"]), [], "")
                try:
                    m = measure_host(art, t, runs, warmup, profile=DEFAULT_PROFILE_RUNS if r == 0 else 0)
                except TargetError as e:
                    c["p50_repeats"][str(t)].append(None)
                    c.setdefault("measure_errors", []).append(str(e))
                    continue
                c["p50_repeats"][str(t)].append(m.p50_ms)
                c["peak_rss_mb"] = max(c["peak_rss_mb"] or 0, m.peak_rss_mb or 0)
                c["runtime_version"] = m.runtime_version
                if m.inference_precision:  # OpenVINO: the float precision its CPU plugin ran
                    c["inference_precision"] = m.inference_precision
                if m.profile is not None:
                    c.setdefault("profile", {})[str(t)] = profile_summary(m.profile)
        print(f"  repeat {r + 1}/{repeats} done (load average {loadavg()})", file=sys.stderr)


def _median(values) -> float | None:
    v = [x for x in values if x is not None]
    return round(statistics.median(v), 4) if v else None


def speedup(slow: dict, fast: dict, t: str) -> float | None:
    """Median over repeats of slow p50 / fast p50, both from the same repeat."""
    pairs = zip((slow.get("p50_repeats") or {}).get(t, []), (fast.get("p50_repeats") or {}).get(t, []))
    return _median([a / b for a, b in pairs if a and b])


def summarize(contenders: list[dict], threads: list[int]) -> None:
    index = {(c["model"], c["format"], c["flow"]): c for c in contenders}
    for c in contenders:
        c["top1"] = (c.get("verify") or {}).get("top1")
        c["p50_ms"] = {str(t): _median((c.get("p50_repeats") or {}).get(str(t), [])) for t in threads}
        fp32, peer = index.get((c["model"], c["format"], "fp32")), index.get((c["model"], c["format"], "peer"))
        c["speedup_vs_fp32"] = {str(t): speedup(fp32, c, str(t)) if fp32 and c is not fp32 else None for t in threads}
        c["speedup_vs_peer"] = {str(t): speedup(peer, c, str(t)) if peer and c["flow"] == "edgeship" else None
                                for t in threads}


def bars(contenders: list[dict], threads: list[int]) -> list[dict]:
    """The issue's bars for every edgeship INT8 artifact, with the numbers that decide them."""
    index = {(c["model"], c["format"], c["flow"]): c for c in contenders}
    out = []
    for c in contenders:
        if c["flow"] != "edgeship":
            continue
        fp32, peer = index.get((c["model"], c["format"], "fp32")), index.get((c["model"], c["format"], "peer"))
        top1, fp32_top1 = c.get("top1"), (fp32 or {}).get("top1")
        peer_top1 = (peer or {}).get("top1")
        vs_fp32 = [c["speedup_vs_fp32"].get(str(t)) for t in threads]
        vs_peer = [c["speedup_vs_peer"].get(str(t)) for t in threads]
        b = {"model": c["model"], "format": c["format"], "top1": top1, "fp32_top1": fp32_top1, "peer_top1": peer_top1,
             "drop_vs_fp32_pt": None if top1 is None or fp32_top1 is None else round(100 * (fp32_top1 - top1), 2),
             "speedup_vs_fp32": dict(c["speedup_vs_fp32"]), "speedup_vs_peer": dict(c["speedup_vs_peer"])}
        b["faster_2_5x_than_fp32"] = all(v is not None and v >= 2.5 for v in vs_fp32)
        b["faster_1_3x_than_peer"] = all(v is not None and v >= 1.3 for v in vs_peer)
        b["top1_at_least_peer"] = top1 is not None and (peer_top1 is None or top1 >= peer_top1)
        b["within_0_5pt_of_fp32"] = b["drop_vs_fp32_pt"] is not None and b["drop_vs_fp32_pt"] <= 0.5
        b["met"] = all(b[k] for k in ("faster_2_5x_than_fp32", "faster_1_3x_than_peer", "top1_at_least_peer",
                                      "within_0_5pt_of_fp32"))
        out.append(b)
    return out


# ------------------------------------------------------------------ shared by benchmarks/scale.py
def model_info(path: Path, base: dict, rep_f: dict, rep_e: dict, samples: int) -> dict:
    """What a result file says about one model: its recipe, data, sizes before/after the passes, the stages."""
    return {"recipe": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
            "data_sizes": rep_f["data"]["sizes"], "torch_fp32_top1": rep_f["baseline"]["top1_test"],
            "fp32": {k: rep_f["baseline"].get(k) for k in ("macs", "params", "size_fp32_bytes")},
            "compressed": {k: rep_e["final"].get(k) for k in ("macs", "params", "size_fp32_bytes", "top1_test")},
            "passes": base.get("passes"), "stages": [{k: s.get(k) for k in ("stage", "top1_val", "macs", "wall_s",
                                                                             "cached")} for s in rep_e["stages"]],
            "quantization": rep_e.get("quantization"), "peer_calibration_samples": samples}


def tagged(name: str, rows: list[dict]) -> list[dict]:
    for row in rows:
        row.update(model=name, runtime=RUNTIME_NAMES[row["format"]], id=f"{name}/{row['format']}/{row['flow']}")
    return rows


def measure_all(contenders: list[dict], args) -> tuple[list[float], float, dict]:
    """measure_interleaved with the options; (load average before, seconds it took, the CPU others used meanwhile:
    benchlib.CpuShare)."""
    print(f"measuring {len(contenders)} artifacts x {args.threads} threads x {args.repeats} repeats", file=sys.stderr)
    load_before, t0 = loadavg(), time.perf_counter()
    with CpuShare() as share:
        measure_interleaved(contenders, args.threads, args.repeats, args.runs, args.warmup)
    return load_before, time.perf_counter() - t0, share.result()


def method(args) -> dict:
    return {"repeats": args.repeats, "runs": args.runs, "warmup": args.warmup, "threads": args.threads,
            "interleaving": "round-robin over all contenders of all models, rotated each repeat; "
                            "each measurement a fresh subprocess (edgeship.targets.measure)",
            "p50": "median over repeats of each repeat's p50",
            "speedup": "median over repeats of the ratio of the two p50s measured in that repeat",
            "verify_threads": args.verify_threads, "peer_flows": PEER_FLOWS,
            "input": "bench_runner: seeded random normal input in the normalized space, batch 1",
            "openvino_call": OPENVINO_CALL, "prune_rounding": PRUNE_ROUNDING}


# --------------------------------------------------------------------------------- main
def parse_args(argv=None, recipes: dict | None = None, stem: str = "peers", repeats: int = 5, runs: int = 200,
               description: str | None = None, more=None):
    """The options of this script; benchmarks/scale.py reuses them with its own recipes, file stem and defaults
    (``more``: a function adding its own options to the parser)."""
    recipes = dict(RECIPES if recipes is None else recipes)
    ap = argparse.ArgumentParser(description=description or __doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(recipes), help="names from RECIPES or --recipe")
    ap.add_argument("--recipe", action="append", default=[], metavar="NAME=PATH",
                    help="a model's recipe (model, data, train, passes); repeatable; adds or replaces a name")
    ap.add_argument("--quick", action="store_true", help="reduced data and schedules, fewer runs (not a verdict)")
    ap.add_argument("--repeats", type=int, help=f"interleaved repeats (default {repeats}; --quick 2)")
    ap.add_argument("--runs", type=int, help=f"timed runs per measurement (default {runs}; --quick 20)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to measure")
    ap.add_argument("--verify-threads", type=int, default=2, help="threads for the accuracy runs")
    ap.add_argument("--work", type=Path, help=f"run directories (default runs/bench/{stem}[_quick])")
    ap.add_argument("--out", type=Path, help=f"result JSON (default benchmarks/results/{stem}[_quick].json)")
    if more:
        more(ap)
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else repeats)
    args.runs = args.runs or (20 if args.quick else runs)
    suffix = "_quick" if args.quick else ""
    args.work = (args.work or ROOT / "runs" / "bench" / f"{stem}{suffix}").resolve()
    args.out = (args.out or RESULTS / f"{stem}{suffix}.json").resolve()
    for item in args.recipe:
        name, sep, path = item.partition("=")
        if not sep:
            ap.error(f"--recipe takes NAME=PATH, got {item!r}")
        recipes[name] = Path(path).resolve()
    unknown = [m for m in args.models if m not in recipes]
    if unknown:
        ap.error(f"no recipe for {', '.join(unknown)}; known: {', '.join(recipes)} (or add --recipe NAME=PATH)")
    args.recipes = {m: recipes[m] for m in args.models}
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import os

    os.chdir(ROOT)  # recipes' relative paths (checkpoints/...) resolve against the project root
    import torch

    torch.set_num_threads(args.verify_threads)
    from edgeship.api import train

    env_start = environment()
    t_start = time.perf_counter()
    contenders, models = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        for name, path in args.recipes.items():
            print(f"{name}: {path}", file=sys.stderr)
            base = yaml.safe_load(path.read_text())
            if args.quick:
                base = quick_recipe(base, name)
            rec_e = write_recipe(derive(base, name, "edgeship", args.work), Path(tmp) / f"{name}_edgeship.yaml")
            rec_f = write_recipe(derive(base, name, "fp32", args.work), Path(tmp) / f"{name}_fp32.yaml")
            trained = train(rec_f, if_missing=True, quiet=True)  # the baseline checkpoint (skipped when present)
            rows_f, rep_f = export_rows(rec_f, "fp32")
            rows_e, rep_e = export_rows(rec_e, "edgeship")
            samples = (rep_e.get("quantization") or {}).get("samples") or 512
            rows_p = build_peers(rec_f, args.work / f"{name}_peers", samples, args.verify_threads)
            models[name] = {"checkpoint": base["model"].get("weights"), "checkpoint_metrics": trained,
                            **model_info(path, base, rep_f, rep_e, samples)}
            contenders += tagged(name, rows_f + rows_e + rows_p)
        load_before, measure_s, others = measure_all(contenders, args)
    summarize(contenders, args.threads)
    result = {
        "benchmark": "peers", "quick": args.quick, "command": command_line(), "method": method(args),
        "environment": env_start, "loadavg_before_measuring": load_before, "loadavg_after": loadavg(),
        "cpu_while_measuring": others,
        "measure_s": round(measure_s, 1), "wall_s": round(time.perf_counter() - t_start, 1),
        "models": models, "rows": [{k: v for k, v in c.items() if k != "dir"} for c in contenders],
        "bars": bars(contenders, args.threads),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
