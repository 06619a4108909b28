"""The whole-model quantities a predictor's correction weighs beside the kernel sums
(``predictor.Correction``): each a function of a model's kernels, in graph order."""

from __future__ import annotations

from edgeship.devices.kernels import Kernel


def weight_mb(ks: list[Kernel], weight_bytes: int) -> float:
    """MB of the kernels' weights at ``weight_bytes`` per weight."""
    return sum(k.weights for k in ks) * weight_bytes / 1024 / 1024


def beyond_cache_mb(ks: list[Kernel], cache_kb: float | None, weight_bytes: int) -> float:
    """MB of the kernels' weights beyond a cache of ``cache_kb`` (0 when it is unknown)."""
    if not cache_kb:
        return 0.0
    return max(0.0, weight_mb(ks, weight_bytes) - cache_kb / 1024)


def input_elements(ks: list[Kernel]) -> float:
    """Millions of elements the kernels read (their inputs)."""
    return sum(k.hin * k.win * k.cin for k in ks) / 1e6


def image_elements(ks: list[Kernel]) -> float:
    """Millions of elements of a model's image input of two or more channels, where its first kernel is a 2-D
    convolution reading it (the kernels are in graph order). OpenVINO reorders such an input from planar to
    channel-interleaved before its first int8 convolution (a Reorder no kernel holds: 11 us for a 3 x 112 x 112
    input on the Zen 4 EPYC, a fitting architecture's counters in benchmarks/data/predictor_zen4_p40_keep.tar.xz), a
    one-channel one needs none; the fit finds what each runtime pays."""
    k = ks[0] if ks else None
    return k.hin * k.win * k.cin / 1e6 if k is not None and k.cin > 1 and k.type in ("conv", "dwconv") else 0.0
