"""Training data that need not fit in memory (``data.source.stream: true``): the images of an .npz file
memory-mapped, or an image folder's files decoded, only for the rows a batch asks for.

A ``LazyRows`` stands where an (N, C, H, W) array would: ``shape``, ``dtype``, ``len``, ``x[idx]`` (those
rows, read now, as an array) and ``take(idx)`` (a lazier subset, nothing read). The seeded split is the
same as for loaded data; the training split stays lazy, validation, calibration and test (bounded by their
sizes) are read into memory. numpy and Pillow only."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgeship.errors import EdgeshipError


class LazyRows:
    """Rows ``index`` of a source that reads raw samples on demand: ``read(sorted positions) -> array``."""

    def __init__(self, read: Callable[[np.ndarray], np.ndarray], index: np.ndarray, sample_shape: tuple[int, ...],
                 dtype: np.dtype):
        self.read, self.index = read, np.asarray(index, np.int64)
        self.sample_shape, self.dtype = tuple(sample_shape), np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.index), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return len(self.index)

    def take(self, idx: np.ndarray | slice) -> LazyRows:
        return LazyRows(self.read, self.index[idx], self.sample_shape, self.dtype)

    def __getitem__(self, key: np.ndarray | slice | int) -> np.ndarray:
        rows = self.index[np.asarray(key) if not isinstance(key, (slice, int)) else key]
        rows = np.atleast_1d(rows)
        order = np.argsort(rows, kind="stable")  # read in file order, hand back in the order asked
        out = np.empty((len(rows), *self.sample_shape), self.dtype)
        if len(rows):
            out[order] = self.read(rows[order])
        return out[0] if isinstance(key, int) else out

    def chunks(self, size: int = 4096):
        for i in range(0, len(self), size):
            yield self[i:i + size]


def npz_rows(path: Path, key: str) -> LazyRows | None:
    """The member ``key`` of an uncompressed .npz (np.savez) memory-mapped, as LazyRows over all its rows;
    None for a compressed member (np.savez_compressed), which cannot be mapped."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with z.open(info) as f:  # the .npy header: version, then shape / dtype / order
            version = np.lib.format.read_magic(f)
            readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in readers:
                return None
            shape, fortran, dtype = readers[version](f)
            header_len = f.tell()
    if fortran or dtype.hasobject:
        return None
    with open(path, "rb") as fh:  # the member's data start: after its local file header in the zip
        fh.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(fh.read(4), "<u2")
    offset = info.header_offset + 30 + int(name_len) + int(extra_len) + header_len
    sample = tuple(shape[1:])

    def read(rows: np.ndarray) -> np.ndarray:
        mm = np.memmap(path, dtype, "r", offset, tuple(shape))
        try:
            return np.asarray(mm[rows])
        finally:
            del mm  # unmapped: the pages read leave this process's memory with the batch

    return LazyRows(read, np.arange(shape[0]), sample, dtype)


def nchw(rows: LazyRows, channels: int | None) -> LazyRows:
    """(N, H, W) -> (N, 1, H, W), (N, H, W, C) -> (N, C, H, W), per batch as it is read."""
    shape = rows.sample_shape
    if len(shape) == 2:
        return LazyRows(lambda r: rows.read(r)[:, None], rows.index, (1, *shape), rows.dtype)
    if len(shape) == 3 and channels is not None and shape[0] != channels and shape[-1] == channels:
        return LazyRows(lambda r: np.ascontiguousarray(rows.read(r).transpose(0, 3, 1, 2)), rows.index,
                        (shape[2], shape[0], shape[1]), rows.dtype)
    if len(shape) != 3:
        raise EdgeshipError(f"images must be (N, H, W) or (N, C, H, W), got shape {rows.shape}",
                            "reshape the array before saving it")
    return rows


def image_rows(files: list[Path], channels: int, size: tuple[int, int]) -> LazyRows:
    """An image folder's files, each decoded and resized when a batch asks for it."""
    from PIL import Image  # heavy: only when images are read

    mode = "L" if channels == 1 else "RGB"

    def read(rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), channels, *size), np.uint8)
        for k, i in enumerate(rows):
            f = files[int(i)]
            try:
                with Image.open(f) as im:
                    a = np.asarray(im.convert(mode).resize((size[1], size[0])), dtype=np.uint8)
            except OSError as e:
                raise EdgeshipError(f"cannot read image {f}: {e}", "remove or replace the file") from None
            out[k] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return out

    return LazyRows(read, np.arange(len(files)), (channels, *size), np.dtype(np.uint8))


def value_range(x: LazyRows) -> tuple[float, float, int | None]:
    """(min, max, first row holding NaN/inf or None), one chunk at a time: integer images stop reading as soon
    as two values differ (they cannot hold NaN); float ones are read whole."""
    lo, hi, bad = np.inf, -np.inf, None
    for k, chunk in enumerate(x.chunks()):
        if chunk.dtype.kind in "fc":
            rows = ~np.isfinite(chunk.reshape(len(chunk), -1)).all(1)
            if rows.any() and bad is None:
                bad = k * 4096 + int(np.flatnonzero(rows)[0])
            chunk = chunk[~rows]
        if chunk.size:
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
        if lo < hi and x.dtype.kind not in "fc":
            break
    return lo, hi, bad
