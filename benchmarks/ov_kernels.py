"""Which oneDNN kernels OpenVINO's CPU plugin picks for edgeship's INT8 IRs, and the activation ranges behind them.

    .venv/bin/python benchmarks/ov_kernels.py                      # the IRs scale.py left in runs/bench/scale
    .venv/bin/python benchmarks/ov_kernels.py --runs DIR [DIR ...]  # any edgeship run directories
    .venv/bin/python benchmarks/ov_kernels.py --export RECIPE ...   # export these recipes first, then read them too

By default it also exports benchmarks/recipes/mobilenet_v2_224_pretrained_qat.yaml (torchvision's pretrained
MobileNetV2 through QAT, about a minute) into runs/bench/ov_kernels/, so the answer is checked on a package's
pretrained model and not only on edgeship's own.

The question it answers (issue 20): OpenVINO runs a depthwise convolution whose input quantizer has a zero point in
oneDNN's slower ``jit_avx512_I8`` kernel instead of ``brgconv_avx512_dw_I8`` (benchmarks/ov_activations.py), which is
why a calibrated OpenVINO target takes symmetric activation ranges by default. A QAT model carries the activation
ranges it learned, asymmetric unless the recipe says ``symmetric_activations: true``: does that cost it the fast
kernel? For every run directory's OpenVINO INT8 IR it records the run's quantization (QAT or calibrated, the scheme),
the activation quantizers of the IR by kind (``FakeQuantize`` with 256 levels: unsigned from zero, signed symmetric,
or with a zero point, and the op types a zero point feeds), and the kernel (``primitiveType``) of every convolution
of the compiled model (1 thread), with the count that fell to a ``jit_`` kernel (``jit_avx512_I8`` on an AVX-512
machine; other ISAs name theirs). No timing: it compiles the IRs and reads them. Writes
benchmarks/results/ov_kernels.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

from benchlib import RESULTS, ROOT, command_line, environment, write_json
from ov_activations import conv_kernels


def activation_quantizers(xml: Path) -> dict[str, int]:
    """FakeQuantize ops with 256 levels (activations: edgeship's weights are int8 constants) by the zero point their
    input range implies: 'unsigned_from_zero' (low 0), 'signed_symmetric' (low = -high * 128/127, zero point 0), or
    'zero_point' (any other range)."""
    import numpy as np
    import openvino as ov

    kinds: collections.Counter = collections.Counter()
    for op in ov.Core().read_model(str(xml)).get_ops():
        if op.get_type_name() != "FakeQuantize" or op.get_attributes().get("levels") != 256:
            continue
        lo, hi = (np.asarray(op.input_value(i).get_node().get_data(), dtype=np.float64) for i in (1, 2))
        if np.all(lo == 0):
            kinds["unsigned_from_zero"] += 1
        elif np.allclose(lo, -hi * 128 / 127, rtol=1e-3):
            kinds["signed_symmetric"] += 1
        else:
            kinds["zero_point"] += 1
            for target in op.output(0).get_target_inputs():  # what a zero point reaches: the kernels it can slow
                kinds[f"zero_point_feeds_{target.get_node().get_type_name()}"] += 1
    return dict(sorted(kinds.items()))


def one_run(run: Path) -> dict | None:
    """The run's OpenVINO INT8 IR (None if it has none): its quantization, quantizers and kernels."""
    report = json.loads((run / "report.json").read_text())
    ov_int8 = [t for t in report.get("targets") or [] if t.get("format") == "openvino" and t.get("precision") == "int8"
               and t.get("status") == "ok"]
    if not ov_int8:
        return None
    xml = run / ov_int8[0]["artifact"]
    q = report.get("quantization") or {}
    kernels = conv_kernels(xml)
    return {"run": run.name, "target": ov_int8[0]["name"], "quantized_by": "qat" if q.get("qat") else "calibrate",
            "symmetric_activations_setting": q.get("symmetric_activations"),
            "activation_quantizers": activation_quantizers(xml), "conv_kernels": kernels,
            "convolutions_in_jit_kernels": sum(n for k, n in kernels.items() if k.startswith("Convolution/jit_"))}


PRETRAINED_QAT = ROOT / "benchmarks" / "recipes" / "mobilenet_v2_224_pretrained_qat.yaml"


def export(recipe_path: Path) -> Path:
    """Export a recipe (its zoo data built first when it reads benchmarks/zoo/data) and return its run directory."""
    import os

    import yaml

    os.chdir(ROOT)  # the recipes' relative paths and factories (benchmarks.zoo.models) are the repository's
    sys.path.insert(0, str(ROOT))
    recipe = yaml.safe_load(recipe_path.read_text())
    data = Path(recipe["data"]["source"].get("path") or "")
    if data.parent == Path("benchmarks/zoo/data"):
        from benchmarks.zoo import make_data

        make_data.build(data.stem)
    import edgeship

    record = edgeship.export(recipe, quiet=True, measure=False)
    if not record.ok:
        sys.exit(f"error: {recipe_path}: {[(t.name, t.error) for t in record.targets if t.status != 'ok']}")
    return record.run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", type=Path,
                    help="edgeship run directories (default: runs/bench/scale/*_edgeship)")
    ap.add_argument("--out", type=Path, default=RESULTS / "ov_kernels.json")
    ap.add_argument("--export", nargs="+", type=Path, metavar="RECIPE",
                    help="export these recipes, then read their runs too (default, without --runs: "
                         f"{PRETRAINED_QAT.relative_to(ROOT)})")
    args = ap.parse_args()
    runs = args.runs or sorted((ROOT / "runs" / "bench" / "scale").glob("*_edgeship"))
    recipes = args.export if args.export is not None else ([] if args.runs else [PRETRAINED_QAT])
    missing = [str(r) for r in runs if not (r / "report.json").is_file()]
    if not runs or missing:
        sys.exit(f"error: no edgeship run directory at {', '.join(missing) or 'runs/bench/scale/*_edgeship'}; run "
                 "`.venv/bin/python benchmarks/scale.py` first or name run directories with --runs")
    runs += [export(r.resolve()) for r in recipes]
    rows = [r for r in (one_run(run) for run in runs) if r is not None]
    write_json(args.out, {"benchmark": "ov_kernels", "command": command_line(), "environment": environment(),
                          "method": "compile each IR for CPU at 1 thread and read the runtime graph's primitiveType; "
                                    "count the IR's 256-level FakeQuantize ops by the zero point of their input range",
                          "rows": rows})
    for r in rows:
        print(f"{r['run']:34s} {r['quantized_by']:9s} {r['activation_quantizers']} "
              f"convolutions in a jit_ kernel: {r['convolutions_in_jit_kernels']}")


if __name__ == "__main__":
    main()
