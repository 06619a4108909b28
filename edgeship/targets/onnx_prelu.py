"""PReLU for ONNX Runtime's CPU kernels: a large one rewritten as ``Relu(x) + slope * Min(x, 0)``.

ONNX Runtime's ``PRelu`` kernel picks between ``x`` and ``slope * x`` element by element with a branch the compiler
does not vectorize (its Eigen ``select``: onnxruntime PR #15287), so its time follows the signs of its input: over
a 1 x 56 x 48 x 48 map, 36-38 us when all elements are positive or all negative, 496 us when half are negative (one
thread, AMD EPYC of family 26; ``benchmarks/prelu_ort.py``, results/prelu_ort.json). ``Relu``, ``Min``, ``Mul`` and
``Add`` are vectorized and take the same time whatever the signs (51-52 us there); their sum is the same function,
bit for bit (``x >= 0``: ``x + slope * 0``; ``x < 0``: ``0 + slope * x``), for any slope, so a pretrained model's
negative or > 1 slopes (MTCNN's span -1.3 to 1.3) hold too. Four operators cost more than one where the branch
is cheap and the map small, so only a PReLU over ``MIN_ELEMENTS`` or more is rewritten.

In an INT8 artifact the rewritten nodes stay float, as ONNX Runtime's quantizer leaves a PReLU (outputs identical
to the PRelu artifact's). On MTCNN's pretrained networks (prelu_ort.json, p50 with the PRelu over p50 rewritten,
1 / 2 threads): O-Net 1.73x / 1.91x FP32 and 1.68x / 1.67x INT8, P-Net at 288 x 384 1.82x / 1.50x and 1.51x /
1.37x; R-Net, whose PReLUs are all under ``MIN_ELEMENTS``, is left as it is: every PReLU rewritten made it 12-13 %
slower at one thread (the benchmark's ``speedup_all``: 0.88x FP32, 0.87x INT8), O-Net 2-3 %.

The nodes are named ``<the PRelu's name>/vector_prelu/<relu|min|mul|add>``: the kernel reader reads them as the
one element-wise kernel they replace, and a device's counters of them as its time (``devices.in_context``).

In an INT8 file a PReLU after a cheap plain convolution is split by sign instead (``split_prelu``), so it runs as
int8 convolutions and no float PReLU, DequantizeLinear or QuantizeLinear is left around it. Where it pays
(``benchmarks/prelu_split.py``, results/prelu_split.json, one convolution + PReLU + 1 x 1, side by side, AMD EPYC
family 26): at most 192 extra multiply-adds per element the split file ran 1.16-1.44x faster at one thread and
1.27-1.87x at two; at 264-384 0.89-1.09x and 1.07-1.25x; at 704 0.75x and 0.91x; a depthwise convolution doubled
(groups kept, two outputs per group: no longer ONNX Runtime's depthwise kernel) 16-17x slower, so grouped ones are
never split. MTCNN's pretrained networks, INT8 as shipped over the PReLUs left float, 1 / 2 threads: P-Net at
288 x 384 (all three split) 1.43x / 1.63x, now 1.34x / 1.49x faster than its FP32 file (it was no faster), R-Net
(its first of three) 1.17x / 1.20x, O-Net (its first of four) 1.23x / 1.38x; splitting every one would make O-Net
1.10x slower at one thread. Mean absolute difference from the FP32 outputs on 16 photo crops: P-Net 0.0085 (left
float 0.0096), R-Net 0.0084 (0.0073), O-Net 0.0072 (0.0066); the face / no-face calls unchanged.

The quantizer puts the 1 x 1 mix's weights (1 and -slope) on its own grid, per channel over max |w| in 7 bits: a
slope of 0.0907 became 6 / 64. ``regrid_mix`` puts them on the int8 grid that rounds each slope best instead (the
weight 1 exact, MTCNN's slopes within 0.0003). A QAT model's export (its own QDQ nodes, no quantizer) is split
the same way with its trained quantization written in (``split_prelu``'s second paragraph): ONNX Runtime ran the
PReLUs of such a file float between a DequantizeLinear and a QuantizeLinear too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeship.targets.base import require
from edgeship.targets.onnx_align import _attr, _Graph, set_nodes

MIN_ELEMENTS = 16384  # R-Net's largest PReLU is over 13552 elements, O-Net's two largest over 67712 and 28224
MARK = "/vector_prelu/"
SPLIT = "/sign_split/"
SPLIT_MAX_MACS = 256  # the extra int8 multiply-adds per output element a sign split may cost (see split_prelu)
SPLIT_GROUPED = False  # a grouped (depthwise) convolution doubled is no longer ONNX Runtime's depthwise kernel


def split_prelu(path: Path, keep: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """In the ONNX file ``path``, rewrite each PReLU whose input comes from a convolution alone (constant weights,
    bias and slope) as that convolution with every filter doubled by its negation, a Relu, and a 1 x 1 convolution
    that puts them together: PReLU(t) = Relu(t) - slope * Relu(-t), for any slope. ONNX Runtime's quantizer leaves
    a PReLU float, with a DequantizeLinear before it and a QuantizeLinear after; the convolution-and-Relu and the
    1 x 1 convolution it quantizes into int8 kernels (the Relu into the convolution's output range), so the whole
    rewritten block runs int8. The price is the convolution's work twice and the 1 x 1 mix (2 C multiply-adds per
    element): a PReLU is split only when those extra multiply-adds per output element, (C_in / groups) x kernel
    area + 2 C, are at most ``SPLIT_MAX_MACS``. Float outputs are those of the PReLU (each output channel mixes one
    copy with weight 1 and the other, zero there, with -slope). The nodes are named ``<the PRelu's
    name>/sign_split/<conv|relu|mix>``; returns the names of the PReLUs split. A PReLU or convolution named in
    ``keep`` (the nodes a recipe keeps float) is left as it is.

    A QAT export (quantized already: the convolution's weights int8 behind a DequantizeLinear, its output through
    a QuantizeLinear -> DequantizeLinear pair before the PReLU) is split the same way with the quantization written
    in: the doubled weights stay the QAT grid's integers (each negated about its zero point), the Relu is a
    QuantizeLinear of the trained step whose zero point is the bottom of its range (it clips at 0, and rounds t and
    -t to the integers the trained QuantizeLinear rounds t to; it clips at 255 steps on each side, the trained one at
    255 in all), and the mix weights are on ``_mix_grid``'s int8 grid."""
    onnx = require("onnx", "onnx", "onnx")

    model = onnx.load(str(path))
    g = model.graph
    if not any(n.op_type == "PRelu" for n in g.node):
        return []
    gr = _Graph(g)
    vals = gr.inits | {n.output[0]: gr.inits[n.input[0]] for n in g.node  # a slope shared through an Identity
                       if n.op_type == "Identity" and n.input[0] in gr.inits}
    replace: dict[int, list] = {}  # by node identity: names may be empty or repeat in a file of the user's
    split = []
    for i, n in enumerate(g.node):
        conv, qdq = _conv_before(gr, n) if n.op_type == "PRelu" else (None, None)
        weight = None if conv is None else (vals[conv.input[1]], None) if conv.input[1] in vals else gr.weight(
            conv.input[1])  # float, or int8 behind a DequantizeLinear
        if (weight is None or n.input[1] not in vals or (weight[1] is None) != (qdq is None)
                or any(k and k not in vals for k in conv.input[2:]) or {n.name, conv.name} & keep):
            continue
        w, groups = weight[0], _attr(conv, "group", 1)
        c = w.shape[0]
        s = vals[n.input[1]].astype(np.float32).reshape(-1)
        extra = int(np.prod(w.shape[1:])) + 2 * c  # the doubled convolution's and the mix's, per output element
        if ((w.dtype != np.float32 and qdq is None) or (groups != 1 and not SPLIT_GROUPED) or s.size not in (1, c)
                or extra > SPLIT_MAX_MACS):
            continue
        b = vals[conv.input[2]] if len(conv.input) > 2 and conv.input[2] else np.zeros(c, np.float32)
        base = f"{n.name or f'prelu{i}'}{SPLIT}"
        mix = np.zeros((c, 2 * c), np.float32)  # a 1 x 1 (x 1 ...) kernel over as many axes as the convolution's
        mix[np.arange(c), 2 * np.arange(c)] = 1
        mix[np.arange(c), 2 * np.arange(c) + 1] = -np.broadcast_to(s, (c,))
        mix = mix.reshape(c, 2 * c, *[1] * (w.ndim - 2))
        if qdq is None:
            nodes = _split_float(g, conv, w, b, mix, base, n.output[0])
        else:
            nodes = _split_quantized(gr, conv, weight[1], qdq[0], b, mix, base, n.output[0])
            if nodes is None:
                continue
        replace[id(conv)], replace[id(n)] = nodes, []
        split.append(n.name or n.output[0])
    if split:
        set_nodes(g, [m for n in g.node for m in replace.get(id(n), [n])])
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return split


