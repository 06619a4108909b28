"""`qat`: quantization-aware training with fake quantization that every backend lowers to INT8.

What the pass does to the model (a ``torch.fx`` rewrite, so residual adds and concatenations
work without model changes):

1. batch norm is folded into the preceding conv/linear (``torch.fx.experimental.optimization.fuse``);
2. every ``nn.Conv2d``/``nn.Linear`` becomes ``QConv2d``/``QLinear``: per-channel symmetric int8
   weights (zero point 0) using 7 of their 8 bits (scale = max|w| / 64 per output channel, values in
   [-64, 64]), except depthwise convolutions (max|w| / 127, values in [-127, 127]). x86 CPUs without
   VNNI (AVX2, most AVX-512 parts) run uint8 x int8 products with VPMADDUBSW in ONNX Runtime (MLAS) and
   OpenVINO (oneDNN): it adds two products into an int16 with saturation, and 2 * 255 * 127 > 32767,
   so wherever activations and weights are both large the x86 output departs from the graph's
   arithmetic (and from ARM's, which accumulates in int32). With |w| <= 64, 2 * 255 * 64 <= 32767:
   nothing saturates. Depthwise kernels widen to 16/32 bits first and keep the full range.
   benchmarks/results/qat_weight_bits.json runs the demo's qat pass both ways (test top-1 of every INT8
   format, and how far each x86 runtime departs from the QDQ graph's own arithmetic); tests/pipeline/test_qat.py
   has a layer that saturates. (Calibrated ONNX INT8 does the same with ``reduce_range``, OpenVINO INT8 with
   NNCF's overflow fix.)
3. an ``ActQuant`` (per-tensor int8, asymmetric unless ``symmetric_activations``, EMA min/max
   observer) goes on the model input and on every tensor a compute op produces: a conv/linear
   output (after its ReLU/ReLU6 when that is its only user, so the activation folds away),
   adds, concatenations, average pools, and the logits. Pass-through ops (max pool, flatten,
   reshape, dropout) re-quantize with their input's scale, so every Conv/Gemm input is a
   DequantizeLinear;
4. ranges are calibrated on training samples, then the model is fine-tuned (with distillation
   from the teacher unless ``alpha: 0``).

Exported with ``torch.onnx.export(..., dynamo=False, opset_version=17)`` the model is a QDQ graph:
weights are int8 initializers behind DequantizeLinear (axis 0), activations QuantizeLinear ->
DequantizeLinear pairs. ONNX Runtime fuses it into QLinearConv/QGemm and OpenVINO into INT8
kernels with no second calibration (``QuantSettings(qat=True)`` tells the targets so).

For routes that cannot read fake quantization from the module (TFLite), ``QAT.learned_quantization``
hands the pipeline a ``LearnedQuantization``: ``fold_and_strip(model)`` gives the float model with the weights
QAT learned (already on the int8 grid) and no fake quantization; ``activation_ranges(model)``
gives the learned range of every activation quantizer, keyed by the FX node name of the tensor it
quantizes (the same names ``fold_and_strip``'s graph uses).
"""

from __future__ import annotations

import copy
import operator
import warnings

import torch
import torch.fx as fx
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from edgeship.calibration.quant import LearnedQuantization, QuantSettings
from edgeship.errors import EdgeshipError
from edgeship.models import graph
from edgeship.pipeline.base import Pass, PassContext, PassResult, require_python_module
from edgeship.pipeline.training import TrainConfig, finetune, resolve_teacher, subset
from edgeship.recipe import ModelSpec

QMIN, QMAX = -128, 127  # int8 (weights use [-64, 64] or [-127, 127], symmetric activations [-128, 127], zp 0)
# Asymmetric activations are stored as uint8 (0..255, zero point shifted by 128 from the int8 one): the
# same 8-bit grid, and what ONNX Runtime's x86 kernels run anyway. Its int8->uint8 rewrite of QDQ pairs
# skips a QuantizeLinear read by several consumers (a residual branch), leaving mixed int8/uint8 Convs
# that it then runs in float; uint8 from the start avoids that. `activation_ranges` reports int8 numbers.
WMAX = 127  # depthwise weights use [-127, 127] (TFLite's rule; ONNX accepts it as int8)
WMAX_REDUCED = 64  # every other conv/linear: 7-bit weights, which x86's VPMADDUBSW cannot saturate (docstring, 2.)


