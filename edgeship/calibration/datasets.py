"""Data sources (IDX/MNIST files, image folders, .npz, built-in sets) and the seeded split into
train / validation / calibration / test. Calibration samples come from the training partition,
so they never overlap the test split.

Images are kept raw (N, C, H, W, the values the files hold); ``Preprocessing`` normalizes them.
Labels are integer class ids 0..K-1 (float arrays holding whole numbers are accepted); the model gets
K = the largest id + 1 outputs. Bad data (NaN/inf, constant images, non-integral, negative or sparse
labels) is refused here, when the data is loaded, before any training or conversion.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeship.calibration.streaming import LazyRows, image_rows, nchw, npz_rows, value_range
from edgeship.errors import EdgeshipError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                        "sandal", "shirt", "sneaker", "bag", "ankle boot")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}


@dataclass
class ArrayData:
    x: np.ndarray | LazyRows  # raw values of the first data-fed input: (N, C, H, W) for images, (N, ...) otherwise;
    # LazyRows: read per batch (data.source.stream)
    y: np.ndarray  # int64 class ids, (N,) (zeros when the data has no labels)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # the other per-sample arrays, by name, (N, ...)

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> ArrayData:
        x = self.x.take(idx) if isinstance(self.x, LazyRows) else self.x[idx]
        return ArrayData(x, self.y[idx], {k: v[idx] for k, v in self.extra.items()})

    def loaded(self) -> ArrayData:
        """The same samples in memory (a streamed split read whole)."""
        return ArrayData(self.x[:], self.y, self.extra) if isinstance(self.x, LazyRows) else self


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


def class_ids(y: np.ndarray, where: str) -> np.ndarray:
    """Labels -> int64 class ids (N,), or EdgeshipError: not 1-D, not numbers, NaN/inf, fractions, negative."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        one_hot = y.ndim == 2
        raise EdgeshipError(f"{where}: labels are shaped {y.shape}, not one class id per sample"
                            + (" (one-hot?)" if one_hot else ""),
                            "save class ids 0..K-1 as a 1-D array" + (" (y = y.argmax(1))" if one_hot else ""))
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    if y.dtype.kind not in "iuf":
        raise EdgeshipError(f"{where}: labels have dtype {y.dtype}, not integer class ids",
                            "map each class to an id 0..K-1 and save y as integers (names go in the recipe's "
                            "labels:)")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise EdgeshipError(f"{where}: {int(bad.sum())} of {len(y)} labels are NaN or inf",
                                "give every sample an integer class id 0..K-1")
        frac = y != np.round(y)
        if frac.any():
            i = int(np.flatnonzero(frac)[0])
            raise EdgeshipError(f"{where}: {int(frac.sum())} of {len(y)} labels are not whole numbers "
                                f"(label {i} is {float(y[i]):g}); labels are class ids",
                                "save integer class ids 0..K-1 as y (one per image)")
    if len(y) and float(y.min()) < 0:
        raise EdgeshipError(f"{where}: {int((y < 0).sum())} of {len(y)} labels are negative "
                            f"(smallest {int(y.min())}); labels are class ids 0..K-1",
                            "remap the labels to 0..K-1 (e.g. y = np.unique(y, return_inverse=True)[1]) "
                            "and save the file again")
    return y.astype(np.int64)


def load_idx_pair(images: Path, labels: Path) -> ArrayData:
    x, y = read_idx(images), read_idx(labels)
    if len(x) != len(y):
        raise EdgeshipError(f"{images} has {len(x)} images but {labels} has {len(y)} labels",
                            "pair the images file with its own labels file")
    return ArrayData(_nchw(x), class_ids(y, str(labels)))


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
    """scikit-learn's bundled digits (1,797 8x8 images), read from the file scikit-learn ships: importing
    scikit-learn to read it would cost every command seconds of start-up."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    where = list(spec.submodule_search_locations or []) if spec else []
    path = Path(where[0]) / "datasets" / "data" / "digits.csv.gz" if where else None
    if path is None or not path.is_file():  # a scikit-learn that keeps it elsewhere: its own reader
        from sklearn.datasets import load_digits as _ld

        d = _ld()
        return ArrayData(d.images.astype(np.float32)[:, None], d.target.astype(np.int64))
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return ArrayData(data[:, :-1].reshape(-1, 1, 8, 8).astype(np.float32), data[:, -1].astype(np.int64))


def memory_limit() -> int:
    """The most bytes a data set's arrays may take in memory: half of this machine's RAM."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _npz_sizes(path: Path) -> dict[str, int]:
    """{array name: bytes it takes once loaded}, from the .npz's headers alone (nothing is decompressed)."""
    sizes = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as f:
                fmt = np.lib.format
                version = fmt.read_magic(f)
                read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, dtype = read(f)
                sizes[info.filename[:-4]] = int(np.prod(shape, dtype=object)) * dtype.itemsize
    return sizes


