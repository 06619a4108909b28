"""Preprocessing that travels with the model: recorded in the recipe, applied in training and in
every runtime, written into every artifact's metadata so the device applies the same."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Preprocessing:
    """``y = (x * scale - mean[c]) / std[c]`` on raw pixel values, channel-wise."""

    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channel_axis: int = 1  # of a batch: (N, C, H, W) images by default

    def apply(self, x: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """Raw batch -> normalized float32 (mean and std per channel, along ``channel_axis``)."""
        axis = self.channel_axis if channel_axis is None else channel_axis
        shape = [1] * x.ndim
        shape[axis] = -1
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        return ((x.astype(np.float32) * np.float32(self.scale)) - mean) / std

    def to_dict(self) -> dict:
        d = asdict(self)
        d["formula"] = "(x * scale - mean[c]) / std[c], x = raw values, c along channel_axis of the batch"
        return d
