"""Compression methods side by side (issue 18): each method of the seed documents that edgeship has, on the ResNet and
MobileNetV2 reference models (Fashion-MNIST) and, for dynamic and weight-only quantization, the Linear-heavy MLP.

    .venv/bin/python benchmarks/methods.py                      # everything (see BENCHMARKS.md for its duration)
    .venv/bin/python benchmarks/methods.py --models resnet --methods fp32 deep_compression
    .venv/bin/python benchmarks/methods.py --quick              # the quick profile (below): ~1.5 h when busy
    .venv/bin/python benchmarks/methods.py --recipe mine=path/to/recipe.yaml --models mine

Each (model, method) is one `edgeship export` of the model's recipe with the method's passes and targets (stage
cache under the work directory, so a rerun only redoes what changed); every target is verified with its own runtime
on the test split, then timed on this machine by edgeship's host measurement (fresh subprocess, 1 thread, batch 1).
Per row: top-1, MACs, the artifact's size and its zip size, Deep Compression's coded size (cluster) or the packed
size at the trained bit width (lowbit), p50 latency, and the wall time of the method's passes. The verdicts:
every row within 2 pt of the FP32 artifact's top-1 (or the row says why not), and the issue's bar for Deep
Compression on the ResNet: at least 20x smaller than the FP32 artifact as that method counts size, within 1 pt.
Writes benchmarks/results/methods.json (methods_quick.json with --quick); make_report.py renders it.

The default (full) profile fine-tunes on FT_SAMPLES images per epoch (half of that for the methods off the bars)
and evaluates on the whole 10,000-image test split: about an hour per CNN on 2 idle cores (an estimate: no full
run has completed), with the baseline evaluated again in every row's export. --quick is the profile a shared
machine can run (about 48 min per CNN at a load average of 9-13 on the 2 cores, 1 min for the MLP: methods.json's
wall_s): the same reference checkpoints (trained on the full training split), the first QUICK_DATA["test_size"]
test images, the first QUICK_DATA["val_size"] of the usual held-out validation images (the rest of them join the
training partition the fine-tuning subsets are drawn from; the test split is never touched), and QUICK_SAMPLES
fine-tuning images per epoch (a quarter of that off the bars), the epoch counts unchanged. methods.json records
the profile ("profile"), so each number says what produced it.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from benchlib import RECIPES, RESULTS, ROOT, command_line, environment, loadavg, write_json

MODELS = {**RECIPES, "mlp": ROOT / "benchmarks" / "recipes" / "fashion_mnist_mlp.yaml"}
CNNS = ("resnet", "mobilenetv2")
DROP_BAR_PT, DC_BAR_RATIO, DC_BAR_DROP_PT = 2.0, 20.0, 1.0
FT_SAMPLES, QUICK_SAMPLES = 16384, 2048  # fine-tuning images per epoch (a seeded subset of the training split)
# --quick on Fashion-MNIST recipes: the reference checkpoint and split seed, fewer test and validation images
QUICK_DATA = {"test_size": 2000, "val_size": 1000, "calib_size": 512}
QUICK_SENSITIVITY_SAMPLES = 500  # mixed_precision: validation images per layer's sensitivity (default 2000)
# why a method of a quick-profile run misses the 2-pt bar, written from that profile's rows (the table prints it):
# 512 images per epoch are 4 optimizer steps at the fine-tuning batch of 128, 2,048 are 16; the full profile has 8x
# (Deep Compression) and 16x (the others) as many images per epoch
SHORT = "in the quick profile"
FULL = "in the full profile (benchmarks/results/methods_full.json)"
WHY_OFF_QUICK: dict[str, str] = {
    "deep_compression": f"85% sparsity in 3 steps, each recovered with one epoch of 2,048 images (16 optimizer steps) "
                        f"{SHORT}: too few to win back the last step (its stage: val top-1 after pruning and after "
                        "fine-tuning per step); on MobileNetV2 the global magnitude ranking (sparsify's default "
                        "scope) also empties the 1x1 projection convs and the classifier (97-100% zeros), which no "
                        "fine-tuning brings back (scope: layer not measured)",
    "lowrank": f"half the MACs factorised away at once (val top-1 right after: val_top1_factorised in its stage), "
               f"recovered with 2 epochs of 512 images (8 optimizer steps) {SHORT}: still climbing when it stopped; "
               f"{FULL}, 8,192 images per epoch, the ResNet's row is within the bar (-1.33 pt FP32, -1.44 pt INT8; "
               "MobileNetV2's not run)",
    "lowbit_1": f"binary weights need a long QAT; 2 epochs of 512 images {SHORT} are 8 optimizer steps",
    "lowbit_2": f"ternary weights need a long QAT; 2 epochs of 512 images {SHORT} are 8 optimizer steps",
    "lowbit_4": f"one QAT epoch of 512 images (4 optimizer steps at lr 1e-3) {SHORT} moves the weights off the "
                "post-training quantized start (val_top1_quantized in its stage) with no steps left to recover",
    "lowbit_8": f"one QAT epoch of 512 images (4 optimizer steps at lr 1e-3) {SHORT} moves the weights off the "
                "post-training quantized start (val_top1_quantized in its stage) with no steps left to recover",
    "early_exit": f"the joint loss changes the shared layers; 2 epochs of 512 images (8 optimizer steps) {SHORT} "
                  "do not bring the final exit back",
    "sparsify_oneshot": f"80% of the weights removed at once, 3 epochs of 512 images (12 optimizer steps) {SHORT} "
                        f"({FULL}, 8,192 images per epoch, the ResNet's row is within the bar, -0.19 pt; "
                        "MobileNetV2's not run); "
                        "MobileNetV2 falls to chance, likely the global ranking seen under deep_compression",
    "sparsify_lottery": f"80% in 3 steps, the survivors rewound each time, one epoch of 512 images (4 optimizer "
                        f"steps) per step {SHORT}; MobileNetV2 falls to chance, likely the global ranking seen "
                        "under deep_compression",
}
# why a method of a full-profile run misses the 2-pt bar, written from that profile's rows (methods_full.json);
# keyed model:method
_MNV2 = "MobileNetV2 (149 k weights, its 1x1 layers 16-96 channels wide)"
WHY_OFF_FULL: dict[str, str] = {
    "resnet:early_exit": "training the exit heads jointly with the network (2 epochs of 8,192 images, KD) leaves "
                         "the final exit at 89.5 % val (the early exits 39.9 and 74.7 %): 2.3 pt under FP32 on the "
                         "test split; MobileNetV2 with the same schedule loses 1.78 pt (a longer schedule not run)",
    "resnet:deep_compression_spared": "per layer at one rate (scope: layer) the ResNet loses more than with the "
                                      "global ranking (deep_compression, -0.55 pt): its wide layers differ in how "
                                      "much they can lose, which one global threshold follows and one rate does not",
    "resnet:deep_compression_layer": "per layer at one rate the ResNet loses more than with the global ranking "
                                     "(deep_compression, -0.55 pt), as deep_compression_spared",
}
_MNV2_WHY = {
    "deep_compression": f"{_MNV2}: one epoch of 16,384 images per step wins back 47 % (90.5 % val) and 72 % (87.5 %) "
                        "but not 85 % (81.0 %, 79.8 % after clustering); each step's pruning alone leaves chance "
                        "(9.8 % val at 72 %): the ResNet's schedule, which meets the bar there, is too short here "
                        "(more steps or a lower sparsity not run)",
    "deep_compression_layer": f"{_MNV2}: every layer at the same rate is worse than the global ranking (78.5 % val "
                              "at 85 %): the 3x3 depthwise kernels of 9 weights and the stem lose as much as the "
                              "wide layers",
    "deep_compression_spared": f"{_MNV2}: with the narrow layers dense (77.5 % of all weights zero) it keeps the "
                               "most (86.4 % val after the third step, 84.7 % after clustering) but still 6.6 pt "
                               "under FP32 with the ResNet's 3 one-epoch steps",
    "lowrank": f"{_MNV2}: half the MACs factorised away at once leaves 19.8 % val, 2 epochs of 8,192 images win "
               "back 82.9 %: its bottleneck layers are already low-rank by design (the ResNet, at -1.33 pt with the "
               "same schedule, has wide 3x3 convolutions)",
    "lowbit_1": f"{_MNV2}: binary weights (the depthwise and stem layers at 8 bits) after 2 QAT epochs of 8,192 "
                "images: 88.4 % val, 87.7 % test, 2.8 pt under FP32; ternary (lowbit_2) is within the bar",
    "sparsify_oneshot": f"{_MNV2}: 80 % in one step leaves chance, 3 epochs of 8,192 images win back 58.5 % val",
    "sparsify_lottery": f"{_MNV2}: 80 % in 3 steps, the survivors rewound to the trained weights each time: 90.6, "
                        "87.9 and 77.2 % val after the steps' retraining",
}
WHY_OFF_FULL.update({f"mobilenetv2:{k}": v for k, v in _MNV2_WHY.items()})


def ft(epochs: int, lr: float, samples: int) -> dict:
    return {"epochs": epochs, "lr": lr, "samples": samples, "alpha": 0.7, "temperature": 4.0}


def onnx_targets(*precisions: str) -> list[dict]:
    return [{"name": f"onnx-{p}", "format": "onnx", "precision": p, "max_accuracy_drop": 100.0} for p in precisions]


def profile(quick: bool) -> dict:
    """What the run's numbers were produced with (written into methods.json)."""
    if not quick:
        return {"name": "full", "data": "the recipe's (Fashion-MNIST: the whole 10,000-image test split)",
                "fine_tune_samples_per_epoch": {"deep_compression": FT_SAMPLES, "other methods": FT_SAMPLES // 2},
                "mixed_precision_eval_samples": 2000}
    return {"name": "quick", "checkpoints": "the reference checkpoints (trained on the full training split)",
            "data": {**QUICK_DATA, "applies_to": "Fashion-MNIST recipes (the first test_size test images, the "
                                                 "first val_size of the usual validation images)"},
            "fine_tune_samples_per_epoch": {"deep_compression": QUICK_SAMPLES, "other methods": QUICK_SAMPLES // 4},
            "mixed_precision_eval_samples": QUICK_SENSITIVITY_SAMPLES}


def methods(quick: bool) -> dict[str, dict]:
    """name -> passes, targets, the models it runs on and what it is. Every target's max_accuracy_drop is lifted
    (100 pt): the benchmark records what each artifact loses instead of failing it."""
    counts = profile(quick)["fine_tune_samples_per_epoch"]
    samples, half = counts["deep_compression"], counts["other methods"]  # off the bars: fewer images per epoch
    eval_samples = profile(quick)["mixed_precision_eval_samples"]
    lowbit = {b: {"passes": [{"name": "lowbit", "bits": b, **ft(2 if b < 4 else 1, 1e-3, half)}],
                  "targets": onnx_targets("fp32", "int8"), "models": CNNS}
              for b in (1, 2, 4, 8)}
    int8_everywhere = [*onnx_targets("int8"),
                       {"name": "openvino-int8", "format": "openvino", "precision": "int8", "max_accuracy_drop": 100.0},
                       {"name": "tflite-int8_float_io", "format": "tflite", "precision": "int8_float_io",
                        "max_accuracy_drop": 100.0}]
    return {
        "fp32": {"passes": [], "targets": onnx_targets("fp32", "int8"), "models": (*CNNS, "mlp"),
                 "what": "the trained model; FP32 and full static INT8 (per-channel, minmax)"},
        "deep_compression": {
            "passes": [{"name": "sparsify", "sparsity": 0.85, "steps": 3, "fine_tune": ft(1, 1e-3, samples)},
                       {"name": "cluster", "bits": 4, "fine_tune": ft(1, 2e-4, samples)}],
            "targets": onnx_targets("fp32", "int8"), "models": CNNS,
            "what": "sparsify 85% in 3 steps + k-means weight sharing (16 values per layer) + Huffman coding"},
        "deep_compression_layer": {
            "passes": [{"name": "sparsify", "sparsity": 0.85, "steps": 3, "scope": "layer",
                        "fine_tune": ft(1, 1e-3, samples)},
                       {"name": "cluster", "bits": 4, "fine_tune": ft(1, 2e-4, samples)}],
            "targets": onnx_targets("fp32", "int8"), "models": CNNS,
            "what": "deep_compression with every layer pruned to the same 85% (sparsify scope: layer) instead of one "
                    "global magnitude ranking, which can empty a layer whose weights are small"},
        "deep_compression_spared": {
            "passes": [{"name": "sparsify", "sparsity": 0.85, "steps": 3, "scope": "layer", "min_fan_in": 16,
                        "fine_tune": ft(1, 1e-3, samples)},
                       {"name": "cluster", "bits": 4, "fine_tune": ft(1, 2e-4, samples)}],
            "targets": onnx_targets("fp32", "int8"), "models": CNNS,
            "what": "deep_compression_layer with the layers of fewer than 16 weights per output channel (3x3 "
                    "depthwise, a stem on one channel) left dense (sparsify min_fan_in)"},
        "lowrank": {"passes": [{"name": "lowrank", "macs_ratio": 0.5, "fine_tune": ft(2, 1e-3, half)}],
                    "targets": onnx_targets("fp32", "int8"), "models": CNNS,
                    "what": "SVD (Linear, 1x1) and Tucker-2 (KxK) to half the MACs, KD fine-tuning"},
        "dynamic": {"passes": [],
                    "targets": [*onnx_targets("dynamic_int8"),
                                {"name": "openvino-weights_int8", "format": "openvino", "precision": "weights_int8",
                                 "max_accuracy_drop": 100.0},
                                {"name": "openvino-weights_int4", "format": "openvino", "precision": "weights_int4",
                                 "max_accuracy_drop": 100.0},
                                {"name": "tflite-dynamic_int8", "format": "tflite", "precision": "dynamic_int8",
                                 "max_accuracy_drop": 100.0}],
                    "models": (*CNNS, "mlp"),
                    "what": "dynamic (activations at run time) and weight-only quantization, no calibration"},
        "int8_per_tensor": {"passes": [{"name": "calibrate", "per_channel": False}], "targets": int8_everywhere,
                            "models": CNNS, "what": "full static INT8 with per-tensor weight scales"},
        "mixed_precision": {"passes": [{"name": "mixed_precision", "per_channel": False, "max_float_layers": 3,
                                        "max_drop_pt": 0.1, "eval_samples": eval_samples}],
                            "targets": int8_everywhere, "models": CNNS,
                            "what": "per-tensor INT8 with the most sensitive layers (at most 3) left float"},
        **{f"lowbit_{b}": {**spec, "what": {1: "binary weights", 2: "ternary weights (trained scales)",
                                            4: "4-bit weights", 8: "8-bit weights"}[b]
                              + f" (QAT with KD, {2 if b < 4 else 1} epoch{'s' if b < 4 else ''})"}
           for b, spec in lowbit.items()},
        "early_exit": {"passes": [{"name": "early_exit", **ft(2, 1e-3, half)}], "targets": onnx_targets("fp32"),
                       "models": CNNS, "what": "exit heads after the blocks at 1/3 and 2/3 depth, trained jointly "
                                               "with KD (2 epochs); one ONNX artifact per exit"},
        "sparsify_oneshot": {"passes": [{"name": "sparsify", "sparsity": 0.8, "fine_tune": ft(3, 1e-3, half)}],
                             "targets": onnx_targets("fp32"), "models": CNNS,
                             "what": "80% unstructured sparsity in one step, 3 fine-tuning epochs"},
        "sparsify_lottery": {"passes": [{"name": "sparsify", "sparsity": 0.8, "steps": 3, "rewind": "weights",
                                         "fine_tune": ft(1, 1e-3, half)}],
                             "targets": onnx_targets("fp32"), "models": CNNS,
                             "what": "80% in 3 steps, surviving weights rewound before each retraining (1 epoch)"},
    }


def recipe_for(model: str, method: str, spec: dict, args) -> dict:
    base = yaml.safe_load(Path(args.recipes[model]).read_text())
    if args.quick and base["data"]["source"]["kind"] == "fashion_mnist":
        base["data"].update(QUICK_DATA)
    r = copy.deepcopy(base)
    r["name"] = f"methods_{model}_{method}"
    r["passes"] = copy.deepcopy(spec["passes"])
    r["targets"] = copy.deepcopy(spec["targets"])
    r.setdefault("train", {})["threads"] = args.threads
    r["output"] = str(args.work / f"{model}_{method}")
    return r


def stage_summary(stage: dict) -> dict:
    m = stage.get("metrics") or {}
    keep = ("sparsity", "deep_compression_ratio", "packed_bytes", "packed_ratio", "float_layers", "energy",
            "factorised_layers", "schedule", "val_top1", "layers_at_8_bits", "int8_top1_sim", "mixed_top1_sim",
            "float_top1_sim", "fp32_bytes", "val_top1_factorised", "val_top1_clustered", "val_top1_quantized",
            "exits", "exit_val_top1", "exit_macs", "layer_sensitivity")
    out = {k: m[k] for k in keep if k in m}
    if "deep_compression" in m:
        dc = m["deep_compression"]
        out["deep_compression"] = {k: dc[k] for k in ("bytes", "fp32_bytes", "ratio", "coded_weight_bytes",
                                                      "other_float_bytes")}
    return {"stage": stage["stage"], "top1_val": stage["top1_val"], "macs": stage["macs"], "params": stage["params"],
            "wall_s": stage["wall_s"], "cached": stage["cached"], **out}


def run_one(model: str, method: str, spec: dict, args, tmp: Path) -> dict:
    from edgeship.api import export, train
    from edgeship.devices.measure import measure_host, run_artifacts
    from edgeship.errors import TargetError

    recipe = recipe_for(model, method, spec, args)
    path = tmp / f"{model}_{method}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    train(args.recipes[model], if_missing=True, quiet=args.quiet)  # the reference checkpoint: the recipe as written
    t0 = time.perf_counter()
    record = export(path, quiet=args.quiet, measure=False)
    export_s = time.perf_counter() - t0
    rep = record.model_dump(mode="json")
    p50 = {}
    for art in run_artifacts(record) if any(t.ok for t in record.targets) else []:
        try:
            p50[art.name] = measure_host(art, threads=1, runs=args.runs, warmup=args.warmup).p50_ms
        except TargetError as e:
            p50[art.name] = None
            print(f"{model}/{method}/{art.name}: not measured ({e})", file=sys.stderr)
    stages = [stage_summary(s) for s in rep["stages"]]
    study = early_exit_study(record, args, tmp / f"{model}_{method}_exits") if method == "early_exit" else None
    targets = []
    for t in rep["targets"]:
        v = t.get("verify") or {}
        targets.append({"name": t["name"], "format": t["format"], "precision": t["precision"], "status": t["status"],
                        "error": t.get("error"), "top1": v.get("top1"), "torch_top1": v.get("torch_top1"),
                        "agreement": v.get("agreement"), "size_bytes": t.get("size_bytes"),
                        "zip_bytes": t.get("zip_bytes"), "p50_ms_1t": p50.get(t["name"])})
    return {"model": model, "method": method, "what": spec.get("what", ""), "passes": recipe["passes"],
            "test_samples": rep["data"]["sizes"].get("test"), "baseline_top1_test": rep["baseline"]["top1_test"],
            "final_top1_test": rep["final"]["top1_test"],
            "baseline_macs": rep["baseline"]["macs"], "final_macs": rep["final"]["macs"],
            "final_params": rep["final"]["params"], "pass_wall_s": round(sum(s["wall_s"] for s in stages), 1),
            "all_cached": bool(stages) and all(s["cached"] for s in stages), "export_wall_s": round(export_s, 1),
            "quantization": {k: rep["quantization"][k] for k in ("per_channel", "float_layers")},
            "stages": stages, "targets": targets, **({"early_exit": study} if study else {})}


def early_exit_study(record, args, tmp: Path) -> dict:
    """One FP32 ONNX artifact per exit (the network cut after the exit's block, then its head), each run with ONNX
    Runtime on the whole test split and timed like the other artifacts; then for each confidence threshold the exit
    rates on the test split, top-1, and the mean latency two ways: one pass to the exit taken (the exit artifact's
    latency: what a multi-output or segmented artifact costs) and the per-exit artifacts run one after another from
    the input until one is confident (what shipping these separate artifacts costs)."""
    import numpy as np
    import torch

    from edgeship.calibration.quant import QuantSettings
    from edgeship.devices.measure import RunArtifact, measure_host
    from edgeship.models.load import model_stats
    from edgeship.pipeline.early_exit import THRESHOLDS, exit_models
    from edgeship.recipe import TargetSpec
    from edgeship.run import prepare
    from edgeship.targets.base import LowerContext, get_backend
    from edgeship.targets.verify import compare

    model = torch.load(record.run_dir / "model" / "compressed.pt", map_location="cpu", weights_only=False)
    prep = prepare(record.recipe)
    x, y = prep.data["test"].x.numpy(), prep.data["test"].y.numpy()
    backend = get_backend("onnx", "fp32")
    exits, logits = [], []
    for i, (name, sub) in enumerate(exit_models(model)):
        out = tmp / f"exit{i}"
        out.mkdir(parents=True)
        (tmp / f"work{i}").mkdir()
        ctx = LowerContext(target=TargetSpec(name=f"exit-{name}", format="onnx", precision="fp32"),
                           input_shape=tuple(record.recipe.input.shape), calib=prep.data["calib"].x[:8].numpy(),
                           preprocessing=prep.preprocessing, labels=prep.labels, quant=QuantSettings(),
                           log_path=tmp / f"exit{i}.log", work_dir=tmp / f"work{i}")
        art = backend.lower(sub, ctx, out)
        z = backend.load(art, threads=1)(x)[0]  # the one output, the exit's logits
        with torch.no_grad():
            ref = sub(torch.from_numpy(x)).numpy()
        check = compare(z, ref, y)
        p50 = measure_host(RunArtifact(art.target, "host", "onnx", "fp32", art.dir, art.files, art.main), threads=1,
                           runs=args.runs, warmup=args.warmup).p50_ms
        exits.append({"exit": name, "top1": check["top1"], "agreement_with_torch": check["agreement"],
                      "macs": model_stats(sub, ctx.input_shape)["macs"], "size_bytes": art.size_bytes(),
                      "zip_bytes": art.zip_bytes(), "p50_ms_1t": p50})
        logits.append(z)
    probs = [np.exp(z - z.max(1, keepdims=True)) for z in logits]
    conf = [(p / p.sum(1, keepdims=True)).max(1) for p in probs]
    lat = [e["p50_ms_1t"] for e in exits]
    rows = []
    for t in THRESHOLDS:
        left = np.full(len(y), len(exits) - 1)
        for k in reversed(range(len(exits) - 1)):
            left = np.where(conf[k] >= t, k, left)
        pred = np.stack([z.argmax(1) for z in logits], 1)[np.arange(len(y)), left]
        rates = [float((left == k).mean()) for k in range(len(exits))]
        rows.append({"threshold": t, "exit_rates": [round(r, 4) for r in rates], "top1": float((pred == y).mean()),
                     "mean_macs": round(sum(r * e["macs"] for r, e in zip(rates, exits, strict=True))),
                     "mean_ms_one_pass": round(sum(r * m for r, m in zip(rates, lat, strict=True)), 4),
                     "mean_ms_rerun": round(sum(r * sum(lat[:k + 1]) for k, r in enumerate(rates)), 4)})
    return {"exits": exits, "thresholds": rows, "test_samples": len(y)}


def verdicts(rows: list[dict], why_off: dict[str, str]) -> dict:
    """Each target against its model's FP32 ONNX artifact (top-1 drop, within 2 pt), and the Deep Compression
    bar on the ResNet (coded size >= 20x smaller than the FP32 artifact, within 1 pt)."""
    fp32 = {r["model"]: next((t for t in r["targets"] if t["precision"] == "fp32" and t["status"] == "ok"), None)
            for r in rows if r["method"] == "fp32"}
    for r in rows:
        ref = fp32.get(r["model"])
        for t in r["targets"]:
            if ref is None or t["top1"] is None:
                t["drop_pt"] = t["within_2pt"] = None
                continue
            t["drop_pt"] = round(100 * (ref["top1"] - t["top1"]), 2)
            t["within_2pt"] = t["drop_pt"] <= DROP_BAR_PT
            t["size_vs_fp32"] = round(ref["size_bytes"] / t["size_bytes"], 2) if t["size_bytes"] else None
            t["zip_vs_fp32"] = round(ref["size_bytes"] / t["zip_bytes"], 2) if t["zip_bytes"] else None
        if any(t.get("within_2pt") is False for t in r["targets"]):
            # the table says why a method misses the 2-pt bar (model:method first: the reasons differ by model)
            r["why_off"] = why_off.get(f"{r['model']}:{r['method']}") or why_off.get(r["method"])
    bars = {}
    for r in rows:
        dc = next((s["deep_compression"] for s in r["stages"] if "deep_compression" in s), None)
        ref = fp32.get(r["model"])
        onnx = next((t for t in r["targets"] if t["name"] == "onnx-fp32"), None)
        if r["method"] != "deep_compression" or dc is None or ref is None or onnx is None or onnx["top1"] is None:
            continue
        ratio = round(ref["size_bytes"] / dc["bytes"], 2)
        drop = round(100 * (ref["top1"] - onnx["top1"]), 2)
        bars[r["model"]] = {"fp32_artifact_bytes": ref["size_bytes"], "deep_compression_bytes": dc["bytes"],
                            "ratio_vs_fp32_artifact": ratio, "ratio_vs_fp32_params": dc["ratio"],
                            "zip_bytes_fp32_artifact": onnx["zip_bytes"], "top1_fp32": ref["top1"],
                            "top1_deep_compression": onnx["top1"], "drop_pt": drop,
                            "met": ratio >= DC_BAR_RATIO and drop <= DC_BAR_DROP_PT,
                            "bar": f">= {DC_BAR_RATIO:.0f}x smaller than the FP32 ONNX artifact, within "
                                   f"{DC_BAR_DROP_PT} pt of its top-1"}
    return bars


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="names from MODELS or --recipe")
    ap.add_argument("--methods", nargs="+", default=None, help="default: all")
    ap.add_argument("--recipe", action="append", default=[], metavar="NAME=PATH", help="another model's recipe")
    ap.add_argument("--quick", action="store_true", help="the quick profile: see the docstring")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the passes")
    ap.add_argument("--runs", type=int, default=100, help="timed runs per artifact (after --warmup)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench" / "methods")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--merge", action="store_true",
                    help="keep --out's rows of the same profile that this run does not redo (rows run so far, one "
                         "at a time); a model's FP32 reference row there is reused unless --methods names fp32")
    ap.add_argument("--rejudge", type=Path, default=None, metavar="JSON",
                    help="recompute the verdicts and WHY_OFF_QUICK of a written results file (no model is run)")
    args = ap.parse_args()
    if args.rejudge:
        return rejudge(args.rejudge)
    recipes = {k: Path(v) for k, v in MODELS.items()}
    for item in args.recipe:
        name, sep, p = item.partition("=")
        if not sep:
            ap.error(f"--recipe takes NAME=PATH, got {item!r}")
        recipes[name] = Path(p).resolve()
    args.recipes = recipes
    unknown = [m for m in args.models if m not in recipes]
    if unknown:
        ap.error(f"no recipe for {', '.join(unknown)}; known: {', '.join(recipes)}")
    specs = methods(args.quick)
    chosen = list(args.methods or specs)
    bad = [m for m in chosen if m not in specs]
    if bad:
        ap.error(f"unknown method {', '.join(bad)}; known: {', '.join(specs)}")
    asked_fp32 = "fp32" in chosen
    if not asked_fp32:
        chosen.insert(0, "fp32")  # the reference every row is compared with
    args.work = args.work.resolve() / ("quick" if args.quick else "full")
    out = args.out or RESULTS / ("methods_quick.json" if args.quick else "methods.json")
    kept, args.earlier = merged_rows(out, args, chosen, asked_fp32) if args.merge else ([], [])
    have_fp32 = {r["model"] for r in kept if r["method"] == "fp32"}
    os.chdir(ROOT)
    env = environment()
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    args.commit = git.stdout.strip() or os.environ.get("EDGESHIP_COMMIT")  # a copy without .git names its commit
    t0 = time.perf_counter()
    rows = list(kept)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for method in chosen:
                spec = specs[method]
                if model not in spec["models"] and model in MODELS:
                    continue
                if method == "fp32" and model in have_fp32 and not asked_fp32:
                    continue  # --merge: the reference row already in --out
                t1 = time.perf_counter()
                rows.append({**run_one(model, method, spec, args, Path(tmp)), "loadavg_after": loadavg(),
                             "commit": args.commit})
                print(f"{model} {method}: " + ", ".join(
                    f"{t['name']} {t['top1'] if t['top1'] is None else round(t['top1'], 4)}"
                    for t in rows[-1]["targets"]) + f" ({time.perf_counter() - t1:.0f} s)", flush=True)
                write_results(out, args, env, t0, rows, complete=False)  # a cut-off run keeps the rows it has
    write_results(out, args, env, t0, rows, complete=True)
    print(f"wrote {out} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


def merged_rows(out: Path, args, chosen: list[str], asked_fp32: bool) -> tuple[list[dict], list[dict]]:
    """--merge: the rows of ``out`` this run does not redo, and the runs that wrote them (command, commit, wall
    time), so a file filled one row at a time says what produced each row."""
    import json

    if not out.exists():
        return [], []
    d = json.loads(out.read_text())
    if d["quick"] != args.quick:
        raise SystemExit(f"--merge: {out} holds the {'quick' if d['quick'] else 'full'} profile, this run the "
                         f"{'quick' if args.quick else 'full'} one")
    redo = {(m, x) for m in args.models for x in chosen if x != "fp32" or asked_fp32}
    kept = [{**r, "commit": r.get("commit", d.get("commit"))} for r in d["rows"]
            if (r["model"], r["method"]) not in redo]
    earlier = d.get("earlier_runs") or []
    listed = {x for e in earlier for x in e["rows"]}
    earlier = [*earlier, {"command": d["command"], "commit": d.get("commit"), "wall_s": d["wall_s"],
                          "rows": [x for r in d["rows"] if (x := f"{r['model']} {r['method']}") not in listed],
                          **({"note": d["note"]} if d.get("note") else {})}]
    earlier = [{**e, "rows": [x for x in e["rows"] if tuple(x.split(" ", 1)) not in redo]} for e in earlier]
    return kept, [e for e in earlier if e["rows"]]


def rejudge(path: Path) -> int:
    """The verdicts of a results file again, with this code's bars and WHY_OFF_QUICK (why a method misses the bar,
    written once the rows are measured): the measured numbers stay as they are."""
    import json

    d = json.loads(path.read_text())
    d["bars"]["deep_compression"] = verdicts(d["rows"], WHY_OFF_QUICK if d["quick"] else WHY_OFF_FULL)
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    d["judged_at_commit"] = git.stdout.strip() or None
    write_json(path, d)
    print(f"rejudged {path}", file=sys.stderr)
    return 0


def write_results(out: Path, args, env: dict, t0: float, rows: list[dict], complete: bool) -> None:
    bars = verdicts(rows, WHY_OFF_QUICK if args.quick else WHY_OFF_FULL)
    write_json(out, {"quick": args.quick, "complete": complete, "command": command_line(), "commit": args.commit,
                     "environment": env,
                     "loadavg_after": loadavg(), "wall_s": round(time.perf_counter() - t0, 1),
                     "profile": profile(args.quick),
                     "latency": {"threads": 1, "runs": args.runs, "warmup": args.warmup, "batch": 1,
                                 "how": "edgeship's host measurement (bench_runner.py in a fresh subprocess)"},
                     "bars": {"drop_pt": DROP_BAR_PT, "deep_compression": bars}, "rows": rows,
                     **({"earlier_runs": args.earlier} if getattr(args, "earlier", None) else {})})


if __name__ == "__main__":
    sys.exit(main())