# ------------------------------------------------------------------ weights
class _DequantizeInt8(torch.autograd.Function):
    """Export-only: an int8 weight constant behind DequantizeLinear(axis=0)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return q.float() * scale.view(-1, *([1] * (q.dim() - 1)))

    @staticmethod
    def symbolic(g, q, scale):
        n = scale.type().sizes()[0]
        zp = g.op("Constant", value_t=torch.zeros(n, dtype=torch.int8))
        return g.op("DequantizeLinear", q, scale, zp, axis_i=0)


def _constant(t: torch.Tensor) -> torch.Tensor:
    """A tensor the ONNX tracer embeds as its own constant (so equal biases are not merged into one
    shared initializer, which would stop ONNX Runtime from fusing each Conv into QLinearConv)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.from_numpy(t.detach().numpy().copy())


def export_bias(bias: torch.Tensor | None) -> torch.Tensor | None:
    return _constant(bias) if bias is not None and torch.onnx.is_in_onnx_export() else bias


def weight_max(m: nn.Module) -> int:
    """The largest integer of a layer's symmetric int8 weights: WMAX for a depthwise conv (one input channel per
    group), WMAX_REDUCED (7 bits) for every other conv and linear layer."""
    depthwise = isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
    return WMAX if depthwise else WMAX_REDUCED


def weight_scale(w: torch.Tensor, wmax: int = WMAX) -> torch.Tensor:
    return (w.detach().abs().flatten(1).amax(1) / wmax).clamp_min(1e-12)


def fake_quant_weight(w: torch.Tensor, wmax: int) -> torch.Tensor:
    """Per-output-channel symmetric int8 fake quantization to [-wmax, wmax] (straight-through gradient)."""
    s = weight_scale(w, wmax)
    if torch.onnx.is_in_onnx_export():
        # constants the tracer embeds as initializers: int8 values + per-channel scales
        q = torch.round(w.detach() / s.view(-1, *([1] * (w.dim() - 1)))).clamp(-wmax, wmax).to(torch.int8)
        return _DequantizeInt8.apply(_constant(q), _constant(s))
    zp = torch.zeros(len(s), dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, s, zp, 0, QMIN, QMAX)  # values stay in [-wmax, wmax]


class QConv2d(nn.Conv2d):
    """A conv (batch norm already folded in) with per-channel symmetric int8 fake-quantized weights."""

    @classmethod
    def from_float(cls, m: nn.Conv2d) -> QConv2d:
        q = cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                m.bias is not None, m.padding_mode)
        q.load_state_dict(m.state_dict())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, fake_quant_weight(self.weight, weight_max(self)), export_bias(self.bias))

    def to_float(self) -> nn.Conv2d:
        m = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                      self.dilation, self.groups, self.bias is not None, self.padding_mode)
        m.load_state_dict(self.state_dict())
        with torch.no_grad():
            m.weight.copy_(fake_quant_weight(self.weight, weight_max(self)))
        return m


class QLinear(nn.Linear):
    """A linear layer with per-output-channel symmetric int8 fake-quantized weights."""

    @classmethod
    def from_float(cls, m: nn.Linear) -> QLinear:
        q = cls(m.in_features, m.out_features, m.bias is not None)
        q.load_state_dict(m.state_dict())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, fake_quant_weight(self.weight, weight_max(self)), export_bias(self.bias))

    def to_float(self) -> nn.Linear:
        m = nn.Linear(self.in_features, self.out_features, self.bias is not None)
        m.load_state_dict(self.state_dict())
        with torch.no_grad():
            m.weight.copy_(fake_quant_weight(self.weight, weight_max(self)))
        return m


def _count_macs_like_float_layers() -> None:
    """torch-pruning's op counter (``model_stats``) looks hooks up by exact type: count ours as theirs."""
    from torch_pruning.utils import op_counter

    op_counter.MODULES_MAPPING[QConv2d] = op_counter.MODULES_MAPPING[nn.Conv2d]
    op_counter.MODULES_MAPPING[QLinear] = op_counter.MODULES_MAPPING[nn.Linear]


_count_macs_like_float_layers()


