from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from edgeship.calibration.datasets import FASHION_MNIST_DIR, load_splits, read_idx
from edgeship.errors import EdgeshipError
from edgeship.recipe import DataSpec, InputSpec


def spec(**kw) -> DataSpec:
    return DataSpec.model_validate(kw)


def test_fashion_mnist_idx_and_disjoint_splits():
    s = load_splits(spec(source={"kind": "fashion_mnist"}, val_size=5000, calib_size=1000),
                    InputSpec(shape=(1, 28, 28)))
    assert s.sizes() == {"train": 55000, "val": 5000, "calib": 1000, "test": 10000}
    assert s.train.x.dtype == np.uint8 and s.train.x.shape[1:] == (1, 28, 28)
    assert s.labels[0] == "t-shirt/top" and set(np.unique(s.test.y)) == set(range(10))
    # calibration samples come from the training file, never from the test split or validation
    test_rows = {r.tobytes() for r in s.test.x.reshape(len(s.test), -1)}
    val_rows = {r.tobytes() for r in s.val.x.reshape(len(s.val), -1)}
    calib_rows = [r.tobytes() for r in s.calib.x.reshape(len(s.calib), -1)]
    assert sum(r in val_rows for r in calib_rows) == 0
    # Fashion-MNIST has a handful of exact duplicate images across its train/test files; allow those
    assert sum(r in test_rows for r in calib_rows) <= 2


def test_splits_are_seeded():
    a = load_splits(spec(source={"kind": "digits"}, val_size=100, calib_size=50, seed=3), InputSpec(shape=(1, 8, 8)))
    b = load_splits(spec(source={"kind": "digits"}, val_size=100, calib_size=50, seed=3), InputSpec(shape=(1, 8, 8)))
    c = load_splits(spec(source={"kind": "digits"}, val_size=100, calib_size=50, seed=4), InputSpec(shape=(1, 8, 8)))
    assert np.array_equal(a.calib.x, b.calib.x) and not np.array_equal(a.calib.x, c.calib.x)
    assert len(a.test) == round(1797 * 0.2)


def test_idx_path_and_gz(tmp_path):
    imgs = read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")[:300]
    labels = read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")[:300]

    def write(path: Path, arr: np.ndarray):
        header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
        path.write_bytes(header + arr.tobytes())

    write(tmp_path / "mine-images-idx3-ubyte", imgs)
    write(tmp_path / "mine-labels-idx1-ubyte", labels)
    s = load_splits(spec(source={"kind": "idx", "path": str(tmp_path / "mine-images-idx3-ubyte")},
                         val_size=20, calib_size=10), InputSpec(shape=(1, 28, 28)))
    assert len(s.test) == 60 and len(s.val) == 20
    # truncated file -> clear error
    (tmp_path / "bad-images-idx3-ubyte").write_bytes((tmp_path / "mine-images-idx3-ubyte").read_bytes()[:1000])
    with pytest.raises(EdgeshipError, match="truncated"):
        read_idx(tmp_path / "bad-images-idx3-ubyte")


def test_npz_nhwc_is_transposed(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.repeat(d.images[..., None], 3, axis=-1).astype(np.float32)  # N, H, W, 3
    np.savez(tmp_path / "d.npz", x=x, y=d.target)
    s = load_splits(spec(source={"kind": "npz", "path": str(tmp_path / "d.npz")}, val_size=50, calib_size=20),
                    InputSpec(shape=(3, 8, 8), preprocessing={"scale": 1 / 16, "mean": [0.5], "std": [0.5]}))
    assert s.train.x.shape[1:] == (3, 8, 8)


def test_image_folder(tmp_path):
    from sklearn.datasets import load_digits

    d = load_digits()
    for i in range(60):
        cls = tmp_path / "imgs" / f"class_{d.target[i]}"
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 15).astype(np.uint8)).save(cls / f"{i}.png")
    s = load_splits(spec(source={"kind": "image_folder", "path": str(tmp_path / "imgs")}, val_size=5, calib_size=5),
                    InputSpec(shape=(1, 16, 16)))
    assert s.train.x.shape[1:] == (1, 16, 16)
    assert s.labels == tuple(f"class_{i}" for i in range(10))


def test_shape_mismatch_is_explained():
    with pytest.raises(EdgeshipError, match=r"input.shape"):
        load_splits(spec(source={"kind": "digits"}), InputSpec(shape=(1, 28, 28)))


def test_npz_without_x_y(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 8, 8)))
    with pytest.raises(EdgeshipError, match="not 'x' and 'y'"):
        load_splits(spec(source={"kind": "npz", "path": str(tmp_path / "d.npz")}), InputSpec(shape=(1, 8, 8)))
