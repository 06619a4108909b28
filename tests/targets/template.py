"""The one test every backend runs (as NNCF tests each backend against tests/cross_fw/test_templates).

A backend's test module subclasses ``BackendTemplate`` once per (format, precision[, QAT]) and sets
the class attributes; every test below then runs for it:

1. lower a small CNN trained on scikit-learn's digits (once per process) with the real converter;
2. the files: exactly the artifact's files in its directory, a sidecar ``model.json`` that reads
   back, the description embedded in the artifact where the format allows;
3. the description: input/output names, shapes, layout, dtype, quantization parameters,
   preprocessing, labels, quantization settings;
4. run it with the backend's real runtime on the digits test split: top-1 within the gate of
   ``edgeship.targets.verify`` (what ``edgeship export`` applies), agreement with torch, any batch size;
5. the op audit (INT8: no convolution or matrix product left in float) and the size against FP32;
6. bad input: a missing runtime package names the package; calibration data that is too small,
   constant or NaN fails before anything is written; nothing is left in the output directory.

Subclass hooks: ``embedded_description(artifact)`` (the description read back from the artifact
itself, or None if the format cannot hold one) and, for other layouts or tolerances, the class
attributes below.
"""

from __future__ import annotations

import copy
import functools
import json
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from edgeship.calibration.quant import QuantSettings
from edgeship.calibration.readers import MIN_CALIBRATION_SAMPLES, CalibrationDataError
from edgeship.errors import TargetError
from edgeship.recipe import Recipe, TargetSpec
from edgeship.targets.base import Artifact, LowerContext, get_backend
from edgeship.targets.verify import compare, gate

WIDTH = 64  # ~370k parameters: big enough that weights, not graph overhead, set the file sizes
INPUT_SHAPE = (1, 8, 8)
INT8_SIZE_RATIO = 1 / 3.5  # the bar: an INT8 artifact is at most 1/3.5 of the FP32 one


@functools.cache
def digits_task() -> dict:
    """The small CNN trained on the digits set once per process (seconds on one thread), its data
    splits (normalized), the calibration subset and a FP32 ONNX export's size for comparisons."""
    from edgeship.calibration.datasets import load_splits
    from edgeship.models.load import build_model
    from edgeship.pipeline.training import FitConfig, TensorData, fit, predict, top1
    from edgeship.run import calib_subset

    torch.set_num_threads(1)
    recipe = Recipe.model_validate({
        "name": "template", "seed": 0,
        "model": {"zoo": "small_cnn", "args": {"width": WIDTH}},
        "input": {"shape": list(INPUT_SHAPE), "preprocessing": {"scale": 0.0625, "mean": [0.5], "std": [0.5]}},
        "data": {"source": {"kind": "digits"}, "val_size": 150, "calib_size": 150, "seed": 0},
        "output": "unused"})
    splits = load_splits(recipe.data, recipe.input)
    labels, pre = splits.labels, recipe.input.preprocessing_obj()
    data = {k: TensorData.from_array(getattr(splits, k), pre) for k in ("train", "calib", "test")}
    torch.manual_seed(0)
    model = build_model(recipe.model, recipe.input, len(labels), require_weights=False)
    fit(model, data["train"], None, FitConfig(epochs=10, batch_size=64, lr=0.01, seed=0, threads=1), quiet=True)
    model.eval()
    x_test, y_test = data["test"].x.numpy(), data["test"].y.numpy()
    assert top1(predict(model, data["test"].x), y_test) > 0.95
    return {"model": model, "labels": labels, "pre": pre, "x_test": x_test, "y_test": y_test,
            "calib": calib_subset(data["calib"], QuantSettings())[0], "train_x": data["train"].x}


@functools.cache
def qat_model() -> torch.nn.Module:
    """The digits model with the qat pass's fake quantization, ranges calibrated (no fine-tuning)."""
    from edgeship.pipeline.qat import calibrate_ranges, prepare_qat

    task = digits_task()
    q = prepare_qat(task["model"], torch.zeros(1, *INPUT_SHAPE))
    calibrate_ranges(q, task["train_x"][:512])
    return q.eval()