def load_npz(path: Path, channels: int | None, stream: bool = False) -> ArrayData:
    path = Path(path)
    if not path.exists():
        raise EdgeshipError(f"data file not found: {path}", "check data.source.path in the recipe")
    fix = "save it with np.savez(path, x=images, y=labels)"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head not in (b"PK\x03\x04", b"PK\x05\x06"):  # np.load takes anything else for a pickle
        raise EdgeshipError(f"{path} is not a .npz archive (it starts with {head!r}; np.savez writes a zip file)", fix)
    limit = memory_limit()
    try:
        big = {k: v for k, v in _npz_sizes(path).items() if v > limit and not (stream and k == "x")}  # x streamed
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise EdgeshipError(f"cannot read {path}: {e}", fix) from None
    if big:
        name, n = next(iter(big.items()))
        raise EdgeshipError(f"{path}: array {name!r} takes {n / (1 << 30):.1f} GB once loaded; the limit is "
                            f"{limit / (1 << 30):.1f} GB (half of this machine's memory)",
                            "use a subset of the data (data.train_size, data.test_size) saved in a smaller file")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f or "y" not in f:
                raise EdgeshipError(f"{path} has arrays {sorted(f.files)}, not 'x' and 'y'", fix)
            y = f["y"]
            lazy = npz_rows(path, "x") if stream else None
            if stream and lazy is None:
                raise EdgeshipError(f"{path}: its x array is compressed (np.savez_compressed) or Fortran-ordered, "
                                    "so it cannot be memory-mapped",
                                    "save it with np.savez(path, x=images, y=labels), or set stream: false")
            x = f["x"] if lazy is None else lazy
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise EdgeshipError(f"cannot read {path}: {e}", "save it with np.savez(path, x=images, y=labels)") from None
    if x.ndim == 0 or y.ndim == 0:
        raise EdgeshipError(f"{path}: x and y must be arrays with one row per sample, got shapes {x.shape} "
                            f"and {y.shape}", "save it with np.savez(path, x=images, y=labels)")
    if len(x) != len(y):
        raise EdgeshipError(f"{path}: x has {len(x)} rows but y has {len(y)}", "give one label per image")
    if x.dtype.kind not in "biuf":
        raise EdgeshipError(f"{path}: images have dtype {x.dtype}, not numbers",
                            "save x as a numeric array (uint8 pixels or floats)")
    return ArrayData(nchw(x, channels) if isinstance(x, LazyRows) else _nchw(x, channels), class_ids(y, f"{path}"))