# ------------------------------------------------------------------ activations
class ActQuant(nn.Module):
    """Per-tensor int8 fake quantization with a min/max observer.

    ``mode``: "observe" (float pass-through, running min/max: calibration), "quant" (fake quantize;
    in training the range follows an EMA of batch min/max with ``momentum``), "frozen" (fake
    quantize, range fixed). ``source`` is the FX node name of the tensor it quantizes.
    """

    def __init__(self, source: str = "", symmetric: bool = False, momentum: float = 0.05):
        super().__init__()
        self.source = source
        self.symmetric = symmetric
        self.momentum = momentum
        self.mode = "observe"
        self.register_buffer("min_val", torch.tensor(float("inf")))
        self.register_buffer("max_val", torch.tensor(float("-inf")))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))

    def extra_repr(self) -> str:
        return f"source={self.source!r}, symmetric={self.symmetric}"

    @torch.no_grad()
    def _observe(self, x: torch.Tensor, ema: bool) -> None:
        lo, hi = x.detach().min(), x.detach().max()
        if ema and torch.isfinite(self.min_val):
            self.min_val.lerp_(lo, self.momentum)
            self.max_val.lerp_(hi, self.momentum)
        else:
            self.min_val.copy_(torch.minimum(self.min_val, lo))
            self.max_val.copy_(torch.maximum(self.max_val, hi))
        self._update_qparams()

    @torch.no_grad()
    def _update_qparams(self) -> None:
        lo, hi = torch.clamp(self.min_val, max=0.0), torch.clamp(self.max_val, min=0.0)
        if self.symmetric:
            self.scale.copy_((torch.maximum(-lo, hi) / QMAX).clamp_min(1e-8))
            self.zero_point.zero_()
        else:
            scale = ((hi - lo) / 255).clamp_min(1e-8)
            self.scale.copy_(scale)
            self.zero_point.copy_(torch.clamp(torch.round(-lo / scale), 0, 255).to(torch.int32))

    @property
    def qrange(self) -> tuple[int, int]:
        return (QMIN, QMAX) if self.symmetric else (0, 255)

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """``shared``: re-quantize a pass-through op's output (max pool, flatten) with this range,
        without observing it."""
        if self.mode == "observe":
            if not shared:
                self._observe(x, ema=False)
            return x
        if self.mode == "quant" and self.training and not shared:
            self._observe(x, ema=True)
        scale, zp = self.scale, self.zero_point
        if torch.onnx.is_in_onnx_export():  # own constants: equal zero points must not merge into one
            scale, zp = _constant(scale), _constant(zp)
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, *self.qrange)

    def ranges(self) -> dict:
        s = float(self.scale)
        zp = int(self.zero_point) - (0 if self.symmetric else 128)  # as int8
        return {"min": (QMIN - zp) * s, "max": (QMAX - zp) * s, "scale": s, "zero_point": zp,
                "qmin": QMIN, "qmax": QMAX, "onnx_dtype": "int8" if self.symmetric else "uint8",
                "onnx_zero_point": int(self.zero_point), "observed_min": float(self.min_val),
                "observed_max": float(self.max_val)}


# ------------------------------------------------------------------ graph rewrite
ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
ACTIVATION_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardtanh, torch.clamp}
PASS_THROUGH_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity, nn.Unflatten)
PASS_THROUGH_FUNCTIONS = {torch.flatten, F.max_pool2d, F.dropout, torch.reshape, operator.getitem}
PASS_THROUGH_METHODS = {"flatten", "view", "reshape", "contiguous", "squeeze", "unsqueeze"}


def _is_float_tensor(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "dtype") and meta.dtype.is_floating_point


def _kind(gm: fx.GraphModule, node: fx.Node) -> str:
    """'weighted', 'activation', 'pass', 'compute' or 'skip'."""
    if node.op == "placeholder":
        return "compute"
    if node.op in ("output", "get_attr"):
        return "skip"
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            return "weighted"
        if isinstance(m, ACTIVATION_MODULES):
            return "activation"
        if isinstance(m, PASS_THROUGH_MODULES):
            return "pass"
        return "compute"
    if node.op == "call_function":
        if node.target in ACTIVATION_FUNCTIONS:
            return "activation"
        return "pass" if node.target in PASS_THROUGH_FUNCTIONS else "compute"
    if node.op == "call_method":
        if node.target in ("relu", "relu_", "clamp"):
            return "activation"
        return "pass" if node.target in PASS_THROUGH_METHODS else "compute"
    return "skip"


