"""The backend contract (as NNCF keeps one backend per file behind one interface).

A backend lowers a torch model to artifact files, loads an artifact with its own real runtime, and
describes it (inputs, outputs, layout, dtype, quantization parameters, preprocessing, labels). The
description is embedded in the artifact where the format allows and always written as a sidecar
``model.json``, which ``Artifact.from_sidecar`` reads back (the one reader of sidecars).

A backend class is the one place its format's facts live: the format and precisions it lowers to,
the runtime module that runs it (and the pip package that provides it), the calibration methods its
post-training quantizer has, and the loader of the device-side runner (``edgeship/devices/bench_runner.py``,
which runs on devices without edgeship and keeps its own copy; a test checks that copy against these
declarations). The recipe is checked against them when it loads; the device catalog detects the host's
runtimes from them.

Every module of ``edgeship/targets/`` is imported when the registry is first asked for, so adding a backend
is adding one module (helper packages, such as ``torch2tf/``, are not scanned). Backend modules import
only light modules at the top: torch, ONNX, OpenVINO and TensorFlow are imported when a model is
lowered or run, so that `edgeship devices`, `check` and `report` start without them.
"""

from __future__ import annotations

import importlib
import io
import json
import pkgutil
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgeship.calibration.preprocess import Preprocessing
from edgeship.calibration.quant import LearnedQuantization, QuantSettings
from edgeship.errors import EdgeshipError, TargetError
from edgeship.recipe import IOInput, IOOutput, IOSpec, TargetSpec
from edgeship.rundir import inside
from edgeship.version import __version__

if TYPE_CHECKING:
    import torch
    from torch import nn

# the graph inputs (preprocessed, as the torch model takes them: an image classifier's is normalized NCHW float32)
# -> one array per output
Runner = Callable[..., list[np.ndarray]]
FLOAT_PRECISIONS = ("fp32", "fp16")  # precisions that carry no quantization


@dataclass
class LowerContext:
    """What a backend may use to lower a model."""

    target: TargetSpec
    input_shape: tuple[int, ...]  # (C, H, W)
    calib: np.ndarray  # normalized NCHW float32 calibration samples (already subset to quant.samples)
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    quant: QuantSettings
    log_path: Path  # converter output goes here
    work_dir: Path  # scratch (not part of the artifact)
    threads: int | None = None
    learned: LearnedQuantization | None = None  # after QAT: the float view and the learned ranges
    io: IOSpec | None = None  # the model's signature (io: recipes); None: one NCHW image in, class logits out
    extra_inputs: list[np.ndarray] = field(default_factory=list)  # calibration samples of the other graph inputs
    source_onnx: Path | None = None  # the user's own ONNX file, when the model is exactly that file
    retry_note: str | None = None  # why this target is lowered a second time (the route says so)
    rewrites: str | None = None  # what models.polyphase changed in the model before lowering (the route says so)

    @property
    def signature(self) -> IOSpec:
        """The graph's inputs and outputs, whichever kind of recipe the model came from."""
        if self.io is not None:
            return self.io
        return IOSpec(inputs=[IOInput(name="input", shape=list(self.input_shape), layout="NCHW")],
                      outputs=[IOOutput(name="logits", task="classification")], image=True)

    @property
    def inputs(self) -> list[np.ndarray]:
        """Calibration samples of every graph input, in the signature's order (the first is ``calib``)."""
        return [self.calib, *self.extra_inputs]

    @property
    def example(self) -> torch.Tensor:
        """One sample of the first input (what an image classifier is traced with)."""
        return self.examples[0]

    @property
    def examples(self) -> tuple[torch.Tensor, ...]:
        """One sample of every graph input, with the dtype the model takes."""
        import torch  # heavy: only lowering needs it

        dtypes = {"float32": torch.float32, "int64": torch.int64, "int32": torch.int32}
        return tuple(torch.from_numpy(a[:1].copy()).to(dtypes[i.dtype])
                     for a, i in zip(self.inputs, self.signature.inputs))


