"""One interface for every backend (as NNCF keeps one backend per file behind one interface).

A backend lowers a torch model to artifact files, loads an artifact with its own real runtime,
and describes it (inputs, outputs, layout, dtype, quantization parameters, preprocessing, labels).
The description is embedded in the artifact where the format allows and always written as a
sidecar ``model.json``.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch
from torch import nn

from edgeship.errors import EdgeshipError, TargetError

# modules that define backends; imported on first use of the registry
BACKEND_MODULES = ("onnx", "onnx_int8", "openvino", "tflite")

Runner = Callable[[np.ndarray], np.ndarray]  # normalized NCHW float32 batch -> float32 logits


@dataclass
class LowerContext:
    """What a backend may use to lower a model."""

    target: Any  # recipe.TargetSpec
    input_shape: tuple[int, int, int]  # (C, H, W)
    calib: np.ndarray  # normalized NCHW float32 calibration samples (already subset to quant.samples)
    preprocessing: Any  # calibration.preprocess.Preprocessing
    labels: tuple[str, ...]
    quant: Any  # calibration.quant.QuantSettings
    log_path: Path  # converter output goes here
    work_dir: Path  # scratch (not part of the artifact)
    threads: Optional[int] = None

    @property
    def example(self) -> torch.Tensor:
        return torch.from_numpy(self.calib[:1].copy())


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
    def from_sidecar(cls, path: Path) -> "Artifact":
        d = json.loads(Path(path).read_text())
        d["dir"] = Path(path).parent  # where the sidecar lies (older sidecars recorded the temporary one)
        return cls(**d)


def describe(ctx: LowerContext, fmt: str, precision: str, inputs: list[dict], outputs: list[dict],
             **extra) -> dict:
    """The common description every backend writes (and embeds where its format allows)."""
    from edgeship import __version__

    quantized = ctx.quant is not None and precision not in ("fp32", "fp16")
    return {"format": fmt, "precision": precision, "inputs": inputs, "outputs": outputs,
            "preprocessing": ctx.preprocessing.to_dict(), "labels": list(ctx.labels),
            "quantization": ctx.quant.to_dict() if quantized else None,
            "producer": f"edgeship {__version__}", **extra}


# operator types that carry a model's arithmetic, in each runtime's naming: ONNX (and ONNX Runtime's
# fused contrib ops), OpenVINO's CPU runtime model, TFLite. An INT8 artifact should run none in float.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul",
                         "Convolution", "GroupConvolution", "Deconvolution", "FullyConnected",
                         "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "BATCH_MATMUL"})


def audit(runtime: str, total_ops: int, float_ops: list[dict], **extra) -> dict:
    """The op audit every INT8 backend returns. ``float_ops``: each operator that still runs in float,
    as ``{"name", "op", ...}``; ``float_compute_ops``: the names of the convolutions and matrix
    products among them."""
    return {"runtime": runtime, "total_ops": total_ops, "n_float_ops": len(float_ops), "float_ops": float_ops,
            "float_compute_ops": [o["name"] for o in float_ops if o["op"] in COMPUTE_OPS], **extra}


class Backend(ABC):
    format: ClassVar[str] = ""
    precisions: ClassVar[tuple[str, ...]] = ()
    runtime_package: ClassVar[str] = ""  # the pip package a user must install to run it
    registry: ClassVar[dict[tuple[str, str], type["Backend"]]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        for p in cls.precisions:
            Backend.registry[(cls.format, p)] = cls

    @abstractmethod
    def lower(self, model: nn.Module, ctx: LowerContext, out_dir: Path) -> Artifact:
        """Write the artifact's files into ``out_dir`` and return its description."""

    @abstractmethod
    def load(self, artifact: Artifact, threads: Optional[int] = None) -> Runner:
        """Open the artifact with this backend's real runtime."""

    def op_audit(self, artifact: Artifact) -> Optional[dict]:
        """For INT8 artifacts: which operators still run in float (an ``audit(...)`` dict). None where
        not applicable."""
        return None


def _import_backends() -> None:
    for mod in BACKEND_MODULES:
        try:
            importlib.import_module(f"edgeship.targets.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"edgeship.targets.{mod}":
                raise


def get_backend(fmt: str, precision: str) -> Backend:
    _import_backends()
    cls = Backend.registry.get((fmt, precision))
    if cls is None:
        have = sorted(p for f, p in Backend.registry if f == fmt)
        raise EdgeshipError(f"format {fmt!r} has no precision {precision!r}",
                            f"use one of: {', '.join(have) or '(no backend installed for this format)'}")
    return cls()


def layer_of_op(model: nn.Module, op: str) -> Optional[str]:
    """Best effort: the layer (module path) where ``op`` (a converter's name such as ``aten::fft_rfft`` or
    ``qa::mysquash``) is called, from an fx trace of the model; None when it cannot be told."""
    from edgeship.targets.torch2tf import layer_of

    base = op.split("::")[-1].split(".")[0]
    if not base or isinstance(model, torch.jit.ScriptModule):
        return None
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:
        return None
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method"):
            continue
        t = node.target
        name = t if isinstance(t, str) else getattr(t, "__name__", None) or str(t).split(".")[-1]
        if name == base or base in str(t).split("."):  # torch.fft.rfft is fft_rfft; torch.ops.qa.x is qa.x.default
            return layer_of(node)
    return None


def require(module: str, package: str, fmt: str):
    """Import a runtime lazily; a missing one names the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise TargetError(f"{fmt}: a package this target needs is missing ({e})",
                          f"pip install {package}") from None