def load_image_folder(root: Path, channels: int, size: tuple[int, int],
                      stream: bool = False) -> tuple[ArrayData, tuple[str, ...]]:
    """One subfolder per class, images resized to the model's input size (``stream``: when a batch reads them)."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise EdgeshipError(f"image folder not found: {root}", "check data.source.path in the recipe")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise EdgeshipError(f"{root} has no class subfolders",
                            "put each class's images in its own subfolder: root/<class>/<image>")
    if stream:
        files = [(f, ci) for ci, c in enumerate(classes) for f in sorted((root / c).iterdir())
                 if f.suffix.lower() in IMAGE_SUFFIXES]
        return ArrayData(image_rows([f for f, _ in files], channels, size),
                         np.asarray([ci for _, ci in files], np.int64)), tuple(classes)
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
def load_source(src, channels: int,
                size: tuple[int, int]) -> tuple[ArrayData, ArrayData | None, tuple[str, ...] | None]:
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
        return load_npz(Path(src.path), channels, src.stream), None, None
    if kind == "image_folder":
        data, classes = load_image_folder(Path(src.path), channels, size, src.stream)
        return data, None, classes
    raise EdgeshipError(f"unknown data source kind {kind!r}", "use fashion_mnist, digits, idx, npz or image_folder")


def _guess_idx_labels(images: Path) -> Path:
    name = images.name
    if "images-idx3" in name:
        return images.with_name(name.replace("images-idx3", "labels-idx1"))
    raise EdgeshipError(f"no labels file given for IDX images {images}",
                        "set data.source.labels_path to the matching *-labels-idx1-ubyte file")


def _where(src, key: str) -> str:
    return f"data.{key}: {src.kind}" + (f" at {src.path}" if src.path else "")


def _check(data: ArrayData, what: str, channels: int, size: tuple[int, int], where: str, resize: bool = False) -> None:
    if len(data) == 0:
        raise EdgeshipError(f"the {what} data set is empty ({where})",
                            "point data.source at a file or folder that holds samples")
    if resize:  # any height and width; one channel (repeated) or input.shape's
        if data.x.ndim != 4 or data.x.shape[1] not in (1, channels):
            raise EdgeshipError(f"{what} images have shape {tuple(data.x.shape[1:])}: data.resize repeats one "
                                f"channel to input.shape's {channels}, it cannot make {channels} channels of these",
                                "give one-channel images or input.shape's channel count")
    elif data.x.shape[1:] != (channels, *size):
        raise EdgeshipError(
            f"{what} images have shape {tuple(data.x.shape[1:])} but the recipe's input.shape is "
            f"{(channels, *size)}", "make input.shape match the data (C, H, W)")
    _check_values(data, where)


def _check_values(data: ArrayData, where: str) -> None:
    """NaN/inf anywhere, or one value everywhere: bad input, whatever the targets (raw values, before
    preprocessing; every split is drawn from these arrays)."""
    x = data.x
    if isinstance(x, LazyRows):  # streamed: a chunk at a time
        lo, hi, first = value_range(x)
        if first is not None:
            raise EdgeshipError(f"{where}: its images contain NaN or inf values (the first: sample index {first})",
                                "replace or drop those samples and save the data again")
        if lo == hi:
            raise EdgeshipError(f"{where}: every value in its {len(x)} images is {lo:g} (raw, before "
                                "preprocessing): constant images carry nothing to train, evaluate or calibrate on",
                                "point the recipe's data at real images")
        return
    if x.dtype.kind in "fc":
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(1)
        if bad.any():
            n, first = int(bad.sum()), int(np.flatnonzero(bad)[0])
            raise EdgeshipError(f"{where}: {n} of its {len(x)} images contain{'s' if n == 1 else ''} NaN or inf "
                                f"values (the first: sample index {first})",
                                "replace or drop those samples and save the data again")
    lo, hi = x.min(), x.max()
    if lo == hi:
        raise EdgeshipError(f"{where}: every value in its {len(x)} images is {float(lo):g} (raw, before "
                            "preprocessing): constant images carry nothing to train, evaluate or calibrate on",
                            "point the recipe's data at real images")


def _check_class_ids(ys: list[np.ndarray], where: str) -> None:
    """Ids that do not start at 0 (1-based labels, an offset such as 100..109) would give the model an output no
    sample ever has and shift every class by the offset: refuse them. Ids from 0 with classes absent (a small
    evaluation set of a pretrained 10-class model) are fine: the recipe's labels: or the model sets the class
    count, and remapping would misalign them."""
    ids = np.unique(np.concatenate(ys))
    k, low, top = len(ids), int(ids[0]), int(ids[-1])
    if low > 0:
        missing = np.setdiff1d(np.arange(top + 1), ids)
        shown = ", ".join(str(int(i)) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise EdgeshipError(f"{where}: the labels are {low}..{top} ({k} distinct values) but must be class "
                            f"ids 0..K-1: no sample has id {shown} ({len(missing)} of the {top + 1} classes the "
                            "model would get)",
                            f"remap the labels to 0..{k - 1} (e.g. y = np.unique(y, return_inverse=True)[1]) and "
                            "save the data again; if the ids are right and the data only lacks some classes, name "
                            "every class in the recipe's labels:")


def load_splits(spec, input_spec, n_classes: int | None = None) -> Splits:
    """Recipe ``data`` + ``input`` -> seeded train/val/calib/test splits. ``n_classes``: the count the recipe's
    labels: give (then any ids below it are accepted, present or not)."""
    channels, h, w = input_spec.shape
    size = (h, w)
    pool, test, labels = load_source(spec.source, channels, size)
    where = _where(spec.source, "source")
    _check(pool, "training", channels, size, where, spec.resize)
    if labels is None and n_classes is None:  # class ids straight from the file (npz, idx)
        _check_class_ids([pool.y] + ([test.y] if test is not None else []), where)
    rng = np.random.default_rng(spec.seed)
    if spec.test_source is not None:
        test, _, test_labels = load_source(spec.test_source, channels, size)
        test_where = _where(spec.test_source, "test_source")
        _check(test, "test", channels, size, test_where, spec.resize)
        if test_labels is None and labels is None and n_classes is None:
            _check_class_ids([pool.y, test.y], f"{where} and {test_where}")
    elif test is None:
        pool, test = hold_out_test(pool, spec, rng, where)
    else:
        _check(test, "test", channels, size, where, spec.resize)
    train, val, calib, test = split_pool(pool, test, spec, rng)
    if spec.resize:
        train, val, calib, test = (resize_images(d, channels, size) for d in (train, val, calib, test))
    n_classes = int(max(pool.y.max(), test.y.max())) + 1
    if labels is None or len(labels) < n_classes:
        labels = tuple(str(i) for i in range(n_classes))
    return Splits(train=train, val=val, calib=calib, test=test, labels=tuple(labels))


def resize_images(data: ArrayData, channels: int, size: tuple[int, int], chunk: int = 256) -> ArrayData:
    """``data``'s images at ``size`` (bilinear, antialiased when shrinking) with ``channels`` channels (one channel
    repeated): raw values in their dtype, integers rounded and clipped to it (uint8 pixels stay uint8)."""
    x = data.x
    if tuple(x.shape[1:]) == (channels, *size):
        return data
    import torch  # deferred: heavy, and only data.resize needs it

    out = np.empty((len(x), channels, *size), x.dtype)
    for i in range(0, len(x), chunk):
        t = torch.from_numpy(np.ascontiguousarray(x[i:i + chunk], np.float32))
        if tuple(t.shape[2:]) != size:
            t = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
        a = t.numpy()
        if x.dtype.kind in "iu":
            a = np.clip(np.rint(a), np.iinfo(x.dtype).min, np.iinfo(x.dtype).max)
        out[i:i + chunk] = a  # (n, 1, H, W) broadcasts to every channel
    return ArrayData(out, data.y, data.extra)


def hold_out_test(pool: ArrayData, spec, rng: np.random.Generator, where: str) -> tuple[ArrayData, ArrayData]:
    """(pool, test): test_fraction of a source that has no test split of its own."""
    if len(pool) < 2:
        raise EdgeshipError(f"{where}: only {len(pool)} sample, too few to hold out a test split",
                            "give more data, or a separate data.test_source")
    order = rng.permutation(len(pool))
    n_test = min(len(pool) - 1, max(1, int(round(len(pool) * spec.test_fraction))))
    return pool.subset(order[n_test:]), pool.subset(order[:n_test])


def split_pool(pool: ArrayData, test: ArrayData, spec, rng: np.random.Generator
               ) -> tuple[ArrayData, ArrayData, ArrayData, ArrayData]:
    """(train, val, calib, test): the seeded split of what remains after the test split (test capped at
    data.test_size). Validation is held out of the training partition (at most a fifth); calibration samples are
    drawn from the rest and stay training data, so data.calib_size is capped only by what remains (sizes()
    reports what was used). With no room for validation, the test split serves as validation."""
    if spec.test_size is not None:
        test = test.subset(np.arange(min(spec.test_size, len(test))))
    order = rng.permutation(len(pool))
    n_val = min(spec.val_size, len(pool) // 5)
    n_cal = min(spec.calib_size, len(pool) - n_val)
    val = pool.subset(order[:n_val])
    calib = pool.subset(order[n_val:n_val + n_cal])
    train_idx = order[n_val:]
    if spec.train_size is not None:
        train_idx = train_idx[: spec.train_size]
    # a streamed source stays streamed for training; the other splits (bounded by their sizes) are read now
    return pool.subset(train_idx), (val if len(val) else test).loaded(), calib.loaded(), test.loaded()
