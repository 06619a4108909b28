"""Torch models a latency predictor is calibrated and validated on: random architectures, and one-kernel probes.

``random_arch(seed)`` draws a convolutional classifier of the kinds edge models are made of: a stem, two to four
stages of blocks (plain conv + BN + ReLU with kernel 1/3/5, MobileNetV2 inverted residuals with expansion 1-6 and
kernel 3/5, ResNet basic blocks, depthwise-separable pairs), optional max pooling, a 1x1 head, global pooling and
a linear classifier; depth, widths (multiples of 4, as pruning with ``round_to: 4`` leaves them), kernel sizes and
the input resolution (28x28 to 224x224, 1 or 3 channels) are random, and the MACs are capped so that one
inference stays in the tens of milliseconds on a CPU core. ``random_arch_1d(seed)`` draws their 1-D kin, the
audio and sensor models users bring (raw waveforms with long strided kernels as CREPE's, or 13-80 feature channels
over time with depthwise-separable blocks as QuartzNet's and Silero's). ``probe(kernel)`` is a model holding that one
kernel (``edgeship.devices.kernels``), which the backends lower like any model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgeship.devices.kernels import ACTS, Kernel
from edgeship.models.zoo import InvertedResidual, MobileNetV2Standard, ResNet18, conv_bn_act

RESOLUTIONS = (28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224)
MAX_MACS = 250e6
LENGTHS = (128, 256, 400, 512, 1000, 1024, 2000, 4000, 8000, 16000)  # 1-D inputs: frames, or samples of audio


@dataclass
class Arch:
    seed: int
    model: nn.Module
    input_shape: tuple[int, int, int]
    description: str


def _w(rng: random.Random, lo: int, hi: int) -> int:
    return 4 * rng.randint(max(1, lo // 4), max(1, hi // 4))


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, k: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_act(cin, cout, k, stride), conv_bn_act(cout, cout, k, 1, act=None))
        self.short = nn.Identity() if stride == 1 and cin == cout else conv_bn_act(cin, cout, 1, stride, act=None)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.short(x))


def _block(rng: random.Random, kind: str, cin: int, cout: int, stride: int) -> nn.Module:
    if kind == "conv":
        return conv_bn_act(cin, cout, rng.choice((1, 3, 3, 5)), stride)
    if kind == "mbv2":
        block = InvertedResidual(cin, cout, stride, rng.choice((1, 2, 4, 6)))
        k = rng.choice((3, 3, 5))
        if k != 3:  # the depthwise convolution's kernel
            dw = next(m for m in block.modules() if isinstance(m, nn.Conv2d) and m.groups > 1)
            dw.kernel_size, dw.padding = (k, k), (k // 2, k // 2)
            dw.weight = nn.Parameter(torch.randn(dw.out_channels, 1, k, k) * 0.1)
        return block
    if kind == "basic":
        return _Basic(cin, cout, stride, rng.choice((3, 3, 5)))
    k = rng.choice((3, 5))  # depthwise-separable
    return nn.Sequential(conv_bn_act(cin, cin, k, stride, groups=cin), conv_bn_act(cin, cout, 1))


class _Net(nn.Module):
    def __init__(self, features: nn.Sequential, width: int, classes: int = 10, one_d: bool = False):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool1d(1) if one_d else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def _draw(seed: int) -> Arch:
    rng = random.Random(seed)
    res, cin = rng.choice(RESOLUTIONS), rng.choice((1, 3))
    width = _w(rng, 8, 48)
    stem_stride = 2 if res >= 64 else rng.choice((1, 2))
    layers: list[nn.Module] = [conv_bn_act(cin, width, 3, stem_stride)]
    desc = [f"{res}x{res}x{cin}", f"stem{width}/s{stem_stride}"]
    if res >= 96 and rng.random() < 0.5:
        layers.append(nn.MaxPool2d(2))
        desc.append("maxpool")
    for stage in range(rng.randint(2, 4)):
        kind = rng.choice(("conv", "mbv2", "mbv2", "basic", "dwsep"))
        cout = _w(rng, width, min(192, int(width * 2.2) + 8))
        n = rng.randint(1, 3)
        for i in range(n):
            layers.append(_block(rng, kind, width, cout, 2 if (i == 0 and stage > 0) else 1))
            width = cout
        desc.append(f"{kind}x{n}:{cout}")
    if rng.random() < 0.5:
        head = _w(rng, width, 256)
        layers.append(conv_bn_act(width, head, 1))
        width = head
        desc.append(f"head{head}")
    return Arch(seed, _Net(nn.Sequential(*layers), width).eval(), (cin, res, res), " ".join(desc))


def conv1d_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
                  act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    """A 1-D convolution (padded to keep ``length / stride`` steps), batch norm and activation."""
    layers: list[nn.Module] = [nn.Conv1d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm1d(cout)]
    return nn.Sequential(*layers, *([act()] if act is not None else []))


class _Residual1d(nn.Module):
    """Two 1-D convolutions and a shortcut (Jasper/QuartzNet's residual, ResNet's basic block over time)."""

    def __init__(self, c: int, k: int, depthwise: bool):
        super().__init__()
        first = ([conv1d_bn_act(c, c, k, groups=c, act=None), conv1d_bn_act(c, c, 1)] if depthwise else
                 [conv1d_bn_act(c, c, k)])
        self.body = nn.Sequential(*first, conv1d_bn_act(c, c, 1 if depthwise else k, act=None))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + x)


def _block_1d(rng: random.Random, kind: str, cin: int, cout: int, stride: int) -> nn.Module:
    if kind == "conv":
        return conv1d_bn_act(cin, cout, rng.choice((3, 5, 9, 16, 32, 64)), stride)
    if kind == "res" and stride == 1 and cin == cout:
        return _Residual1d(cin, rng.choice((3, 5, 11, 13, 21)), depthwise=rng.random() < 0.6)
    k = rng.choice((3, 5, 11, 13, 15, 21, 33))  # depthwise-separable (QuartzNet's time-channel separable)
    return nn.Sequential(conv1d_bn_act(cin, cin, k, stride, groups=cin), conv1d_bn_act(cin, cout, 1))


def _draw_1d(seed: int) -> Arch:
    rng = random.Random(seed)
    length, cin = rng.choice(LENGTHS), rng.choice((1, 1, 13, 40, 64, 80))
    width = _w(rng, 8, 64)
    if cin == 1:  # a raw waveform: a long strided kernel first, as CREPE's and SoundNet's
        k, stride = rng.choice((16, 32, 64, 128, 256, 512)), rng.choice((2, 4, 8))
    else:  # feature frames (MFCC, mel bands, sensor channels)
        k, stride = rng.choice((3, 5, 7, 11)), rng.choice((1, 1, 2))
    k = min(k, length // 2)
    layers: list[nn.Module] = [conv1d_bn_act(cin, width, k, stride)]
    desc = [f"{length}x{cin}", f"stem{width}/k{k}s{stride}"]
    for stage in range(rng.randint(2, 4)):
        kind = rng.choice(("conv", "dwsep", "dwsep", "res"))
        cout = _w(rng, width, min(256, int(width * 2.2) + 8))
        n = rng.randint(1, 3)
        for i in range(n):  # a residual stage enters through a separable block where it strides or widens
            layers.append(_block_1d(rng, kind, width, cout, 2 if (i == 0 and stage > 0) else 1))
            width = cout
        desc.append(f"{kind}x{n}:{cout}")
    return Arch(seed, _Net(nn.Sequential(*layers), width, one_d=True).eval(), (cin, length), " ".join(desc))


def macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one inference (convolutions and linear layers)."""
    total = 0

    def hook(m, _inp, out):
        nonlocal total
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            total += out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return total


