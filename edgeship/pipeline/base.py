"""The pass contract: a typed config in, the new model and its metrics out.

A pass is a subclass of ``Pass`` with a ``name`` and a pydantic ``Config``; subclassing registers
it (as Olive does), so adding a pass is adding one module under ``edgeship/pipeline/`` and
listing it in ``PASS_MODULES``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from edgeship.errors import EdgeshipError

# modules that define passes; imported on first use of the registry
PASS_MODULES = ("prune", "depth", "distill", "qat", "calibrate", "sparsify")


class PassConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


@dataclass
class PassContext:
    """What a pass may use. ``teacher`` is the model as it was before the first pass."""

    splits: Any  # calibration.datasets.Splits (raw arrays)
    data: dict  # split name -> pipeline.training.TensorData (preprocessed)
    preprocessing: Any  # calibration.preprocess.Preprocessing
    input_shape: tuple[int, int, int]
    teacher: Optional[nn.Module]
    work_dir: Path  # scratch space for this stage (logs, intermediate files)
    seed: int = 0
    threads: Optional[int] = None
    quiet: bool = False
    quant: Any = None  # calibration.quant.QuantSettings decided by earlier passes, if any
    stage: str = ""


@dataclass
class PassResult:
    model: nn.Module
    metrics: dict = field(default_factory=dict)
    quant: Any = None  # a QuantSettings the targets must follow (calibrate, qat), else None


class Pass:
    name: ClassVar[str] = ""
    Config: ClassVar[type[PassConfig]] = PassConfig
    # what the pass does to the module, when that needs a Python nn.Module (checked before any work)
    needs_module: ClassVar[str] = ""
    torchscript_ok: ClassVar[bool] = False
    registry: ClassVar[dict[str, type["Pass"]]] = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.name:
            Pass.registry[cls.name] = cls

    def run(self, model: nn.Module, config: PassConfig, ctx: PassContext) -> PassResult:
        raise NotImplementedError


def require_python_module(model: nn.Module, stage: str, what: str, torchscript_ok: bool = False) -> None:
    """Passes that rewrite or train the module (prune, distill, qat, sparsify) need its Python code and
    layers, not a TorchScript graph or a torch.export program (ATen ops, frozen in eval mode)."""
    import torch

    from edgeship.models.load import exported_graph

    fix = "load the model with model.zoo or model.factory (+ weights), or export it without passes"
    if isinstance(model, torch.jit.ScriptModule) and not torchscript_ok:
        raise EdgeshipError(f"{stage}: {what} needs a Python nn.Module, got a TorchScript model", fix)
    if exported_graph(model) is not None:
        raise EdgeshipError(f"{stage}: {what} needs a Python nn.Module, got a torch.export program (.pt2), "
                            "whose layers are ATen ops that cannot be trained or pruned", fix)


def forward_with_hooks(model: nn.Module, example, handles: list) -> None:
    """One eval-mode, no-grad forward pass of ``example``; the hook ``handles`` are removed afterwards."""
    import torch

    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in handles:
            h.remove()


def check_model_for_passes(model: nn.Module, names: list[str]) -> None:
    """Refuse, before the baseline evaluation, a model that a listed pass cannot work on."""
    reg = registry()
    for i, name in enumerate(names):
        cls = reg[name]
        if cls.needs_module:
            require_python_module(model, f"{i + 1}:{name}", cls.needs_module, cls.torchscript_ok)


def registry() -> dict[str, type[Pass]]:
    for mod in PASS_MODULES:
        try:
            importlib.import_module(f"edgeship.pipeline.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"edgeship.pipeline.{mod}":
                raise
    return Pass.registry


def validate_pass(index: int, entry: dict) -> tuple[str, PassConfig]:
    from edgeship.recipe import format_validation_error

    entry = dict(entry)
    name = entry.pop("name")
    passes = registry()
    if name not in passes:
        raise EdgeshipError(f"passes[{index}]: unknown pass {name!r}",
                            f"use one of: {', '.join(sorted(passes)) or '(none installed)'}")
    cls = passes[name]
    try:
        return name, cls.Config.model_validate(entry)
    except ValidationError as e:
        raise EdgeshipError(format_validation_error(e, f"passes[{index}] ({name})", cls.Config),
                            "see the pass's options in README.md") from None
