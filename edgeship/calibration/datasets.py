"""Data sources (IDX/MNIST files, image folders, .npz, built-in sets) and the seeded split into
train / validation / calibration / test. Calibration samples come from the training partition,
so they never overlap the test split.

Images are kept raw (N, C, H, W, the values the files hold); ``Preprocessing`` normalizes them.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeship.errors import EdgeshipError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                        "sandal", "shirt", "sneaker", "bag", "ankle boot")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}


@dataclass
class ArrayData:
    x: np.ndarray  # raw values, (N, C, H, W)
    y: np.ndarray  # int64 class ids, (N,)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> "ArrayData":
        return ArrayData(self.x[idx], self.y[idx])


@dataclass
class Splits:
    train: ArrayData
    val: ArrayData
    calib: ArrayData
    test: ArrayData
    labels: tuple[str, ...]

    def sizes(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("train", "val", "calib", "test")}


# ---------------------------------------------------------------- readers
def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    path = Path(path)
    if not path.exists():
        gz = path.with_name(path.name + ".gz")
        if gz.exists():
            path = gz
        else:
            raise EdgeshipError(f"data file not found: {path}", "check the path in the recipe's data section")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise EdgeshipError(f"cannot read IDX file {path}: {e}", "the file is corrupt; re-copy it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise EdgeshipError(f"{path} is not an unsigned-byte IDX file (bad magic number)",
                            "point the recipe at MNIST-format *-idx3-ubyte / *-idx1-ubyte files")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims)) if dims else 0
    offset = 4 + 4 * ndim
    if len(raw) - offset != expected:
        raise EdgeshipError(f"{path} is truncated: header says {dims}, payload has {len(raw) - offset} bytes",
                            "the file is corrupt; re-copy it")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(dims)


def _nchw(x: np.ndarray, channels: int | None = None) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if channels is not None and x.shape[1] != channels and x.shape[-1] == channels:
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x
    raise EdgeshipError(f"images must be (N, H, W) or (N, C, H, W), got shape {x.shape}",
                        "reshape the array before saving it")


def load_idx_pair(images: Path, labels: Path) -> ArrayData:
    x, y = read_idx(images), read_idx(labels)
    if len(x) != len(y):
        raise EdgeshipError(f"{images} has {len(x)} images but {labels} has {len(y)} labels",
                            "pair the images file with its own labels file")
    return ArrayData(_nchw(x), y.astype(np.int64))


def load_fashion_mnist(root: Path | None) -> tuple[ArrayData, ArrayData]:
    root = Path(root) if root else FASHION_MNIST_DIR
    if not root.is_dir():
        raise EdgeshipError(f"Fashion-MNIST directory not found: {root}",
                            "install it with `apt-get install dataset-fashion-mnist` (the README's setup "
                            "does this) or set data.source.path")
    train = load_idx_pair(root / "train-images-idx3-ubyte", root / "train-labels-idx1-ubyte")
    test = load_idx_pair(root / "t10k-images-idx3-ubyte", root / "t10k-labels-idx1-ubyte")
    return train, test


def load_digits() -> ArrayData:
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    return ArrayData(d.images.astype(np.float32)[:, None], d.target.astype(np.int64))


def load_npz(path: Path, channels: int | None) -> ArrayData:
    path = Path(path)
    if not path.exists():
        raise EdgeshipError(f"data file not found: {path}", "check data.source.path in the recipe")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f or "y" not in f:
                raise EdgeshipError(f"{path} has arrays {sorted(f.files)}, not 'x' and 'y'",
                                    "save it with np.savez(path, x=images, y=labels)")
            x, y = f["x"], f["y"]
    except (ValueError, OSError) as e:
        raise EdgeshipError(f"cannot read {path}: {e}", "save it with np.savez(path, x=images, y=labels)") from None
    if len(x) != len(y):
        raise EdgeshipError(f"{path}: x has {len(x)} rows but y has {len(y)}", "give one label per image")
    return ArrayData(_nchw(x, channels), y.astype(np.int64))


def load_image_folder(root: Path, channels: int, size: tuple[int, int]) -> tuple[ArrayData, tuple[str, ...]]:
    """One subfolder per class, images resized to the model's input size."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise EdgeshipError(f"image folder not found: {root}", "check data.source.path in the recipe")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise EdgeshipError(f"{root} has no class subfolders",
                            "put each class's images in its own subfolder: root/<class>/<image>")
    mode = "L" if channels == 1 else "RGB"
    xs, ys = [], []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert(mode).resize((size[1], size[0])), dtype=np.uint8)
            except OSError as e:
                raise EdgeshipError(f"cannot read image {f}: {e}", "remove or replace the file") from None
            xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            ys.append(ci)
    if not xs:
        return ArrayData(np.zeros((0, channels, *size), np.uint8), np.zeros(0, np.int64)), tuple(classes)
    return ArrayData(np.stack(xs), np.asarray(ys, np.int64)), tuple(classes)


