"""The run record: everything `edgeship export` found, as one typed schema (pydantic), written to
``runs/<name>/report.json`` and read back by `profile`, `check`, `report` and the Python API.

This module owns the schema, where a run lives (``resolve``), reading it (``RunRecord.load``: a file of
the wrong shape is one line naming the key) and writing it (``RunRecord.save``: a temporary file in the
same directory, then an atomic rename, so a reader never sees half a file). Nothing else parses or
writes report.json. ``docs/report.schema.json`` is generated from these models
(``edgeship schema report > docs/report.schema.json``; a test keeps it current).

Floats that cannot be measured are null, never NaN or infinity (JSON has neither).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from edgeship.calibration.quant import QuantSettings
from edgeship.errors import EdgeshipError
from edgeship.limits import disk_full_error
from edgeship.recipe import Recipe
from edgeship.schema import Strict, format_validation_error

SCHEMA_VERSION = 1
REPORT = "report.json"
# test-split samples (samples.npz) and each target's outputs on them on the host (<target>.npz), which a device's
# runtime is checked against when the run is profiled there (``DeviceVerification``)
VERIFY_DIR = "verify"
MAX_RECORD_BYTES = 256 << 20  # a record with every measurement's samples is a few MB
# emulated: an emulated device (qemu-user) ran it; its runtime's outputs count, its timings do not
Source = Literal["host", "device", "emulated", "predicted", "estimate"]
NonNegative = Annotated[float, Field(ge=0)]
SOURCES: tuple[str, ...] = ("host", "device", "emulated", "predicted", "estimate")
# what `check` judges latency and RAM on: one source, or "auto" (each target on its own device's numbers)
CheckSource = Literal["auto", "host", "device", "emulated", "predicted", "estimate"]
CHECK_SOURCES: tuple[str, ...] = ("auto", *SOURCES)
BudgetStatus = Literal["pass", "fail", "unverified"]
# the latency a target's summary shows
SOURCE_PREFERENCE: tuple[str, ...] = ("device", "predicted", "host", "estimate")


class Record(Strict):
    """Strict, and NaN/inf refused on the way in (a crafted or broken measurement must not get stored)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class Open(Record):
    """A section whose keys a backend or a measuring tool adds to (kept as they are)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), allow_inf_nan=False)


# ---------------------------------------------------------------- the run's inputs
class Machine(Open):
    hostname: str | None = None
    machine: str | None = None
    cpu: str | None = None
    cores: int | None = None
    python: str | None = None
    torch: str | None = None
    system: str | None = None


class DataInfo(Record):
    sizes: dict[str, int]
    labels: list[str]
    source: str


class ModelFacts(Record):
    """The torch model before the passes (``baseline``) or after them (``final``)."""

    top1_val: float | None = None
    top1_test: float | None = None
    params: int
    macs: int | None = None  # None: could not be counted
    size_fp32_bytes: int
    model_hash: str | None = None
    saved_as: str | None = None  # final only: the compressed torch module's file in the run directory
    not_saved: str | None = None  # final only: why no format could hold it (the artifacts are still there)


class Stage(Record):
    """One pass as it ran (or came from the stage cache)."""

    stage: str  # "<position>:<pass name>"
    top1_val: float | None = None
    params: int
    macs: int | None = None
    size_fp32_bytes: int
    wall_s: float
    cached: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- targets
class OutputCheck(Open):
    """One output of an artifact against the torch model's (targets/verify.py names every metric it adds)."""

    task: str
    metric: str  # the one the gate used
    limit: float | None = None  # its tolerance for the artifact's precision class (None: the top-1 gate)
    passed: bool | None = None


class Verification(Record):
    """An artifact run with its own runtime on the test split, compared with the torch model. The top-level fields
    are the (first) classification output's; ``outputs`` holds every output of an ``io:`` model."""

    n: int
    outputs: dict[str, OutputCheck] = Field(default_factory=dict)
    top1: float | None = None
    torch_top1: float | None = None
    agreement: float | None = None
    max_abs_logit_diff: float | None = None
    mean_abs_logit_diff: float | None = None
    accuracy_drop_pt: float | None = None
    top1_ci95: list[float] | None = None  # Wilson score interval of top1
    accuracy_drop_ci95_pt: list[float] | None = None  # paired interval of the drop against the torch model
    gate_note: str | None = None  # set when the test split is too small for the accuracy gate to resolve