@dataclass
class Artifact:
    target: str
    format: str
    precision: str
    dir: Path
    main: str  # the file a runtime opens, relative to dir
    files: list[str] = field(default_factory=list)  # every file that belongs to it, relative to dir
    meta: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.dir / self.main

    def size_bytes(self) -> int:
        """Bytes of the files a device loads: edgeship's sidecar model.json is not part of the format."""
        return int(sum((self.dir / f).stat().st_size for f in self.files if f != "model.json"))

    def zip_bytes(self) -> int:
        """Bytes of the same files in a zip archive (deflate, level 9): what a device downloads when the artifact
        is shipped compressed (sparse or clustered weights shrink here, not in ``size_bytes``)."""
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            for f in self.files:
                if f != "model.json":
                    z.write(self.dir / f, f)
        return len(out.getvalue())

    def write_sidecar(self) -> None:
        if "model.json" not in self.files:  # listed before writing, so the sidecar names itself too
            self.files.append("model.json")
        (self.dir / "model.json").write_text(json.dumps(self.to_dict(), indent=2, default=str))

    def to_dict(self) -> dict:
        """The sidecar's content. The directory is where the sidecar itself lies (written while the
        artifact is still in a temporary directory, so a path recorded here would be wrong)."""
        d = asdict(self)
        d.pop("dir")
        return d

    @classmethod
    def from_sidecar(cls, path: Path) -> Artifact:
        """The artifact whose sidecar is ``path`` (``<dir>/model.json``), or a one-line error."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
            d["dir"] = path.parent  # where the sidecar lies (older sidecars recorded the temporary one)
            art = cls(**d)
        except (OSError, ValueError, TypeError) as e:
            raise EdgeshipError(f"{path} is not an edgeship artifact description ({type(e).__name__}: {e})",
                                "export the target again") from None
        if not isinstance(art.main, str) or not isinstance(art.files, list) \
                or not all(isinstance(f, str) for f in art.files):
            raise EdgeshipError(f"{path}: 'main' and 'files' must be file names", "export the target again")
        for f in [art.main, *art.files]:  # a crafted sidecar must not make a reader (or a copy) leave the directory
            inside(art.dir, f, str(path))
        return art


def describe(ctx: LowerContext, fmt: str, precision: str, inputs: list[dict], outputs: list[dict],
             **extra: Any) -> dict:
    """The common description every backend writes (and embeds where its format allows). Each input and output
    entry gets what the signature says of it (an input's fill, preprocessing and layout; an output's task)."""
    quantized = precision not in FLOAT_PRECISIONS
    sig = ctx.signature
    for entry, spec, sample in zip(inputs, sig.inputs, ctx.inputs):
        entry.setdefault("fill", spec.fill)
        if spec.dynamic:  # what a device measures the dynamic axes with
            entry["example_shape"] = [1, *sample.shape[1:]]
        if not sig.image:
            entry["layout"] = None if spec.layout == "any" else spec.layout
            if spec.preprocessing is not None:
                entry["preprocessing"] = spec.preprocessing.model_dump()
    for entry, out in zip(outputs, sig.outputs):
        entry.setdefault("task", out.task)
    if ctx.retry_note and "route" in extra:
        extra["route"] += f"; {ctx.retry_note}"
    if ctx.rewrites:
        extra["route"] = "; ".join(r for r in (extra.get("route"), ctx.rewrites) if r)
    return {"format": fmt, "precision": precision, "inputs": inputs, "outputs": outputs,
            "preprocessing": ctx.preprocessing.to_dict(), "labels": list(ctx.labels),
            "quantization": ctx.quant.to_dict() if quantized else None,
            "call_kwargs": dict(sig.call_kwargs) or None, "producer": f"edgeship {__version__}", **extra}


# operator types that carry a model's arithmetic, in each runtime's naming: ONNX (and ONNX Runtime's
# fused contrib ops), OpenVINO's CPU runtime model, TFLite. An INT8 artifact should run none in float.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul",
                         "Convolution", "GroupConvolution", "Deconvolution", "FullyConnected",
                         "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "BATCH_MATMUL"})


def audit(runtime: str, total_ops: int, float_ops: list[dict], **extra: Any) -> dict:
    """The op audit every INT8 backend returns. ``float_ops``: each operator that still runs in float,
    as ``{"name", "op", ...}``; ``float_compute_ops``: the names of the convolutions and matrix
    products among them."""
    return {"runtime": runtime, "total_ops": total_ops, "n_float_ops": len(float_ops), "float_ops": float_ops,
            "float_compute_ops": [o["name"] for o in float_ops if o["op"] in COMPUTE_OPS], **extra}


class Backend(ABC):
    """One format's lowering, runtime and facts. Subclassing registers every (format, precision) it lists."""

    format: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ()
    # (python module, pip package) that run the format, first importable wins; the device runner's
    # RUNTIMES[format] must be the same list
    runtime_modules: ClassVar[tuple[tuple[str, str], ...]] = ()
    device_loader: ClassVar[str] = ""  # the device runner's loader function for this format (bench_runner.LOADERS)
    calibrated: ClassVar[tuple[str, ...]] = ()  # precisions its post-training quantizer calibrates on data
    calibration_methods: ClassVar[tuple[str, ...]] = ()  # QuantSettings.method values that quantizer has
    # precision -> the taps per phase from which its runtime runs a strided Conv1d, Conv2d over few input channels
    # faster over its input's phases (models.polyphase; benchmarks/polyphase.py); None or not named: never
    polyphase_taps: ClassVar[dict[str, tuple[int | None, int | None]]] = {}
    registry: ClassVar[dict[tuple[str, str], type[Backend]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        for p in cls.precisions:
            Backend.registry[(cls.format, p)] = cls

    @property
    def runtime_package(self) -> str:
        """The pip package a user installs to run this format."""
        return self.runtime_modules[0][1]

    @abstractmethod
    def lower(self, model: nn.Module, ctx: LowerContext, out_dir: Path) -> Artifact:
        """Write the artifact's files into ``out_dir`` and return its description."""

    @abstractmethod
    def load(self, artifact: Artifact, threads: int | None = None) -> Runner:
        """Open the artifact with this backend's real runtime."""

    def op_audit(self, artifact: Artifact) -> dict | None:
        """For INT8 artifacts: which operators still run in float (an ``audit(...)`` dict). None where
        not applicable."""
        return None

    def accuracy_fallback(self, precision: str, quant: QuantSettings) -> tuple[QuantSettings, str] | None:
        """Settings to lower with once more when the artifact lowered with ``quant`` misses its accuracy gate, and
        what they change in words; None where there is nothing to fall back to. Only a choice the recipe left to
        the backend (a default picked for speed) may be taken back."""
        return None

    def calibration_problem(self, precision: str, quant: QuantSettings) -> str | None:
        """Why ``quant`` cannot calibrate this format at ``precision`` (None when it can). A QAT model
        brings its own ranges and calibrates nothing."""
        if precision not in self.calibrated or quant.qat or quant.method in self.calibration_methods:
            return None
        elsewhere = sorted({f"{cls.format} {p}" for (_, p), cls in _all().items()
                            if p in cls.calibrated and quant.method in cls.calibration_methods})
        return (f"{self.format} {precision} calibrates with {', '.join(self.calibration_methods)}, not "
                f"{quant.method!r}"
                + (f" ({quant.method} is available on: {', '.join(elsewhere)})" if elsewhere else ""))

    def check_calibration_method(self, precision: str, quant: QuantSettings, target: str) -> None:
        """Lowering with a method this quantizer lacks fails the target (the recipe loader refuses it earlier)."""
        problem = self.calibration_problem(precision, quant)
        if problem:
            raise TargetError(f"{target}: {problem}",
                              f"set the calibrate pass's method to one of {', '.join(self.calibration_methods)}")


def _all() -> dict[tuple[str, str], type[Backend]]:
    """Every backend of ``edgeship/targets/`` (each module imported once, on first use)."""
    package = importlib.import_module(__package__ or "edgeship.targets")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg:
            importlib.import_module(f"{package.__name__}.{info.name}")
    return Backend.registry


def backends() -> dict[tuple[str, str], type[Backend]]:
    """(format, precision) -> backend class."""
    return dict(_all())


def formats() -> dict[str, type[Backend]]:
    """format -> a backend class of it (the runtime facts are the format's, whichever class is asked)."""
    out: dict[str, type[Backend]] = {}
    for (fmt, _), cls in _all().items():
        out.setdefault(fmt, cls)
    return out


def get_backend(fmt: str, precision: str) -> Backend:
    cls = _all().get((fmt, precision))
    if cls is None:
        known = sorted({f for f, _ in _all()})
        if fmt not in known:
            raise EdgeshipError(f"unknown format {fmt!r}", f"use one of: {', '.join(known)}")
        have = sorted(p for f, p in _all() if f == fmt)
        raise EdgeshipError(f"format {fmt!r} has no precision {precision!r}", f"use one of: {', '.join(have)}")
    return cls()


def check_float_ops(requested: list[str], have: set[str], where: str, graph: str) -> None:
    """A target's ``float_ops`` against the op types its converted graph has: a type it lacks fails the target,
    listing the types there are (shared by the ONNX and OpenVINO INT8 backends)."""
    missing = [t for t in requested if t not in have]
    if missing:
        raise TargetError(f"{where}: float_ops {', '.join(missing)} not in the {graph}, whose op types are "
                          f"{', '.join(sorted(have))}", f"name op types of this {graph} in the target's float_ops")


def require(module: str, package: str, fmt: str) -> Any:
    """Import a runtime lazily; a missing one names the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise TargetError(f"{fmt}: a package this target needs is missing ({e})",
                          f"pip install {package}") from None
