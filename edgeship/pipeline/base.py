"""The pass contract: a typed config in, the new model and its metrics out.

A pass is a subclass of ``Pass`` with a ``name`` and a pydantic ``Config``; subclassing registers it
(as Olive does), and every module of ``edgeship/pipeline/`` is imported when the registry is first
asked for, so adding a pass is adding one module (see docs/architecture.md).

Two optional hooks tell the rest of the pipeline about quantization without anyone naming a pass:
``planned_quant`` (the settings the targets will follow, known from the config before anything runs,
so a recipe whose calibration method a backend lacks is refused when it loads) and
``learned_quantization`` (what a QAT pass learned, for the backends that rebuild it themselves).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ValidationError
from torch import nn

from edgeship.calibration.quant import LearnedQuantization, QuantSettings
from edgeship.errors import EdgeshipError
from edgeship.models.load import exported_graph
from edgeship.recipe import IOSpec
from edgeship.schema import Strict, format_validation_error


class PassConfig(Strict):
    """A pass's options; unknown keys are errors."""


@dataclass
class PassContext:
    """What a pass may use. ``teacher`` is the model as it was before the first pass."""

    splits: Any  # calibration.datasets.Splits (raw arrays)
    data: dict  # split name -> pipeline.training.TensorData (preprocessed)
    preprocessing: Any  # calibration.preprocess.Preprocessing
    input_shape: tuple[int, ...]
    teacher: nn.Module | None
    work_dir: Path  # scratch space for this stage (logs, intermediate files)
    seed: int = 0
    threads: int | None = None
    quiet: bool = False
    quant: QuantSettings | None = None  # decided by earlier passes, if any
    stage: str = ""
    io: IOSpec | None = None  # the model's signature, for an io: recipe (None: one image in, class logits out)
    device: str = "cpu"  # where training passes train (recipe train.device, resolved); models come back on the CPU
    memo: dict = field(default_factory=dict)  # what the run's passes share (pipeline.training's teacher logits)


@dataclass
class PassResult:
    model: nn.Module
    metrics: dict = field(default_factory=dict)
    quant: QuantSettings | None = None  # settings the targets must follow (calibrate, qat), else None


class Pass:
    name: ClassVar[str] = ""
    Config: ClassVar[type[PassConfig]] = PassConfig
    # what the pass does to the module, when that needs a Python nn.Module (checked before any work)
    needs_module: ClassVar[str] = ""
    torchscript_ok: ClassVar[bool] = False
    # works on any model (its signature aside); else it trains or rewrites a one-input classifier
    any_model: ClassVar[bool] = False
    # a small working config (docs and the pass template test run it): ``{"name": <pass>, **example}``
    example: ClassVar[dict[str, Any]] = {}
    registry: ClassVar[dict[str, type[Pass]]] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.name:
            Pass.registry[cls.name] = cls

    def run(self, model: nn.Module, config: Any, ctx: PassContext) -> PassResult:
        raise NotImplementedError

    @classmethod
    def planned_quant(cls, config: Any, seed: int) -> QuantSettings | None:
        """The quantization settings this pass will hand the targets (``PassResult.quant``), from its config
        alone; None for a pass that decides none."""
        return None

    @classmethod
    def learned_quantization(cls, model: nn.Module) -> LearnedQuantization | None:
        """For a pass that puts fake quantization into the model: its float view and learned ranges."""
        return None


def registry() -> dict[str, type[Pass]]:
    """Every pass of ``edgeship/pipeline/`` (each module is imported once, on first use)."""
    package = importlib.import_module(__package__ or "edgeship.pipeline")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg:
            importlib.import_module(f"{package.__name__}.{info.name}")
    return Pass.registry


def require_python_module(model: nn.Module, stage: str, what: str, torchscript_ok: bool = False) -> None:
    """Passes that rewrite or train the module (prune, distill, qat, sparsify) need its Python code and
    layers, not a TorchScript graph or a torch.export program (ATen ops, frozen in eval mode)."""
    fix = "load the model with model.zoo or model.factory (+ weights), or export it without passes"
    if isinstance(model, torch.jit.ScriptModule) and not torchscript_ok:
        raise EdgeshipError(f"{stage}: {what} needs a Python nn.Module, got a TorchScript model", fix)
    if exported_graph(model) is not None:
        raise EdgeshipError(f"{stage}: {what} needs a Python nn.Module, got a torch.export program (.pt2), "
                            "whose layers are ATen ops that cannot be trained or pruned", fix)


def check_model_for_passes(model: nn.Module, names: list[str], io: IOSpec | None = None) -> None:
    """Refuse, before the baseline evaluation, a model that a listed pass cannot work on."""
    reg = registry()
    for i, name in enumerate(names):
        cls = reg[name]
        if io is not None and not cls.any_model and not io.single_input_classifier:
            raise EdgeshipError(
                f"{i + 1}:{name}: the pass trains or rewrites a model with one data input and one classification "
                f"output; this one takes {', '.join(x.name for x in io.inputs)} and returns "
                f"{', '.join(f'{o.name} ({o.task})' for o in io.outputs)}",
                "drop the pass (every target still quantizes the model after training: the calibrate pass sets how)")
        if cls.needs_module:
            require_python_module(model, f"{i + 1}:{name}", cls.needs_module, cls.torchscript_ok)


def validate_pass(index: int, entry: dict | BaseModel) -> tuple[str, PassConfig]:
    """``{name: <pass>, ...config}`` (a dict or the recipe's PassSpec) -> (name, its validated config), or the
    one-line error."""
    entry = entry.model_dump() if isinstance(entry, BaseModel) else dict(entry)
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
                            "see the pass's options in docs/passes.md") from None


def validate_passes(entries: Sequence[dict | BaseModel]) -> list[tuple[str, PassConfig]]:
    return [validate_pass(i, e) for i, e in enumerate(entries)]


def planned_quant(passes: list[tuple[str, PassConfig]], seed: int) -> QuantSettings:
    """The settings the targets will get: those of the last pass that decides any, else the defaults."""
    reg = registry()
    quant = QuantSettings(seed=seed)
    for name, config in passes:
        quant = reg[name].planned_quant(config, seed) or quant
    return quant
