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

MODEL_SOURCES = ("zoo", "factory", "torchscript", "exported", "onnx")


class ModelSpec(Strict):
    """Exactly one of ``zoo``, ``factory``, ``torchscript``, ``exported``, ``onnx``."""

    zoo: str | None = Field(None, description="reference model: small_cnn, resnet, mobilenetv2, dscnn")
    factory: str | None = Field(None, description="'package.module:function' returning an nn.Module")
    torchscript: Path | None = Field(None, description="a TorchScript file (torch.jit.save)")
    exported: Path | None = Field(None, description="a torch.export program (.pt2)")
    onnx: Path | None = Field(None, description="an ONNX file: quantized and converted as it is for the onnx and "
                              "openvino targets; converted to torch (onnx2torch) for passes and tflite targets")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for zoo/factory")
    weights: Path | None = Field(None, description="state_dict or edgeship checkpoint for zoo/factory; "
                                    "`edgeship train` writes it for zoo models")

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [k for k in MODEL_SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(MODEL_SOURCES)} (got {', '.join(given) or 'none'})")
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


Task = Literal["classification", "score", "regression", "embedding", "any"]
Metric = Literal["top1", "agreement", "max_abs_error", "mean_abs_error", "relative_error", "cosine"]
# the metric each task is judged by, and its default tolerance per precision class: a number the metric must not
# exceed (errors) or fall below (agreement, cosine); classification keeps the top-1 gate (max_accuracy_drop)
TASK_METRIC: dict[str, str] = {"classification": "top1", "score": "agreement", "regression": "relative_error",
                               "embedding": "cosine", "any": "relative_error"}
DEFAULT_TOLERANCE: dict[str, dict[str, float]] = {
    "agreement": {"fp32": 0.999, "fp16": 0.99, "int8": 0.95},
    "cosine": {"fp32": 0.9999, "fp16": 0.999, "int8": 0.98},
    "relative_error": {"fp32": 1e-3, "fp16": 1e-2, "int8": 0.1},
    "mean_abs_error": {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1},
    "max_abs_error": {"fp32": 1e-3, "fp16": 5e-2, "int8": 0.5},
}
HIGHER_IS_BETTER = {"top1", "agreement", "cosine"}
LAYOUTS = ("NCHW", "NHWC", "NCL", "NLC", "NC", "any")