@functools.cache
def fp32_onnx_size(tmp: str) -> int:
    from edgeship.targets.onnx import export_onnx

    path = export_onnx(digits_task()["model"], torch.zeros(1, *INPUT_SHAPE), Path(tmp) / "fp32.onnx",
                       Path(tmp) / "fp32.log")
    return path.stat().st_size


def context(tmp: Path, fmt: str, precision: str, quant: QuantSettings, calib: np.ndarray | None = None,
            name: str = "t") -> LowerContext:
    task = digits_task()
    (tmp / "work").mkdir(parents=True, exist_ok=True)
    return LowerContext(target=TargetSpec(name=name, format=fmt, precision=precision), input_shape=INPUT_SHAPE,
                        calib=task["calib"] if calib is None else calib, preprocessing=task["pre"],
                        labels=task["labels"], quant=quant, log_path=tmp / "lower.log", work_dir=tmp / "work",
                        threads=1)


def artifact_files(art: Artifact) -> set[str]:
    return {str(p.relative_to(art.dir)) for p in art.dir.rglob("*") if p.is_file()}


class BackendTemplate:
    FORMAT: ClassVar[str] = ""
    PRECISION: ClassVar[str] = ""
    QAT: ClassVar[bool] = False  # lower the qat pass's fake-quantized model (no calibration)
    QUANT: ClassVar[QuantSettings] = QuantSettings()
    RUNTIME_MODULE: ClassVar[str] = ""  # the module base.require imports to run the artifact
    RUNTIME_PACKAGE: ClassVar[str] = ""  # the pip package the error must name
    INPUT_LAYOUT: ClassVar[str] = "NCHW"
    MIN_AGREEMENT: ClassVar[float | None] = None  # default: 0.999 float, 0.97 int8
    MAX_ABS_LOGIT_DIFF: ClassVar[float | None] = None  # default: 1e-3 fp32, 0.05 fp16, none int8
    MAX_DROP_PT: ClassVar[float] = 1.0  # the recipe default of max_accuracy_drop
    # INT8: which of the interface tensors are quantized (their scale/zero point must be recorded)
    QUANTIZED_IO: ClassVar[tuple[str, ...]] = ("input", "output")
    # the same sample in a batch of 1 and of 7: equal to this (dynamic quantization ranges over the whole batch)
    BATCH_ATOL: ClassVar[float] = 1e-4

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # only artifacts that read calibration data (post-training INT8) get the bad-calibration test
        calibrated = cls.PRECISION.startswith("int8") and not cls.QAT
        cls.test_bad_calibration_data = BackendTemplate._bad_calibration_data if calibrated else None

    # ------------------------------------------------------------------ hooks
    def embedded_description(self, art: Artifact) -> dict | None:
        """The description as stored inside the artifact (None: the format cannot hold one)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ fixtures
    @property
    def int8(self) -> bool:
        return self.PRECISION.startswith("int8")

    def model(self) -> torch.nn.Module:
        return qat_model() if self.QAT else digits_task()["model"]

    def quant(self) -> QuantSettings:
        return QuantSettings(**{**self.QUANT.to_dict(), "qat": True}) if self.QAT else self.QUANT

    def context(self, tmp: Path, calib: np.ndarray | None = None) -> LowerContext:
        ctx = context(tmp, self.FORMAT, self.PRECISION, self.quant(), calib)
        if self.QAT:  # what the pipeline hands every backend after the qat pass
            from edgeship.pipeline.qat import QAT

            ctx.learned = QAT.learned_quantization(self.model())
        return ctx

    @pytest.fixture(scope="class")
    def lowered(self, tmp_path_factory) -> dict:
        tmp = tmp_path_factory.mktemp(f"{self.FORMAT}_{self.PRECISION}")
        # a QAT model needs no calibration: one sample (far below the minimum) must be enough
        calib = digits_task()["calib"][:1] if self.QAT else None
        ctx = self.context(tmp, calib)
        out = tmp / "artifact"
        out.mkdir()
        backend = get_backend(self.FORMAT, self.PRECISION)
        model = self.model()
        art = backend.lower(copy.deepcopy(model), ctx, out)
        with torch.no_grad():
            torch_logits = model(torch.from_numpy(digits_task()["x_test"])).numpy()
        return {"backend": backend, "art": art, "ctx": ctx, "torch_logits": torch_logits, "tmp": tmp}

    @pytest.fixture(scope="class")
    def outputs(self, lowered) -> np.ndarray:
        runner = lowered["backend"].load(lowered["art"], threads=1)
        return runner(digits_task()["x_test"])[0]

    # ------------------------------------------------------------------ 1-2: files and sidecar
    def test_registered_backend(self):
        backend = get_backend(self.FORMAT, self.PRECISION)
        assert backend.format == self.FORMAT and self.PRECISION in backend.precisions
        assert backend.runtime_package == self.RUNTIME_PACKAGE

    def test_files_and_sidecar(self, lowered):
        art = lowered["art"]
        assert art.main in art.files and "model.json" in art.files
        assert artifact_files(art) == set(art.files), "stray or missing files in the artifact directory"
        assert all((art.dir / f).stat().st_size > 0 for f in art.files)
        back = Artifact.from_sidecar(art.dir / "model.json")
        assert (back.target, back.format, back.precision, back.main) == (art.target, self.FORMAT, self.PRECISION,
                                                                        art.main)
        assert back.files == art.files
        assert back.meta == json.loads(json.dumps(art.meta, default=str))
        assert "dir" not in json.loads((art.dir / "model.json").read_text())  # lowered in a directory renamed later
        assert art.size_bytes() == sum((art.dir / f).stat().st_size for f in art.files if f != "model.json")

    def test_description_embedded_in_artifact(self, lowered):
        art = lowered["art"]
        embedded = self.embedded_description(art)
        if embedded is not None:
            assert embedded == json.loads(json.dumps(art.meta, default=str))

    # ------------------------------------------------------------------ 3: description
    def test_description(self, lowered):
        meta, task = lowered["art"].meta, digits_task()
        assert meta["format"] == self.FORMAT and meta["precision"] == self.PRECISION
        (inp,), (out,) = meta["inputs"], meta["outputs"]
        assert inp["name"] and out["name"]
        c, h, w = INPUT_SHAPE
        assert inp["layout"] == self.INPUT_LAYOUT
        assert list(inp["shape"][1:]) == ([c, h, w] if self.INPUT_LAYOUT == "NCHW" else [h, w, c])
        assert list(out["shape"][1:]) == [len(task["labels"])]
        assert inp["dtype"] in ("float32", "int8", "uint8") and out["dtype"] in ("float32", "int8", "uint8")
        assert meta["labels"] == list(task["labels"]) == [str(i) for i in range(10)]
        assert meta["preprocessing"]["scale"] == pytest.approx(0.0625)
        assert list(meta["preprocessing"]["mean"]) == [0.5] and list(meta["preprocessing"]["std"]) == [0.5]
        if self.int8:
            assert meta["quantization"]["qat"] is self.QAT
            assert meta["quantization"]["method"] == self.QUANT.method
            for io in [io for io, which in ((inp, "input"), (out, "output")) if which in self.QUANTIZED_IO]:
                q = io["quantization"]
                assert q is not None, f"{io['name']}: no quantization parameters recorded"
                scale = np.asarray(q["scale"], np.float64)
                assert np.all(scale > 0) and np.all(scale < 1)
        else:
            assert meta["quantization"] is None
            assert inp["quantization"] is None and out["quantization"] is None

    # ------------------------------------------------------------------ 4: run with the real runtime
    def test_runs_and_agrees_on_digits(self, lowered, outputs):
        task = digits_task()
        assert outputs.dtype == np.float32 and outputs.shape == (len(task["y_test"]), 10)
        metrics = compare(outputs, lowered["torch_logits"], task["y_test"])
        assert metrics["n"] > 300 and metrics["torch_top1"] > 0.95
        gate(lowered["art"].target, self.PRECISION, metrics, self.MAX_DROP_PT, 0.999)  # what `export` applies
        min_agree = self.MIN_AGREEMENT or (0.97 if self.int8 else 0.999)
        assert metrics["agreement"] >= min_agree, metrics
        limit = self.MAX_ABS_LOGIT_DIFF or {"fp32": 1e-3, "fp16": 0.05}.get(self.PRECISION)
        if limit is not None:
            assert metrics["max_abs_logit_diff"] < limit, metrics

    def test_any_batch_size(self, lowered, outputs):
        runner = lowered["backend"].load(lowered["art"], threads=1)
        x = digits_task()["x_test"]
        np.testing.assert_allclose(runner(x[:1])[0], outputs[:1], rtol=0, atol=self.BATCH_ATOL)
        np.testing.assert_allclose(runner(x[5:12])[0], outputs[5:12], rtol=0, atol=self.BATCH_ATOL)

    # ------------------------------------------------------------------ 5: op audit and size
    def test_op_audit(self, lowered):
        audit = lowered["backend"].op_audit(lowered["art"])
        if not self.int8:
            assert audit is None
            return
        assert audit["total_ops"] > 0 and audit["runtime"]
        assert audit["n_float_ops"] == len(audit["float_ops"])
        assert audit["float_compute_ops"] == [], audit["float_ops"]

    def test_size_against_fp32(self, lowered, tmp_path_factory):
        art = lowered["art"]
        size = sum((art.dir / f).stat().st_size for f in art.files if f != "model.json")
        fp32 = fp32_onnx_size(str(tmp_path_factory.mktemp("fp32_onnx")))
        ratio = {"fp32": 1.1, "fp16": 0.6}.get(self.PRECISION, INT8_SIZE_RATIO)
        if self.PRECISION == "dynamic_int8" or self.int8:
            ratio = INT8_SIZE_RATIO
        assert size <= fp32 * ratio, f"{size} bytes vs FP32 ONNX {fp32} (allowed ratio {ratio:.3f})"

    # ------------------------------------------------------------------ 6: bad input
    def test_missing_runtime_names_package(self, tmp_path, monkeypatch, lowered):
        monkeypatch.setitem(sys.modules, self.RUNTIME_MODULE, None)  # as if the package were not installed
        backend = get_backend(self.FORMAT, self.PRECISION)
        out = tmp_path / "out"
        out.mkdir()
        with pytest.raises(TargetError, match=f"pip install {self.RUNTIME_PACKAGE}"):
            ctx = self.context(tmp_path)
            backend.lower(self.model(), ctx, out)  # lowering may not need the runtime ...
            backend.load(lowered["art"], threads=1)  # ... running it does

    @pytest.mark.parametrize("problem", ["too_small", "constant", "nan"])
    def _bad_calibration_data(self, tmp_path, problem):
        calib = digits_task()["calib"].copy()
        calib, expected = {
            "too_small": (calib[:MIN_CALIBRATION_SAMPLES - 1], f"at least {MIN_CALIBRATION_SAMPLES}"),
            "constant": (np.zeros_like(calib), "constant"),
            "nan": (np.where(np.arange(calib.size).reshape(calib.shape) == 100, np.nan, calib), "NaN"),
        }[problem]
        out = tmp_path / "out"
        out.mkdir()
        ctx = self.context(tmp_path, calib)
        with pytest.raises(CalibrationDataError, match=expected):
            get_backend(self.FORMAT, self.PRECISION).lower(self.model(), ctx, out)
        assert list(out.iterdir()) == [] and list(ctx.work_dir.iterdir()) == []
