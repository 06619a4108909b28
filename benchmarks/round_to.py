"""`prune`'s round_to on a CPU with matrix units: at half the MACs, how much of the saving does an INT8 kernel keep
when the pruned widths are multiples of 8 (the default), 16, 32 or 64?

    .venv/bin/python benchmarks/round_to.py
    .venv/bin/python benchmarks/round_to.py --models resnet18_224 --round-to 8 64 --repeats 3
    .venv/bin/python benchmarks/round_to.py --size 32 ...   # the same models at a smaller input (a quick check)
    .venv/bin/python benchmarks/round_to.py --models mobilenetv2_96_w1 --round-to 8 auto   # trained: accuracy too
    .venv/bin/python benchmarks/round_to.py --formats openvino ...   # time one runtime (ONNX is exported regardless)

Why (issue 20, scale.json of 2026-12-03 on an Intel Xeon with AMX): ResNet-18 pruned to half its MACs (round_to 8) ran
OpenVINO INT8 only 1.17x faster than the unpruned INT8 model (1.72 against 2.02 ms at 1 thread), where the same pruning
gave 1.8x on the AMD host before. Its widths are 40, 88, 176 and 352 channels; an AMX INT8 tile multiply takes 64 input
channels a row and 16 output columns, so a 40-channel layer may compute as 64. Same models as benchmarks/scale.py's
pruned rows (benchmarks/recipes/*_224_pruned_random.yaml: random seeded weights, prune macs_ratio 0.5 l2 in one step
without fine-tuning, post-training INT8 for ONNX Runtime, OpenVINO and LiteRT); only round_to changes. Each artifact is
timed by edgeship's bench_runner in a fresh process (``--runs`` runs, no profile), the artifacts rotated over
``--repeats`` repeats, at 1 and 2 threads; a speed-up is the median over repeats of that repeat's ratio to round_to 8 at
the same thread count. Latency only for those two: the weights are random, so no accuracy is claimed.
``mobilenetv2_96_w1`` is the trained 96x96 MobileNetV2 of scale.py (benchmarks/recipes/fashion_mnist_mnv2_96_w1.yaml:
Fashion-MNIST resized to 96x96, drop_blocks, prune to 0.3 of the MACs in three steps with fine-tuning, distill, QAT),
with only prune's round_to changed: its rows also hold each INT8 artifact's test top-1 (what recovery leaves of the
accuracy at that rounding). ``--round-to auto`` is what prune's ``round_to: auto`` picks on this machine (round_to 8
with the channel tile of its matrix unit, 64 with AMX, for layers at least one tile wide; the row's ``tile``).
``mobilenetv2_224_pretrained`` is torchvision's ImageNet MobileNetV2 (a package's weights;
benchmarks/recipes/mobilenet_v2_224_pretrained_pruned.yaml: pruned to 0.6 of its MACs, distilled from the unpruned
model on the 560 training crops of 800 unlabelled photo crops, post-training INT8): its rows hold each INT8
artifact's top-1 agreement with the UNPRUNED model on the 200 test crops (``agreement_with_unpruned``), since the
crops have no labels.
Writes benchmarks/results/round_to.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from benchlib import RESULTS, ROOT, command_line, environment, write_json
from spatial_weight import conv_widths, p50

FORMATS = ("onnx", "openvino", "tflite")
MODELS = {"resnet18_224": "resnet18_224_pruned_random.yaml", "mobilenetv2_224": "mobilenetv2_224_pruned_random.yaml",
          "mobilenetv2_96_w1": "fashion_mnist_mnv2_96_w1.yaml",
          "mobilenetv2_224_pretrained": "mobilenet_v2_224_pretrained_pruned.yaml"}
TRAINED = {"mobilenetv2_96_w1"}  # real weights and labels: the test top-1 is an accuracy
PRETRAINED = {"mobilenetv2_224_pretrained": "mobilenet_v2_prune"}  # a package's weights, no labels: its zoo data
THREADS = (1, 2)


def recipe(model: str, round_to: int | str, size: int | None, out: Path, formats=FORMATS) -> dict:
    """The model's recipe with prune's round_to set, its INT8 targets cut to ``formats`` (ONNX always: the pruned
    widths are read from it)."""
    r = yaml.safe_load((ROOT / "benchmarks" / "recipes" / MODELS[model]).read_text())
    prune = next(p for p in r["passes"] if p["name"] == "prune")
    prune["round_to"] = round_to
    r["targets"] = [t for t in r["targets"] if t["format"] == "onnx" or t["format"] in formats]
    if size is not None and model not in TRAINED and model not in PRETRAINED:  # real weights keep their size
        r["input"]["shape"] = [r["input"]["shape"][0], size, size]
    return {**r, "name": out.name, "output": str(out)}


def reuse(run_dir: Path, want: dict):
    """The run record already in ``run_dir`` if it came from this very recipe, else None."""
    from edgeship.recipe import parse_recipe
    from edgeship.record import RunRecord

    if not (run_dir / "report.json").is_file():
        return None
    record = RunRecord.load(run_dir)
    return record if record.recipe_hash == parse_recipe(want)[0].hash() else None


def agreement_with_unpruned(run_dir: Path, want: dict, cache: dict, formats=FORMATS) -> dict:
    """Each INT8 artifact's top-1 agreement with the UNPRUNED model on the recipe's test split, with its Wilson 95 %
    interval: what pruning at this rounding (and recovery, and INT8) cost a model whose data has no labels."""
    import torch

    from edgeship.recipe import parse_recipe
    from edgeship.run import prepare
    from edgeship.targets.base import Artifact, get_backend
    from edgeship.targets.verify import run_batched, wilson95

    recipe = parse_recipe(want)[0]
    if "ref" not in cache:  # the unpruned model and the test split are the same for every rounding
        p = prepare(recipe)
        p.model.eval()
        with torch.no_grad():
            ref = torch.cat([p.model(x) for x in p.data["test"].x.split(50)]).numpy()
        cache.update(ref=ref.argmax(1), inputs=p.data["test"].graph_inputs(recipe.model_io()))
    out = {}
    for f in formats:
        art = Artifact.from_sidecar(run_dir / "targets" / f"{f}-int8" / "model.json")
        got = run_batched(get_backend(f, "int8").load(art, threads=2), cache["inputs"], quiet=True)[0].argmax(1)
        k = int((got == cache["ref"]).sum())
        out[f] = {"agreement": round(k / len(got), 4), "wilson95": wilson95(k, len(got)), "n": len(got)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS.keys() - TRAINED))
    ap.add_argument("--round-to", type=lambda v: v if v == "auto" else int(v), nargs="+", default=[8, 16, 32, 64],
                    help="values of prune's round_to; auto: this machine's channel tile (edgeship devices)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS),
                    help="the INT8 artifacts to time (default: all three)")
    ap.add_argument("--size", type=int, help="input height and width of the random-weight models (default: 224)")
    ap.add_argument("--out", type=Path, default=RESULTS / "round_to.json")
    ap.add_argument("--work", type=Path, help="keep the exported runs here and reuse the ones already there "
                                              "(default: a temporary directory)")
    ap.add_argument("--export-only", action="store_true", help="export into --work, time nothing")
    args = ap.parse_args(argv)
    if args.export_only and args.work is None:
        ap.error("--export-only needs --work DIR (where the runs stay for a later timing run)")
    if 8 not in args.round_to:
        args.round_to = [8, *args.round_to]
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    from edgeship.api import export

    for model in args.models:
        if model in PRETRAINED:
            from benchmarks.zoo import make_data

            make_data.build(PRETRAINED[model])
    unpruned: dict[str, dict] = {m: {} for m in args.models}

    rows: dict[tuple[str, int | str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="round-to-") as scratch:
        tmp = args.work.resolve() if args.work is not None else Path(scratch)
        for model in args.models:
            for r in args.round_to:
                name = f"{model}_r{r}"
                want = recipe(model, r, args.size, tmp / name, args.formats)
                record = reuse(tmp / name, want) or export(want, quiet=True, measure=False)
                if not record.ok:
                    print(f"{name}: export failed: {[(t.name, t.error) for t in record.targets]}", file=sys.stderr)
                    return 1
                prune = next(s for s in record.stages if s.stage.endswith("prune"))
                rows[(model, r)] = {"model": model, "round_to": r, "tile": (prune.config or {}).get("tile"),
                                    "macs": prune.macs, "params": prune.params,
                                    "conv_widths": conv_widths(tmp / name),
                                    "p50_repeats": {f"{f}:{t}": [] for f in args.formats for t in THREADS}}
                if model in TRAINED:
                    rows[(model, r)]["top1"] = {t.format: t.verify.top1 for t in record.targets if t.verify}
                    rows[(model, r)]["torch_top1"] = next(t.verify.torch_top1 for t in record.targets if t.verify)
                if model in PRETRAINED:
                    rows[(model, r)]["agreement_with_pruned_torch"] = {t.format: t.verify.agreement
                                                                       for t in record.targets if t.verify}
                    rows[(model, r)]["agreement_with_unpruned"] = agreement_with_unpruned(tmp / name, want,
                                                                                          unpruned[model], args.formats)
                print(f"{name}: MACs {prune.macs:,}", file=sys.stderr)
        if args.export_only:
            return 0
        arts = [(key, f) for key in rows for f in args.formats]
        for rep in range(args.repeats):
            k = rep * len(arts) // args.repeats
            for (model, r), f in arts[k:] + arts[:k]:
                d = tmp / f"{model}_r{r}" / "targets" / f"{f}-int8"
                for t in THREADS if rep % 2 == 0 else THREADS[::-1]:
                    rows[(model, r)]["p50_repeats"][f"{f}:{t}"].append(p50(d, f, t, args.runs, profile=0))
            print(f"repeat {rep + 1}/{args.repeats} done (load average {os.getloadavg()})", file=sys.stderr)
    for (model, r), row in rows.items():
        base = rows[(model, 8)]["p50_repeats"]
        row["p50_ms"] = {c: round(statistics.median(v), 4) for c, v in row["p50_repeats"].items()}
        row["speedup_vs_round_to_8"] = {
            c: round(statistics.median(b / a for a, b in zip(v, base[c], strict=True)), 3)
            for c, v in row["p50_repeats"].items()}
        row["macs_vs_round_to_8"] = round(row["macs"] / rows[(model, 8)]["macs"], 4)
        print(f"{model} round_to {r}: MACs x{row['macs_vs_round_to_8']}, p50 {row['p50_ms']}, "
              f"vs round_to 8 {row['speedup_vs_round_to_8']}", file=sys.stderr)
    write_json(args.out, {"benchmark": "round_to", "command": command_line(), "environment": environment(),
                          "method": {"threads": list(THREADS), "formats": args.formats, "runs": args.runs,
                                     "repeats": args.repeats,
                                     "models": {m: MODELS[m] for m in args.models},
                                     "input_size": {m: "96 (trained)" if m in TRAINED else "224 (pretrained)"
                                                    if m in PRETRAINED else args.size or 224 for m in args.models},
                                     "note": "random-weight models: latency only, prune macs_ratio 0.5, l2, one step, "
                                             "no fine-tuning, post-training INT8; trained models (TRAINED): their "
                                             "recipe's passes and test top-1; pretrained models (PRETRAINED): a "
                                             "package's weights, data without labels, judged by each INT8 "
                                             "artifact's agreement with the unpruned model; only round_to changes"},
                          "rows": list(rows.values())})
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