class IOInput(Strict):
    """One tensor input of the model's graph, fed from a data array or filled with a constant."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="the graph input's name")
    shape: list[int] = Field(description="one sample's shape (the batch axis comes first, implicitly)")
    dtype: Literal["float32", "int64", "int32"] = "float32"
    layout: Literal["NCHW", "NHWC", "NCL", "NLC", "NC", "any"] = "any"
    data: str | None = Field(None, description="the data array that feeds it (an npz key); default: its name")
    fill: float | None = Field(None, description="not from data: every sample is this constant (e.g. 0 for a "
                                                  "recurrent state); still a graph input the device passes")
    dynamic: dict[int, str] = Field(default_factory=dict, description="axes of one sample that vary (e.g. {0: "
                                    "seq}): dynamic in the ONNX and OpenVINO graphs")
    preprocessing: PreprocessingSpec | None = Field(None, description="scale/mean/std on the raw array (channel "
                                                    "axis from the layout); none: fed as stored")

    @model_validator(mode="after")
    def _check(self) -> IOInput:
        if any(d <= 0 for d in self.shape):
            raise ValueError(f"shape values must be positive, got {self.shape}")
        if self.fill is not None and self.data is not None:
            raise ValueError("give data or fill, not both")
        bad = [a for a in self.dynamic if not 0 <= a < len(self.shape)]
        if bad:
            raise ValueError(f"dynamic axes {bad} are not axes of a sample of shape {self.shape}")
        if self.preprocessing is not None:
            if self.dtype != "float32":
                raise ValueError("preprocessing applies to float32 inputs only")
            n = max(len(self.preprocessing.mean), len(self.preprocessing.std))
            channels = None if self.layout == "any" else self.shape[self.channel_axis - 1]
            if n > 1 and n != channels:
                raise ValueError(f"preprocessing has {n} values per statistic but input {self.name!r} has "
                                 f"{channels or 'no known'} channels (layout {self.layout}); give 1 value or one per "
                                 "channel")
        return self

    @property
    def source(self) -> str | None:
        """The data array it reads, or None for a filled input."""
        return None if self.fill is not None else (self.data or self.name)

    @property
    def channel_axis(self) -> int:
        """Where the channels are in a batch of this input (the axis per-channel preprocessing runs along)."""
        return {"NCHW": 1, "NHWC": 3, "NCL": 1, "NLC": 2, "NC": 1}.get(self.layout, 1)

    def preprocessing_obj(self) -> Preprocessing | None:
        if self.preprocessing is None:
            return None
        p = self.preprocessing
        return Preprocessing(scale=p.scale, mean=tuple(p.mean), std=tuple(p.std), channel_axis=self.channel_axis)


class IOOutput(Strict):
    """One output tensor of the model, with what it means and how an artifact's copy is judged."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    task: Task = Field("any", description="classification (logits), score (probabilities/sigmoids), regression, "
                       "embedding, any")
    metric: Metric | None = Field(None, description="how the artifact's output is compared with the torch model's; "
                                  "default: the task's (top1, agreement, relative_error, cosine)")
    tolerance: float | dict[Literal["fp32", "fp16", "int8"], float] | None = Field(
        None, description="the metric's limit, one number or per precision class (fp32/fp16/int8); default: "
        "edgeship's per metric")
    threshold: float = Field(0.5, description="score: the decision threshold agreement is counted at")
    labels: str | None = Field(None, description="classification: the data array of ground-truth class ids (top-1 "
                               "and the accuracy budgets); default: the data set's labels for the first "
                               "classification output")

    @property
    def judged_by(self) -> str:
        return self.metric or TASK_METRIC[self.task]

    def limit(self, precision_class: str) -> float | None:
        """The tolerance for a precision class (None: classification's top-1 gate applies)."""
        metric = self.judged_by
        if metric == "top1":
            return None
        if isinstance(self.tolerance, dict):
            if precision_class in self.tolerance:
                return float(self.tolerance[precision_class])
        elif self.tolerance is not None:
            return float(self.tolerance)
        return DEFAULT_TOLERANCE[metric][precision_class]


class IOSpec(Strict):
    """The model's signature: named tensor inputs (from data or filled), constant keyword arguments of forward(),
    and named outputs with their tasks. ``input:`` is the shorthand for one image in, class logits out."""

    inputs: list[IOInput] = Field(min_length=1)
    outputs: list[IOOutput] = Field(min_length=1)
    call_kwargs: dict[str, Any] = Field(default_factory=dict, description="constant keyword arguments passed to "
                                        "forward() on every call (e.g. sr: 16000); baked into every artifact")
    image: bool = Field(False, description="internal: this spec stands for an `input:` image section")

    @model_validator(mode="after")
    def _check(self) -> IOSpec:
        for kind, items in (("input", self.inputs), ("output", self.outputs)):
            names = [x.name for x in items]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"{kind} names must be unique; repeated: {', '.join(dup)}")
        clash = {i.name for i in self.inputs} & {o.name for o in self.outputs}
        if clash:
            raise ValueError(f"a name cannot be both an input and an output: {', '.join(sorted(clash))}")
        if not any(i.fill is None for i in self.inputs):
            raise ValueError("at least one input must come from data (the others may be filled)")
        return self

    @classmethod
    def for_image(cls, spec: InputSpec) -> IOSpec:
        return cls(inputs=[IOInput(name="input", shape=list(spec.shape), layout="NCHW", data="x",
                                   preprocessing=spec.preprocessing)],
                   outputs=[IOOutput(name="logits", task="classification")], image=True)

    @property
    def data_inputs(self) -> list[IOInput]:
        return [i for i in self.inputs if i.fill is None]

    @property
    def classification(self) -> IOOutput | None:
        """The first classification output: the one top-1, the accuracy budgets and distillation are about."""
        return next((o for o in self.outputs if o.task == "classification"), None)

    @property
    def single_input_classifier(self) -> bool:
        """One data-fed input and one classification output: what the training passes work on."""
        return (len(self.inputs) == 1 and self.inputs[0].fill is None and len(self.outputs) == 1
                and self.outputs[0].task == "classification" and not self.call_kwargs)


