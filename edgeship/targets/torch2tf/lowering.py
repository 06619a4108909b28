"""The translator: each fx node of the traced graph becomes one or two ``tf.nn`` ops inside a
``tf.function`` with an NHWC input (see the package docstring).

A 1-D model (a Conv1d network over an (N, C, L) signal: audio, sensors) is lowered as the image it is with a height of
one: its input is (N, L, C) (channels last, as TF's own 1-D layout), reshaped once to (N, 1, L, C), and every
Conv1d, pool and mean becomes the 2-D operator with a 1 x k window; ``shape4`` gives each tensor's torch shape in that
view. One RESHAPE and no transposes, where litert-torch keeps torch's (N, C, L) between its convolutions.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from edgeship.models.graph import layer_of, op_name
from edgeship.targets.torch2tf.trace import ATEN_ALIASES, ATEN_BATCH_NORM, NCHW_TO_NHWC, shape, unsupported


# ----------------------------------------------------------------------------- argument helpers
def shape4(node: Any) -> tuple[int, ...] | None:
    """A node's torch shape; a 1-D feature map's (N, C, L) as the (N, C, 1, L) image it is lowered as."""
    s = shape(node)
    return (s[0], s[1], 1, s[2]) if s is not None and len(s) == 3 else s


def _one_row(v: Any, height: int) -> Any:
    """A 1-D operator's kernel size, stride, padding or dilation as the 2-D one's over a height-one image (``height``:
    its value along the height); a padding string stays as it is."""
    if isinstance(v, str):
        return v
    return (height, int(v[0] if isinstance(v, (list, tuple)) else v))


def _arg(node: fx.Node, i: int, name: str, default: Any = None) -> Any:
    if name in node.kwargs:
        return node.kwargs[name]
    return node.args[i] if len(node.args) > i else default


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _padding(in_hw: tuple[int, int], k: tuple[int, int], s: tuple[int, int], d: tuple[int, int],
             p: Any) -> tuple[str, list[list[int]] | None]:
    """torch's symmetric padding as TF's: ('VALID'|'SAME', None) when equivalent, else explicit pads."""
    if isinstance(p, str):
        # torch 'same' (stride 1 only) pads total d*(k-1), total // 2 first: exactly TF's SAME
        return ("VALID" if p == "valid" else "SAME"), None
    p = _pair(p)
    if p == (0, 0):
        return "VALID", None
    same = True
    for n, kk, ss, dd, pp in zip(in_hw, k, s, d, p):
        out_torch = (n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
        out_same = -(-n // ss)
        top = max((out_same - 1) * ss + dd * (kk - 1) + 1 - n, 0) // 2
        same &= out_torch == out_same and top == pp
    if same:
        return "SAME", None
    return "EXPLICIT", [[0, 0], [p[0], p[0]], [p[1], p[1]], [0, 0]]


# --------------------------------------------------------------------------------- the lowering
class Lowering:
    """Emits TF ops for an fx graph; call ``build()`` for a tf.Module with a concrete function."""

    PASSTHROUGH = {"identity", "dropout", "reshape", "maxpool"}  # keep their input's quantization
    FUSED = {"relu", "relu6", "hardtanh"}  # TFLite folds these into the producing conv/FC (QAT's activation kinds)

    def __init__(self, gm: fx.GraphModule, input_shape: tuple[int, ...],
                 fake_quant: dict[str, tuple[float, float]] | None = None):
        import tensorflow as tf

        self.tf = tf
        self.gm = gm
        self.input_shape = tuple(input_shape)
        self.fake_quant = dict(fake_quant or {})
        self.kinds: dict[str, str] = {}
        self.one_d = False  # the input is a 1-D signal (N, C, L), lowered as a height-one image
        self.plan = [(n, self._emitter(n)) for n in gm.graph.nodes]  # unsupported ops fail here, before TF work

    # ---- planning: every node -> (kind, emit function)
    def _emitter(self, n: fx.Node) -> Callable:
        if n.op == "placeholder":
            if "input" in self.kinds.values():
                raise unsupported("input", n, self.gm, "the model must take one input tensor")
            if shape(n) is None or len(shape(n)) not in (3, 4):
                raise unsupported("input", n, self.gm, "the model input must be one NCHW image or NCL signal")
            self.one_d = len(shape(n)) == 3
            self.kinds[n.name] = "input"
            return lambda env, x: x
        if n.op == "output":
            val = self._output(n)
            return lambda env, x: env[val.name]
        if n.op == "get_attr":
            self.kinds[n.name] = "const"
            return lambda env, _: getattr_path(self.gm, n.target).detach().cpu().numpy()
        if n.op == "call_module" and n.target == "_guards_fn" and not n.users:
            kind, fn = "meta", lambda env, x: None  # a .pt2 program's input-shape checks: nothing to compute
        elif n.op == "call_module":
            kind, fn = self._module(n, self.gm.get_submodule(n.target))
        else:
            kind, fn = self._function(n)
        self.kinds[n.name] = kind
        return fn

    def _module(self, n: fx.Node, m: nn.Module) -> tuple[str, Callable]:  # noqa: C901 (one branch per layer type)
        tf = self.tf
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            if m.padding_mode != "zeros":
                raise unsupported(type(m).__name__, n, self.gm, f"padding_mode={m.padding_mode!r}")
            b = m.bias.detach().numpy() if m.bias is not None else None
            return "conv", lambda env, x: self._conv(n, env[n.args[0].name], m.weight.detach().numpy(), b,
                                                     m.stride, m.padding, m.dilation, m.groups)
        if isinstance(m, nn.Linear):
            b = m.bias.detach().numpy() if m.bias is not None else None
            return "linear", lambda env, x: self._linear(n, env[n.args[0].name], m.weight.detach().numpy(), b)
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            if m.running_mean is None:
                raise unsupported(type(m).__name__, n, self.gm, "track_running_stats=False")
            return "bn", lambda env, x: self._bn(n, env[n.args[0].name], m)
        if isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout2d)):
            return ("identity" if isinstance(m, nn.Identity) else "dropout"), lambda env, x: env[n.args[0].name]
        if isinstance(m, nn.ReLU):
            return "relu", lambda env, x: tf.nn.relu(env[n.args[0].name])
        if isinstance(m, nn.ReLU6):
            return "relu6", lambda env, x: tf.nn.relu6(env[n.args[0].name])
        if isinstance(m, nn.Hardtanh):
            return "hardtanh", lambda env, x: self._clip(env[n.args[0].name], m.min_val, m.max_val)
        if isinstance(m, nn.LeakyReLU):
            return "leaky_relu", lambda env, x: tf.nn.leaky_relu(env[n.args[0].name], alpha=m.negative_slope)
        simple = {nn.Sigmoid: ("sigmoid", tf.math.sigmoid), nn.Tanh: ("tanh", tf.math.tanh),
                  nn.Hardswish: ("hardswish", self._hardswish), nn.Hardsigmoid: ("hardsigmoid", self._hardsigmoid),
                  nn.SiLU: ("silu", tf.nn.silu)}
        for cls, (kind, f) in simple.items():
            if type(m) is cls:
                return kind, lambda env, x, f=f: f(env[n.args[0].name])
        if isinstance(m, nn.MaxPool2d):
            return "maxpool", lambda env, x: self._pool(n, env[n.args[0].name], "MAX", m.kernel_size, m.stride,
                                                        m.padding, m.dilation, m.ceil_mode, True)
        if isinstance(m, (nn.MaxPool1d, nn.AvgPool1d)):
            how = "MAX" if isinstance(m, nn.MaxPool1d) else "AVG"
            d, pad_in = (m.dilation, True) if how == "MAX" else (1, m.count_include_pad)
            return f"{how.lower()}pool", lambda env, x: self._pool(
                n, env[n.args[0].name], how, _one_row(m.kernel_size, 1), _one_row(m.stride or m.kernel_size, 1),
                _one_row(m.padding, 0), _one_row(d, 1), m.ceil_mode, pad_in)
        if isinstance(m, nn.AvgPool2d):
            if m.divisor_override is not None:
                raise unsupported("AvgPool2d", n, self.gm, "divisor_override")
            return "avgpool", lambda env, x: self._pool(n, env[n.args[0].name], "AVG", m.kernel_size, m.stride,
                                                        m.padding, 1, m.ceil_mode, m.count_include_pad)
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)):
            how = "AVG" if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)) else "MAX"
            self._check_adaptive(n, m.output_size)
            return ("avgpool" if how == "AVG" else "maxpool"), \
                lambda env, x: self._adaptive(n, env[n.args[0].name], how, m.output_size)
        if isinstance(m, nn.Flatten):
            return "reshape", lambda env, x: self._flatten(n, env[n.args[0].name], m.start_dim, m.end_dim)
        if isinstance(m, nn.Softmax):
            return "softmax", lambda env, x: self._softmax(n, env[n.args[0].name], m.dim)
        raise unsupported(type(m).__name__, n, self.gm)

    def _function(self, n: fx.Node) -> tuple[str, Callable]:  # noqa: C901 (one branch per torch function)
        tf = self.tf
        t = ATEN_ALIASES.get(n.target, n.target)
        if n.target is ATEN_BATCH_NORM and ATEN_BATCH_NORM is not None:
            return "bn", lambda env, x: self._bn_args(n, env)
        x0 = lambda env: env[n.args[0].name]  # noqa: E731
        name = t if n.op == "call_method" else getattr(t, "__name__", "")
        sizes = (t is operator.getitem and shape(n) is None) or (n.op == "call_method" and t == "size") \
            or (t is getattr and n.args[1] == "shape")
        if sizes:
            return "meta", lambda env, x: None  # sizes feed view/reshape, which use the traced shape
        if t in (operator.add, operator.iadd, torch.add) or (n.op == "call_method" and t in ("add", "add_")):
            return "add", lambda env, x: self._binary(n, env, tf.add)
        if t in (operator.mul, operator.imul, torch.mul) or (n.op == "call_method" and t in ("mul", "mul_")):
            return "mul", lambda env, x: self._binary(n, env, tf.multiply)
        if t in (torch.cat, torch.concat, torch.concatenate) or (n.op == "call_method" and t == "cat"):
            return "cat", lambda env, x: self._cat(n, env)
        if t in (torch.flatten,) or (n.op == "call_method" and t == "flatten"):
            return "reshape", lambda env, x: self._flatten(n, x0(env), _arg(n, 1, "start_dim", 0),
                                                           _arg(n, 2, "end_dim", -1))
        if t in (torch.reshape,) or (n.op == "call_method" and t in ("view", "reshape")):
            return "reshape", lambda env, x: self._reshape(n, x0(env))
        if t in (F.relu, torch.relu) or (n.op == "call_method" and t in ("relu", "relu_")):
            return "relu", lambda env, x: tf.nn.relu(x0(env))
        if t is F.relu6:
            return "relu6", lambda env, x: tf.nn.relu6(x0(env))
        if t is F.hardtanh:
            return "hardtanh", lambda env, x: self._clip(x0(env), _arg(n, 1, "min_val", -1.0),
                                                         _arg(n, 2, "max_val", 1.0))
        if t is F.leaky_relu:
            return "leaky_relu", lambda env, x: tf.nn.leaky_relu(x0(env), alpha=_arg(n, 1, "negative_slope", 0.01))
        if t in (torch.sigmoid, F.sigmoid) or (n.op == "call_method" and t == "sigmoid"):
            return "sigmoid", lambda env, x: tf.math.sigmoid(x0(env))
        if t in (torch.tanh, F.tanh) or (n.op == "call_method" and t == "tanh"):
            return "tanh", lambda env, x: tf.math.tanh(x0(env))
        if t is F.silu:
            return "silu", lambda env, x: tf.nn.silu(x0(env))
        if t is F.hardswish:
            return "hardswish", lambda env, x: self._hardswish(x0(env))
        if t is F.hardsigmoid:
            return "hardsigmoid", lambda env, x: self._hardsigmoid(x0(env))
        if t in (F.dropout, F.dropout2d, torch.dropout):
            return "dropout", lambda env, x: x0(env)
        if t in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d):
            how = "AVG" if t in (F.adaptive_avg_pool2d, F.adaptive_avg_pool1d) else "MAX"
            self._check_adaptive(n, _arg(n, 1, "output_size"))
            return ("avgpool" if how == "AVG" else "maxpool"), \
                lambda env, x: self._adaptive(n, x0(env), how, _arg(n, 1, "output_size"))
        if t in (F.max_pool1d, F.avg_pool1d):
            return self._pool1d_function(n, t is F.max_pool1d)
        if t is F.max_pool2d:
            return "maxpool", lambda env, x: self._pool(
                n, x0(env), "MAX", _arg(n, 1, "kernel_size"), _arg(n, 2, "stride"), _arg(n, 3, "padding", 0),
                _arg(n, 4, "dilation", 1), _arg(n, 5, "ceil_mode", False), True)
        if t is F.avg_pool2d:
            return "avgpool", lambda env, x: self._pool(
                n, x0(env), "AVG", _arg(n, 1, "kernel_size"), _arg(n, 2, "stride"), _arg(n, 3, "padding", 0), 1,
                _arg(n, 4, "ceil_mode", False), _arg(n, 5, "count_include_pad", True))
        if t is torch.mean or (n.op == "call_method" and t == "mean"):
            return "avgpool", lambda env, x: self._mean(n, x0(env))
        if t in (F.softmax, torch.softmax) or (n.op == "call_method" and t == "softmax"):
            return "softmax", lambda env, x: self._softmax(n, x0(env), _arg(n, 1, "dim"))
        if t is F.linear:
            return "linear", lambda env, x: self._linear(
                n, x0(env), env[n.args[1].name], env[n.args[2].name] if _arg(n, 2, "bias") is not None else None)
        if t in (F.conv2d, F.conv1d):
            return "conv", lambda env, x: self._conv(
                n, x0(env), env[n.args[1].name], env[n.args[2].name] if _arg(n, 2, "bias") is not None else None,
                _arg(n, 3, "stride", 1), _arg(n, 4, "padding", 0), _arg(n, 5, "dilation", 1), _arg(n, 6, "groups", 1))
        raise unsupported(name and (f"Tensor.{name}" if n.op == "call_method" else op_name(n, self.gm)), n, self.gm)

    def _pool1d_function(self, n, is_max: bool) -> tuple[str, Callable]:
        """F.max_pool1d(x, k, stride, padding, dilation, ceil_mode) / F.avg_pool1d(x, k, stride, padding, ceil_mode,
        count_include_pad) as the 2-D pool over a height-one image."""
        k = _arg(n, 1, "kernel_size")
        s = _arg(n, 2, "stride") or k
        p = _arg(n, 3, "padding", 0)
        if is_max:
            return "maxpool", lambda env, x: self._pool(
                n, env[n.args[0].name], "MAX", _one_row(k, 1), _one_row(s, 1), _one_row(p, 0),
                _one_row(_arg(n, 4, "dilation", 1), 1), _arg(n, 5, "ceil_mode", False), True)
        return "avgpool", lambda env, x: self._pool(
            n, env[n.args[0].name], "AVG", _one_row(k, 1), _one_row(s, 1), _one_row(p, 0), (1, 1),
            _arg(n, 4, "ceil_mode", False), _arg(n, 5, "count_include_pad", True))

    # ---- emitters
    def _conv(self, n, x, w: np.ndarray, b: np.ndarray | None, stride, padding, dilation, groups: int):
        tf = self.tf
        in_shape = shape4(n.args[0])
        if w.ndim == 3:  # Conv1d: the 2-D convolution with a 1 x k kernel over the height-one image
            w = w[:, :, None, :]
            stride, padding, dilation = _one_row(stride, 1), _one_row(padding, 0), _one_row(dilation, 1)
        if in_shape is None or len(in_shape) != 4 or w.ndim != 4:
            raise unsupported("Conv2d", n, self.gm, "expects a 4-D NCHW or 3-D NCL input")
        cout, cin_g, kh, kw = w.shape
        cin = in_shape[1]
        s, d = _pair(stride), _pair(dilation)
        mode, pads = _padding(in_shape[2:], (kh, kw), s, d, padding)
        pad_arg = pads if mode == "EXPLICIT" else mode
        if groups == 1:
            y = tf.nn.conv2d(x, w.transpose(2, 3, 1, 0), strides=[1, *s, 1], padding=pad_arg, dilations=[1, *d, 1])
        elif groups == cin and cin_g == 1:  # depthwise (channel multiplier cout // cin)
            mult = cout // cin
            f = w.reshape(cin, mult, kh, kw).transpose(2, 3, 0, 1)
            if mode == "EXPLICIT":
                x = tf.pad(x, pads)
                pad_arg = "VALID"
            y = tf.nn.depthwise_conv2d(x, f, strides=[1, *s, 1], padding=pad_arg, dilations=d)
        else:  # grouped: TFLite's CONV_2D takes a filter with cin / groups input channels
            y = tf.nn.conv2d(x, w.transpose(2, 3, 1, 0), strides=[1, *s, 1], padding=pad_arg, dilations=[1, *d, 1])
        return tf.nn.bias_add(y, b) if b is not None else y

    def _linear(self, n, x, w: np.ndarray, b: np.ndarray | None):
        tf = self.tf
        if shape(n.args[0]) is None or len(shape(n.args[0])) != 2:
            raise unsupported("Linear", n, self.gm, f"input of shape {shape(n.args[0])}; only (N, features) is lowered")
        y = tf.matmul(x, np.ascontiguousarray(w.T))
        return tf.nn.bias_add(y, b) if b is not None else y

    def _bn(self, n, x, m):
        scale = (m.weight.detach() if m.weight is not None else 1.0) / torch.sqrt(m.running_var + m.eps)
        shift = (m.bias.detach() if m.bias is not None else 0.0) - m.running_mean * scale
        # channels are the last TF axis for both (N, C) and NHWC tensors
        return x * scale.numpy().astype(np.float32) + shift.numpy().astype(np.float32)

    def _bn_args(self, n, env):
        """aten.batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, ...)"""
        if _arg(n, 5, "training", False):
            raise unsupported("batch_norm", n, self.gm, "exported in training mode; export the model after .eval()")
        c = shape(n.args[0])[1]
        val = lambda i, default: env[n.args[i].name] if isinstance(n.args[i], fx.Node) else default  # noqa: E731
        w, b = val(1, np.ones(c, np.float32)), val(2, np.zeros(c, np.float32))
        mean, var = val(3, None), val(4, None)
        if mean is None or var is None:
            raise unsupported("batch_norm", n, self.gm, "no running statistics")
        scale = w / np.sqrt(var + float(_arg(n, 7, "eps", 1e-5)))
        return env[n.args[0].name] * scale.astype(np.float32) + (b - mean * scale).astype(np.float32)

    def _clip(self, x, lo: float, hi: float):
        tf = self.tf
        if lo == 0.0 and hi == 6.0:
            return tf.nn.relu6(x)
        if lo == -1.0 and hi == 1.0:
            return tf.clip_by_value(x, -1.0, 1.0)
        return tf.clip_by_value(x, float(lo), float(hi))

    def _hardswish(self, x):
        # TFLiteConverter fuses this into HARD_SWISH; an int8 file gets it back as ops XNNPACK runs (tflite_hardswish)
        return x * self.tf.nn.relu6(x + 3.0) * (1.0 / 6.0)

    def _hardsigmoid(self, x):
        return self.tf.nn.relu6(x + 3.0) * (1.0 / 6.0)

    def _binary(self, n, env, op):
        a, b = n.args[0], n.args[1]
        if "alpha" in n.kwargs:
            raise unsupported(None, n, self.gm, "alpha")
        ranks = {len(shape(v)) for v in (a, b) if isinstance(v, fx.Node) and shape(v)}  # () / numbers broadcast
        if len(ranks) > 1 or not ranks <= {2, 3, 4}:
            raise unsupported(None, n, self.gm, f"operands of shapes {shape(a)} and {shape(b)}")
        va = env[a.name] if isinstance(a, fx.Node) else float(a)
        vb = env[b.name] if isinstance(b, fx.Node) else float(b)
        return op(va, vb)

    def _cat(self, n, env):
        xs = _arg(n, 0, "tensors")
        dim = _arg(n, 1, "dim", 0)
        rank = len(shape(xs[0]))
        dim = dim % rank
        axis = NCHW_TO_NHWC[dim] if rank == 4 else (0, 3, 2)[dim] if rank == 3 else dim  # NCL -> (N, 1, L, C)
        if dim == 0:
            raise unsupported("cat", n, self.gm, "concatenation along the batch dimension")
        return self.tf.concat([env[x.name] for x in xs], axis=axis)

    def _to_flat(self, n, x):
        """(N, C, H, W) in NHWC -> (N, C*H*W) in torch's order (a 1-D map's (N, C, L) as (N, C, 1, L))."""
        tf = self.tf
        _, c, h, w = shape4(n.args[0])
        if h * w != 1:
            x = tf.transpose(x, [0, 3, 1, 2])
        return tf.reshape(x, [-1, c * h * w])

    def _flatten(self, n, x, start: int, end: int):
        s = shape(n.args[0])
        start, end = start % len(s), end % len(s)
        if len(s) == 2 and (start, end) in ((1, 1), (0, 1)) and start == 1:
            return x
        if start != 1 or end != len(s) - 1 or len(s) not in (2, 3, 4):
            raise unsupported("flatten", n, self.gm, f"start_dim={start}, end_dim={end} on shape {s}; "
                              "only flatten(x, 1) is lowered")
        return self._to_flat(n, x) if len(s) in (3, 4) else x

    def _reshape(self, n, x):
        s_in, s_out = shape(n.args[0]), shape(n)
        if s_in == s_out:
            return x
        if len(s_out) == 2 and len(s_in) in (3, 4) and s_out[0] == s_in[0]:
            return self._to_flat(n, x)
        raise unsupported(f"Tensor.{n.target}" if n.op == "call_method" else "reshape", n, self.gm,
                          f"{s_in} -> {s_out}; only a flatten to (N, -1) is lowered")

    def _pool(self, n, x, how: str, k, s, p, d, ceil_mode: bool, count_include_pad: bool):
        tf = self.tf
        in_shape = shape4(n.args[0])
        k = _pair(k)
        s = _pair(s) if s not in (None, [], ()) else k
        if ceil_mode:
            out = shape4(n)
            floor = tuple((i + 2 * pp - kk) // ss + 1 for i, kk, ss, pp in zip(in_shape[2:], k, s, _pair(p)))
            if tuple(out[2:]) != floor:
                raise unsupported(f"{how.title()}Pool2d", n, self.gm, "ceil_mode=True changes the output size")
        if _pair(d) != (1, 1):
            raise unsupported(f"{how.title()}Pool2d", n, self.gm, "dilation")
        mode, pads = _padding(in_shape[2:], k, s, (1, 1), p)
        if mode == "SAME" and how == "AVG" and count_include_pad:
            mode, pads = "EXPLICIT", [[0, 0], *[[q, q] for q in _pair(p)], [0, 0]]
        if mode == "EXPLICIT":
            if how == "MAX":
                x = self._edge_pad(x, pads)
            elif count_include_pad:
                x = tf.pad(x, pads)
            else:
                raise unsupported("AvgPool2d", n, self.gm, "padding with count_include_pad=False")
            mode = "VALID"
        return tf.nn.pool(x, window_shape=k, pooling_type=how, strides=s, padding=mode)

    def _edge_pad(self, x, pads: list[list[int]]):
        """A max pool's padding as copies of the edge rows and columns (CONCATENATION of STRIDED_SLICEs): every
        window that reaches p <= k / 2 into the padding also holds the edge value, so the max is torch's (-inf
        padding) whatever the values' sign. Not MIRROR_PAD (tf.pad SYMMETRIC, the same values): LiteRT's XNNPACK
        delegate does not take MIRROR_PAD, which then runs in the builtin kernels and splits the graph in two."""
        tf = self.tf
        for axis, (before, after) in ((1, pads[1]), (2, pads[2])):
            first, last = (x[:, :1], x[:, -1:]) if axis == 1 else (x[:, :, :1], x[:, :, -1:])
            if before or after:
                x = tf.concat([first] * before + [x] + [last] * after, axis=axis)
        return x

    def _check_adaptive(self, n, out_size) -> None:
        in_shape = shape4(n.args[0])
        if len(shape(n.args[0])) == 3:  # a 1-D pool's output length, over the height-one image
            out = _one_row(out_size if out_size is not None else in_shape[3], 1)
        else:
            out = _pair(out_size if out_size is not None else in_shape[2:])
        out = tuple(o if o is not None else i for o, i in zip(out, in_shape[2:]))
        if any(i % o for i, o in zip(in_shape[2:], out)):
            raise unsupported("AdaptivePool2d", n, self.gm, f"output {out} does not divide input {in_shape[2:]}")

    def _adaptive(self, n, x, how: str, out_size):
        tf = self.tf
        in_hw = shape4(n.args[0])[2:]
        if len(shape(n.args[0])) == 3:
            out = _one_row(out_size if out_size is not None else in_hw[1], 1)
        else:
            out = _pair(out_size)
        out = tuple(o if o is not None else i for o, i in zip(out, in_hw))
        if out == (1, 1):
            return (tf.reduce_mean if how == "AVG" else tf.reduce_max)(x, axis=[1, 2], keepdims=True)
        k = tuple(i // o for i, o in zip(in_hw, out))
        return tf.nn.pool(x, window_shape=k, pooling_type=how, strides=k, padding="VALID")

    def _mean(self, n, x):
        s = shape(n.args[0])
        dims = _arg(n, 1, "dim")
        keep = bool(_arg(n, 2, "keepdim", False))
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        dims = sorted(d % len(s) for d in dims)
        if (len(s), dims) not in ((4, [2, 3]), (3, [2])):
            raise unsupported("mean", n, self.gm, f"dims {dims} of shape {s}; only the spatial mean (2, 3), or (2) of "
                              "a 1-D map, is lowered")
        y = self.tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        return y if keep else self.tf.reshape(y, [-1, s[1]])

    def _softmax(self, n, x, dim):
        """Over the classes of (N, classes), or over the channels of each position of a map (a detector's score
        map): the last axis of the channels-last tensor either way."""
        s = shape(n.args[0])
        if s is None or len(s) not in (2, 3, 4) or (dim is not None and dim % len(s) != 1):
            raise unsupported("softmax", n, self.gm, "only softmax over dim 1: the classes of (N, classes) or the "
                              "channels of (N, C, L) or (N, C, H, W)")
        return self.tf.nn.softmax(x, axis=-1)

    def _output(self, node) -> fx.Node:
        val = node.args[0]
        if isinstance(val, (list, tuple)):
            if len(val) != 1:
                raise unsupported("output", node, self.gm, "the model must return one logits tensor")
            val = val[0]
        s = shape(val)
        if s is None or len(s) != 2:
            raise unsupported("output", node, self.gm, f"output of shape {s}; expected (N, classes)")
        return val

    # ---- QAT: where fake-quant ops go
    def fake_quant_points(self) -> list[str]:
        """Nodes whose output carries its own int8 range: every computing node, except one whose only
        consumers are activations TFLite fuses into it (the range goes after the fused activation) and ops that keep
        their input's scale (max pooling, reshapes, dropout). A convolution before a sigmoid or a hard swish needs
        its own: without one TFLite ran that convolution in float (DEQUANTIZE, CONV_2D, QUANTIZE)."""
        points = []
        for n in self.gm.graph.nodes:
            kind = self.kinds.get(n.name)
            if kind is None or kind in ("const", "meta") or kind in self.PASSTHROUGH:
                continue
            users = list(n.users)
            if users and kind not in ("input",) and all(self.kinds.get(u.name) in self.FUSED for u in users) \
                    and kind in ("conv", "linear", "bn", "add"):
                continue
            points.append(n.name)
        return points

    # ---- the TF function
    def build(self):
        tf = self.tf
        c, *hw = self.input_shape
        lowering = self
        spec = [None, *hw, c]  # NHWC, or NLC for a 1-D signal (reshaped to (N, 1, L, C) first)

        class Lowered(tf.Module):
            @tf.function(input_signature=[tf.TensorSpec(spec, tf.float32, name="input")])
            def serve(self, x):
                return lowering.emit(tf.reshape(x, [-1, 1, *hw, c]) if len(hw) == 1 else x)

        mod = Lowered()
        return mod, mod.serve.get_concrete_function()

    def emit(self, x):
        tf = self.tf
        env: dict[str, Any] = {}
        result = None
        for n, fn in self.plan:
            scope = layer_of(n).replace(":", "/")
            with tf.name_scope(_scope_name(scope)):
                if n.op == "output":
                    result = fn(env, None)
                    continue
                val = fn(env, x)
                if n.name in self.fake_quant:
                    lo, hi = self.fake_quant[n.name]
                    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
                    if hi - lo < 1e-8:
                        hi = lo + 1e-8
                    val = tf.quantization.fake_quant_with_min_max_args(val, min=lo, max=hi, num_bits=8,
                                                                        narrow_range=False)
                env[n.name] = val
        return tf.identity(result, name="logits")


def getattr_path(root: nn.Module, target: str):
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _scope_name(s: str) -> str:
    import re

    s = re.sub(r"[^A-Za-z0-9_.\-/]", "_", s)
    return s if s and s[0].isalnum() else f"n{s}"