def _trace(model: nn.Module, example: torch.Tensor, stage: str) -> fx.GraphModule:
    require_python_module(model, stage, "QAT")
    try:
        return graph.trace(copy.deepcopy(model), example)  # traces, then folds conv/linear + batch norm
    except graph.TraceError as e:
        raise EdgeshipError(f"{stage}: torch.fx cannot trace the model for QAT ({e})",
                            "keep data-dependent Python control flow out of forward(), or use `calibrate` "
                            "(post-training quantization) instead of `qat`") from None


def _recompile(gm: fx.GraphModule) -> None:
    # torch 2.13 cannot pickle a GraphModule whose code carries type annotations ('torch.Tensor' ends up
    # as a string global that GraphModule.__reduce__ chokes on); StageCache pickles whole modules.
    for node in gm.graph.nodes:
        node.type = None
    gm.graph.lint()
    gm.recompile()


def _replace_module(gm: fx.GraphModule, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, attr, new)


def prepare_qat(model: nn.Module, example: torch.Tensor, symmetric_activations: bool = False,
                stage: str = "qat") -> fx.GraphModule:
    """A copy of ``model`` with batch norm folded and fake quantization inserted (observers on)."""
    if any(isinstance(m, ActQuant) for m in model.modules()):
        raise EdgeshipError(f"{stage}: the model already carries fake quantization", "list `qat` once in passes")
    gm = _trace(model, example, stage)
    graph = gm.graph
    qname: dict[fx.Node, str] = {}  # tensor node -> the ActQuant module name that quantizes it

    def insert_quant(node: fx.Node, shared_from: str | None = None) -> None:
        with graph.inserting_after(node):
            if shared_from is None:
                name = f"aq_{node.name}"
                gm.add_submodule(name, ActQuant(node.name, symmetric_activations))
                q = graph.call_module(name, (node,))
            else:  # same scale and zero point as the producer: an exact re-quantization
                name = shared_from
                q = graph.call_module(name, (node, True))
        node.replace_all_uses_with(q, delete_user_cb=lambda user: user is not q)
        qname[node] = qname[q] = name

    for node in list(graph.nodes):
        if not _is_float_tensor(node):
            continue
        kind = _kind(gm, node)
        if kind == "weighted":
            m = gm.get_submodule(node.target)
            _replace_module(gm, node.target, (QConv2d if isinstance(m, nn.Conv2d) else QLinear).from_float(m))
        if kind in ("weighted", "compute", "activation"):
            users = list(node.users)
            if node.op != "placeholder" and len(users) == 1 and _kind(gm, users[0]) == "activation":
                continue  # the activation's output gets the quantizer: ReLU/Clip fold into the Q
            insert_quant(node)
        elif kind == "pass":
            src = node.args[0] if node.args else None
            if isinstance(src, fx.Node) and src in qname:
                insert_quant(node, shared_from=qname[src])
    for m in gm.modules():
        if type(m) in (nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d):
            raise EdgeshipError(f"{stage}: QAT supports Conv2d and Linear layers, found {type(m).__name__}",
                                "use `calibrate` (post-training quantization) for this model")
    _recompile(gm)
    return gm


def set_mode(model: nn.Module, mode: str) -> None:
    for m in model.modules():
        if isinstance(m, ActQuant):
            m.mode = mode


