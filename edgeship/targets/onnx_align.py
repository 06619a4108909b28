"""Channel alignment for ONNX Runtime's int8 kernels (both of onnx_int8's routes): depthwise, narrow, a stem's input.

Depthwise convolutions get a multiple of 16 channels (``align_depthwise``, both routes). ONNX Runtime's x86 kernels
(MLAS) run an int8 depthwise convolution with symmetric int8 weights (edgeship's) in their fused kernel
(``MlasConvSymDepthwise``, AVX2 / AVX-512 / VNNI, requantizing in the same pass) only when its channel count is a
multiple of 16 (``MlasConvSymPackWSize`` in onnxruntime/core/mlas/lib/convsym.cpp; 8 on ARM64); any other count
runs the generic ``MlasConvDepthwise`` (8 or 16 channels per vector, the rest one at a time, int32 out) and then a
separate requantization pass. Pruning to multiples of 4 leaves such counts: the 96x96 MobileNetV2 0.35 pruned to
half its MACs has depthwise convolutions of 12, 60, 92, 124 and 216 channels, and its INT8 file was no faster than
the unpruned FP32 one (benchmarks/results/scale.json, 1 thread: 0.603 against 0.396 ms; the 12-channel depthwise
at 48x48 the slowest layer). So a depthwise convolution whose channel count is not a multiple of 16 is widened
with zero channels: the convolution producing its input (through per-element ops that keep 0 at 0: Clip, Relu,
per-tensor Q/DQ; and through a max or average pool, which reads each channel alone) gets zero filters and zero
bias, it gets zero filters, and the convolutions reading its output get zero weights for those inputs. Quantized
zeros are the zero point and the new scales repeat the last channel's
(a bias's scale stays the input's times the weight's, which ONNX Runtime's QDQ fusion checks: with other scales it
left those convolutions in float), so every output is bit-identical. Measured by benchmarks/ort_int8_small.py
(results/ort_int8_small.json; an AVX-512 VNNI host shared with other jobs, 5 interleaved repeats in fresh
processes): that model's INT8 file 1.48x faster at 1 thread (1.36-2.22x per repeat; 2 threads 1.56x, 1.31-1.87x)
and 1.65x faster than the unpruned FP32 file, where the old one measured 1.1x (0.70-1.24x); single
inverted-residual blocks 16 -> C -> 16 from the calibration route 1.2-2.2x faster (median per C) for every C tried
from 4 (widened 4x) to 216, multiples of 8 or not. The file grows by the zero weights (that model, lowered by this
code from the same compressed model: 234,714 -> 240,804 bytes, outputs identical). A depthwise convolution whose
input is not a convolution's alone, or whose output reaches anything but convolutions (a residual Add), stays as it
is; the route names it.

A plain convolution with fewer than 16 output channels over a map of 4096 positions or more is widened to 16 with
zero filters where only convolutions read it (``align_narrow``; through Q/DQ, activations, max or average pools and
a PReLU, whose per-channel slopes are padded): MLAS's int8 convolution runs 8-12 output channels no faster than 16,
and a 10-channel input (not a multiple of 4) costs the next convolution more than a 16-channel one. In per-layer
profiles of MTCNN P-Net at 288 x 384 (one thread), its first convolution (3 -> 10) took 2.3 of 6 ms, and its second
0.66 ms reading 10 channels against 0.35 ms reading 16. An RGB stem with 16 output channels or more then gets a
fourth input channel (``pad_stem_input``): the quantized input padded with its zero point by a Pad (0.005-0.010 ms at
224 x 224) and a zero weight column. Both leave every output bit-identical. Measured by benchmarks/ort_stem.py
(results/ort_stem.json, one thread, median of 5 interleaved repeats): one 3x3 convolution over a 3-channel 143 x 191
input 1.56-1.72x faster with the fourth channel at 16-64 outputs and 0.99-1.01x at 8 or 12 (so those are left), a 1-
or 2-channel input padded to 4 (a gray image) 1.30-1.49x; MobileNetV2-224 (pretrained) 1.08x, 2.27x faster than
FP32 where the plain file was 2.10x; ResNet-18-224 1.03x; P-Net with the slopes of onnx_prelu tiled too 1.37x
(widening and the stem's pad alone: 1.17x), O-Net 1.26x, R-Net 1.12x, a 0.35-wide MobileNetV2 at 96 x 96 1.07x from
the stem's pad (its 8-output convolution over 48 x 48 is under ``NARROW_MIN_POSITIONS``: widened in an earlier run,
results/ort_stem_earlier/ort_stem_431a809.json, it added 1.02x; toy models' INT8 files the zero filters made larger
than FP32 ones). P-Net is still 0.87x of its FP32 file: its three PReLUs run float between dequantize and quantize.

Written by hand: no ONNX or ONNX Runtime tool widens channels of a quantized graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeship.targets.base import require


def _initializer_values(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    vals = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:  # the TorchScript exporter writes QAT scales as Constant nodes
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            vals[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return vals


# ---------------------------------------------------------------- depthwise channel alignment (ONNX Runtime x86)
DEPTHWISE_ALIGN = 16  # MLAS's fused int8 depthwise kernel takes channel counts that are multiples of 16 (see above)
# per-element ops that keep a 0 at 0 (Clip: when its range holds 0; Q/DQ: of one scale and zero point), and pools,
# which read each channel alone (``POOLS``): a stem of 8-44 channels -> max pool -> depthwise convolution in six random
# architectures, each file 1.03-1.35x faster at one thread with both aligned (median 1.14x; ort_pool_align.json)
POOLS = ("MaxPool", "AveragePool")
PASS_THROUGH = ("QuantizeLinear", "DequantizeLinear", "Clip", "Relu", "LeakyRelu", "HardSwish", "Tanh", "Identity",
                *POOLS)


def _attr(node, name: str, default=None):
    onnx = require("onnx", "onnx", "onnx")
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


class _Graph:
    """An ONNX graph's nodes, producers, consumers and initializers, for the channel alignment."""

    def __init__(self, graph):
        self.g = graph
        self.inits = _initializer_values(graph)  # the QAT export's Constant nodes too
        self.stored = {i.name for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self.new_inits: dict[str, np.ndarray] = {}
        self.new_nodes: list = []  # DequantizeLinear nodes of constants: they go first

    def sole_consumer(self, tensor: str):
        c = self.consumers.get(tensor, [])
        return c[0] if len(c) == 1 and tensor not in self.outputs else None

    def keeps_zero(self, node) -> bool:
        """A pass-through op whose parameters are constants of one value each (Q/DQ: an activation's, per tensor)
        and that maps 0 to 0 on every channel."""
        if node.op_type not in PASS_THROUGH or len(node.output) != 1:
            return False
        params = [self.inits.get(i) for i in node.input[1:] if i]
        if any(v is None or v.size != 1 for v in params):
            return False
        if node.op_type == "Clip":
            lo, hi = (params + [None, None])[:2]
            return (lo is None or float(lo) <= 0) and (hi is None or float(hi) >= 0)
        return True

    def weight(self, name: str) -> tuple[np.ndarray, Any] | None:
        """(values, the DequantizeLinear producing them or None for a float initializer)."""
        if name in self.inits:
            return self.inits[name], None
        dq = self.producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in self.inits and all(
                i in self.inits for i in dq.input[1:] if i):
            return self.inits[dq.input[0]], dq
        return None

    def tensor(self, base: str, values: np.ndarray) -> str:
        name = f"{base}_align{len(self.new_inits)}"
        self.new_inits[name] = self.inits[name] = values
        return name

    def padded_input(self, node, k: int, axis: int, size: int) -> None:
        """Replace input ``k`` of ``node`` (a weight or bias, float or dequantized) by one padded to ``size`` along
        ``axis`` with values that are 0 (quantized: the zero point); scales and zero points along that axis repeat
        their last value, so a bias's scale stays the input's times the weight's (ONNX Runtime fuses only then)."""
        from onnx import helper

        values, dq = self.weight(node.input[k])
        pad = [(0, 0)] * values.ndim
        pad[axis] = (0, size - values.shape[axis])
        padded = np.pad(values, pad)
        if dq is None:
            node.input[k] = self.tensor(node.input[k], padded)
            return
        q_axis = _attr(dq, "axis", 1) % values.ndim
        params = [self.inits[i] if i else None for i in dq.input[1:]]
        params = [np.pad(v, (0, size - v.size), mode="edge") if v is not None and v.size > 1 and q_axis == axis
                  else v for v in params]
        zp = params[1] if len(params) > 1 else None
        if zp is not None and zp.any():  # the padded entries dequantize to 0: each one's zero point
            shape = [1] * values.ndim
            if zp.size > 1:
                shape[q_axis] = -1
            region = tuple(slice(values.shape[d] if d == axis else None, None) for d in range(values.ndim))
            padded[region] = np.broadcast_to(zp.reshape(shape), padded.shape)[region]
        ins = [self.tensor(dq.input[0], padded)] + [
            i if not i or (v is self.inits[i] and i in self.stored) else self.tensor(i, v)
            for i, v in zip(dq.input[1:], params)]  # the new node goes first: no Constant node's output
        out = f"{node.input[k]}_align{len(self.new_inits)}"
        new = helper.make_node("DequantizeLinear", ins, [out], name=out,
                               **({"axis": _attr(dq, "axis")} if _attr(dq, "axis") is not None else {}))
        self.new_nodes.append(new)
        self.producer[out] = new
        node.input[k] = out


def _chain_up(gr: _Graph, tensor: str):
    """The convolution whose output reaches ``tensor`` through per-element ops only, each read by nothing else."""
    seen = 0
    while seen < 16:
        p = gr.producer.get(tensor)
        if p is None or gr.sole_consumer(p.output[0]) is None or len(p.output) != 1:
            return None
        if p.op_type == "Conv":
            return p
        if not gr.keeps_zero(p):
            return None
        tensor, seen = p.input[0], seen + 1
    return None


def _chain_down(gr: _Graph, tensor: str) -> list | None:
    """The convolutions that read ``tensor`` through per-element ops only (as their data input), or None when
    anything else reads it (an Add, a graph output)."""
    if tensor in gr.outputs:
        return None
    found = []
    for c in gr.consumers.get(tensor, []):
        if c.op_type == "Conv" and c.input[0] == tensor and _attr(c, "group", 1) == 1:
            found.append(c)
        elif gr.keeps_zero(c):
            more = _chain_down(gr, c.output[0])
            if more is None:
                return None
            found += more
        else:
            return None
    return found or None


def align_depthwise(model, multiple: int = DEPTHWISE_ALIGN) -> list[dict]:
    """Widen every depthwise convolution of ``model`` (an ONNX ModelProto, changed in place) whose channel count is
    not a multiple of ``multiple`` with zero channels: the convolution producing its input gets zero filters (and
    zero bias), it gets zero filters, the convolutions reading its output get zero weights for those inputs. The new
    channels are 0 everywhere (a quantized 0 is the zero point, exactly 0 again), so every output is unchanged.
    A depthwise convolution whose input does not come from a convolution through per-element ops alone, or whose
    output reaches anything but convolutions, is left as it is. Returns one row per convolution looked at."""
    from onnx import numpy_helper

    gr = _Graph(model.graph)
    rows = []
    for d in list(model.graph.node):
        group = _attr(d, "group", 1)
        w = gr.weight(d.input[1]) if d.op_type == "Conv" and len(d.input) > 1 else None
        if group <= 1 or w is None or w[0].shape[:2] != (group, 1) or group % multiple == 0:
            continue
        size = -(-group // multiple) * multiple
        up, down = _chain_up(gr, d.input[0]), _chain_down(gr, d.output[0])
        ok = (up is not None and _attr(up, "group", 1) == 1 and gr.weight(up.input[1]) is not None
              and down is not None and all(gr.weight(c.input[1]) is not None for c in down))
        rows.append({"node": d.name, "channels": group, "aligned": size if ok else None,
                     "reason": None if ok else "its input is not a convolution's alone, or its output reaches "
                                               "something other than convolutions"})
        if not ok:
            continue
        for conv in (up, d):
            gr.padded_input(conv, 1, 0, size)
            if len(conv.input) > 2 and conv.input[2]:
                gr.padded_input(conv, 2, 0, size)
        for c in down:
            gr.padded_input(c, 1, 1, size)
        for a in d.attribute:
            if a.name == "group":
                a.i = size
    if not gr.new_nodes:
        return rows
    g = model.graph
    g.initializer.extend(numpy_helper.from_array(v, k) for k, v in gr.new_inits.items())
    # the new nodes read constants only: first is a topological place; the old weight DequantizeLinear go
    set_nodes(g, gr.new_nodes + list(g.node))
    return rows


# ---------------------------------------------------------------- narrow convolutions (ONNX Runtime x86)
NARROW = 16  # a plain int8 convolution with fewer output channels runs MLAS's kernels at the speed of 16 or more
# ... where its map is large: P-Net's 286 x 382 gained (ort_stem.json), a 0.35-wide MobileNetV2's 48 x 48 1.02x (noise),
# and on an 8 x 8 toy model the zero filters made the INT8 file larger than the FP32 one for no measured gain
NARROW_MIN_POSITIONS = 4096
ZERO_KEEPING = ("MaxPool", "AveragePool", "Min", "Max", "Mul", "PRelu", "Add")  # with the checks below


def _per_channel(gr: _Graph, name: str, channels: int) -> bool:
    """A constant of one value (any: 0 times it is 0) or one per channel of a 4-D NCHW map (C x 1 x 1, 1 x C x 1 x
    1), or such a constant expanded along the width (``onnx_prelu.tile_slopes``)."""
    v = gr.inits.get(name)
    e = gr.producer.get(name)
    if v is None and e is not None and e.op_type == "Expand" and e.input[1] in gr.inits:
        return _per_channel(gr, e.input[0], channels)
    return v is not None and (v.size == 1 or (v.ndim >= 3 and v.shape[-3:] == (channels, 1, 1)
                                              and v.size == channels))


def _narrow_region(gr: _Graph, start: str, channels: int) -> tuple[list, list] | None:
    """The convolutions reading ``start`` (a narrow convolution's output) through ops that keep a zero channel at 0
    (Q/DQ, activations, max or average pools, a PReLU as PRelu or as ``onnx_prelu``'s Relu/Min/Mul/Add, per-channel
    scales), and the (node, input index) of each per-channel constant on the way; None when anything else reads it
    (a graph output, a residual Add, a concatenation, a flatten)."""
    todo, region, convs, consts, ops = [start], {start}, [], [], []
    while todo:
        t = todo.pop()
        if t in gr.outputs:
            return None
        for c in gr.consumers.get(t, []):
            if c.op_type == "Conv" and c.input[0] == t and _attr(c, "group", 1) == 1 and gr.weight(c.input[1]):
                convs.append(c)
                continue
            if not (gr.keeps_zero(c) or c.op_type in ZERO_KEEPING[:2]) and c.op_type not in ZERO_KEEPING[2:]:
                return None
            ops.append(c)
            for o in c.output[:1]:
                if o not in region:
                    region.add(o)
                    todo.append(o)
    for c in ops:  # each input of an op in the region: from the region, or a constant it may hold per channel
        if len(c.output) != 1 or (c.op_type in ("Min", "Max") and any(
                i not in region and float(np.max(np.abs(gr.inits.get(i, np.ones(1))))) != 0 for i in c.input)):
            return None  # (a Min or Max keeps 0 at 0 only against 0)
        for k, i in enumerate(c.input):
            if i in region or not i or gr.keeps_zero(c) or c.op_type in ZERO_KEEPING[:2]:
                continue
            if c.op_type in ("Mul", "PRelu", "Add") and _per_channel(gr, i, channels):
                consts.append((c, k))  # an Add's constant pads with 0, a scale with anything: 0 stays 0
            elif c.op_type not in ("Min", "Max"):
                return None
    return (convs, consts) if convs else None


def align_narrow(model, multiple: int = NARROW) -> list[dict]:
    """Widen every plain convolution with fewer than ``multiple`` output channels and a map of ``NARROW_MIN_POSITIONS``
    or more to ``multiple`` with zero filters where its output reaches only convolutions (``_narrow_region``):
    their zero weights for the new inputs, the per-channel constants on the way padded (Expand shapes too).
    Outputs unchanged. One row per convolution."""
    from onnx import numpy_helper, shape_inference

    gr = _Graph(model.graph)
    shaped = shape_inference.infer_shapes(model).graph
    positions = {v.name: int(np.prod([d.dim_value for d in v.type.tensor_type.shape.dim][2:]))
                 for v in [*shaped.value_info, *shaped.output] if len(v.type.tensor_type.shape.dim) == 4}
    rows = []
    for conv in list(model.graph.node):
        w = gr.weight(conv.input[1]) if conv.op_type == "Conv" and len(conv.input) > 1 else None
        if (w is None or _attr(conv, "group", 1) != 1 or w[0].ndim != 4 or w[0].shape[0] >= multiple
                or positions.get(conv.output[0], 0) < NARROW_MIN_POSITIONS):
            continue
        channels = w[0].shape[0]
        found = _narrow_region(gr, conv.output[0], channels)
        rows.append({"node": conv.name, "channels": channels, "widened": multiple if found else None})
        if found is None:
            continue
        gr.padded_input(conv, 1, 0, multiple)
        if len(conv.input) > 2 and conv.input[2]:
            gr.padded_input(conv, 2, 0, multiple)
        for node, k in found[1]:
            e = gr.producer.get(node.input[k])
            if e is not None and e.op_type == "Expand":  # onnx_prelu.tile_slopes: the slope and the shape
                shape = gr.inits[e.input[1]].copy()
                shape[1] = multiple
                e.input[1] = gr.tensor(e.input[1], shape)
                node = e
                k = 0
            v = gr.inits[node.input[k]]
            if v.size > 1:
                gr.padded_input(node, k, v.ndim - 3, multiple)
        for c in found[0]:
            gr.padded_input(c, 1, 1, multiple)
    if gr.new_inits:
        g = model.graph
        g.initializer.extend(numpy_helper.from_array(v, k) for k, v in gr.new_inits.items())
        set_nodes(g, gr.new_nodes + list(g.node))
    return rows


# ---------------------------------------------------------------- a stem's input channels (ONNX Runtime x86)
STEM_CIN_ALIGN = 4  # MLAS's int8 convolution wants input channels in multiples of 4 (measured: benchmarks/ort_stem.py)
STEM_MIN_COUT = 16  # ... and gains from it only with 16 output channels or more (8 or 12: none; 16-64: 1.56-1.72x)
PAD_INPUT = "/pad_input"  # the name of such a Pad ends so (the kernel reader reads it as part of its convolution)


def pad_stem_input(model, min_cout: int = STEM_MIN_COUT) -> list[dict]:
    """Pad the quantized input of every plain convolution that reads a graph input (through its QuantizeLinear and
    DequantizeLinear alone) from ``c`` to the next multiple of ``STEM_CIN_ALIGN`` channels, where ``c`` is not one
    and it has ``min_cout`` output channels or more: a Pad of the quantized tensor with its zero point
    (a float 0) and zero weights for the new channels, so its output is unchanged. An RGB stem (3 -> 4) runs about
    twice as fast in ONNX Runtime's int8 kernels (module docstring). Returns one row per convolution padded."""
    from onnx import helper, numpy_helper

    g = model.graph
    gr = _Graph(g)
    inputs = {i.name for i in g.input}
    rows, after = [], {}
    for conv in list(g.node):
        dq = gr.producer.get(conv.input[0]) if conv.op_type == "Conv" and _attr(conv, "group", 1) == 1 else None
        q = gr.producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        w = gr.weight(conv.input[1]) if q is not None and len(conv.input) > 1 else None
        if (q is None or q.op_type != "QuantizeLinear" or q.input[0] not in inputs or w is None or w[0].ndim != 4
                or w[0].shape[1] % STEM_CIN_ALIGN == 0 or w[0].shape[0] < min_cout
                or any(gr.inits.get(i) is None or gr.inits[i].size != 1 for i in q.input[1:] if i)):
            continue
        have = w[0].shape[1]
        size = -(-have // STEM_CIN_ALIGN) * STEM_CIN_ALIGN
        zp = gr.inits[q.input[2]] if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        base = f"{conv.name or conv.output[0]}{PAD_INPUT}"
        pads = gr.tensor(base, np.array([0, 0, 0, 0, 0, size - have, 0, 0], np.int64))
        value = gr.tensor(base, np.asarray(zp).reshape(()))
        pad = helper.make_node("Pad", [q.output[0], pads, value], [base], name=base)
        new_dq = helper.make_node("DequantizeLinear", [base, *dq.input[1:]], [base + "_dq"], name=base + "_dq")
        conv.input[0] = base + "_dq"
        gr.padded_input(conv, 1, 1, size)
        after.setdefault(q.output[0], []).extend([pad, new_dq])
        rows.append({"node": conv.name, "channels": have, "padded": size})
    if rows:
        g.initializer.extend(numpy_helper.from_array(v, k) for k, v in gr.new_inits.items())
        nodes = list(gr.new_nodes)
        for n in g.node:
            nodes += [n, *after.get(n.output[0], [])]
        set_nodes(g, nodes)
    return rows


def set_nodes(graph, nodes: list) -> None:
    """Make ``nodes`` (topologically sorted) the graph's, without those whose outputs nothing reads any more and the
    initializers no node reads (but those an old file also lists as graph inputs); value_info goes (shapes
    changed)."""
    outs = {o.name for o in graph.output}
    while True:
        used = {i for n in nodes for i in n.input} | outs
        live = [n for n in nodes if any(o in used for o in n.output)]
        if len(live) == len(nodes):
            break
        nodes = live
    del graph.node[:]
    graph.node.extend(nodes)
    used |= {v.name for v in graph.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.value_info[:]


def align_file(path: Path) -> str:
    """``align_depthwise``, ``align_narrow`` and ``pad_stem_input``, in that order (a widened stem then has the
    outputs the pad needs), on the ONNX file at ``path`` (rewritten only when a convolution changed); what the
    lowering route says of them."""
    onnx = require("onnx", "onnx", "onnx")
    m = onnx.load(str(path))
    rows = align_depthwise(m)
    narrow = align_narrow(m)
    stems = pad_stem_input(m)
    if any(r["aligned"] for r in rows) or any(r["widened"] for r in narrow) or stems:
        onnx.checker.check_model(m)
        onnx.save(m, str(path))
    done = [f"{r['node']} {r['channels']}->{r['aligned']}" for r in rows if r["aligned"]]
    left = [f"{r['node']} ({r['channels']})" for r in rows if not r["aligned"]]
    padded = [f"{r['node']} {r['channels']}->{r['padded']}" for r in stems]
    widened = [f"{r['node']} {r['channels']}->{r['widened']}" for r in narrow if r["widened"]]
    return ((f"; depthwise convolutions widened with zero channels to multiples of {DEPTHWISE_ALIGN} (ONNX "
             f"Runtime's fused int8 depthwise kernel): {', '.join(done)}" if done else "")
            + (f"; depthwise convolutions left unaligned (their neighbours are not convolutions alone): "
               f"{', '.join(left)}" if left else "")
            + (f"; narrow convolutions widened with zero filters to {NARROW} outputs (ONNX Runtime's int8 "
               f"convolution): {', '.join(widened)}" if widened else "")
            + (f"; input channels padded with zeros to a multiple of {STEM_CIN_ALIGN} (ONNX Runtime's int8 "
               f"convolution): {', '.join(padded)}" if padded else ""))
