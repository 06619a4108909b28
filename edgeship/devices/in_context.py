"""Kernel times inside a model, from the runtime's per-layer counters (a calibration's fitting architectures).

A one-kernel probe is timed alone: its input comes from the model's input, its output goes to the model's output,
and the runtime picks layouts and precisions for that alone. Inside a network the same convolution runs between
other layers: OpenVINO INT8 keeps blocked layouts from layer to layer, feeds signed or unsigned int8 as the layer
before decides, and fuses a residual add into the convolution before it. On the AMX host the probes' forest was off
by 2-5x per convolution in both directions (ov_signed_input.json), errors a correction over whole models cancels
only on average. The runtime's counters of the fitting architectures give each kernel its time in context; the
forests of the kernel types that have ``MIN_SAMPLES`` such times are fitted on them instead of on the probes
(``calibrate.fit``; ``ConfigPredictor.in_context`` names them). On four calibrations of the AMX host, scored on
30 architectures none had seen, this beat the probes' forests in 21 of 24 configurations (fraction within +-10 %;
one tie; ONNX Runtime INT8 at 1 thread lost twice); choosing between the two by the 20 validation architectures'
error lost more than it saved (benchmarks/results/notes.md). OpenVINO's counters are read as a timed loop runs
(``layer_profile.ov_counted``).

``kernel_times(kernels, layers)`` matches each layer the runtime executed to a kernel read from the artifact's file
(``kernels.read``), by operator and by its input and output shapes, in execution order; a kernel the runtime fused
into another (OpenVINO: a residual add into the convolution before it) has no time of its own (None), and its cost
is in the kernel that took it. OpenVINO's runtime model and ONNX Runtime's profiler give shapes; LiteRT's profiler
(``litert_timer``, its C API) names XNNPACK's operators without shapes, so its operators are matched to the
kernels by type and order alone, and an architecture where they do not pair one for one gives no times.
"""

from __future__ import annotations

import math

from edgeship.devices.kernels import Kernel
from edgeship.targets.onnx_align import PAD_INPUT
from edgeship.targets.onnx_hardswish import MARK as INT8_HARDSWISH
from edgeship.targets.onnx_prelu import MARK as VECTOR_PRELU

FORMATS = ("openvino", "onnx", "tflite")
MIN_SAMPLES = 30  # in-context times of a kernel type for its forest to be fitted on them

# ONNX Runtime's element-wise operators, by their class (``kernels.ELTWISE``), as its counters name them. No copy
# (class 3): the Transposes ONNX Runtime inserts for its own layouts have the shapes of a transpose the file holds.
# A float operator inside an INT8 model runs between a DequantizeLinear and a QuantizeLinear, and one inside a
# float model between the NCHWc layout's ReorderOutput and ReorderInput: that glue, next to it in execution order,
# is its cost too (``GLUE``); a probe of the operator alone, fed by the model's float input, has none of it
ORT_ELTWISE = {"PRelu": 1, "LeakyRelu": 1, "QLinearLeakyRelu": 1, "HardSwish": 1, "HardSigmoid": 1, "Sigmoid": 2,
               "QLinearSigmoid": 2, "Tanh": 2, "Softmax": 4, "QLinearSoftmax": 4}
GLUE = ({"DequantizeLinear", "ReorderOutput"}, {"QuantizeLinear", "ReorderInput"})  # before it, after it
# OpenVINO's: a transpose and a softmax run as layers of their own (a PReLU or sigmoid goes into the layer before)
OV_ELTWISE = {"Transpose": 3, "Softmax": 4, "SoftMax": 4}
ELTWISE_OPS = {"onnx": ORT_ELTWISE, "openvino": OV_ELTWISE}

# each runtime's operator names in its counters, by the kernel types they can be: OpenVINO by prefix (names vary
# between releases and quantized variants), ONNX Runtime after its graph optimizations (QDQ fused to QLinear*, NHWC
# and NCHWc variants, activations fused into FusedConv)
OV_TYPES = (("Convolution", ("conv", "dwconv", "conv1d", "dwconv1d")), ("GroupConvolution", ("dwconv", "dwconv1d")),
            ("Reduce", ("gpool",)),
            ("Pooling", ("pool", "gpool")), ("MaxPool", ("pool",)), ("AvgPool", ("pool", "gpool")),
            ("FullyConnected", ("fc",)), ("MatMul", ("fc",)), ("Eltwise", ("add",)), ("Add", ("add",)),
            *((op, ("eltwise",)) for op in OV_ELTWISE))
