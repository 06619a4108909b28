"""The calibration data every backend reads (checks and batching), on real digits samples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgeship.calibration.readers import MIN_CALIBRATION_SAMPLES, CalibrationDataError, check_calibration, iter_batches


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    x = load_digits().images[:100].astype(np.float32)[:, None]  # (100, 1, 8, 8)
    return (x / 16.0 - 0.5) / 0.5


def test_check_accepts_real_samples_as_float32(calib):
    out = check_calibration(calib.astype(np.float64))
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == calib.shape


@pytest.mark.parametrize("make, message", [
    (lambda c: c[:MIN_CALIBRATION_SAMPLES - 1], f"only {MIN_CALIBRATION_SAMPLES - 1} samples"),
    (lambda c: c[:1], "only 1 sample; at least"),
    (lambda c: np.full_like(c, 0.25), "every value is 0.25 after preprocessing"),
    (lambda c: np.repeat(c[:1], len(c), axis=0), "all 100 samples are the same image"),
    (lambda c: np.where(np.arange(c.size).reshape(c.shape) % 997 == 0, np.inf, c), "contain NaN or inf"),
    (lambda c: c[:, 0], "expected a batch of NCHW samples"),
])
def test_check_rejects_unusable_data(calib, make, message):
    with pytest.raises(CalibrationDataError, match=message) as e:
        check_calibration(make(calib))
    assert e.value.exit_code == 2 and e.value.fix  # bad input, with a fix


def test_too_few_samples_names_the_real_limits(calib):
    """calib_size may already be large: the message names every limit, and the fix says what to raise."""
    with pytest.raises(CalibrationDataError) as e:
        check_calibration(calib[:28])
    msg = str(e.value)
    assert "only 28 samples; at least 32 are needed" in msg and "\n" not in msg
    assert "calibrate pass's samples" in msg and "data.calib_size" in msg
    assert "give more data or lower data.val_size / data.test_fraction" in e.value.fix


def test_iter_batches_covers_every_sample_in_order(calib):
    batches = list(iter_batches(calib, 32))
    assert [len(b) for b in batches] == [32, 32, 32, 4]
    np.testing.assert_array_equal(np.concatenate(batches), calib)
    nhwc = list(iter_batches(calib, 1, "NHWC"))
    assert len(nhwc) == 100 and nhwc[0].shape == (1, 8, 8, 1) and nhwc[0].flags.c_contiguous
    np.testing.assert_array_equal(nhwc[7][0, :, :, 0], calib[7, 0])
    with pytest.raises(ValueError):
        next(iter_batches(calib, 0))