class OpAudit(Open):
    """Which operators of an INT8 artifact still run in float (``targets.base.audit``)."""

    runtime: str
    total_ops: int
    n_float_ops: int
    float_ops: list[dict[str, Any]] = Field(default_factory=list)
    float_compute_ops: list[str] = Field(default_factory=list)


class SizeVsFP32(Record):
    """An INT8/FP16 artifact's files against the same format's FP32 artifact of each model."""

    bytes: int
    input_model: float | None = None
    compressed_model: float | None = None


class SizeReference(Record):
    """The FP32 artifacts (bytes) the ratios refer to, per format; an error where one could not be made."""

    input_model: int | None = None
    compressed_model: int | None = None
    input_model_error: str | None = None
    compressed_model_error: str | None = None


class Target(Record):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # as the recipe's: a directory name under targets/
    model: str = "main"  # which compressed model: "main" (the recipe's passes) or a search's winner
    device: str = "host"
    format: str
    precision: str
    status: Literal["ok", "failed"]
    error: str | None = None
    reference: str | None = None  # which torch model it was lowered from and verified against
    lower_s: float | None = None
    verify: Verification | None = None
    op_audit: OpAudit | None = None
    size_bytes: int | None = None
    zip_bytes: int | None = None  # the same files zipped (deflate): what a device downloads compressed
    artifact: str | None = None  # the main file, relative to the run directory
    files: list[str] = Field(default_factory=list)
    wall_s: float | None = None
    size_vs_fp32: SizeVsFP32 | None = None
    carried_over: bool = False  # `export -t`: kept from the run before, not redone

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------- measurements and the verdict
class DeviceOutputCheck(Record):
    """One output of the artifact on the device against the host's outputs of the same artifact."""

    name: str
    agreement: float | None = None  # a classification output: fraction of samples whose top class is the host's
    max_abs_diff: float | None = None
    mean_abs_diff: float | None = None


class DeviceVerification(Record):
    """The artifact run by the measuring device's own runtime on ``n`` test-split samples (the run's
    verify/samples.npz), compared with the same artifact's outputs on the host that exported it. The top-level
    fields are the classification output's (None for a model without one); ``outputs`` has every output."""

    n: int
    top1: float | None = None
    host_top1: float | None = None  # the host's outputs of the same artifact, on the same samples
    agreement: float | None = None  # fraction of samples whose top-1 class is the host's
    max_abs_logit_diff: float | None = None
    mean_abs_logit_diff: float | None = None
    outputs: list[DeviceOutputCheck] = Field(default_factory=list)


class LayerTime(Record):
    """One layer of an artifact as its runtime ran it."""

    name: str
    op: str  # the runtime's operator or node type (QLinearConv, Convolution, CONV_2D)
    kernel: str | None = None  # OpenVINO's execution type (jit_avx2_I8), ONNX Runtime's provider, LiteRT's input dtype
    precision: Literal["int8", "float"] | None = None  # the arithmetic of a compute layer (conv, matmul, FC)
    ms: float | None = None  # median time per inference (None: the runtime has no per-op timer)
    share: float | None = None  # of the summed layer times
    float_fallback: bool = False  # a compute layer of an INT8 artifact that ran in a float kernel


class LayerProfile(Record):
    """Where an artifact's time goes, from the runtime's own per-layer counters (bench_runner --profile)."""

    source: str  # which profiler
    runs: int
    total_ms: float | None = None  # summed layer medians (layers overlap nothing at 1 thread; above, they may)
    layer_count: int = 0
    compute_layers: int = 0
    int8_compute_layers: int = 0
    float_fallbacks: list[str] = Field(default_factory=list)
    by_op_ms: dict[str, float] | None = None
    layers: list[LayerTime] = Field(default_factory=list)  # the slowest first (every layer when untimed)
