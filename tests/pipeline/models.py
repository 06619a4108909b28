"""Small user models for the pass tests: ops the zoo does not cover (concatenation, channel shuffle)."""

from __future__ import annotations

import torch
from torch import nn


def cbr(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ConcatNet(nn.Module):
    """Two branches concatenated along channels (an Inception-style block)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = cbr(1, 16)
        self.a, self.b = cbr(16, 16), cbr(16, 16, 1)
        self.head = cbr(32, 32)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.cat([self.a(x), self.b(x)], 1)
        return self.fc(self.head(x).mean((2, 3)))


class ShuffleNet(nn.Module):
    """A channel shuffle written with view/transpose: torch-pruning cannot follow its channels."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = cbr(1, 16)
        self.mix = cbr(16, 16, 1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        b, _, h, w = x.shape
        x = x.view(b, 4, 4, h, w).transpose(1, 2).reshape(b, 16, h, w)
        return self.fc(self.mix(x).mean((2, 3)))


class TwoShuffles(nn.Module):
    """Two channel shuffles at different depths: pruning fails past two layers, both named in one run."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = cbr(1, 16)
        self.mid = cbr(16, 16)
        self.mix = cbr(16, 16, 1)
        self.fc = nn.Linear(16, num_classes)

    @staticmethod
    def shuffle(x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        return x.view(b, 4, 4, h, w).transpose(1, 2).reshape(b, 16, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shuffle(self.mid(self.shuffle(self.stem(x))))
        return self.fc(self.mix(x).mean((2, 3)))
