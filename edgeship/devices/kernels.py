"""An artifact's graph as the runtime runs it: a list of kernels (the unit a latency predictor works on).

As in nn-Meter (Zhang et al., MobiSys 2021), a runtime does not run a model operator by operator: it fuses a
convolution with its batch norm and activation (in INT8 graphs with the Q/DQ pairs around it too) into one kernel.
``kernels(artifact)`` reads the artifact's own file, drops what the runtimes fuse away or that costs nothing
(activations, batch norms folded into the convolution, Q/DQ and FakeQuantize pairs, reshapes, constants), folds
TFLite's explicit PAD and a stem's channel Pad (``onnx_align.pad_stem_input``) into the convolution that follows it,
and returns one ``Kernel`` per remaining unit of work (a convolution with the activation it fused, ``Kernel.act``):

    conv    a dense convolution (any kernel size and stride; + bias, batch norm, activation)
    dwconv  a depthwise convolution (groups == channels)
    add     an element-wise residual add
    gpool   a global average pool (also ONNX ReduceMean and TFLite MEAN over H, W)
    pool    a windowed max or average pool
    fc      a fully connected layer (Gemm, MatMul, FULLY_CONNECTED)
    eltwise an unfused operator over one activation tensor, its class in ``k`` (``ELTWISE``); (N, C) is 1 x 1 x C
    conv1d, dwconv1d  a dense or depthwise 1-D convolution over a sequence of ``hin`` steps (``win`` 1, ``k`` taps): a
            torch Conv1d (a 3-D graph tensor), or a 2-D one whose kernel and input are one wide (CREPE's 512x1
            kernels over 1024x1 audio; TFLite writes a Conv1d so)

Only light parsers are used: ONNX through the ``onnx`` package (shape inference), OpenVINO IR as plain XML
(no runtime), TFLite through the interpreter's op list. Shapes are NCHW whatever the format's layout.

``read(artifact)`` also returns what the kernels leave out: every operator that is neither one of them, nor fused
or free (``FREE``: activations the runtimes fuse, quantize/dequantize, reshapes), nor computed from constants alone
(weight decompression, shape arithmetic). A user's model brings such operators (resizing, k x 1 kernels over an
image, recurrent cells, attention); the predictor's error was measured without them, so a prediction of a graph
that holds them does not back a budget (``devices.budgets``).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from edgeship.errors import EdgeshipError
from edgeship.targets.onnx_align import PAD_INPUT
from edgeship.targets.onnx_hardswish import MARK as INT8_HARDSWISH
from edgeship.targets.onnx_prelu import MARK as VECTOR_PRELU

KERNEL_TYPES = ("conv", "dwconv", "add", "gpool", "pool", "fc", "conv1d", "dwconv1d", "eltwise")
ONE_D = ("conv1d", "dwconv1d")  # the 1-D convolutions
CONVS = {"onnx": ("Conv", "ConvInteger", "QLinearConv"), "openvino": ("Convolution", "GroupConvolution"),
         "tflite": ("CONV_2D", "DEPTHWISE_CONV_2D")}
# operators a runtime fuses into the kernel before them or that move no data (per format)
FREE = {"onnx": {"QuantizeLinear", "DequantizeLinear", "Relu", "Clip", "Identity", "Flatten", "Reshape", "Squeeze",
             "Unsqueeze", "Constant", "Shape", "BatchNormalization"},
    "openvino": {"Parameter", "Result", "Const", "Convert", "FakeQuantize", "ReLU", "Relu", "Clamp", "Reshape",
                 "Squeeze", "Unsqueeze", "ShapeOf"},
    "tflite": {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "PAD", "PADV2", "RELU", "RELU6", "EXPAND_DIMS"},
}
# ``eltwise`` operators and their class (``Kernel.k``): 1 arithmetic (TFLite's MUL and SUB: how litert-torch writes a
# PReLU), 2 sigmoid, tanh, 3 copies, 4 softmax. A TFLite tensor reads as NHWC (if the lowering kept NCHW: same size)
ELTWISE = {"onnx": {"PRelu": 1, "LeakyRelu": 1, "HardSwish": 1, "HardSigmoid": 1, "Sigmoid": 2, "Tanh": 2,
                    "Softmax": 4, "Transpose": 3, "Pad": 3, "Concat": 3},
           "openvino": {"PReLU": 1, "HSwish": 1, "HSigmoid": 1, "Sigmoid": 2, "Tanh": 2, "SoftMax": 4, "Softmax": 4,
                        "Transpose": 3, "Pad": 3, "Concat": 3},
           "tflite": {"PRELU": 1, "LEAKY_RELU": 1, "HARD_SWISH": 1, "MUL": 1, "SUB": 1, "LOGISTIC": 2, "TANH": 2,
                      "SOFTMAX": 4, "TRANSPOSE": 3, "CONCATENATION": 3}}
# what lies between a convolution and its activation and is folded into the convolution (``Kernel.act``)
ONNX_PASSES = {"BatchNormalization", "QuantizeLinear", "DequantizeLinear", "Identity"}
OV_PASSES = {"Add+const", "Multiply+const", "FakeQuantize", "Convert"}
FLOAT_SOFTMAX_MAP = "SOFTMAX (float, over a map)"  # named whatever a validation held: its cost follows its size
ALIGN = (4, 8, 16, 32, 64)  # channel blocks a SIMD kernel may pad to (int8 dot products take 4, AVX-512 16 floats)
FEATURES = ("hin", "win", "cin", "cout", "k", "s", "log_macs", "log_in", "log_out", "log_weights", "log_reduction",
            "log_out_pixels", *(f"{c}_pad{m}" for c in ("cin", "cout") for m in ALIGN), "wout", "wout_pad8", "act")
# a convolution's activation, as the graph holds it after the convolution: none (a linear projection), ReLU, or a
# bounded clip (ReLU6). ONNX Runtime's float NCHWc convolution applies a Clip in a pass of its own over the output:
# a 16 -> 96 1x1 convolution at 112x112 measured 0.207 ms with ReLU and 0.366 ms with ReLU6 (one thread)
ACTS = {"none": 0, "relu": 1, "relu6": 2}


@dataclass(frozen=True)
class Kernel:
    type: str
    hin: int = 1
    win: int = 1
    cin: int = 1
    cout: int = 1
    k: int = 1
    s: int = 1
    act: int = 0  # ACTS (convolutions only)
    # 1: the input is quantized to SIGNED int8 (an OpenVINO IR whose FakeQuantize before the convolution reaches
    # below 0: NNCF's range for an input no ReLU bounded). Inside a model such a convolution took a median 1.25x the
    # time the probes' forest gives it, an unsigned one 0.64x (ov_signed_input.json, AMX host); a probe cannot
    # show it (its input is always the model's), so it is no forest feature: the correction weighs these kernels on
    # their own (predictor.GROUPS)
    sin: int = 0

    @property
    def hout(self) -> int:
        return max(1, math.ceil(self.hin / self.s)) if self.type not in ("gpool", "fc") else 1

    @property
    def wout(self) -> int:
        return max(1, math.ceil(self.win / self.s)) if self.type not in ("gpool", "fc") else 1

    @property
    def taps(self) -> int:
        """Weights per output channel and input channel: k x k, or k for a 1-D convolution."""
        return self.k if self.type in ONE_D else self.k * self.k

    @property
    def macs(self) -> int:
        out = self.hout * self.wout
        if self.type in ("conv", "conv1d"):
            return out * self.cout * self.cin * self.taps
        if self.type in ("dwconv", "dwconv1d"):
            return out * self.cout * self.taps
        if self.type == "fc":
            return self.cin * self.cout
        if self.type == "pool":
            return out * self.cout * self.k * self.k
        return self.hin * self.win * self.cin  # add, gpool: one operation per input element

    @property
    def weights(self) -> int:
        if self.type in ("fc", "conv", "conv1d"):
            return self.cout * self.cin * (1 if self.type == "fc" else self.taps)
        return self.cout * self.taps if self.type in ("dwconv", "dwconv1d") else 0

    @property
    def traffic(self) -> int:
        """Elements read and written: input, output and weights."""
        return self.hin * self.win * self.cin * (2 if self.type == "add" else 1) + \
            self.hout * self.wout * self.cout + self.weights

    def features(self) -> list[float]:
        """The regressor's inputs (``FEATURES``): the configuration, and the work and traffic it implies."""
        return [float(self.hin), float(self.win), float(self.cin), float(self.cout), float(self.k), float(self.s),
                math.log(self.macs + 1), math.log(self.hin * self.win * self.cin + 1),
                math.log(self.hout * self.wout * self.cout + 1), math.log(self.weights + 1),
                math.log(self.taps * (self.cin if self.type in ("conv", "conv1d") else 1)),
                math.log(self.hout * self.wout),
                # padding: the work a kernel does on channels and columns rounded up to its block, over the real work
                # (an INT8 depthwise kernel's time follows these more than its MACs: 10-fold CV MAPE 22 % -> 10 %)
                *(_pad(c, m) for c in (self.cin, self.cout) for m in ALIGN), float(self.wout), _pad(self.wout, 8),
                float(self.act)]

    def to_dict(self) -> dict:
        return asdict(self)