class Prediction(Record):
    """How a predicted latency was made, and the predictor's error measured on architectures it was not fitted on
    (``edgeship.devices.predictor``)."""

    predictor: str  # the predictor file
    device: str
    created: str | None = None  # when the predictor was calibrated
    kernels: int
    kernel_ms_by_type: dict[str, float] = Field(default_factory=dict)
    mape_pct: float  # p50: mean absolute percentage error on the validation architectures
    within_10pct: float  # p50: fraction of them within +-10 %
    upper_pct: float  # p50: 95th percentile of measured / predicted - 1
    p90_mape_pct: float | None = None
    p90_upper_pct: float | None = None
    n_validation: int
    p50_upper_ms: float
    p90_upper_ms: float  # what a latency budget is judged on: the predicted p90 plus its error bound


class Measurement(Record):
    """Latency and memory of one artifact from one source; every number says where it came from. Times and sizes
    are finite and not negative (a broken or hostile device cannot make a budget pass with -1 ms)."""

    source: Source
    p50_ms: NonNegative | None = None
    p90_ms: NonNegative | None = None
    p99_ms: NonNegative | None = None
    mean_ms: NonNegative | None = None
    std_ms: NonNegative | None = None
    min_ms: NonNegative | None = None
    max_ms: NonNegative | None = None
    samples_ms: list[NonNegative] = Field(default_factory=list)
    load_ms: NonNegative | None = None
    first_run_ms: NonNegative | None = None
    peak_rss_mb: NonNegative | None = None
    rss_before_load_mb: NonNegative | None = None
    arena_mb: NonNegative | None = None
    size_bytes: int | None = Field(None, ge=0)
    threads: int | None = None
    runs: int | None = None
    warmup: int | None = None
    runtime: str | None = None
    runtime_version: str | None = None
    input_shape: list[int] | None = None
    input_dtype: str | None = None
    inference_precision: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict)  # what the measuring machine said about itself
    verification: DeviceVerification | None = None  # the device's runtime on test samples (ssh measurements)
    method: str | None = None  # how an estimate, an emulated run or a prediction was made (None for a measurement)
    prediction: Prediction | None = None  # source predicted: the predictor and its error
    device: str | None = None  # the catalog device it was measured on or estimated for
    transport: Literal["ssh", "adb"] | None = None
    remote: str | None = None
    remote_dir: str | None = None
    remote_python: str | None = None
    factor: float | None = None  # estimates: the device factor applied
    precision_class: str | None = None
    p50_method: str | None = None
    p90_method: str | None = None
    p99_method: str | None = None
    memory_method: str | None = None
    profile: LayerProfile | None = None  # per-layer times (host measurements; None where not profiled)


class BudgetResult(Record):
    target: str
    budget: str  # a BudgetSpec key, or "artifact" for a target that failed
    limit: float | None = None
    value: float | None = None
    margin: float | None = None
    margin_pct: float | None = None
    passed: bool
    # pass / fail on a value that may judge the limit; unverified: no such value (nothing measured on the
    # target's device, or only numbers from elsewhere that were not asked for): never a pass
    status: BudgetStatus = "fail"  # a record written before statuses existed: derived from passed
    device: str | None = None  # the device whose limit this is (latency and RAM)
    source: str  # host, device, emulated, estimate (latency, RAM) or artifact (size, accuracy)
    origin: str | None = None  # where the limit came from: target, recipe, device <name>
    unit: str | None = None
    basis: str | None = None
    note: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _status_from_passed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "status" not in data and "passed" in data:
            data = {**data, "status": "pass" if data["passed"] else "fail"}
        return data


def overall_status(results: list[BudgetResult]) -> str:
    """fail when a budget was missed, else unverified when one could not be judged, else pass."""
    statuses = {r.status for r in results}
    return "fail" if "fail" in statuses else "unverified" if "unverified" in statuses or not results else "pass"


class Verdict(Record):
    source: CheckSource  # auto: each target judged on its own device's numbers
    estimate: bool = False
    results: list[BudgetResult] = Field(default_factory=list)
    passed: bool
    warning: str | None = None
    # devices whose latency/RAM budgets were judged on numbers not from them, because the user asked for that
    # source explicitly (`check --source host`): said in the verdict, the JUnit file and the Markdown summary
    stand_in_for: list[str] = Field(default_factory=list)

    @property
    def unverified(self) -> list[BudgetResult]:
        return [r for r in self.results if r.status == "unverified"]

    @property
    def status(self) -> str:
        return overall_status(self.results)