ORT_TYPES = {op: ("conv", "dwconv", "conv1d", "dwconv1d") for op in (
    "Conv", "FusedConv", "NhwcFusedConv", "QLinearConv", "NhwcQLinearConv", "ConvInteger")} | \
    {op: ("add",) for op in ("Add", "Sum", "QLinearAdd")} | \
    {op: ("gpool",) for op in ("GlobalAveragePool", "QLinearGlobalAveragePool", "ReduceMean")} | \
    {op: ("fc",) for op in ("Gemm", "FusedGemm", "MatMul", "FusedMatMul", "QGemm", "QLinearMatMul",
                            "MatMulInteger")} | \
    {op: ("pool",) for op in ("MaxPool", "NhwcMaxPool", "AveragePool", "QLinearAveragePool")} | \
    {op: ("eltwise",) for op in ORT_ELTWISE}


# XNNPACK's operator names in LiteRT's profiler (litert_timer), by prefix: it runs a 1x1 stride-1 convolution as a
# fully connected GEMM; a convolution is depthwise when its name ends in DWConv (``Convolution (NHWC, QC8) DWConv``);
# a 1-D convolution (the torch.fx lowering's 1 x k kernel over a height-one map) is the same operator, except a
# depthwise one with a long kernel (21 or 33 taps seen), which XNNPACK may run as a dense IGEMM convolution
XNN_TYPES = (("Global Average Pooling", ("gpool",)), ("Mean", ("gpool",)),
             ("Fully Connected", ("fc", "conv", "conv1d")),
             ("Add", ("add",)), ("Max Pooling", ("pool",)), ("Average Pooling", ("pool",)))


def _kinds(op: str, fmt: str) -> tuple[str, ...]:
    if fmt == "onnx":
        return ORT_TYPES.get(op, ())
    if fmt == "tflite":
        if op.startswith("Convolution"):
            return ("dwconv", "dwconv1d") if op.endswith("DWConv") else ("conv", "conv1d", "dwconv1d")
        return next((kinds for prefix, kinds in XNN_TYPES if op.startswith(prefix)), ())
    return next((kinds for prefix, kinds in OV_TYPES if op.startswith(prefix)), ())


def _tflite_times(ks: list[Kernel], layers: list[dict]) -> list[float | None]:
    """LiteRT's profiler names no shapes: its operators of a kernel type, in execution order, are the kernels, in
    the file's order, one for one (a 1x1 stride-1 convolution may be a fully connected GEMM); any other count or
    order leaves every kernel without a time (the architecture then adds none)."""
    timed = [layer for layer in layers if _kinds(str(layer.get("op", "")), "tflite")]
    at = [i for i, k in enumerate(ks) if k.type != "eltwise"]  # no XNNPACK name is matched to an eltwise kernel
    out: list[float | None] = [None] * len(ks)
    if len(timed) != len(at):
        return out
    for i, layer in zip(at, timed):
        kinds, k = _kinds(str(layer["op"]), "tflite"), ks[i]
        if k.type not in kinds or (k.type in ("conv", "conv1d") and "fc" in kinds and (k.k, k.s) != (1, 1)):
            return [None] * len(ks)
        out[i] = float(layer["us"]) / 1e3
    return out


def _chw(shape: list[int] | None, fmt: str) -> list[tuple[int, int, int]]:
    """(channels, height, width) a layer's tensor may mean: OpenVINO reports NCHW; ONNX Runtime NCHW, NHWC (its
    INT8 kernels) or NCHWc (its float kernels: channels in blocks, the last axis). A 1-D map (N, C, L), or (N, L, C)
    in ONNX Runtime's INT8 kernels, is (C, L, 1): the (length, 1) orientation of a 1-D kernel."""
    if not shape:
        return []
    if len(shape) == 2:
        return [(shape[1], 1, 1)]
    if len(shape) == 3:
        return [(shape[1], shape[2], 1)] + ([(shape[2], shape[1], 1)] if fmt == "onnx" else [])
    if len(shape) == 4:
        return [(shape[1], shape[2], shape[3])] + ([(shape[3], shape[1], shape[2])] if fmt == "onnx" else [])
    if len(shape) == 5 and fmt == "onnx":
        return [(shape[1] * shape[4], shape[2], shape[3])]
    return []