class DataSource(Strict):
    kind: Literal["fashion_mnist", "digits", "idx", "npz", "image_folder"]
    path: Path | None = Field(None, description="file or folder; fashion_mnist defaults to Debian's package")
    labels_path: Path | None = Field(None, description="idx only: the labels file")
    stream: bool = Field(False, description="npz and image_folder: read training samples per batch (npz "
                                            "memory-mapped) instead of loading the data set into memory")

    @model_validator(mode="after")
    def _needs_path(self) -> DataSource:
        if self.kind in ("idx", "npz", "image_folder") and self.path is None:
            raise ValueError(f"data source kind {self.kind!r} needs a path")
        if self.stream and self.kind not in ("npz", "image_folder"):
            raise ValueError(f"stream: true reads npz and image_folder sources per batch, not {self.kind!r}")
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
    resize: bool = Field(False, description="images of another size: resized (bilinear) to input.shape's height "
                         "and width, one channel repeated to its channel count (e.g. Fashion-MNIST as 96x96 RGB); "
                         "done after the split, on the samples each split keeps")

    @model_validator(mode="after")
    def _resize_in_memory(self) -> DataSpec:
        if self.resize and any(s is not None and s.stream for s in (self.source, self.test_source)):
            raise ValueError("resize: true resizes the splits in memory; it cannot be combined with stream: true")
        return self


class TrainSpec(Strict):
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    label_smoothing: float = Field(0.05, ge=0, lt=1)
    hflip: bool = Field(False, description="random horizontal flips (images only)")
    threads: int | None = Field(None, ge=1, le=1024, description="torch threads; default: all cores")
    seed: int = 0
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
                        description="where `edgeship train` and the training passes run: auto = a GPU when torch "
                                    "sees one (cuda:LOCAL_RANK under torchrun), else the CPU")


class BudgetSpec(Strict):
    latency_ms_p90: float | None = Field(None, gt=0)
    peak_ram_mb: float | None = Field(None, gt=0)
    model_size_kb: float | None = Field(None, gt=0)
    min_top1: float | None = Field(None, ge=0, le=1)
    max_accuracy_drop: float | None = Field(None, ge=0, description="points of top-1 below the torch model")
    max_drop_vs_input: float | None = Field(None, ge=0, description="points of top-1 below the input model (before "
                                            "any pass): what compression and lowering cost together")
    min_speedup_vs_fp32: float | None = Field(None, gt=0, description=(
        "times faster than the same format's FP32 artifact of the input model, both timed side by side on this "
        "machine at export (a ratio a shared CI runner's drift moves little, where it moves a latency); INT8 and "
        "FP16 targets of this machine (FP32 targets are not judged on it)"))


class TargetSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    device: str = Field("host", description="a device of the catalog (`edgeship devices`)")
    format: str = Field(description="a backend's format: onnx, openvino, tflite (the backend registry)")
    precision: str = Field("fp32", description="one of the format's precisions (the backend registry)")
    max_accuracy_drop: float = Field(1.0, ge=0, description="top-1 points the artifact may lose vs torch")
    float_ops: list[str] = Field(default_factory=list, description="int8 onnx/openvino: operator types the quantizer "
                                 "leaves float, named as the target's format names them (ONNX: Pow, Sqrt, Concat; "
                                 "OpenVINO: Power, Sqrt, Concat)")
    budgets: BudgetSpec | None = None

    @model_validator(mode="after")
    def _float_ops(self) -> TargetSpec:
        if self.float_ops and (self.precision != "int8" or self.format not in ("onnx", "openvino")):
            raise ValueError(f"float_ops applies to int8 onnx and openvino targets, not {self.format} "
                             f"{self.precision}")
        return self