# ---------------------------------------------------------------- searches
class SearchCandidate(Record):
    """One point of a budget-driven search (``edgeship.search``)."""

    blocks: int
    macs_ratio: float
    top1_val: float | None = None  # after the compression prefix's own fine-tuning
    params: int
    macs: int | None = None
    latency_ms: float  # what the budget is judged on: a predicted p90's upper bound, or a measured p90
    p50_ms: float | None = None
    p90_ms: float | None = None
    latency_source: str  # predicted or measured
    feasible: bool = False  # within the budget and the accuracy floor
    finalist: bool = False
    finetuned_top1_val: float | None = None  # a finalist after its brief fine-tune
    final_latency_ms: float | None = None  # a finalist lowered to the target's format
    final_source: str | None = None
    winner: bool = False
    note: str | None = None


class SearchRecord(Record):
    name: str
    targets: list[str]
    device: str
    budget_ms: float
    min_top1: float
    trials: int
    candidates: list[SearchCandidate] = Field(default_factory=list)
    winner: int | None = None  # index into candidates
    why: str
    wall_s: float
    passes: list[dict[str, Any]] = Field(default_factory=list)  # the winner's whole pipeline


class Variant(Record):
    """A compressed model of its own: a search's winner through the recipe's whole pipeline."""

    name: str
    targets: list[str]
    stages: list[Stage] = Field(default_factory=list)
    final: ModelFacts | None = None  # None: the search found no model within its budget
    quantization: QuantSettings = Field(default_factory=QuantSettings)
    search: SearchRecord