def _pad(n: int, block: int) -> float:
    return math.ceil(n / block) * block / max(1, n)


def kernels(path: Path | str, fmt: str) -> list[Kernel]:
    """The kernels of the artifact file at ``path`` (``fmt``: onnx, openvino or tflite)."""
    return read(path, fmt)[0]


def read(path: Path | str, fmt: str) -> tuple[list[Kernel], dict[str, int]]:
    """The kernels of the artifact file at ``path`` (``fmt``), and the operators no kernel models, counted."""
    path = Path(path)
    parsers = {"onnx": _onnx, "openvino": _openvino, "tflite": _tflite}
    if fmt not in parsers:
        raise EdgeshipError(f"no kernel parser for format {fmt!r}", f"use one of {', '.join(parsers)}")
    try:
        return parsers[fmt](path)
    except EdgeshipError:
        raise
    except Exception as e:  # a graph this reader does not know: one line, naming the file
        raise EdgeshipError(f"cannot read the kernels of {path} ({type(e).__name__}: {e})",
                            "the latency predictor reads edgeship's own artifacts; export the target again") from None


def _conv(hin: int, win: int, cin: int, cout: int, k: int, hout: int, groups: int, act: int = 0,
          one_d: bool = False) -> Kernel:
    s = max(1, round(hin / max(1, hout)))
    kind = "dwconv" if groups > 1 and groups == cin == cout else "conv"
    return Kernel(f"{kind}1d" if one_d else kind, hin, win, cin, cout, k, s, act)


