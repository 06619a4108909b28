"""`data.source.stream: true`: the training split of an .npz (memory-mapped) or an image folder is read per
batch, gives the splits and the trained model that loading it whole gives, and bad data is still refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import edgeship
from edgeship.calibration.datasets import load_splits
from edgeship.calibration.streaming import LazyRows
from edgeship.errors import EdgeshipError
from edgeship.pipeline.training import StreamedImages, TensorData
from edgeship.recipe import DataSpec, InputSpec, Recipe
from helpers import digits_recipe_dict

SHAPE = InputSpec(shape=(1, 8, 8))


def digits_npz(path: Path, nhwc: bool = False, compressed: bool = False) -> Path:
    d = load_digits()
    x = d.images.astype(np.uint8)[..., None] if nhwc else d.images.astype(np.uint8)
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=d.target)
    return path


def splits(path: Path, stream: bool, kind: str = "npz"):
    return load_splits(DataSpec.model_validate({"source": {"kind": kind, "path": str(path), "stream": stream},
                                                "val_size": 150, "calib_size": 100}), SHAPE)


@pytest.mark.parametrize("nhwc", [False, True])
def test_streamed_npz_gives_the_same_splits(tmp_path, nhwc):
    path = digits_npz(tmp_path / "d.npz", nhwc)
    loaded, streamed = splits(path, False), splits(path, True)
    assert isinstance(streamed.train.x, LazyRows) and streamed.train.x.shape == loaded.train.x.shape
    for k in ("val", "calib", "test"):  # bounded splits are read into memory
        a, b = getattr(loaded, k), getattr(streamed, k)
        assert isinstance(b.x, np.ndarray) and np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    idx = np.array([5, 0, 17, 5, 900])  # any order, repeats
    assert np.array_equal(streamed.train.x[idx], loaded.train.x[idx])
    assert np.array_equal(streamed.train.x[:], loaded.train.x) and np.array_equal(streamed.train.y, loaded.train.y)


def test_streamed_images_are_preprocessed_per_batch(tmp_path):
    path = digits_npz(tmp_path / "d.npz")
    pre = SHAPE.preprocessing_obj()
    a, b = (TensorData.from_array(splits(path, s).train, pre) for s in (False, True))
    assert isinstance(b.x, StreamedImages) and len(b.x) == len(a.x)
    idx = torch.tensor([3, 1, 400])
    assert torch.equal(a.x[idx], b.x[idx]) and torch.equal(a.x[10:20], b.x[10:20])


def test_a_streamed_export_trains_the_same_model(tmp_path, digits_checkpoint):
    path = digits_npz(tmp_path / "d.npz")
    models = []
    for stream in (False, True):
        r = digits_recipe_dict(tmp_path / str(stream), passes=[{"name": "distill", "epochs": 1}])
        r["model"]["weights"] = str(digits_checkpoint)
        r["data"]["source"] = {"kind": "npz", "path": str(path), "stream": stream}
        run = edgeship.export(r, quiet=True, measure=False)
        assert run.ok and not run.stages[0].cached
        models.append(torch.load(run.run_dir / "model" / "compressed.pt", weights_only=False).state_dict())
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])


def test_streamed_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    loaded, streamed = (splits(tmp_path / "imgs", s, "image_folder") for s in (False, True))
    assert isinstance(streamed.train.x, LazyRows) and streamed.labels == loaded.labels == ("cat", "dog")
    assert np.array_equal(streamed.train.x[:], loaded.train.x) and np.array_equal(streamed.test.x, loaded.test.x)


def test_bad_streamed_data_is_refused(tmp_path):
    with pytest.raises(EdgeshipError, match="compressed .*cannot be memory-mapped"):
        splits(digits_npz(tmp_path / "c.npz", compressed=True), True)
    np.savez(tmp_path / "flat.npz", x=np.full((50, 8, 8), 7, np.uint8), y=np.arange(50) % 2)
    with pytest.raises(EdgeshipError, match="every value in its 50 images is 7"):
        splits(tmp_path / "flat.npz", True)
    x = np.random.default_rng(0).random((50, 8, 8), np.float32)
    x[31, 2, 2] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(50) % 2)
    with pytest.raises(EdgeshipError, match="NaN or inf values .*sample index 31"):
        splits(tmp_path / "nan.npz", True)
    with pytest.raises(ValueError, match="stream: true reads npz and image_folder"):
        Recipe.model_validate(digits_recipe_dict(tmp_path, data={"source": {"kind": "digits", "stream": True}}))
