"""Reference architectures, defined here because torchvision does not import beside the CPU torch.

Every model takes ``in_channels``, ``num_classes`` and ``input_size`` (H, W) so one recipe key
changes the data it fits. They use only ops every backend lowers: conv (incl. depthwise),
batch norm, ReLU/ReLU6, residual add, concatenation-free pooling, linear.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round a width to a multiple of ``divisor`` (SIMD-friendly), never dropping below 90%."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                act: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SmallCNN(nn.Module):
    """Two conv blocks and a classifier: the fastest model to test a pipeline with."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: Sequence[int] = (28, 28),
                 width: int = 16):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_act(in_channels, width), nn.MaxPool2d(2),
            conv_bn_act(width, width * 2), nn.MaxPool2d(2),
            conv_bn_act(width * 2, width * 4),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn_act(cin, cout, 3, stride)
        self.conv2 = conv_bn_act(cout, cout, 3, 1, act=None)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = conv_bn_act(cin, cout, 1, stride, act=None)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-style ResNet (He et al.): 3 stages of basic blocks, depth = 6n + 2."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: Sequence[int] = (28, 28),
                 depth: int = 20, width_mult: float = 1.0):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"resnet depth must be 6n+2 (8, 14, 20, 32, ...), got {depth}")
        n = (depth - 2) // 6
        widths = [_make_divisible(w * width_mult) for w in (16, 32, 64)]
        self.stem: nn.Module = conv_bn_act(in_channels, widths[0])
        self.layers, cin = basic_stages(widths, n)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def basic_stages(widths: Sequence[int], n: int) -> tuple[nn.Sequential, int]:
    """``n`` basic blocks per width, each stage after the first starting with a stride of 2; (blocks, channels out)."""
    blocks: list[nn.Module] = []
    cin = widths[0]
    for stage, w in enumerate(widths):
        for i in range(n):
            blocks.append(BasicBlock(cin, w, 2 if (i == 0 and stage > 0) else 1))
            cin = w
    return nn.Sequential(*blocks), cin


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(cin, hidden, 1, act=nn.ReLU6))
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   conv_bn_act(hidden, cout, 1, act=None)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2-style network sized for small inputs (28x28 to 64x64).

    The stem has stride 2 and one more stage downsamples, so a 28x28 input ends at 7x7 and no
    expanded block runs at full resolution (that is what keeps CPU training within minutes).
    ``width_mult`` scales every width.
    """

    # expansion t, channels c, repeats n, first stride s
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 2, 1))

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: Sequence[int] = (28, 28),
                 width_mult: float = 1.0, last_channels: int = 256, dropout: float = 0.1):
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        layers: list[nn.Module] = [conv_bn_act(in_channels, cin, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in self.SETTINGS:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _make_divisible(last_channels * max(1.0, width_mult))
        layers.append(conv_bn_act(cin, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.features(x)), 1)
        return self.classifier(self.dropout(x))


class MobileNetV2Standard(MobileNetV2):
    """MobileNetV2 as published (Sandler et al., 2018: 17 inverted-residual blocks, 5 downsamplings, 1280 features):
    the deployment-size reference for 96x96 to 224x224 inputs. 320 M MACs at 224x224; 3,504,872 parameters at 1000
    classes, as torchvision's mobilenet_v2. Same blocks as ``MobileNetV2``: every pass and backend treats both alike."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, input_size: Sequence[int] = (224, 224),
                 width_mult: float = 1.0, last_channels: int = 1280, dropout: float = 0.2):
        super().__init__(in_channels, num_classes, input_size, width_mult, last_channels, dropout)


class ResNet18(CifarResNet):
    """ResNet-18 (He et al., 2016): 7x7 stride-2 stem, max pool, four stages of two basic blocks (64-512 channels).
    1.8 G MACs at 224x224; 11,689,512 parameters at 1000 classes, as torchvision's resnet18: the dense-convolution
    deployment reference."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, input_size: Sequence[int] = (224, 224),
                 width_mult: float = 1.0):
        nn.Module.__init__(self)
        widths = [_make_divisible(w * width_mult) for w in (64, 128, 256, 512)]
        self.stem = nn.Sequential(conv_bn_act(in_channels, widths[0], 7, 2), nn.MaxPool2d(3, 2, 1))
        self.layers, cin = basic_stages(widths, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)


class DSCNN(nn.Module):
    """DS-CNN for keyword spotting (Zhang et al., 'Hello Edge'): input is a (1, frames, mfcc) map.

    A strided stem conv, then depthwise-separable blocks, average pool, classifier.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 12, input_size: Sequence[int] = (49, 10),
                 width: int = 64, blocks: int = 4):
        super().__init__()
        h, w = input_size
        stem_k = (min(10, h), min(4, w))
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, stem_k, stride=(2, 2 if w >= 8 else 1),
                      padding=(stem_k[0] // 2, stem_k[1] // 2), bias=False),
            nn.BatchNorm2d(width), nn.ReLU())
        body: list[nn.Module] = []
        for _ in range(blocks):
            body += [conv_bn_act(width, width, 3, 1, groups=width), conv_bn_act(width, width, 1)]
        self.body = nn.Sequential(*body)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.body(self.stem(x))), 1))


class MLP(nn.Module):
    """A multilayer perceptron on the flattened input: the Linear-heavy reference, where weights, not activations,
    are most of the bytes an inference moves (what dynamic and weight-only quantization are for)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: Sequence[int] = (28, 28),
                 hidden: Sequence[int] = (512, 256), dropout: float = 0.1):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * input_size[0] * input_size[1]
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ZOO: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "resnet": CifarResNet,
    "mobilenetv2": MobileNetV2,
    "mobilenetv2_standard": MobileNetV2Standard,
    "resnet18": ResNet18,
    "dscnn": DSCNN,
    "mlp": MLP,
}