# ---------------------------------------------------------------- recipe-driven loading
def load_source(src, channels: int, size: tuple[int, int]) -> tuple[ArrayData, ArrayData | None, tuple[str, ...] | None]:
    """A recipe ``DataSource`` -> (pool, official test split or None, class names or None)."""
    kind = src.kind
    if kind == "fashion_mnist":
        train, test = load_fashion_mnist(src.path)
        return train, test, FASHION_MNIST_LABELS
    if kind == "digits":
        return load_digits(), None, tuple(str(i) for i in range(10))
    if kind == "idx":
        labels = src.labels_path or _guess_idx_labels(Path(src.path))
        return load_idx_pair(Path(src.path), labels), None, None
    if kind == "npz":
        return load_npz(Path(src.path), channels), None, None
    if kind == "image_folder":
        data, classes = load_image_folder(Path(src.path), channels, size)
        return data, None, classes
    raise EdgeshipError(f"unknown data source kind {kind!r}", "use fashion_mnist, digits, idx, npz or image_folder")


def _guess_idx_labels(images: Path) -> Path:
    name = images.name
    if "images-idx3" in name:
        return images.with_name(name.replace("images-idx3", "labels-idx1"))
    raise EdgeshipError(f"no labels file given for IDX images {images}",
                        "set data.source.labels_path to the matching *-labels-idx1-ubyte file")


def _check(data: ArrayData, what: str, channels: int, size: tuple[int, int], where: str) -> None:
    if len(data) == 0:
        raise EdgeshipError(f"the {what} data set is empty ({where})",
                            "point data.source at a file or folder that holds samples")
    if data.x.shape[1:] != (channels, *size):
        raise EdgeshipError(
            f"{what} images have shape {tuple(data.x.shape[1:])} but the recipe's input.shape is "
            f"{(channels, *size)}", "make input.shape match the data (C, H, W)")


def load_splits(spec, input_spec) -> Splits:
    """Recipe ``data`` + ``input`` -> seeded train/val/calib/test splits."""
    channels, h, w = input_spec.shape
    size = (h, w)
    pool, test, labels = load_source(spec.source, channels, size)
    where = f"data.source: {spec.source.kind}" + (f" at {spec.source.path}" if spec.source.path else "")
    _check(pool, "training", channels, size, where)
    rng = np.random.default_rng(spec.seed)
    if spec.test_source is not None:
        test, _, _ = load_source(spec.test_source, channels, size)
        where = f"data.test_source: {spec.test_source.kind}"
    elif test is None:
        order = rng.permutation(len(pool))
        n_test = max(1, int(round(len(pool) * spec.test_fraction)))
        test, pool = pool.subset(order[:n_test]), pool.subset(order[n_test:])
    _check(test, "test", channels, size, where)
    if spec.test_size is not None:
        test = test.subset(np.arange(min(spec.test_size, len(test))))

    order = rng.permutation(len(pool))
    n_val = min(spec.val_size, len(pool) // 5)
    n_cal = min(spec.calib_size, max(1, (len(pool) - n_val) // 5))
    val = pool.subset(order[:n_val])
    calib = pool.subset(order[n_val:n_val + n_cal])
    # Calibration samples stay in the training set (they are training data); only val is held out.
    train_idx = order[n_val:]
    if spec.train_size is not None:
        train_idx = train_idx[: spec.train_size]
    train = pool.subset(train_idx)
    if len(val) == 0:
        val = test
    n_classes = int(max(train.y.max(), test.y.max())) + 1
    if labels is None or len(labels) < n_classes:
        labels = tuple(str(i) for i in range(n_classes))
    return Splits(train=train, val=val, calib=calib, test=test, labels=tuple(labels))
