"""Data for a model with an ``io:`` signature: one ``.npz`` file (or a source and a test source) holding an array per
data-fed input (1-D signals, spectrograms, token ids, tabular vectors, several arrays per sample) and optionally the
ground truth of its classification outputs. Checked when it loads (shapes against the signature, dtypes, NaN/inf,
constant arrays) and split like every other source (``datasets.split_pool``).

Each array is (N, *sample shape); a dynamic axis of an input may differ from the declared shape (its length is the
same for every sample of one file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeship.calibration.datasets import ArrayData, Splits, class_ids, hold_out_test, split_pool
from edgeship.errors import EdgeshipError
from edgeship.recipe import DataSource, DataSpec, IOInput, IOSpec


def label_keys(io: IOSpec) -> list[str]:
    """The arrays holding class ids: each classification output's ``labels`` (the first one's defaults to y)."""
    keys = [o.labels for o in io.outputs if o.task == "classification" and o.labels]
    first = io.classification
    if first is not None and not first.labels:
        keys.insert(0, "y")
    return list(dict.fromkeys(keys))


def _read(src: DataSource, io: IOSpec, where: str) -> tuple[ArrayData, bool]:
    """The source's arrays, and whether it holds the first classification output's class ids."""
    if src.kind != "npz" or src.path is None:
        raise EdgeshipError(f"{where}: a model with an io: signature reads its data from an .npz file, not "
                            f"{src.kind!r}", "save one array per input (and y for class ids) with np.savez and set "
                            "data.source: {kind: npz, path: ...}")
    path = Path(src.path)
    if not path.is_file():
        raise EdgeshipError(f"data file not found: {path}", "check data.source.path in the recipe")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError) as e:
        raise EdgeshipError(f"cannot read {path}: {' '.join(str(e).split())[:160]}",
                            "save it with np.savez(path, <input name>=array, ...) (no object arrays)") from None
    needed = [str(i.source) for i in io.data_inputs]
    missing = [k for k in needed if k not in arrays]
    if missing:
        raise EdgeshipError(f"{where}: {path} has arrays {sorted(arrays)} but the io: inputs read "
                            f"{', '.join(repr(k) for k in missing)}",
                            "name the arrays after the inputs (or set each input's data: to its array's name)")
    first = needed[0]
    n = len(arrays[first])
    for k in needed:
        if len(arrays[k]) != n:
            raise EdgeshipError(f"{where}: array {k!r} has {len(arrays[k])} samples, {first!r} {n}",
                                "give every array one row per sample")
    if n == 0:
        raise EdgeshipError(f"{where}: the data set is empty", "point data.source at a file that holds samples")
    for inp in io.data_inputs:
        _check_input(arrays[str(inp.source)], inp, where)
    labels = {k: class_ids(arrays[k], f"{where}: {k}") for k in label_keys(io) if k in arrays}
    for k, v in labels.items():
        if len(v) != n:
            raise EdgeshipError(f"{where}: labels {k!r} has {len(v)} rows for {n} samples", "one class id per sample")
    keys = label_keys(io)
    y = labels.get(keys[0]) if keys else None
    extra = {k: arrays[k] for k in needed[1:]}
    extra.update({k: v for k, v in labels.items() if v is not y})
    return ArrayData(arrays[first], y if y is not None else np.zeros(n, np.int64), extra), y is not None


def _check_input(a: np.ndarray, inp: IOInput, where: str) -> None:
    shape = list(a.shape[1:])
    fixed = [d for i, d in enumerate(inp.shape) if i not in inp.dynamic]
    got = [d for i, d in enumerate(shape) if i not in inp.dynamic]
    if len(shape) != len(inp.shape) or fixed != got:
        raise EdgeshipError(f"{where}: array {inp.source!r} holds samples of shape {tuple(shape)} but input "
                            f"{inp.name!r} declares {tuple(inp.shape)}"
                            + (f" (dynamic axes {sorted(inp.dynamic)})" if inp.dynamic else ""),
                            "make io.inputs[].shape match one sample of the array (the batch axis is implicit)")
    if inp.dtype == "float32":
        if a.dtype.kind not in "fiub":
            raise EdgeshipError(f"{where}: array {inp.source!r} has dtype {a.dtype}, not numbers",
                                "save it as a numeric array")
        if a.dtype.kind == "f":
            bad = ~np.isfinite(a.reshape(len(a), -1)).all(1)
            if bad.any():
                raise EdgeshipError(f"{where}: {int(bad.sum())} of {len(a)} samples of {inp.source!r} contain NaN or "
                                    f"inf (the first: sample {int(np.flatnonzero(bad)[0])})",
                                    "replace or drop those samples and save the data again")
        if a.size and a.min() == a.max():
            raise EdgeshipError(f"{where}: every value of {inp.source!r} is {float(a.min()):g}: constant data carries "
                                "nothing to calibrate or verify on", "point the recipe's data at real samples")
    elif a.dtype.kind not in "iu":
        raise EdgeshipError(f"{where}: input {inp.name!r} is {inp.dtype} but array {inp.source!r} has dtype {a.dtype}",
                            "save integer inputs (token ids, indices) as an integer array")


def load_io_splits(spec: DataSpec, io: IOSpec) -> Splits:
    """Recipe ``data`` + ``io`` -> seeded train/val/calib/test splits of every array the signature reads."""
    where = "data.source"
    pool, labelled = _read(spec.source, io, where)
    rng = np.random.default_rng(spec.seed)
    if spec.test_source is not None:
        test, test_labelled = _read(spec.test_source, io, "data.test_source")
        labelled = labelled and test_labelled
    else:
        pool, test = hold_out_test(pool, spec, rng, where)
    train, val, calib, test = split_pool(pool, test, spec, rng)
    # no class ids (or no classification output): no class names, and no top-1 against ground truth
    n_classes = int(max(pool.y.max(), test.y.max())) + 1 if labelled else 0
    return Splits(train=train, val=val, calib=calib, test=test, labels=tuple(str(i) for i in range(n_classes)))
