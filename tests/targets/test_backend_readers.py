"""Each backend's calibration reader (its quantizer's protocol over the shared calibration array), on real
digits samples."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from edgeship.calibration.readers import CalibrationDataError
from edgeship.targets.onnx_int8 import ort_reader
from edgeship.targets.openvino import nncf_dataset


@pytest.fixture(scope="module")
def calib() -> np.ndarray:
    x = load_digits().images[:100].astype(np.float32)[:, None]  # (100, 1, 8, 8)
    return (x / 16.0 - 0.5) / 0.5


def test_ort_reader_rewinds_and_serves_ranges(calib):
    from onnxruntime.quantization import CalibrationDataReader

    reader = ort_reader(calib, "input", batch_size=40)
    assert isinstance(reader, CalibrationDataReader) and len(reader) == 100
    first = [reader.get_next() for _ in range(4)]
    assert [len(b["input"]) for b in first[:3]] == [40, 40, 20] and first[3] is None
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["input"], first[0]["input"])
    reader.set_range(50, 60)
    np.testing.assert_array_equal(reader.get_next()["input"], calib[50:60])
    assert reader.get_next() is None
    with pytest.raises(CalibrationDataError):
        ort_reader(calib[:3], "input")


def test_nncf_dataset_yields_each_sample(calib):
    ds = nncf_dataset(calib)
    items = list(ds.get_inference_data())
    assert len(items) == 100 and items[0].shape == (1, 1, 8, 8)
    np.testing.assert_array_equal(items[99][0], calib[99])