@torch.no_grad()
def calibrate_ranges(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    set_mode(model, "observe")
    model.eval()
    for i in range(0, len(x), batch_size):
        model(x[i:i + batch_size])
    set_mode(model, "quant")


# ------------------------------------------------------------------ helpers for other backends
def activation_ranges(model: nn.Module) -> dict[str, dict]:
    """The learned range of every activation quantizer.

    Keys are FX node names of the quantized tensors in the QAT graph (and in ``fold_and_strip``'s
    graph): the input placeholder's name (e.g. ``"x"``), a module's output as its qualified name
    with dots as underscores (``"features_0_2"`` for ``features.0.2``), functions as FX names them
    (``"add"``, ``"add_1"``, ``"cat"``). Values: ``min``/``max`` (the representable float range),
    ``scale``/``zero_point`` (int8, ``qmin``..``qmax``), the observed min/max, ``module`` (qualified
    module name or None) and ``shared_with`` (for pass-through ops that reuse a producer's range).
    Insertion order follows the graph.
    """
    if not isinstance(model, fx.GraphModule):
        raise EdgeshipError("activation_ranges needs a model returned by the qat pass", "run `qat` first")
    out: dict[str, dict] = {}
    for node in model.graph.nodes:
        if node.op == "call_module" and isinstance(model.get_submodule(node.target), ActQuant):
            src, aq = node.args[0], model.get_submodule(node.target)
            shared = len(node.args) > 1 and bool(node.args[1])
            out[src.name] = {**aq.ranges(), "module": src.target if src.op == "call_module" else None,
                             "shared_with": aq.source if shared else None}
    return out


def fold_and_strip(model: nn.Module) -> fx.GraphModule:
    """A float copy of a QAT model: batch norm folded, fake quantization removed, and the weights set
    to the values QAT learned on the int8 grid (dequantized), so re-quantizing them per channel
    symmetrically to ``weight_max(layer)`` reproduces the same integers (a converter that re-quantizes to
    [-127, 127], as TFLite's does, puts the 7-bit values on its finer grid: within a quarter of QAT's step).
    Node names match ``activation_ranges`` keys."""
    if not isinstance(model, fx.GraphModule):
        raise EdgeshipError("fold_and_strip needs a model returned by the qat pass", "run `qat` first")
    gm = copy.deepcopy(model).eval()
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, (QConv2d, QLinear)):
                _replace_module(gm, node.target, m.to_float())
            elif isinstance(m, ActQuant):
                node.replace_all_uses_with(node.args[0])
                gm.graph.erase_node(node)
    for name, m in list(gm.named_children()):
        if isinstance(m, ActQuant):
            delattr(gm, name)
    _recompile(gm)
    return gm


def is_qat_model(model: nn.Module) -> bool:
    return any(isinstance(m, ActQuant) for m in model.modules())


# ------------------------------------------------------------------ the pass
class QATConfig(TrainConfig):
    epochs: int = Field(1, ge=0, description="fine-tuning epochs with fake quantization (0: calibrate only)")
    lr: float = Field(2e-4, gt=0)
    calib_samples: int = Field(512, ge=1, description="training samples that initialise the activation ranges")
    symmetric_activations: bool = False
    teacher: ModelSpec | None = Field(None, description="default: the model before the first pass")


class QAT(Pass):
    name = "qat"
    Config = QATConfig
    example = {"epochs": 1, "calib_samples": 128}
    needs_module = "QAT"

    @classmethod
    def planned_quant(cls, config: QATConfig, seed: int) -> QuantSettings:
        return QuantSettings(samples=config.calib_samples, method="minmax", per_channel=True,
                             symmetric_activations=config.symmetric_activations, symmetric_weights=True,
                             seed=seed, qat=True)

    @classmethod
    def learned_quantization(cls, model: nn.Module) -> LearnedQuantization | None:
        if not is_qat_model(model):
            return None
        return LearnedQuantization(fold_and_strip(model), activation_ranges(model))

    def run(self, model: nn.Module, config: QATConfig, ctx: PassContext) -> PassResult:
        teacher = resolve_teacher(config.teacher, ctx, model) if config.alpha > 0 else None
        example = torch.zeros(1, *ctx.input_shape)
        qmodel = prepare_qat(model, example, config.symmetric_activations, ctx.stage)
        calib = subset(ctx.data["train"], config.calib_samples, ctx.seed + 7)
        calibrate_ranges(qmodel, calib.x)
        hist = finetune(qmodel, config, ctx, teacher)
        qmodel.eval()
        n_act = sum(isinstance(m, ActQuant) for m in qmodel.modules())
        n_w = sum(isinstance(m, (QConv2d, QLinear)) for m in qmodel.modules())
        quant = self.planned_quant(config, ctx.seed)
        metrics = {"quantized_layers": n_w, "activation_quantizers": n_act,
                   "weights": "int8 per-channel symmetric, 7-bit except depthwise",
                   "activations": "int8 per-tensor " + ("symmetric" if config.symmetric_activations else "asymmetric"),
                   "batch_norm": "folded", "distillation_alpha": config.alpha if teacher is not None else 0.0, **hist}
        return PassResult(qmodel, metrics, quant)


__all__ = ["QAT", "QATConfig", "ActQuant", "QConv2d", "QLinear", "prepare_qat", "calibrate_ranges",
           "activation_ranges", "fold_and_strip", "is_qat_model"]