def _conv_of(skipped: dict[str, int], op: str, spatial_in: list[int], spatial_out: list[int], kernel: list[int],
             cin: int, cout: int, groups: int, act: int) -> list[Kernel]:
    """A convolution's kernel (a one-item list) from its input's, output's and kernel's spatial sizes (one or two of
    each): a 1-D one (a 1-D tensor, or a 2-D one whose kernel and input are both one wide along the same axis, as
    CREPE's 512x1 kernels over 1024x1 audio and TFLite's rewrite of a Conv1d are) or a 2-D one with a square kernel;
    any other (a k x 1 kernel over an image: no probe sampled one) is counted in ``skipped`` as left out, named by
    its kernel, and gives no kernel."""
    conv = _conv_shape(spatial_in, spatial_out, kernel, cin, cout, groups, act)
    if conv is None:
        _count(skipped, f"{op} ({'x'.join(str(v) for v in kernel)} kernel)")
    return [conv] if conv is not None else []


def _conv_shape(spatial_in: list[int], spatial_out: list[int], kernel: list[int], cin: int, cout: int, groups: int,
                act: int) -> Kernel | None:
    if len(spatial_in) == 1 and len(kernel) == 1:
        return _conv(spatial_in[0], 1, cin, cout, kernel[0], spatial_out[0], groups, act, one_d=True)
    if len(spatial_in) != 2 or len(kernel) != 2:
        return None
    (h, w), (kh, kw) = spatial_in, kernel
    if w == 1 and kw == 1 and h > 1:
        return _conv(h, 1, cin, cout, kh, spatial_out[0], groups, act, one_d=True)
    if h == 1 and kh == 1 and w > 1:
        return _conv(w, 1, cin, cout, kw, spatial_out[-1], groups, act, one_d=True)
    return _conv(h, w, cin, cout, kh, spatial_out[0], groups, act) if kh == kw else None


