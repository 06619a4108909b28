"""The recipe: one YAML file that says which model, which data, which passes, which targets and
which budgets. This module is its schema (pydantic) and its parsing; an error names the key and says
what is allowed.

Names that refer to an extension registry (a zoo model, a pass, a target's format and precision, a
device) are checked against those registries by ``edgeship.api.load_recipe``, which every command
loads recipes with: the schema itself imports nothing heavier than pydantic, so a run record that
embeds a recipe can be read without torch.

Relative paths in a recipe resolve against the current working directory (run edgeship from
the project root).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeship.calibration.preprocess import Preprocessing
from edgeship.errors import EdgeshipError
from edgeship.schema import Strict, format_validation_error


class ModelSpec(Strict):
    """Exactly one of ``zoo``, ``factory``, ``torchscript``, ``exported``."""

    zoo: str | None = Field(None, description="reference model: small_cnn, resnet, mobilenetv2, dscnn")
    factory: str | None = Field(None, description="'package.module:function' returning an nn.Module")
    torchscript: Path | None = Field(None, description="a TorchScript file (torch.jit.save)")
    exported: Path | None = Field(None, description="a torch.export program (.pt2)")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for zoo/factory")
    weights: Path | None = Field(None, description="state_dict or edgeship checkpoint for zoo/factory; "
                                    "`edgeship train` writes it for zoo models")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [k for k in ("zoo", "factory", "torchscript", "exported") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of zoo, factory, torchscript, exported "
                             f"(got {', '.join(given) or 'none'})")
        if self.factory is not None and ":" not in self.factory:
            raise ValueError(f"factory must look like 'package.module:function', got {self.factory!r}")
        return self


class PreprocessingSpec(Strict):
    scale: float = Field(1.0 / 255.0, description="multiplies raw pixel values first")
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])

    @field_validator("std")
    @classmethod
    def _nonzero(cls, v: list[float]) -> list[float]:
        if any(s == 0 for s in v):
            raise ValueError("std values must be non-zero")
        return v


class InputSpec(Strict):
    shape: tuple[int, int, int] = Field(description="(channels, height, width) of one sample")
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    preprocessing: PreprocessingSpec = Field(default_factory=PreprocessingSpec)

    @model_validator(mode="after")
    def _check(self) -> InputSpec:
        if min(self.shape) <= 0:
            raise ValueError(f"shape values must be positive, got {self.shape}")
        c = self.shape[0]
        for k in ("mean", "std"):
            n = len(getattr(self.preprocessing, k))
            if n not in (1, c):
                per_channel = f" or {c} (one per channel)" if c > 1 else ""
                raise ValueError(f"preprocessing.{k} has {n} values but input.shape has {c} channel"
                                 f"{'s' if c > 1 else ''}; give 1 value{per_channel}")
        return self

    def preprocessing_obj(self) -> Preprocessing:
        c = self.shape[0]
        p = self.preprocessing
        widen = lambda v: tuple(v) * (c if len(v) == 1 else 1)  # noqa: E731
        return Preprocessing(scale=p.scale, mean=widen(p.mean), std=widen(p.std))


class DataSource(Strict):
    kind: Literal["fashion_mnist", "digits", "idx", "npz", "image_folder"]
    path: Path | None = Field(None, description="file or folder; fashion_mnist defaults to Debian's package")
    labels_path: Path | None = Field(None, description="idx only: the labels file")

    @model_validator(mode="after")
    def _needs_path(self) -> DataSource:
        if self.kind in ("idx", "npz", "image_folder") and self.path is None:
            raise ValueError(f"data source kind {self.kind!r} needs a path")
        return self


class DataSpec(Strict):
    source: DataSource
    test_source: DataSource | None = Field(None, description="explicit test set; default: the source's "
                                              "official test split, else test_fraction of the source")
    val_size: int = Field(5000, ge=0)
    calib_size: int = Field(1000, ge=1, description="calibration samples, drawn from the training partition")
    train_size: int | None = Field(None, ge=1)
    test_size: int | None = Field(None, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


class TrainSpec(Strict):
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    hflip: bool = Field(False, description="random horizontal flips (images only)")
    threads: int | None = Field(None, ge=1, description="torch threads; default: all cores")
    seed: int = 0


class BudgetSpec(Strict):
    latency_ms_p90: float | None = Field(None, gt=0)
    peak_ram_mb: float | None = Field(None, gt=0)
    model_size_kb: float | None = Field(None, gt=0)
    min_top1: float | None = Field(None, ge=0, le=1)
    max_accuracy_drop: float | None = Field(None, ge=0, description="points of top-1 below the torch model")


class TargetSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    device: str = Field("host", description="a device of the catalog (`edgeship devices`)")
    format: str = Field(description="a backend's format: onnx, openvino, tflite (the backend registry)")
    precision: str = Field("fp32", description="one of the format's precisions (the backend registry)")
    max_accuracy_drop: float = Field(1.0, ge=0, description="top-1 points the artifact may lose vs torch")
    budgets: BudgetSpec | None = None


class PassSpec(BaseModel):
    """``{name: <pass>, ...config}``; the config is validated by the pass's own schema."""

    model_config = ConfigDict(extra="allow")
    name: str


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    model: ModelSpec
    input: InputSpec
    labels: list[str] | None = Field(None, description="class names; default: the data set's")
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    passes: list[PassSpec] = Field(default_factory=list)
    targets: list[TargetSpec] = Field(default_factory=list)
    budgets: BudgetSpec = Field(default_factory=BudgetSpec, description="defaults for every target")
    min_agreement: float = Field(0.999, ge=0, le=1, description="FP32 artifacts must agree with torch this often")
    output: Path = Field(description="the run directory")

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        names = [t.name for t in self.targets]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"target names must be unique; repeated: {', '.join(sorted(dup))}")
        return self

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- parsing
RecipeSource = str | Path | dict | Recipe


def parse_recipe(source: RecipeSource) -> tuple[Recipe, str]:
    """A recipe from a YAML file, a dict or a Recipe, validated against the schema -> (recipe, where it
    came from: the path, or ``<dict>``/``<Recipe>``). Registry names are checked by ``api.load_recipe``."""
    if isinstance(source, Recipe):
        return source, "<Recipe>"
    if isinstance(source, dict):
        raw, where = source, "<dict>"
    else:
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise EdgeshipError(f"recipe not found: {path}", "give the path to a recipe YAML (see recipes/)")
        try:
            raw = yaml.safe_load(path.read_text())
        except UnicodeDecodeError:
            raise EdgeshipError(f"{path}: not UTF-8 text", "save the recipe as a UTF-8 YAML file") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark else ""
            raise EdgeshipError(f"{path}: not valid YAML{line}", "fix the YAML syntax") from None
        if not isinstance(raw, dict):
            raise EdgeshipError(f"{path}: a recipe must be a mapping of keys", "see recipes/fashion_mnist.yaml")
    try:
        return Recipe.model_validate(raw), where
    except ValidationError as e:
        raise EdgeshipError(format_validation_error(e, where, Recipe),
                            "see the recipe reference in README.md") from None


def json_schema() -> dict:
    """The JSON schema of a recipe (for editors that complete YAML against a schema)."""
    schema = Recipe.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edgeship recipe"
    return schema