def _conv_before(gr: _Graph, prelu) -> tuple[Any, Any]:
    """(the convolution whose output only ``prelu`` reads, directly or through one QuantizeLinear ->
    DequantizeLinear pair of constant per-tensor parameters that nothing else reads (a QAT export); that pair)."""
    x = prelu.input[0]
    p = gr.producer.get(x)
    if p is None or gr.sole_consumer(x) is not prelu:
        return None, None
    if p.op_type == "Conv":
        return p, None
    q = gr.producer.get(p.input[0]) if p.op_type == "DequantizeLinear" else None
    if q is None or q.op_type != "QuantizeLinear" or gr.sole_consumer(p.input[0]) is not p:
        return None, None
    conv = gr.producer.get(q.input[0])
    if (conv is None or conv.op_type != "Conv" or gr.sole_consumer(q.input[0]) is not q
            or any(i not in gr.inits or gr.inits[i].size != 1 for i in q.input[1:] if i)):
        return None, None
    return conv, (q, p)


def _split_float(g, conv, w: np.ndarray, b: np.ndarray, mix: np.ndarray, base: str, out: str) -> list:
    from onnx import helper, numpy_helper

    # channel 2k is filter k, 2k + 1 its negation: both stay in filter k's group
    g.initializer.extend([numpy_helper.from_array(np.stack([w, -w], 1).reshape(2 * w.shape[0], *w.shape[1:]),
                                                  base + "w"),
                          numpy_helper.from_array(np.stack([b, -b], 1).reshape(-1).astype(np.float32), base + "b"),
                          numpy_helper.from_array(mix, base + "mix_w")])
    doubled = helper.make_node("Conv", [conv.input[0], base + "w", base + "b"], [base + "both"], name=base + "conv")
    doubled.attribute.extend(conv.attribute)
    return [doubled, helper.make_node("Relu", [base + "both"], [base + "pos_neg"], name=base + "relu"),
            helper.make_node("Conv", [base + "pos_neg", base + "mix_w"], [out], name=base + "mix")]


