from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeship.calibration.datasets import FASHION_MNIST_DIR, load_digits, load_splits, read_idx
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


def test_digits_read_without_scikit_learn_are_its_own():
    """The digits are read from scikit-learn's bundled file without importing scikit-learn (its import is most of a
    command's start-up): the same images and classes as its own loader gives."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits as theirs

    ours, d = load_digits(), theirs()
    assert ours.x.shape == (1797, 1, 8, 8) and ours.x.dtype == np.float32 and ours.y.dtype == np.int64
    assert np.array_equal(ours.x[:, 0], d.images) and np.array_equal(ours.y, d.target)
    code = ("import sys; from edgeship.calibration.datasets import load_digits; load_digits(); "
            "print(any(m.startswith('sklearn') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


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


def test_resize_makes_fashion_mnist_96x96_rgb_after_the_split():
    """data.resize: the same seeded split as the 28x28 data, each kept sample upscaled (bilinear) to the input's
    size and its one channel repeated to three, still uint8 pixels; shrinking it back gives the original."""
    import torch

    small = load_splits(spec(source={"kind": "fashion_mnist"}, val_size=50, calib_size=40, train_size=300,
                             test_size=100), InputSpec(shape=(1, 28, 28)))
    big = load_splits(spec(source={"kind": "fashion_mnist"}, val_size=50, calib_size=40, train_size=300,
                           test_size=100, resize=True), InputSpec(shape=(3, 96, 96)))
    assert big.sizes() == small.sizes() == {"train": 300, "val": 50, "calib": 40, "test": 100}
    for k in ("train", "val", "calib", "test"):
        a, b = getattr(small, k), getattr(big, k)
        assert b.x.dtype == np.uint8 and b.x.shape[1:] == (3, 96, 96)
        assert np.array_equal(a.y, b.y)
        assert np.array_equal(b.x[:, 0], b.x[:, 1]) and np.array_equal(b.x[:, 0], b.x[:, 2])
    # each one the bilinear upscale of the same 28x28 sample, rounded to pixels; the mean brightness kept
    up = torch.nn.functional.interpolate(torch.from_numpy(small.test.x.astype(np.float32)), size=(96, 96),
                                         mode="bilinear", align_corners=False).numpy()
    assert np.abs(big.test.x[:, :1].astype(np.float32) - up).max() <= 0.5 + 1e-3
    assert abs(float(big.test.x.mean()) - float(small.test.x.mean())) < 2
    # without resize: the size mismatch is bad input, as before
    with pytest.raises(EdgeshipError, match=r"input.shape"):
        load_splits(spec(source={"kind": "fashion_mnist"}, train_size=10, test_size=10), InputSpec(shape=(3, 96, 96)))


def test_resize_refuses_what_it_cannot_do(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (40, 2, 8, 8)).astype(np.uint8)  # two channels, not one
    np.savez(tmp_path / "two.npz", x=x, y=np.arange(40) % 4)
    with pytest.raises(EdgeshipError, match="cannot make 3 channels"):
        load_splits(spec(source={"kind": "npz", "path": str(tmp_path / "two.npz")}, val_size=4, calib_size=4,
                         resize=True), InputSpec(shape=(3, 16, 16)))
    with pytest.raises(ValueError, match="stream"):
        spec(source={"kind": "npz", "path": str(tmp_path / "two.npz"), "stream": True}, resize=True)


def test_shape_mismatch_is_explained():
    with pytest.raises(EdgeshipError, match=r"input.shape"):
        load_splits(spec(source={"kind": "digits"}), InputSpec(shape=(1, 28, 28)))


def test_npz_without_x_y(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 8, 8)))
    with pytest.raises(EdgeshipError, match="not 'x' and 'y'"):
        load_splits(spec(source={"kind": "npz", "path": str(tmp_path / "d.npz")}), InputSpec(shape=(1, 8, 8)))


# ---------------------------------------------------------------- bad data, refused when it is loaded
def digits_npz(path: Path, n: int = 200, x=None, y=None) -> Path:
    """The first ``n`` scikit-learn digits (raw 0..16 values) as an .npz, ``x``/``y`` replaced if given."""
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(path, x=d.images[:n].astype(np.float32) if x is None else x, y=d.target[:n] if y is None else y)
    return path


def npz_splits(path: Path, **kw):
    return load_splits(spec(source={"kind": "npz", "path": str(path)}, **kw), InputSpec(shape=(1, 8, 8)))


def test_calib_size_is_limited_only_by_the_training_partition(tmp_path):
    """200 samples: 40 test, 160 training partition, 20 of them validation. Calibration samples stay
    training data, so calib_size 64 gets 64 (it used to be cut to a fifth: 28), and a huge calib_size
    gets every training sample; sizes() (the report's data.sizes) says what was used."""
    f = digits_npz(tmp_path / "d.npz")
    s = npz_splits(f, calib_size=64, val_size=20)
    assert s.sizes() == {"train": 140, "val": 20, "calib": 64, "test": 40}
    assert len({r.tobytes() for r in s.calib.x} & {r.tobytes() for r in s.val.x}) == 0
    s = npz_splits(f, calib_size=100000, val_size=20)
    assert s.sizes() == {"train": 140, "val": 20, "calib": 140, "test": 40}
    # val_size stays capped at a fifth of the training partition (documented)
    assert npz_splits(f, calib_size=64, val_size=1000).sizes()["val"] == 32


def test_too_small_source_for_a_test_split(tmp_path):
    f = digits_npz(tmp_path / "one.npz", n=1)
    with pytest.raises(EdgeshipError, match=r"only 1 sample, too few to hold out a test split.*test_source"):
        npz_splits(f)
    s = npz_splits(digits_npz(tmp_path / "two.npz", n=2))
    assert s.sizes()["test"] == 1 and s.sizes()["train"] == 1


@pytest.mark.parametrize("poison, message", [
    (lambda x: np.full_like(x, np.nan), r"npz at .*d\.npz: 200 of its 200 images contain NaN or inf values"),
    (lambda x: np.where(np.arange(x.size).reshape(x.shape) == 64 * 7 + 3, np.inf, x),
     r"1 of its 200 images contains NaN or inf values \(the first: sample index 7\)"),
])
def test_non_finite_values_are_refused(tmp_path, poison, message):
    from sklearn.datasets import load_digits

    x = load_digits().images[:200].astype(np.float32)
    with pytest.raises(EdgeshipError, match=message) as e:
        npz_splits(digits_npz(tmp_path / "d.npz", x=poison(x)))
    assert e.value.exit_code == 2 and "drop those samples" in e.value.fix


def test_non_finite_values_in_the_test_source_are_refused(tmp_path):
    good = digits_npz(tmp_path / "good.npz")
    x = np.load(good)["x"].copy()
    x[150:, 0, 0] = np.nan
    bad = digits_npz(tmp_path / "test.npz", x=x)
    with pytest.raises(EdgeshipError, match=r"data\.test_source: npz at .*test\.npz: 50 of its 200 images contain NaN"):
        load_splits(spec(source={"kind": "npz", "path": str(good)}, test_source={"kind": "npz", "path": str(bad)}),
                    InputSpec(shape=(1, 8, 8)))


def test_constant_data_names_the_raw_value(tmp_path):
    f = digits_npz(tmp_path / "d.npz", x=np.full((200, 8, 8), 8, np.uint8))
    with pytest.raises(EdgeshipError, match=r"every value in its 200 images is 8 \(raw, before preprocessing\)"):
        npz_splits(f)


@pytest.mark.parametrize("labels, message", [
    (lambda y: y + 100, r"the labels are 100\.\.109 \(10 distinct values\) but must be class ids 0\.\.K-1.*"
                        r"Fix: remap the labels to 0\.\.9"),
    (lambda y: y + 1, r"labels are 1\.\.10 .*no sample has id 0 .*name every class in the recipe's labels:"),
    (lambda y: y - 1, r"21 of 200 labels are negative \(smallest -1\)"),
    (lambda y: y + 0.5, r"200 of 200 labels are not whole numbers \(label 0 is 0\.5\)"),
    (lambda y: np.where(y == 3, np.nan, y.astype(float)), r"labels are NaN or inf"),
    (lambda y: np.eye(10)[y], r"labels are shaped \(200, 10\).*one-hot.*argmax"),
    (lambda y: np.array([f"c{v}" for v in y]), r"labels have dtype <U2, not integer class ids"),
])
def test_bad_labels_are_refused(tmp_path, labels, message):
    from sklearn.datasets import load_digits

    y = load_digits().target[:200]
    with pytest.raises(EdgeshipError, match=message) as e:
        npz_splits(digits_npz(tmp_path / "d.npz", y=labels(y)))
    assert e.value.fix and "\n" not in str(e.value)


def test_classes_absent_from_a_small_set_keep_their_ids(tmp_path):
    """A pretrained 10-class model evaluated on a few samples that lack class 3: the ids stay as they are
    (remapping would misalign every class above 3), and labels: may name classes no sample has."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = d.target != 3
    f = digits_npz(tmp_path / "d.npz", x=d.images[keep][:200].astype(np.float32), y=d.target[keep][:200])
    s = npz_splits(f)
    assert s.labels == tuple(str(i) for i in range(10))  # 0..9 with 3 absent, not remapped to 0..8
    assert 3 not in np.concatenate([s.train.y, s.test.y]) and 9 in np.concatenate([s.train.y, s.test.y])
    one_based = digits_npz(tmp_path / "b.npz", y=d.target[:200] + 1)
    named = load_splits(spec(source={"kind": "npz", "path": str(one_based)}), InputSpec(shape=(1, 8, 8)), n_classes=11)
    assert int(named.test.y.max()) <= 10


def test_whole_number_float_labels_are_class_ids(tmp_path):
    from sklearn.datasets import load_digits

    y = load_digits().target[:200]
    s = npz_splits(digits_npz(tmp_path / "d.npz", y=y.astype(np.float32)[:, None]))  # (N, 1) floats
    assert s.train.y.dtype == np.int64 and s.labels == tuple(str(i) for i in range(10))
    ref = npz_splits(digits_npz(tmp_path / "ref.npz"))
    assert np.array_equal(s.train.y, ref.train.y) and np.array_equal(s.test.y, ref.test.y)


def test_preprocessing_length_message_for_one_channel():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        InputSpec(shape=(1, 8, 8), preprocessing={"std": [0.5, 0.5, 0.5]})
    assert "preprocessing.std has 3 values but input.shape has 1 channel; give 1 value" in str(e.value)
    assert "1 or 1" not in str(e.value)
    with pytest.raises(ValidationError, match=r"has 3 channels; give 1 value or 3 \(one per channel\)"):
        InputSpec(shape=(3, 8, 8), preprocessing={"mean": [0.5, 0.5]})