class TimeoutSpec(Strict):
    """How long one step may run before it is stopped with a message naming it (null: no limit)."""

    stage_s: float | None = Field(6 * 3600, gt=0, description="seconds a stage may take: evaluating the input "
                                  "model, then each pass")
    target_s: float | None = Field(3600, gt=0, description="seconds lowering and verifying one target may take")


class PassSpec(BaseModel):
    """``{name: <pass>, ...config}``; the config is validated by the pass's own schema."""

    model_config = ConfigDict(extra="allow")
    name: str


class SearchSpace(Strict):
    blocks: list[int] = Field(default_factory=lambda: [0], min_length=1,
                              description="blocks drop_blocks may remove (0: none, the pass is left out)")
    macs_ratio: list[float] = Field(default_factory=lambda: [1.0], min_length=1,
                                    description="fractions of MACs prune may keep (1.0: no pruning)")

    @field_validator("blocks")
    @classmethod
    def _blocks(cls, v: list[int]) -> list[int]:
        if any(b < 0 for b in v):
            raise ValueError("block counts are 0 or more")
        return sorted(set(v))

    @field_validator("macs_ratio")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if any(not 0 < r <= 1 for r in v):
            raise ValueError("MACs ratios are in (0, 1]")
        return sorted(set(v))


class SearchTiming(Strict):
    """How a search times a candidate on this machine (a device without a predictor): ``rounds`` rounds, each a
    fresh process of ``runs`` timed runs after ``warmup``; the budget is judged on the median of the rounds'
    p90s, and one whose median lies within its rounds' spread of the budget gets ``rounds`` more."""

    rounds: int = Field(5, ge=1, description="rounds per candidate, each a fresh process (the median judges)")
    runs: int = Field(30, ge=5, description="timed runs per round at least (its p90 is the round's number)")
    min_round_s: float = Field(0.3, ge=0, le=60, description=(
        "each round runs on until its timed runs add up to this many seconds: a fast model's p90 then rests on "
        "thousands of runs, not on the two or three slowest of 30 (0: exactly `runs`)"))
    warmup: int = Field(5, ge=0)
    block_runs: int = Field(5, ge=1, le=1000, description=(
        "latency_vs_recipe: the models are timed side by side in one process, in blocks of this many runs each "
        "in turn (a round is then a process, `runs` runs and `min_round_s` seconds at least per model)"))