# ---------------------------------------------------------------- the record
class RunRecord(Record):
    schema_version: int = SCHEMA_VERSION
    edgeship_version: str
    created: str
    recipe_path: str
    recipe_hash: str
    recipe: Recipe
    machine: Machine = Field(default_factory=Machine)
    data: DataInfo
    baseline: ModelFacts
    stages: list[Stage] = Field(default_factory=list)
    final: ModelFacts
    quantization: QuantSettings = Field(default_factory=QuantSettings)
    size_references: dict[str, SizeReference] = Field(default_factory=dict)
    targets: list[Target] = Field(default_factory=list)
    measurements: dict[str, dict[str, Measurement]] = Field(default_factory=dict)  # target -> source -> m
    measurement_errors: dict[str, dict[str, str]] = Field(default_factory=dict)  # target -> source -> error
    budgets: Verdict | None = None
    variants: list[Variant] = Field(default_factory=list)  # searched models (recipe search:), beside "main"
    wall_s: float | None = None

    _dir: Path | None = PrivateAttr(default=None)

    # ------------------------------------------------------------ reading
    @property
    def run_dir(self) -> Path:
        """Where this record was read from or saved to (the recipe's output for a record not on disk yet)."""
        return self._dir if self._dir is not None else Path(self.recipe.output)

    def place(self, run_dir: Path) -> RunRecord:
        """Say where the record's run directory is now (an export's temporary directory until it is renamed)."""
        self._dir = Path(run_dir)
        return self

    @property
    def ok(self) -> bool:
        """Every target lowered and verified."""
        return all(t.ok for t in self.targets)

    def target(self, name: str) -> Target:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    def measurements_of(self, target: str) -> dict[str, Measurement]:
        """{source: measurement} of one target; empty when nothing was measured."""
        return self.measurements.get(target) or {}

    def preferred_measurement(self, target: str) -> Measurement | None:
        """The device measurement where there is one, else the prediction, else the host's, else the estimate."""
        m = self.measurements_of(target)
        for source in SOURCE_PREFERENCE:
            if source in m:
                return m[source]
        return next(iter(m.values()), None)

    def device_verification(self, target: str) -> Measurement | None:
        """The measurement whose device runtime ran the test samples (a real device before an emulated one)."""
        m = self.measurements_of(target)
        return next((m[s] for s in ("device", "emulated") if s in m and m[s].verification is not None), None)

    def budget_results(self, target: str) -> list[BudgetResult]:
        return [r for r in (self.budgets.results if self.budgets else []) if r.target == target]

    def budget_verdict(self, target: str) -> bool | None:
        """True all budgets met, False one missed or unverified, None no budget checked for this target."""
        results = self.budget_results(target)
        return None if not results else all(r.passed for r in results)

    def budget_status(self, target: str) -> str | None:
        """pass, fail (a budget missed), unverified (none missed, some not judged), or None (nothing checked)."""
        results = self.budget_results(target)
        return overall_status(results) if results else None

    # ------------------------------------------------------------ changing
    def store(self, target: str, m: Measurement) -> None:
        """Keep ``m`` under measurements[target][source]; a stale error for the same pair goes."""
        self.measurements.setdefault(target, {})[m.source] = m
        errors = self.measurement_errors.get(target) or {}
        if m.source in errors:
            del errors[m.source]
            if not errors:
                del self.measurement_errors[target]

    def store_error(self, target: str, source: str, error: str) -> None:
        self.measurement_errors.setdefault(target, {})[source] = error

    # ------------------------------------------------------------ files
    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def save(self, run_dir: Path | None = None) -> Path:
        """Write report.json into ``run_dir`` (default: where it was read from) atomically."""
        d = Path(run_dir) if run_dir is not None else self.run_dir
        text = self.to_json()
        try:
            fd, tmp = tempfile.mkstemp(prefix=".report.", suffix=".json.tmp", dir=d)
        except OSError as e:  # named as report.json, not as the temporary file beside it
            raise disk_full_error(e, d / REPORT, d, len(text)) or OSError(e.errno, e.strerror, str(d / REPORT)) \
                from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, d / REPORT)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            full = disk_full_error(e, d / REPORT, d, len(text)) if isinstance(e, Exception) else None
            if full is not None:  # the report.json in place is the one before: intact
                raise full from None
            raise
        if run_dir is not None and self._dir is None:
            self._dir = d
        return d / REPORT

    @classmethod
    def load(cls, run: Path | str) -> RunRecord:
        """A run directory, its report.json, or a run name under ./runs/ -> the validated record."""
        path = resolve(run) / REPORT
        size = path.stat().st_size
        if size > MAX_RECORD_BYTES:
            raise EdgeshipError(f"{path} is {size / (1 << 20):,.0f} MB; a run record is at most "
                                f"{MAX_RECORD_BYTES >> 20} MB", "give the report.json that `edgeship export` wrote")
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EdgeshipError(f"{path} is not valid JSON ({e})", "rerun `edgeship export` to rewrite it") from None
        if not isinstance(raw, dict) or "edgeship_version" not in raw:
            raise EdgeshipError(f"{path} is not an edgeship run record (no edgeship_version)",
                                "give the report.json that `edgeship export` wrote")
        try:
            record = cls.model_validate(raw)
        except ValidationError as e:
            raise EdgeshipError(format_validation_error(e, str(path), cls),
                                "rerun `edgeship export` to rewrite it (it was changed or written by another "
                                "version)") from None
        record._dir = path.parent
        return record


def resolve(run: Path | str) -> Path:
    """A run directory, its report.json, or a run name under ./runs/ -> the run directory."""
    p = Path(run)
    if p.name == REPORT and p.is_file():
        p = p.parent
    if not p.is_dir() and not p.is_absolute() and (Path("runs") / p).is_dir():
        p = Path("runs") / p
    if not p.is_dir():
        raise EdgeshipError(f"run directory not found: {run}",
                            "give the directory `edgeship export` wrote (the recipe's `output:`, e.g. runs/<name>)")
    if not (p / REPORT).is_file():
        raise EdgeshipError(f"{p} has no {REPORT}", "run `edgeship export RECIPE` first; it writes the run directory")
    return p


def is_run_dir(path: Path) -> bool:
    """A directory an earlier export wrote (its report.json names edgeship's version)."""
    try:
        return "edgeship_version" in json.loads((Path(path) / REPORT).read_text())
    except (OSError, ValueError, TypeError):
        return False


def json_schema() -> dict:
    """The JSON schema of report.json, generated from the models above."""
    schema = RunRecord.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edgeship run record (runs/<name>/report.json)"
    return schema