class _Swap(nn.Module):
    """A transpose of a feature map's height and width (a copy the runtime runs as an operator of its own)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(2, 3)


class _Pad(nn.Module):
    """An explicit zero pad of ``p`` on every side of the spatial axes (1-D: both ends of the sequence)."""

    def __init__(self, p: int):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (self.p,) * (2 * (x.dim() - 2)))


ELTWISE_MODULES = (nn.PReLU, nn.Sigmoid, nn.Softmax, _Swap, _Pad)
# each's chance per architecture (a new one goes last: the draws before it stay as they were)
EXTRAS = {"prelu": 0.3, "softmax": 0.25, "sigmoid": 0.15, "pad": 0.2, "swap": 0.2, "scoremap": 0.2}


def trained_prelu(channels: int, seed: int) -> nn.PReLU:
    """A PReLU as trained models hold one (MTCNN's, face recognizers'): a slope per channel, each its own. LiteRT
    folds equal slopes into one scalar and broadcasts distinct ones per position in the NHWC layout, which XNNPACK
    runs 3-25x slower where the channels are not a multiple of 16 (a 118 x 158 x 10 map: 0.114 against 0.013 ms,
    benchmarks/results/prelu_litert.json); a PReLU of one slope, or of PyTorch's equal initial slopes, never shows
    that cost."""
    prelu = nn.PReLU(channels)
    with torch.no_grad():
        prelu.weight.copy_(torch.rand(channels, generator=torch.Generator().manual_seed(seed)) * 0.5 - 0.1)
    return prelu


def _per_channel_prelus(net: nn.Module, input_shape: tuple[int, ...], seed: int) -> None:
    """Each ReLU of ``net`` replaced by a ``trained_prelu`` over the channels it sees."""
    channels: dict[int, int] = {}
    relus = [m for m in net.modules() if type(m) is nn.ReLU]

    def seen(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:  # (a hook's value would replace the output)
        channels.setdefault(id(m), int(out.shape[1]))

    hooks = [m.register_forward_hook(seen) for m in relus]
    with torch.no_grad():
        net.eval()(torch.zeros(1, *input_shape))
    for h in hooks:
        h.remove()
    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.ReLU and id(child) in channels:
                setattr(parent, name, trained_prelu(channels[id(child)], seed))


def _with_extras(arch: Arch) -> Arch:
    """``arch`` with the operators of ``EXTRAS`` each drawn with its chance (the module docstring)."""
    rng = random.Random(f"extras {arch.seed}")
    drawn = [e for e in EXTRAS if rng.random() < EXTRAS[e]]
    net = arch.model
    assert isinstance(net, _Net)
    if "prelu" in drawn:
        _per_channel_prelus(net, arch.input_shape, arch.seed)
    stem = net.features[0]
    if "pad" in drawn and isinstance(stem, nn.Sequential) and stem[0].kernel_size[0] > 1:
        conv = stem[0]
        conv.padding = (0,) * len(conv.kernel_size)
        net.features[0] = nn.Sequential(_Pad(conv.kernel_size[0] // 2), *stem)
    if "swap" in drawn and len(arch.input_shape) == 3:
        net.features.insert(1, _Swap())
    if "scoremap" in drawn:  # a detector's score map: a softmax over each position's channels (MTCNN's P-Net)
        net.features.append(nn.Softmax(dim=1))
    if "softmax" in drawn or "sigmoid" in drawn:
        net.fc = nn.Sequential(net.fc, nn.Softmax(dim=1) if "softmax" in drawn else nn.Sigmoid())
    if drawn:
        arch.description += " +" + "+".join(d for d in drawn if d != "sigmoid" or "softmax" not in drawn)
    return arch


def random_arch(seed: int, max_macs: float = MAX_MACS, one_d: bool = False, extras: bool = True) -> Arch:
    """A random architecture (redrawn, deterministically, until its MACs are under ``max_macs``); ``one_d``: a 1-D
    one (``random_arch_1d``); ``extras``: with the operators of ``EXTRAS`` (the module docstring)."""
    for attempt in range(100):
        arch = (_draw_1d if one_d else _draw)(seed * 1000 + attempt)
        if macs(arch.model, arch.input_shape) <= max_macs:
            arch.seed = seed
            torch.manual_seed(seed)
            for m in arch.model.modules():  # non-trivial batch norms: the folded weights are not all equal
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
            return _with_extras(arch) if extras else arch
    raise RuntimeError(f"no architecture under {max_macs:.0f} MACs for seed {seed}")


def random_arch_1d(seed: int, max_macs: float = MAX_MACS, extras: bool = True) -> Arch:
    """A random 1-D architecture: input (channels, length)."""
    return random_arch(seed, max_macs, one_d=True, extras=extras)


def deployment_archs() -> list[tuple[nn.Module, tuple[int, int, int]]]:
    """MobileNetV2 (widths 0.35-1.0) and ResNet-18 at 96x96 to 192x192, and MobileNetV2 0.35-0.75 at 224x224: the
    kernels of the models users deploy (up to 1280 channels), which the random architectures, capped in MACs and
    width, seldom hold. Only the probes are drawn from them; MobileNetV2 1.0 and ResNet-18 at 224x224 stay out, so
    that the reference models at that size are predicted from kernels of other sizes."""
    out: list[tuple[nn.Module, tuple[int, int, int]]] = []
    for res in (96, 128, 160, 192, 224):
        for width in (0.35, 0.5, 0.75, 1.0):
            if (width, res) != (1.0, 224):
                out.append((MobileNetV2Standard(width_mult=width, input_size=(res, res)).eval(), (3, res, res)))
        if res != 224:
            out.append((ResNet18(input_size=(res, res)).eval(), (3, res, res)))
    return out


def residual_blocks() -> tuple[type[nn.Module], ...]:
    """Blocks that may end in a residual add (an inverted residual when its ``use_res`` is set)."""
    return (_Basic, InvertedResidual, _Residual1d)


# ---------------------------------------------------------------- one-kernel probes
class _Add(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x  # an element-wise add of two activations, as a residual is


def probe(kernel: Kernel) -> tuple[nn.Module, tuple[int, ...]]:
    """A model holding ``kernel``, and its input shape (C, H, W; C, L for a 1-D convolution). A kernel with a
    feature-map output is followed by a global average pool (every backend lowers a model to a (batch, features)
    output), whose share the calibration subtracts with the pooling's own probes."""
    t, k = kernel.type, kernel
    act = {ACTS["none"]: None, ACTS["relu"]: nn.ReLU, ACTS["relu6"]: nn.ReLU6}[k.act]
    if t == "fc":
        return nn.Sequential(nn.Flatten(), nn.Linear(k.cin, k.cout)).eval(), (k.cin, 1, 1)
    if t == "eltwise":  # its class (kernels.ELTWISE): a copy is a transpose of a map, a pad of a sequence or vector;
        # a softmax over a map is over each position's channels (a score map), over a vector a classifier's output
        # a PReLU over a map follows a 1x1 convolution (the fitting subtracts its time, as the pool's): after a
        # convolution LiteRT runs it channels-last, where its slopes broadcast per position (``trained_prelu``)
        op = {1: lambda: trained_prelu(k.cin, k.cin), 2: nn.Sigmoid, 3: _Swap if k.win > 1 else lambda: _Pad(2),
              4: lambda: nn.Softmax(dim=1)}
        if k.k == 4 and k.hin * k.win == 1:
            return nn.Sequential(nn.Flatten(), nn.Softmax(dim=1)).eval(), (k.cin, 1, 1)
        before = [nn.Conv2d(k.cin, k.cin, 1)] if k.k == 1 and k.hin * k.win > 1 else []
        return nn.Sequential(*before, op[k.k](), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval(), (k.cin, k.hin, k.win)
    if t in ("conv1d", "dwconv1d"):
        m1 = conv1d_bn_act(k.cin, k.cout, k.k, k.s, groups=k.cin if t == "dwconv1d" else 1, act=act)
        return nn.Sequential(m1, nn.AdaptiveAvgPool1d(1), nn.Flatten()).eval(), (k.cin, k.hin)
    if t == "conv":
        m: nn.Module = conv_bn_act(k.cin, k.cout, k.k, k.s, act=act)
    elif t == "dwconv":
        m = conv_bn_act(k.cin, k.cin, k.k, k.s, groups=k.cin, act=act)
    elif t == "add":
        m = _Add()
    elif t == "pool":
        m = nn.MaxPool2d(k.k, k.s)
    elif t != "gpool":
        raise ValueError(f"unknown kernel type {t!r}")
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*([] if t == "gpool" else [m]), *head).eval(), (k.cin, k.hin, k.win)