class SearchSpec(Strict):
    """A budget-driven search for one target's model (``edgeship.search``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the searched model's name")
    targets: list[str] = Field(min_length=1, description="targets that get the winner; the first one's device, "
                               "format, precision and latency budget score the candidates")
    space: SearchSpace = Field(default_factory=SearchSpace)
    trials: int = Field(12, ge=1, description="candidates to evaluate (distinct points of the space)")
    finalists: int = Field(2, ge=1, description="most accurate candidates within the budget, fine-tuned and measured")
    finalist_epochs: int = Field(1, ge=1, description="the brief fine-tune of a finalist (the recipe's distill)")
    finalist_samples: int = Field(8192, ge=64)
    min_top1: float | None = Field(None, ge=0, le=1, description="accuracy floor on the validation split "
                                   "(default: the target's min_top1 budget, else none)")
    timing: SearchTiming = Field(default_factory=SearchTiming, description="measured candidates: rounds of timing")
    latency_vs_recipe: float | None = Field(None, gt=0, le=10, description=(
        "a latency budget relative to the recipe's own model (its drop_blocks and prune as written): a candidate's "
        "p90 over that model's, both timed side by side on this machine in the same process (1.0: no slower than "
        "the hand-written model; 0.8: a fifth faster). Needs a target on this machine; judged instead of, or "
        "beside, an absolute latency_ms_p90 budget"))
    seed: int = 0


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    model: ModelSpec
    input: InputSpec | None = Field(None, description="one image in, class logits out (the shorthand of io:)")
    io: IOSpec | None = Field(None, description="the model's inputs and outputs, for any other signature")
    labels: list[str] | None = Field(None, description="class names; default: the data set's")
    data: DataSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    passes: list[PassSpec] = Field(default_factory=list)
    targets: list[TargetSpec] = Field(default_factory=list)
    budgets: BudgetSpec = Field(default_factory=BudgetSpec, description="defaults for every target")
    search: list[SearchSpec] = Field(default_factory=list, description="budget-driven searches: each gives its "
                                     "targets a model of their own")
    min_agreement: float = Field(0.999, ge=0, le=1, description="FP32 artifacts must agree with torch this often")
    output: Path = Field(description="the run directory")
    timeouts: TimeoutSpec = Field(default_factory=TimeoutSpec)

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if (self.input is None) == (self.io is None):
            raise ValueError("give exactly one of input (one image in, class logits out) and io (any other "
                             "signature)")
        if self.data.resize and self.input is None:
            raise ValueError("data.resize works on images (the input: section), not on io: inputs")
        names = [t.name for t in self.targets]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"target names must be unique; repeated: {', '.join(sorted(dup))}")
        searched = [n for s in self.search for n in s.targets]
        unknown = sorted(set(searched) - set(names))
        if unknown:
            raise ValueError(f"search names targets the recipe lacks: {', '.join(unknown)}")
        twice = sorted({n for n in searched if searched.count(n) > 1})
        if twice:
            raise ValueError(f"a target gets one searched model; in two searches: {', '.join(twice)}")
        labels = [s.name for s in self.search]
        if len(set(labels)) != len(labels) or "main" in labels:
            raise ValueError("search names must be unique and not 'main' (the recipe's own passes)")
        return self

    def model_io(self) -> IOSpec:
        """The model's signature, whichever section gave it."""
        if self.io is not None:
            return self.io
        assert self.input is not None
        return IOSpec.for_image(self.input)

    def hash(self) -> str:
        # how long a step may run changes nothing a run produces
        spec = self.model_dump(mode="json", exclude={"timeouts"})
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- parsing
RecipeSource = str | Path | dict | Recipe
MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of YAML; a megabyte is already far beyond any real one
MAX_RECIPE_DEPTH = 32  # nesting of mappings and lists (a real recipe nests about 5 deep)
MAX_RECIPE_VALUES = 100_000  # values, counting each use of a YAML alias (a real recipe has a few hundred)


def _check_depth(raw: Any, where: str) -> None:
    """Refuse a structure nested deeper than MAX_RECIPE_DEPTH or holding more than MAX_RECIPE_VALUES values once
    its aliases are expanded (a YAML bomb). Iterative: the check itself must not recurse."""
    stack, seen = [(raw, 1)], 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_RECIPE_VALUES:
            raise EdgeshipError(f"{where}: holds more than {MAX_RECIPE_VALUES:,} values (with its YAML aliases "
                                "expanded)", "write the recipe without aliases that multiply; see recipes/")
        if depth > MAX_RECIPE_DEPTH:
            raise EdgeshipError(f"{where}: nested more than {MAX_RECIPE_DEPTH} levels deep",
                                "a recipe nests about 5 levels; see recipes/fashion_mnist.yaml")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


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
        size = path.stat().st_size
        if size > MAX_RECIPE_BYTES:
            raise EdgeshipError(f"{path} is {size / (1 << 20):.1f} MB; a recipe may be at most "
                                f"{MAX_RECIPE_BYTES >> 10} KB", "give the recipe YAML (data goes in data.source.path)")
        try:
            raw = yaml.safe_load(path.read_bytes()[:MAX_RECIPE_BYTES].decode())
        except RecursionError:
            raise EdgeshipError(f"{path}: nested more than {MAX_RECIPE_DEPTH} levels deep",
                                "a recipe nests about 5 levels; see recipes/fashion_mnist.yaml") from None
        except UnicodeDecodeError:
            raise EdgeshipError(f"{path}: not UTF-8 text", "save the recipe as a UTF-8 YAML file") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark else ""
            raise EdgeshipError(f"{path}: not valid YAML{line}", "fix the YAML syntax") from None
        if not isinstance(raw, dict):
            raise EdgeshipError(f"{path}: a recipe must be a mapping of keys", "see recipes/fashion_mnist.yaml")
    _check_depth(raw, where)
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
