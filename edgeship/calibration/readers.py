"""Calibration readers shared by every backend: one check of the calibration array, then the same
samples handed to each quantizer in the form it asks for.

- ``check_calibration``: too few samples, NaN/inf or constant data is bad input, raised before any
  conversion starts (a quantizer fed such data produces an artifact that silently collapses).
- ``iter_batches``: a plain batched iterator (NCHW, or NHWC for TFLite's representative dataset).
- ``OrtCalibrationReader``: ONNX Runtime's ``CalibrationDataReader`` for ``quantize_static``.
- ``nncf_dataset``: an ``nncf.Dataset`` for ``nncf.quantize``.

The array is ``LowerContext.calib``: normalized NCHW float32 samples, already the seeded subset of
the calibration split that ``QuantSettings.samples`` asks for.
"""

from __future__ import annotations

from typing import Iterator, Literal

import numpy as np

from edgeship.errors import EdgeshipError

try:  # a core dependency, but a broken install must fail only the ONNX targets, naming the package
    from onnxruntime.quantization import CalibrationDataReader as _OrtReaderBase
except ImportError:  # pragma: no cover
    _OrtReaderBase = object

# Fewer samples than this cannot estimate activation ranges (percentile and entropy histograms are
# meaningless on a handful of images). The calibrate pass and recipes default to hundreds.
MIN_CALIBRATION_SAMPLES = 32


class CalibrationDataError(EdgeshipError):
    """The calibration data cannot calibrate anything (bad input: exit 2, nothing written)."""


def check_calibration(calib: np.ndarray, what: str = "calibration data",
                      min_samples: int = MIN_CALIBRATION_SAMPLES) -> np.ndarray:
    """Return ``calib`` as contiguous float32 NCHW, or raise CalibrationDataError naming the problem."""
    x = np.asarray(calib)
    if x.ndim != 4:
        raise CalibrationDataError(f"{what}: expected a batch of NCHW samples, got shape {x.shape}",
                                   "give images of the recipe's input.shape")
    if len(x) < min_samples:
        n = len(x)
        raise CalibrationDataError(f"{what}: only {n} sample{'' if n == 1 else 's'}; at least {min_samples} are "
                                   "needed (the calibration set is the smaller of the calibrate pass's samples and "
                                   "the calibration split, which is data.calib_size capped at the training data left "
                                   "after the test and validation splits)",
                                   f"set data.calib_size and the calibrate pass's samples to >= {min_samples} (ideally "
                                   "a few hundred); if they already are, the source has too few samples: give more "
                                   "data or lower data.val_size / data.test_fraction")
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


def iter_batches(calib: np.ndarray, batch_size: int = 1, layout: Literal["NCHW", "NHWC"] = "NCHW",
                 dtype=np.float32) -> Iterator[np.ndarray]:
    """Yield ``calib`` in order as batches of ``batch_size`` (the last one may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = np.asarray(calib)
    if layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    elif layout != "NCHW":
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    for i in range(0, len(x), batch_size):
        yield np.ascontiguousarray(x[i:i + batch_size], dtype)


class OrtCalibrationReader(_OrtReaderBase):
    """ONNX Runtime's ``CalibrationDataReader``: ``get_next`` -> ``{input_name: batch}`` until
    exhausted, ``rewind`` starts over, ``set_range`` serves ``CalibStridedMinMax``."""

    def __init__(self, calib: np.ndarray, input_name: str, batch_size: int = 16):
        self.calib = np.ascontiguousarray(calib, np.float32)
        self.input_name = input_name
        self.batch_size = batch_size
        self.start, self.end = 0, len(self.calib)
        self.rewind()

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        part = self.calib[self.start:self.end]
        self._it = ({self.input_name: b} for b in iter_batches(part, self.batch_size))

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end = start_index, end_index
        self.rewind()

    def __len__(self) -> int:
        return len(self.calib)


def ort_reader(calib: np.ndarray, input_name: str, batch_size: int = 16) -> OrtCalibrationReader:
    """An onnxruntime ``CalibrationDataReader`` over ``calib`` (checked first)."""
    from edgeship.targets.base import require

    require("onnxruntime.quantization", "onnxruntime", "onnx")
    return OrtCalibrationReader(check_calibration(calib), input_name, batch_size)


def nncf_dataset(calib: np.ndarray, batch_size: int = 1):
    """An ``nncf.Dataset`` of float32 NCHW batches (batch 1 by default: NNCF's statistics are per sample).

    Pass ``subset_size=len(calib)`` to ``nncf.quantize`` so every sample is used."""
    from edgeship.targets.base import require

    nncf = require("nncf", "nncf", "openvino")
    return nncf.Dataset(list(iter_batches(check_calibration(calib), batch_size)))