def _channels(c: int, want: int) -> bool:
    """The layer's ``c`` channels are the kernel's ``want``, or them padded to a SIMD block."""
    return c == want or any(c == -(-want // b) * b for b in (4, 8, 16, 32))


def _fits(k: Kernel, layer: dict, fmt: str) -> bool:
    ins, outs = _chw(layer.get("in"), fmt), _chw(layer.get("out"), fmt)
    if not ins or not outs or (k.type == "eltwise" and ELTWISE_OPS[fmt].get(str(layer["op"])) != k.k):
        return False
    if k.type == "fc":
        return any(_channels(c, k.cin) for c, _, _ in ins) and any(_channels(c, k.cout) for c, _, _ in outs)
    fed = any(_channels(c, k.cin) and (h, w) == (k.hin, k.win) for c, h, w in ins)
    if k.type in ("gpool", "pool", "add", "eltwise"):
        return fed
    if fmt == "openvino":  # OpenVINO names its depthwise kernels
        depthwise = "_dw_" in str(layer.get("kernel", "")) or str(layer["op"]).startswith("GroupConvolution")
        if depthwise != (k.type in ("dwconv", "dwconv1d")):
            return False
    return fed and any(_channels(c, k.cout) and (h, w) == (k.hout, k.wout) for c, h, w in outs)


def kernel_times(ks: list[Kernel], layers: list[dict], fmt: str) -> list[float | None]:
    """Each kernel's time inside the model (ms; None: the runtime ran no layer of its own for it). ``layers``:
    the runner's per-layer rows in execution order (``layer_profile``: op, kernel, us, in, out); each is given to
    the first kernel, in the file's order, not yet matched whose type and shapes it fits."""
    if fmt not in FORMATS:
        raise ValueError(f"per-layer counters of {fmt} are not matched to kernels (only {', '.join(FORMATS)})")
    if fmt == "tflite":
        return _tflite_times(ks, layers)
    times: list[float | None] = [None] * len(ks)
    owner: dict[int, dict] = {}
    layers = _stem_pad(_rewritten(layers)) if fmt == "onnx" else layers
    for at, layer in enumerate(layers):
        kinds = _kinds(str(layer.get("op", "")), fmt)
        for i, k in enumerate(ks):
            if times[i] is None and k.type in kinds and _fits(k, layer, fmt):
                times[i] = (float(layer["us"]) + (_glue(layers, at) if k.type == "eltwise" else 0.0)) / 1e3
                owner[i] = layer
                break
    return _by_work(ks, times, owner, fmt)


REWRITES = {VECTOR_PRELU: "PRelu", INT8_HARDSWISH: "HardSigmoid"}  # name mark: the operator rewritten


def _rewritten(layers: list[dict]) -> list[dict]:
    """ONNX Runtime's rows of one operator's rewrite (``onnx_prelu``'s of a PReLU, ``onnx_hardswish``'s of a hard
    swish or hard sigmoid, named with their ``MARK``; the glue between them too) as the one row they replace."""
    out: list[dict] = []
    for layer in layers:
        name = str(layer.get("name", ""))
        mark = next((m for m in REWRITES if m in name), None)
        if mark is None:
            out.append(layer)
            continue
        base, j = name.split(mark)[0] + mark, len(out) - 1
        while j >= 0 and out[j].get("name") != base and out[j].get("op") in GLUE[0] | GLUE[1]:
            j -= 1
        if j >= 0 and out[j].get("name") == base:  # the same operator's row, only glue after it
            out[j] = dict(out[j], us=sum(float(x["us"]) for x in [*out[j:], layer]))
            del out[j + 1:]
        else:
            out.append(dict(layer, op=REWRITES[mark], name=base))
    return out


def _stem_pad(layers: list[dict]) -> list[dict]:
    """ONNX Runtime's row of a stem's input Pad (``onnx_align.pad_stem_input``) added to the next convolution's: the
    kernel reader reads the Pad as part of that convolution, as a one-kernel probe's time holds it."""
    out: list[dict] = []
    pad = 0.0
    for layer in layers:
        if str(layer.get("name", "")).endswith(PAD_INPUT):
            pad += float(layer["us"])
            continue
        if pad and "conv" in ORT_TYPES.get(str(layer.get("op")), ()):
            layer, pad = dict(layer, us=float(layer["us"]) + pad), 0.0
        out.append(layer)
    return out


def _glue(layers: list[dict], at: int) -> float:
    """The time (us) of the layers ``GLUE`` names right before ``layers[at]`` and writing its number of input
    elements, and right after it and reading them."""
    def size(shape: list[int] | None) -> int:
        return math.prod(shape) if shape else -1
    n, us = size(layers[at].get("in")), 0.0
    for j, ops, side in ((at - 1, GLUE[0], "out"), (at + 1, GLUE[1], "in")):
        if 0 <= j < len(layers) and layers[j].get("op") in ops and size(layers[j].get(side)) == n:
            us += float(layers[j]["us"])
    return us


def _by_work(ks: list[Kernel], times: list[float | None], owner: dict[int, dict], fmt: str) -> list[float | None]:
    """Kernels of a type whose layers could be swapped (each fits the other's shapes) take those layers' times in the
    order of their work: the larger time to the kernel of more MACs. Shapes alone cannot tell a residual block's 1x1
    shortcut from its 3x3 convolution of the same input and output, and the runtime need not run them in the
    file's order (ONNX Runtime ran the 3x3 first, so order gave it the shortcut's time: its in-context forest
    under-predicted 3x3 convolutions by a median 7-8 %: refit_in_context_order.json)."""
    def fits(i: int, j: int) -> bool:  # kernel i could have run as the layer kernel j was given (same type: a
        # depthwise convolution is slower than its MACs say, and one of the same shapes as a 1x1 follows it in order)
        return ks[i].type == ks[j].type and _fits(ks[i], owner[j], fmt)

    group = {i: i for i in owner}  # union-find over swappable pairs
    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i
    matched = sorted(owner)
    for n, i in enumerate(matched):
        for j in matched[n + 1:]:
            if root(i) != root(j) and fits(i, j) and fits(j, i):
                group[root(j)] = root(i)
    out = list(times)
    members: dict[int, list[int]] = {}
    for i in matched:
        members.setdefault(root(i), []).append(i)
    for g in members.values():
        if len(g) > 1:
            ranked = sorted(times[i] or 0.0 for i in g)
            for i, t in zip(sorted(g, key=lambda i: (ks[i].macs, times[i] or 0.0, i)), ranked):
                out[i] = t
    return out


# runtimes whose profiler adds its own cost to every layer it times: ONNX Runtime records timestamps and an event per
# operator, so a calibration's layer times of an architecture sum to more than its p50 timed without the profiler.
# Where that excess is one steady cost per layer (``profiler_cost_ms``), each layer's time is taken net of it:
# otherwise a small layer counts that cost as its own, and models of small layers were over-predicted, which the
# correction's per-kernel term fits only on average. Where the excess is not steady (it is then not the profiler's
# alone), the times are taken as counted. The cost is read off the smaller half of the fitting architectures by p50:
# the profiled run and the p50 are timed apart, and their difference carries noise in proportion to a model's time,
# which over a large model's few layers outweighs a cost of 1-4 us each (p39's ONNX Runtime FP32 data set at one
# thread: 10th-90th percentile 0.69-1.59 us per layer over the smaller half, -1.28 to +16.8 us over the larger).
# refit_net_of_profiler_smaller_half.json holds the excess per layer of every kept calibration and the evaluation of
# each way
NET_OF_PROFILER = ("onnx",)
FLOOR = 0.2  # a layer's time net of that cost is at least this fraction of its counted time
STEADY = (0.5, 1.5)  # steady: 9 in 10 of the smaller half's excesses per layer within these multiples of its median


def overhead_ms(a: dict) -> float:
    """The excess per layer of architecture ``a`` (ms): its layers' summed times less its p50 timed without the
    profiler, over its layer count (may be negative)."""
    layers = a.get("layers") or []
    return (sum(float(x["us"]) for x in layers) / 1e3 - a["p50_ms"]) / len(layers) if layers else 0.0


def profiler_cost_ms(archs: list[dict]) -> float | None:
    """The profiler's cost per layer over the architectures with counters (ms): the median excess per layer of the
    smaller half of them by p50, where it is one steady cost (its 10th and 90th percentiles there within ``STEADY``
    of the median, the median above 0, at least 10 architectures in that half); else None."""
    by_time = sorted((a for a in archs if a.get("layers")), key=lambda a: a["p50_ms"])
    added = sorted(overhead_ms(a) for a in by_time[: len(by_time) // 2])
    n = len(added)
    if n < 10:
        return None
    median = added[n // 2]
    steady = median > 0 and STEADY[0] * median <= added[n // 10] and added[n - 1 - n // 10] <= STEADY[1] * median
    return median if steady else None


def samples(archs: list[dict], kind: str, fmt: str) -> tuple[list[Kernel], list[float]]:
    """The in-context times of one kernel type over a calibration's architectures (those with ``layers``), net of
    what the runtime's profiler added to each layer where that is steady (``NET_OF_PROFILER``)."""
    ks, ms = [], []
    added = (profiler_cost_ms(archs) if fmt in NET_OF_PROFILER else None) or 0.0
    for a in archs:
        if not a.get("layers"):
            continue
        arch_ks = [Kernel(**x) for x in a["kernels"]]
        for k, t in zip(arch_ks, kernel_times(arch_ks, a["layers"], fmt)):
            if k.type == kind and t is not None and t > 0:
                ks.append(k)
                ms.append(max(t - added, FLOOR * t))
    return ks, ms