def _activation(start: str, consumers: dict[str, list[tuple[str, str]]], passes: set[str],
                acts: dict[str, int]) -> int:
    """``ACTS`` of the activation that follows ``start`` alone, through what a runtime folds into a convolution
    (``passes``: a bias, batch norm, Q/DQ pair); ``consumers`` maps an output to its (consumer output, type) pairs."""
    name = start
    for _ in range(6):
        after = consumers.get(name, [])
        if len(after) != 1:
            return 0
        name, kind = after[0]
        if kind in acts:
            return acts[kind]
        if kind not in passes:
            return 0
    return 0


# ---------------------------------------------------------------- ONNX (FP32 and QDQ INT8)
def _onnx(path: Path) -> tuple[list[Kernel], dict[str, int]]:
    import onnx  # a protobuf parser: only reading an ONNX artifact needs it
    from onnx import numpy_helper

    model = _shaped(onnx.load(str(path), load_external_data=False))
    g = model.graph
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim]
              for v in [*g.input, *g.value_info, *g.output]}
    inits = {t.name: list(t.dims) for t in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[tuple[str, str]]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append((n.output[0] if n.output else "", n.op_type))
    static = set(inits) | {""}  # computed from constants alone (folded by the runtime)
    # tensors quantized to a one-sided range (zero point at the type's minimum): the quantizer folded the ReLU or
    # ReLU6 that produced them into the range, which the runtime's INT8 convolution still runs as a rectified one
    # (a 16 -> 96 1x1 QLinearConv at 112x112: 0.152 ms with ReLU, 0.108 ms without, one thread)
    quants = [q for q in g.node if q.op_type == "QuantizeLinear" and len(q.input) > 2]
    zero_points = {t.name: numpy_helper.to_array(t) for t in g.initializer if t.name in {q.input[2] for q in quants}}
    one_sided = {q.input[0] for q in quants
                 if q.input[2] in zero_points and _at_type_min(zero_points[q.input[2]], zero_points[q.input[2]].dtype)}

    def weight_shape(name: str) -> list[int]:  # through DequantizeLinear / Identity to the initializer
        seen = 0
        while name not in inits and name in producers and seen < 4:
            name, seen = producers[name].input[0], seen + 1
        return inits.get(name) or shapes.get(name) or []

    out: list[Kernel] = []
    skipped: dict[str, int] = {}
    for n, op in ((n, n.op_type) for n in g.node):
        rewrite = VECTOR_PRELU in n.name or INT8_HARDSWISH in n.name  # onnx_prelu's, onnx_hardswish's: its Add
        if rewrite or n.name.endswith(PAD_INPUT) or op in ("Constant", "Shape") or all(i in static for i in n.input):
            out += [_eltwise(shapes.get(n.input[0], []), 1)] if rewrite and n.name.endswith("/add") else []
            static.update(n.output if not rewrite and not n.name.endswith(PAD_INPUT) else [])
            continue
        x = _unpadded(n.input[0], producers, shapes) if op in CONVS["onnx"] else \
            shapes.get(n.input[0], []) if n.input else []
        y = shapes.get(n.output[0], []) if n.output else []
        w = weight_shape(n.input[3] if op == "QLinearConv" else n.input[1]) if op in CONVS["onnx"] else []
        if op in CONVS["onnx"] and len(x) in (3, 4):
            act = _activation(n.output[0], consumers, ONNX_PASSES, {"Relu": ACTS["relu"], "Clip": ACTS["relu6"]})
            out += _conv_of(skipped, op, x[2:], y[2:], w[2:], x[1], w[0],
                            next((a.i for a in n.attribute if a.name == "group"), 1),
                            act or (ACTS["relu"] if n.output[0] in one_sided else 0))
        elif op in ("Add", "Sum") and len(x) in (3, 4) and not any(i in static for i in n.input):
            out.append(Kernel("add", *_hw(x[2:]), x[1], x[1]))
        elif (op in ("GlobalAveragePool", "GlobalMaxPool") or op == "ReduceMean") and len(x) in (3, 4):
            out.append(Kernel("gpool", *_hw(x[2:]), x[1], x[1]))
        elif op in ("MaxPool", "AveragePool") and len(x) in (3, 4):
            k = max(next((list(a.ints) for a in n.attribute if a.name == "kernel_shape"), [1]))
            out.append(_pool(x, y, k))
        elif op in ("Gemm", "MatMul") and n.input[1] in static:
            w = weight_shape(n.input[1])
            trans_b = next((a.i for a in n.attribute if a.name == "transB"), 0)
            cin, cout = (w[1], w[0]) if trans_b else (w[0], w[-1])
            out.append(Kernel("fc", cin=cin, cout=cout))
        elif op in ELTWISE["onnx"] and len(x) in (2, 3, 4):
            out.append(_eltwise(y if op == "Concat" else x, ELTWISE["onnx"][op]))
        elif op not in FREE["onnx"] and not (op == "Add" and any(i in static for i in n.input)):  # Add: a bias
            _count(skipped, op if len(x) in (0, 4) else f"{op} ({len(x)}-D)")
    return out, skipped


def _unpadded(name: str, producers: dict, shapes: dict[str, list[int]]) -> list[int]:
    """An ONNX convolution input's shape before an explicit Pad (through a Q/DQ pair): the padded convolution it is
    (CREPE's 512-tap stride 4 over 1024 samples, not stride 6 over 1532); the Pad is a copy kernel of its own."""
    at = name
    for _ in range(4):
        n = producers.get(at)
        if n is not None and n.op_type == "Pad":
            return shapes.get(n.input[0]) or shapes.get(name, [])
        if n is None or n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            break
        at = n.input[0]
    return shapes.get(name, [])


def _shaped(model):
    """``model`` with its tensors' shapes inferred: by ONNX's own inference, or, where that leaves a convolution's
    input unknown, by ONNX Runtime's symbolic inference, which folds shape arithmetic (torch's exporter writes an
    explicit ``F.pad`` as a Pad whose pads are computed: CREPE's six convolutions had no input shape)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    dims = {v.name: v.type.tensor_type.shape.dim for v in [*g.input, *g.value_info, *g.output]}
    known = {name for name, d in dims.items() if len(d) > 1 and all(x.dim_value > 0 for x in d[1:])}
    if all(n.input[0] in known for n in g.node if n.op_type in CONVS["onnx"]):
        return inferred
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # no ONNX Runtime, or a graph its inference refuses: the shapes ONNX's own inference found
        return inferred


def _pool(x: list[int], y: list[int], k: int) -> Kernel:
    """A pooling's kernel from its (N, C, spatial...) input and output shapes: a 1-D one (over a sequence, N C L)
    in the (length, 1) orientation of the other readers, its stride along the length."""
    return Kernel("pool", *_hw(x[2:]), x[1], x[1], k, max(1, round(x[2] / max(1, y[2] if len(y) > 2 else 1))))


def _eltwise(x: list[int], cls: int) -> Kernel:
    """An ``eltwise`` kernel of class ``cls`` over a (N, C, spatial...) tensor: (N, C) is 1 x 1 x C."""
    return Kernel("eltwise", *_hw(x[2:] or [1]), x[1] if len(x) > 1 else 1, x[1] if len(x) > 1 else 1, cls)


def _hw(spatial: list[int]) -> tuple[int, int]:
    """(height, width) of a feature map's spatial sizes: a sequence of length L is L x 1."""
    return (spatial[0], spatial[1]) if len(spatial) == 2 else (spatial[0], 1)


def _count(skipped: dict[str, int], op: str) -> None:
    skipped[op] = skipped.get(op, 0) + 1  # an operator no kernel models, by name


def ops_text(ops: dict[str, int]) -> str:
    """``{"PRelu": 4, "Concat": 1}`` as "PRelu x4, Concat x1" (most frequent first)."""
    return ", ".join(f"{op} x{n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


# ---------------------------------------------------------------- OpenVINO IR (read as XML)
def _dims(port: ET.Element) -> list[int]:
    return [max(1, int(d.text or 1)) for d in port.iter("dim")]


class _OvGraph:
    """An IR's edges: which layers feed which, which are computed from constants alone (weight decompression, shape
    arithmetic: folded by the runtime), and each layer's consumers (a bias, an Add or Multiply of a constant,
    spelled ``Add+const``: a convolution folds it)."""

    def __init__(self, root: ET.Element):
        layers = list(root.iter("layer"))
        self.sources: dict[str, set[str]] = {}  # layer id -> the layers feeding it
        for e in root.iter("edge"):
            self.sources.setdefault(e.get("to-layer", ""), set()).add(e.get("from-layer", ""))
        static = {la.get("id", "") for la in layers if la.get("type") in ("Const", "ShapeOf")}  # a dynamic batch's
        grew = True
        while grew:
            new = {la.get("id", "") for la in layers if la.get("id") not in static and la.get("type") != "Parameter"
                   and self.sources.get(la.get("id", "")) and self.sources[la.get("id", "")] <= static}
            static |= new
            grew = bool(new)
        self.static = static
        self.kinds = {la.get("id", ""): la.get("type") or "?" for la in layers}
        self.layers = {la.get("id", ""): la for la in layers}
        self.feeding = {(e.get("to-layer", ""), e.get("to-port", "")): e.get("from-layer", "")
                        for e in root.iter("edge")}  # (layer, input port) -> the layer feeding it
        self.blob: np.ndarray | None = None  # the IR's .bin, mapped when a constant is first read
        self.consumers: dict[str, list[tuple[str, str]]] = {}
        for to, froms in self.sources.items():
            kind = self.kinds.get(to, "?")
            kind = f"{kind}+const" if kind in ("Add", "Multiply") and froms & static else kind
            for f in froms - static:
                self.consumers.setdefault(f, []).append((to, kind))

    def act(self, at: str) -> int:
        return _activation(at, self.consumers, OV_PASSES, {"ReLU": ACTS["relu"], "Relu": ACTS["relu"],
                                                           "PReLU": ACTS["relu"], "Clamp": ACTS["relu6"]})

    def signed_input(self, at: str, weights: Path) -> int:
        """1 when the layer's data input comes through a FakeQuantize whose output range reaches below 0 (the
        runtime then feeds the layer signed int8), else 0."""
        ports = [p.get("id", "") for p in self.layers[at].find("input").iter("port")]  # type: ignore[union-attr]
        fq = self.feeding.get((at, ports[0]), "")
        if self.kinds.get(fq) != "FakeQuantize":
            return 0
        fq_ports = [p.get("id", "") for p in self.layers[fq].find("input").iter("port")]  # type: ignore[union-attr]
        low = self.feeding.get((fq, fq_ports[3]), "")
        while self.kinds.get(low) == "Convert":
            low = self.feeding.get((low, "0"), "")
        data = self.layers[low].find("data") if self.kinds.get(low) == "Const" else None
        dtype = {"f32": "<f4", "f16": "<f2"}.get(data.get("element_type", "") if data is not None else "")
        if data is None or dtype is None or not weights.is_file():
            return 0
        if self.blob is None:  # mapped once per IR, not opened per convolution
            self.blob = np.memmap(weights, dtype=np.uint8, mode="r")
        start = int(data.get("offset", 0))
        values = self.blob[start:start + int(data.get("size", 0))].view(dtype)
        return int(bool((values < 0).any()))

    def fused_prelu(self, at: str) -> bool:
        """Whether a PReLU follows a convolution or fully connected layer alone: OpenVINO's CPU plugin runs it as
        that layer's post-op (no PReLU node in its compiled model), so it is that kernel's activation."""
        for _ in range(4):
            feeding = self.sources.get(at, set()) - self.static
            if len(feeding) != 1:
                return False
            at = next(iter(feeding))
            if self.kinds.get(at) in (*CONVS["openvino"], "MatMul"):
                return len(self.consumers.get(at, [])) == 1
            if self.kinds.get(at) not in ("Add", "Multiply", "FakeQuantize", "Convert"):
                return False
        return False


def _openvino(path: Path) -> tuple[list[Kernel], dict[str, int]]:
    root = ET.parse(path).getroot()
    layers = list(root.iter("layer"))
    graph = _OvGraph(root)
    sources, static = graph.sources, graph.static
    out: list[Kernel] = []
    skipped: dict[str, int] = {}
    for layer in layers:
        kind, at = layer.get("type") or "?", layer.get("id", "")
        ins = [_dims(p) for p in layer.find("input").iter("port")] if layer.find("input") is not None else []
        outs = [_dims(p) for p in layer.find("output").iter("port")] if layer.find("output") is not None else []
        if at in static or kind in FREE["openvino"] or (kind == "PReLU" and graph.fused_prelu(at)):
            continue
        x, y = (ins or [[]])[0], (outs or [[]])[0]
        with_const = bool(sources.get(at, set()) & static)
        w = ins[1] if kind in CONVS["openvino"] else []
        if kind in CONVS["openvino"] and len(x) in (3, 4):
            # w: [cout, cin, *kernel]; grouped: [groups, cout/groups, cin/groups, *kernel]
            grouped, taps = kind == "GroupConvolution", w[len(w) - len(x) + 2:]
            out += [replace(conv, sin=graph.signed_input(at, path.with_suffix(".bin"))) for conv in _conv_of(
                skipped, kind, x[2:], y[2:], taps, x[1], w[0] * w[1] if grouped else w[0], w[0] if grouped else 1,
                graph.act(at))]
        elif kind == "Add" and len(ins) == 2 and ins[0] == ins[1] and len(x) in (3, 4) and not with_const:
            out.append(Kernel("add", *_hw(x[2:]), x[1], x[1]))
        elif kind == "ReduceMean" and len(x) in (3, 4):
            out.append(Kernel("gpool", *_hw(x[2:]), x[1], x[1]))
        elif kind in ("MaxPool", "AvgPool") and len(x) in (3, 4):
            data = layer.find("data")
            out.append(_pool(x, y, max(int(v) for v in (data.get("kernel") if data is not None else "1").split(","))))
        elif kind == "MatMul" and len(ins) == 2 and with_const:
            data = layer.find("data")
            w = ins[1]
            trans_b = data is not None and data.get("transpose_b") == "true"
            out.append(Kernel("fc", cin=w[-1] if trans_b else w[0], cout=w[0] if trans_b else w[-1]))
        elif kind in ELTWISE["openvino"] and len(x) in (2, 3, 4):
            out.append(_eltwise(y if kind == "Concat" else x, ELTWISE["openvino"][kind]))
        elif not (kind == "Add" and with_const):  # an Add of a constant: the bias the layer before fuses
            _count(skipped, kind if len(x) in (0, 4) else f"{kind} ({len(x)}-D)")
    return out, skipped


# ---------------------------------------------------------------- TFLite (the interpreter's op list)
def _tflite(path: Path) -> tuple[list[Kernel], dict[str, int]]:
    try:  # the maintained interpreter, else its old name: only reading a TFLite artifact needs one
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the pinned set has ai-edge-litert
        from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
    it = Interpreter(model_path=str(path))
    details = it.get_tensor_details()
    shapes = {t["index"]: [int(d) for d in t["shape"]] for t in details}
    one_sided = {t["index"] for t in details if _one_sided(t)}  # as in the ONNX reader: a folded ReLU/ReLU6
    floats = {t["index"] for t in details if t["dtype"] == np.float32} if any(  # of a quantized file
        t["dtype"] == np.int8 for t in details) else set()
    out: list[Kernel] = []
    skipped: dict[str, int] = {}
    padded: dict[int, list[int]] = {}  # PAD's output tensor -> its input shape (NHWC): folded into the conv
    ops = it._get_ops_details()
    produced = {o for op in ops for o in op["outputs"]}  # a tensor no op produces is an input or a constant
    produced |= {d["index"] for d in it.get_input_details()}  # what a constant is not
    for op in ops:
        name, ins, outs = op["op_name"], list(op["inputs"]), list(op["outputs"])
        x = shapes.get(ins[0], []) if ins else []
        y = shapes.get(outs[0], []) if outs else []
        if name in ("PAD", "PADV2") and len(x) == 4:
            padded[outs[0]] = padded.get(ins[0], x)
            continue
        if ins and ins[0] in padded:
            x = padded[ins[0]]
        w = shapes[ins[1]] if name in CONVS["tflite"] else []  # [cout, kh, kw, cin]; depthwise [1, kh, kw, c]
        # a float file's fused activation lives in the op's options, which this op list does not show (XNNPACK
        # clamps in the convolution's own output loop); an INT8 file's shows as the output's one-sided range
        act = ACTS["relu"] if outs and outs[0] in one_sided else 0
        if name in CONVS["tflite"] and len(x) == 4:
            cout = w[0] if name == "CONV_2D" else w[3]
            out += _conv_of(skipped, name, x[1:3], y[1:3], w[1:3], x[3], cout, 1 if name == "CONV_2D" else w[3], act)
        elif name == "ADD" and len(x) in (3, 4) and shapes.get(ins[1]) == x:
            # litert-torch keeps a 1-D model's torch layout (batch, channels, length) between its convolutions
            out.append(Kernel("add", *_signal(x[1], x[2]), x[3], x[3]) if len(x) == 4 else
                       Kernel("add", x[2], 1, x[1], x[1]))
        elif name == "MEAN" and len(x) in (3, 4) and (pool := _tflite_mean(x, y)) is not None:
            out.append(pool)
        elif name in ("MAX_POOL_2D", "AVERAGE_POOL_2D") and len(x) == 4:
            h, w = _signal(x[1], x[2])  # a 1-D pool (a height-one map): its window runs along the length
            k = max(1, round(h / max(1, y[1] if x[1] > 1 else y[2])))
            out.append(Kernel("pool", h, w, x[3], x[3], k, k))
        elif name == "FULLY_CONNECTED":
            w = shapes[ins[1]]  # [cout, cin]
            out.append(Kernel("fc", cin=w[1], cout=w[0]))
        elif name == "SOFTMAX" and len(x) == 4 and x[1] * x[2] > 1 and ins[0] in floats:  # in XNNPACK's float
            _count(skipped, FLOAT_SOFTMAX_MAP)  # kernel, no int8 probe's: MTCNN P-Net's (notes.md)
        elif name in ELTWISE["tflite"] and len(y) in (2, 3, 4) and any(i in produced for i in ins):
            # NHWC, or the torch layout (N, C, L) litert-torch keeps for a 1-D model; a MUL's activation input
            x = y if name == "CONCATENATION" else shapes[next(i for i in ins if i in produced)]
            nchw = [x[0], x[3], *_signal(x[1], x[2])] if len(x) == 4 else x
            out.append(_eltwise(nchw, ELTWISE["tflite"][name]))
        elif name not in FREE["tflite"] and not (name == "ADD" and ins[1] not in produced):  # ADD of a constant
            _count(skipped, name if len(x) in (0, 4) else f"{name} ({len(x)}-D)")
    return out, skipped


def _tflite_mean(x: list[int], y: list[int]) -> Kernel | None:
    """A MEAN over a feature map's spatial axes: NHWC (the lowering's and TFLite's own layout), or the torch layout
    (batch, channels, spatial...) litert-torch keeps for a 1-D model; None for a mean over anything else."""
    c = math.prod(y[1:]) if len(y) > 1 else 1
    if len(x) == 4 and c == x[3]:
        return Kernel("gpool", *_signal(x[1], x[2]), x[3], x[3])
    if c == x[1]:
        return Kernel("gpool", *_hw([d for d in x[2:] if d > 1] or [1]), c, c)
    return None


def _signal(h: int, w: int) -> tuple[int, int]:
    """A TFLite NHWC map's (height, width), a 1-D model's height-one map (the torch.fx lowering's layout of a signal)
    as (length, 1): the orientation every reader gives a 1-D kernel."""
    return (w, 1) if h == 1 and w > 1 else (h, w)


def _one_sided(tensor: dict) -> bool:
    """Whether a TFLite tensor's zero points all sit at its integer type's minimum (a range starting at 0)."""
    return _at_type_min(np.asarray(tensor.get("quantization_parameters", {}).get("zero_points", [])), tensor["dtype"])


def _at_type_min(zero_points, dtype) -> bool:
    """Whether zero points (a numpy array) all sit at the minimum of the integer type ``dtype``: the quantizer folded
    a ReLU or ReLU6 into the range (shared by the ONNX and TFLite readers)."""

    kind = np.dtype(dtype)
    return bool(zero_points.size) and kind.kind in "iu" and bool((zero_points == np.iinfo(kind).min).all())