def _mix_grid(mix: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A split's 1 x 1 mix (C x 2C, weights 1 and -slope per output channel) in int8 per output channel: k and
    round(-slope x k) over a scale 1 / k, k (at most 127) the one whose rounding is nearest the slope (ties: the
    larger). There are never two non-zero products in one pair of adjacent inputs (one of Relu(t) and Relu(-t) is
    0), so the full int8 range is safe where an x86 kernel adds pairs in int16. None if a slope is beyond +-127."""
    c = mix.shape[0]
    ks = np.arange(127, 0, -1)
    neg_s = mix.reshape(c, 2 * c)[np.arange(c), 2 * np.arange(c) + 1].astype(np.float64)
    cand = np.round(neg_s[:, None] * ks)
    err = np.where(np.abs(cand) <= 127, np.abs(cand / ks - neg_s[:, None]), np.inf)
    if not np.isfinite(err.min(1)).all():
        return None
    k = ks[err.argmin(1)]
    return (np.round(mix * k.reshape(-1, *[1] * (mix.ndim - 1))).astype(np.int8),
            (1.0 / k).astype(np.float32))


def regrid_mix(path: Path, fp32: Path) -> int:
    """In the INT8 file ``path`` quantized from ``fp32`` (the float file ``split_prelu`` rewrote), put each split's
    1 x 1 mix on ``_mix_grid``'s grid instead of the quantizer's (per channel over max |w|, 7 bits with
    ``reduce_range``: a slope of 0.0907 became 6 / 64 = 0.094 and a weight 1 beside a slope of 1.30 became 0.99).
    Returns how many; the file is rewritten only if any."""
    onnx = require("onnx", "onnx", "onnx")
    from onnx import numpy_helper

    floats = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32)).graph.initializer
              if i.name.endswith(SPLIT + "mix_w")}
    if not floats:
        return 0
    model = onnx.load(str(path))
    g = model.graph
    gr = _Graph(g)
    done = 0
    for n in g.node:
        w = floats.get(n.name + "_w") if n.op_type == "Conv" and n.name.endswith(SPLIT + "mix") else None
        dq = gr.producer.get(n.input[1]) if w is not None else None
        grid = _mix_grid(w) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if grid is None:
            continue
        names = [n.name + "_grid_w", n.name + "_grid_scale", n.name + "_grid_zero"]
        g.initializer.extend(numpy_helper.from_array(v, k) for k, v in zip(names, (*grid, np.zeros(len(w), np.int8))))
        dq.input[:] = names
        del dq.attribute[:]
        dq.attribute.append(onnx.helper.make_attribute("axis", 0))
        done += 1
    if done:
        set_nodes(g, list(g.node))
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return done


def _twice(v: np.ndarray) -> np.ndarray:
    """A per-channel quantization parameter for the doubled filters: each channel's twice (per-tensor: as it is)."""
    return np.repeat(v.reshape(-1), 2) if v.size > 1 else v


def _split_quantized(gr: _Graph, conv, wdq, q, b: np.ndarray, mix: np.ndarray, base: str, out: str) -> list | None:
    """The split of a QAT export's block (see split_prelu); None where the negated weights leave their type's range
    or the parameters are not constants."""
    from onnx import helper, numpy_helper

    if any(i and i not in gr.inits for i in wdq.input[1:]):
        return None
    wq, ws = gr.inits[wdq.input[0]], gr.inits[wdq.input[1]]
    wz = gr.inits[wdq.input[2]] if len(wdq.input) > 2 and wdq.input[2] else np.zeros(1, wq.dtype)
    axis = _attr(wdq, "axis", 1) % wq.ndim
    if (ws.size > 1 and axis != 0) or wz.size not in (1, ws.size) or wq.dtype.kind not in "iu":
        return None
    c = wq.shape[0]
    zp = wz.astype(np.int32).reshape(-1, *[1] * (wq.ndim - 1)) if wz.size > 1 else wz.astype(np.int32).reshape(())
    neg = 2 * zp - wq.astype(np.int32)  # s * (neg - zp) = -s * (wq - zp)
    info = np.iinfo(wq.dtype)
    if neg.min() < info.min or neg.max() > info.max:
        return None
    both = np.stack([wq, neg.astype(wq.dtype)], 1).reshape(2 * c, *wq.shape[1:])
    s1 = float(gr.inits[q.input[1]].reshape(()))
    z1 = gr.inits[q.input[2]] if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
    a = np.iinfo(z1.dtype)
    grid = _mix_grid(mix)
    if grid is None:
        return None
    mix_q, mix_s = grid
    consts = dict((
        ("w", both), ("w_scale", _twice(ws)), ("w_zero", _twice(wz)),
        ("b", np.stack([b, -b], 1).reshape(-1).astype(np.float32)),
        ("relu_scale", np.array(s1, np.float32)), ("relu_zero", np.array(a.min, z1.dtype)),
        ("mix_w", mix_q), ("mix_scale", mix_s), ("mix_zero", np.zeros(c, np.int8))))
    gr.g.initializer.extend(numpy_helper.from_array(v, base + k) for k, v in consts.items())
    node = helper.make_node
    doubled = node("Conv", [conv.input[0], base + "w_dq", base + "b"], [base + "both"], name=base + "conv")
    doubled.attribute.extend(conv.attribute)
    return [node("DequantizeLinear", [base + "w", base + "w_scale", base + "w_zero"], [base + "w_dq"],
                 name=base + "w_dq", axis=0),
            doubled,
            node("QuantizeLinear", [base + "both", base + "relu_scale", base + "relu_zero"], [base + "relu_q"],
                 name=base + "relu"),
            node("DequantizeLinear", [base + "relu_q", base + "relu_scale", base + "relu_zero"], [base + "pos_neg"],
                 name=base + "relu_dq"),
            node("DequantizeLinear", [base + "mix_w", base + "mix_scale", base + "mix_zero"], [base + "mix_w_dq"],
                 name=base + "mix_w_dq", axis=0),
            node("Conv", [base + "pos_neg", base + "mix_w_dq"], [out], name=base + "mix")]


def vectorize_prelu(path: Path) -> list[str]:
    """Rewrite the PReLUs of the ONNX file ``path`` over ``MIN_ELEMENTS`` or more (a constant slope; a dynamic axis
    counts one) in place; the names of the nodes written (empty: the file is unchanged)."""
    onnx = require("onnx", "onnx", "onnx")
    from onnx import helper, numpy_helper, shape_inference

    model = onnx.load(str(path))
    g = model.graph
    if not any(n.op_type == "PRelu" for n in g.node):  # most models: no shape inference, the file untouched
        return []
    constants = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    try:
        shaped = shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - a graph shape inference cannot read keeps its PReLUs
        return []
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim]
              for v in [*shaped.input, *shaped.value_info, *shaped.output]}
    nodes, written = [], []
    for i, n in enumerate(g.node):
        shape = shapes.get(n.input[0], []) if n.op_type == "PRelu" else []
        if n.op_type != "PRelu" or n.input[1] not in constants or not shape or int(np.prod(shape)) < MIN_ELEMENTS:
            nodes.append(n)
            continue
        base = f"{n.name or f'prelu{i}'}{MARK}"
        (x, slope), y = n.input, n.output[0]
        g.initializer.append(numpy_helper.from_array(np.zeros((1,), np.float32), base + "zero"))
        nodes += [helper.make_node("Relu", [x], [base + "pos"], name=base + "relu"),
                  helper.make_node("Min", [x, base + "zero"], [base + "neg"], name=base + "min"),
                  helper.make_node("Mul", [base + "neg", slope], [base + "scaled"], name=base + "mul"),
                  helper.make_node("Add", [base + "pos", base + "scaled"], [y], name=base + "add")]
        written += [nodes[-k].name for k in (4, 3, 2, 1)]
    if written:
        del g.node[:]
        g.node.extend(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return written


def tile_slopes(path: Path) -> int:
    """In the INT8 ONNX file ``path``, give each rewritten PReLU's Mul over an N x C x H x W map (a static width) its
    C slopes repeated along W: an Expand of the constant to 1 x C x 1 x W, which ONNX Runtime folds as the session
    loads (the file keeps C values). Returns how many; the file is rewritten only if any.

    ONNX Runtime runs an INT8 file's float Mul channels-last (the NHWC layout it gives the int8 convolutions around
    it), where a 1 x C x 1 x 1 slope broadcasts one span of C elements at a time: MTCNN P-Net's three such Muls took
    1.3 ms of its 7.0 ms at 288 x 384, one thread (per-layer profile). Repeated along W, the slope broadcasts over H
    alone, in spans of W x C: 0.23 ms, and the whole file 1.19x faster than without it (benchmarks/ort_stem.py,
    results/ort_stem.json: 5.08 against 6.06 ms; O-Net 1.11x). An FP32 file keeps its NCHW Mul, where the slope as
    it is broadcasts in spans of H x W: it is left so. Done after quantization, whose graph optimization would fold
    the Expand into a constant of C x W values in the file."""
    onnx = require("onnx", "onnx", "onnx")
    from onnx import helper, numpy_helper, shape_inference

    model = onnx.load(str(path))
    g = model.graph
    muls = [n for n in g.node if n.op_type == "Mul" and n.name.endswith(MARK + "mul")]
    if not muls:
        return 0
    slopes = {t.name: t for t in g.initializer}
    shaped = shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
              for v in [*shaped.input, *shaped.value_info, *shaped.output]}
    tiles = {}
    for n in muls:
        shape, t = shapes.get(n.input[0], []), slopes.get(n.input[1])
        dims = tuple(t.dims) if t is not None else ()
        if len(shape) == 4 and shape[1] > 1 and shape[3] > 1 and dims[-3:] == (shape[1], 1, 1) and (
                int(np.prod(dims)) == shape[1]):  # one slope per channel, a static width
            tiles[n.name] = np.array([1, shape[1], 1, shape[3]], np.int64)
    nodes = []
    for n in g.node:
        if n.name in tiles:
            base = n.name[: -len("mul")]
            g.initializer.append(numpy_helper.from_array(tiles[n.name], base + "tile"))
            nodes.append(helper.make_node("Expand", [n.input[1], base + "tile"], [base + "slope"], name=base + "tile"))
            n.input[1] = base + "slope"
        nodes.append(n)
    if tiles:
        del g.node[:]
        g.node.extend(nodes)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return len(tiles)


def split_route(split: list[str]) -> str:
    """What the lowering route says of ``split_prelu``'s rewrite."""
    return (f"; {len(split)} PReLU(s) after a convolution split by sign (the convolution doubled by its negation, "
            f"Relu, a 1 x 1 mix: all int8)" if split else "")


def prelu_route(written: list[str], int8: bool, tiled: int = 0) -> str:
    """What the lowering route says of the rewrite (``tiled``: how many slopes ``tile_slopes`` repeated)."""
    if not written:
        return ""
    return (f"; {len(written) // 4} PReLU(s) over >= {MIN_ELEMENTS} elements rewritten as Relu(x) + slope * "
            f"Min(x, 0) (ONNX Runtime's PRelu branches per element){', kept float' if int8 else ''}"
            + (f", {tiled} slope(s) repeated along the width (its channels-last Mul)" if tiled else ""))
