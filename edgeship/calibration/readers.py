"""The calibration data every backend reads: one check of the calibration array, then the same samples
handed to each quantizer in batches. Each backend wraps ``iter_batches`` in its own quantizer's reader
protocol (ONNX Runtime's ``CalibrationDataReader`` in ``targets/onnx_int8.py``, an ``nncf.Dataset`` in
``targets/openvino.py``, TFLite's representative dataset in ``targets/tflite.py``).

- ``check_calibration``: too few samples, NaN/inf or constant data is bad input, raised before any
  conversion starts (a quantizer fed such data produces an artifact that silently collapses).
- ``iter_batches``: a plain batched iterator (NCHW, or channels last for TFLite's representative dataset: NHWC for an
  image, NLC for a 1-D signal).

The array is ``LowerContext.calib``: normalized NCHW float32 samples, already the seeded subset of
the calibration split that ``QuantSettings.samples`` asks for.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np

from edgeship.errors import EdgeshipError
from edgeship.recipe import IOInput

# Fewer samples than this cannot estimate activation ranges (percentile and entropy histograms are
# meaningless on a handful of images). The calibrate pass and recipes default to hundreds.
MIN_CALIBRATION_SAMPLES = 32


class CalibrationDataError(EdgeshipError):
    """The calibration data cannot calibrate anything (bad input: exit 2, nothing written)."""


def check_calibration(calib: np.ndarray, what: str = "calibration data",
                      min_samples: int = MIN_CALIBRATION_SAMPLES, ndim: int = 4) -> np.ndarray:
    """Return ``calib`` as contiguous float32 (NCHW images by default, any batch of ``ndim`` axes), or raise
    CalibrationDataError naming the problem."""
    x = np.asarray(calib)
    if x.ndim != ndim:
        expected = "NCHW samples" if ndim == 4 else f"samples ({ndim} axes with the batch)"
        raise CalibrationDataError(f"{what}: expected a batch of {expected}, got shape {x.shape}",
                                   "give samples of the shape the recipe declares (input.shape or io.inputs)")
    _check_count(len(x), what, min_samples)
    x = np.ascontiguousarray(x, np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        n = int(bad.reshape(len(x), -1).any(1).sum())
        raise CalibrationDataError(f"{what}: {n} of {len(x)} samples contain NaN or inf values",
                                   "clean the calibration source (or drop those samples) and rerun")
    if float(x.max()) == float(x.min()):
        raise CalibrationDataError(f"{what}: every value is {float(x.min()):g} after preprocessing (constant data "
                                   "has no range to calibrate)", "use real images from the training distribution")
    if len(x) > 1 and np.all(x == x[:1]):
        raise CalibrationDataError(f"{what}: all {len(x)} samples are the same image",
                                   "use distinct real images from the training distribution")
    return x


def iter_batches(calib: np.ndarray, batch_size: int = 1, layout: Literal["NCHW", "NHWC", "NCL", "NLC"] = "NCHW",
                 dtype=np.float32) -> Iterator[np.ndarray]:
    """Yield ``calib`` in order as batches of ``batch_size`` (the last one may be smaller): as stored (NCHW images,
    NCL signals, or any other array), or channels last (NHWC, NLC)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = np.asarray(calib)
    if layout in ("NHWC", "NLC"):
        if x.ndim != len(layout):
            raise ValueError(f"layout {layout} needs {len(layout) - 2}-D samples with channels first, got samples of "
                             f"shape {x.shape[1:]}")
        x = np.moveaxis(x, 1, -1)
    elif layout not in ("NCHW", "NCL"):  # as stored
        raise ValueError(f"layout must be NCHW, NHWC, NCL or NLC, got {layout!r}")
    for i in range(0, len(x), batch_size):
        yield np.ascontiguousarray(x[i:i + batch_size], dtype)


def _check_count(n: int, what: str, min_samples: int) -> None:
    if n < min_samples:
        raise CalibrationDataError(f"{what}: only {n} sample{'' if n == 1 else 's'}; at least {min_samples} are "
                                   "needed (the calibration set is the smaller of the calibrate pass's samples and "
                                   "the calibration split, which is data.calib_size capped at the training data left "
                                   "after the test and validation splits)",
                                   f"set data.calib_size and the calibrate pass's samples to >= {min_samples} (ideally "
                                   "a few hundred); if they already are, the source has too few samples: give more "
                                   "data or lower data.val_size / data.test_fraction")


def check_calibration_inputs(arrays: list[np.ndarray], specs: list[IOInput]) -> list[np.ndarray]:
    """Every graph input's calibration samples: float inputs fed from data checked like ``check_calibration``
    (count, NaN/inf, constant), integer and filled ones only counted."""
    out = []
    for a, spec in zip(arrays, specs):
        if spec.dtype == "float32" and spec.fill is None:
            out.append(check_calibration(a, f"calibration data of input {spec.name!r}", ndim=len(spec.shape) + 1))
        else:
            out.append(np.ascontiguousarray(a))
    if out:
        _check_count(len(out[0]), "calibration data", MIN_CALIBRATION_SAMPLES)
    return out
