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
from typing import Any, Literal, Optional

from pydantic import ConfigDict, Field, PrivateAttr, ValidationError

from edgeship.calibration.quant import QuantSettings
from edgeship.errors import EdgeshipError
from edgeship.recipe import Recipe
from edgeship.schema import Strict, format_validation_error

SCHEMA_VERSION = 1
REPORT = "report.json"
Source = Literal["host", "device", "estimate"]
SOURCES: tuple[str, ...] = ("host", "device", "estimate")
SOURCE_PREFERENCE: tuple[str, ...] = ("device", "host", "estimate")  # the latency a target's summary shows


class Record(Strict):
    """Strict, and NaN/inf refused on the way in (a crafted or broken measurement must not get stored)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


class Open(Record):
    """A section whose keys a backend or a measuring tool adds to (kept as they are)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=(), allow_inf_nan=False)


# ---------------------------------------------------------------- the run's inputs
class Machine(Open):
    hostname: Optional[str] = None
    machine: Optional[str] = None
    cpu: Optional[str] = None
    cores: Optional[int] = None
    python: Optional[str] = None
    torch: Optional[str] = None
    system: Optional[str] = None


class DataInfo(Record):
    sizes: dict[str, int]
    labels: list[str]
    source: str


class ModelFacts(Record):
    """The torch model before the passes (``baseline``) or after them (``final``)."""

    top1_val: Optional[float] = None
    top1_test: Optional[float] = None
    params: int
    macs: Optional[int] = None  # None: could not be counted
    size_fp32_bytes: int
    model_hash: Optional[str] = None


class Stage(Record):
    """One pass as it ran (or came from the stage cache)."""

    stage: str  # "<position>:<pass name>"
    top1_val: Optional[float] = None
    params: int
    macs: Optional[int] = None
    size_fp32_bytes: int
    wall_s: float
    cached: bool = False
    metrics: dict[str, Any] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- targets
class Verification(Record):
    """An artifact run with its own runtime on the test split, compared with the torch model."""

    n: int
    top1: Optional[float] = None
    torch_top1: Optional[float] = None
    agreement: Optional[float] = None
    max_abs_logit_diff: Optional[float] = None
    mean_abs_logit_diff: Optional[float] = None
    accuracy_drop_pt: Optional[float] = None


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
    input_model: Optional[float] = None
    compressed_model: Optional[float] = None


class SizeReference(Record):
    """The FP32 artifacts (bytes) the ratios refer to, per format; an error where one could not be made."""

    input_model: Optional[int] = None
    compressed_model: Optional[int] = None
    input_model_error: Optional[str] = None
    compressed_model_error: Optional[str] = None


class Target(Record):
    name: str
    device: str = "host"
    format: str
    precision: str
    status: Literal["ok", "failed"]
    error: Optional[str] = None
    reference: Optional[str] = None  # which torch model it was lowered from and verified against
    lower_s: Optional[float] = None
    verify: Optional[Verification] = None
    op_audit: Optional[OpAudit] = None
    size_bytes: Optional[int] = None
    artifact: Optional[str] = None  # the main file, relative to the run directory
    files: list[str] = Field(default_factory=list)
    wall_s: Optional[float] = None
    size_vs_fp32: Optional[SizeVsFP32] = None
    carried_over: bool = False  # `export -t`: kept from the run before, not redone

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------- measurements and the verdict
class Measurement(Record):
    """Latency and memory of one artifact from one source; every number says where it came from."""

    source: Source
    p50_ms: Optional[float] = None
    p90_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    mean_ms: Optional[float] = None
    std_ms: Optional[float] = None
    min_ms: Optional[float] = None
    max_ms: Optional[float] = None
    samples_ms: list[float] = Field(default_factory=list)
    load_ms: Optional[float] = None
    first_run_ms: Optional[float] = None
    peak_rss_mb: Optional[float] = None
    rss_before_load_mb: Optional[float] = None
    arena_mb: Optional[float] = None
    size_bytes: Optional[int] = None
    threads: Optional[int] = None
    runs: Optional[int] = None
    warmup: Optional[int] = None
    runtime: Optional[str] = None
    runtime_version: Optional[str] = None
    input_shape: Optional[list[int]] = None
    input_dtype: Optional[str] = None
    inference_precision: Optional[str] = None
    facts: dict[str, Any] = Field(default_factory=dict)  # what the measuring machine said about itself
    method: Optional[str] = None  # how an estimate was made (None for a measurement)
    device: Optional[str] = None  # the catalog device it was measured on or estimated for
    transport: Optional[Literal["ssh", "adb"]] = None
    remote: Optional[str] = None
    remote_dir: Optional[str] = None
    remote_python: Optional[str] = None
    factor: Optional[float] = None  # estimates: the device factor applied
    precision_class: Optional[str] = None
    p50_method: Optional[str] = None
    p90_method: Optional[str] = None
    p99_method: Optional[str] = None
    memory_method: Optional[str] = None


class BudgetResult(Record):
    target: str
    budget: str  # a BudgetSpec key, or "artifact" for a target that failed
    limit: Optional[float] = None
    value: Optional[float] = None
    margin: Optional[float] = None
    margin_pct: Optional[float] = None
    passed: bool
    source: str  # host, device, estimate (latency, RAM) or artifact (size, accuracy)
    origin: Optional[str] = None  # where the limit came from: target, recipe, device <name>
    unit: Optional[str] = None
    basis: Optional[str] = None
    note: Optional[str] = None


class Verdict(Record):
    source: Source
    estimate: bool = False
    results: list[BudgetResult] = Field(default_factory=list)
    passed: bool
    warning: Optional[str] = None


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
    budgets: Optional[Verdict] = None
    wall_s: Optional[float] = None

    _dir: Optional[Path] = PrivateAttr(default=None)

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

    def preferred_measurement(self, target: str) -> Optional[Measurement]:
        """The device measurement where there is one, else the host's, else the estimate."""
        m = self.measurements_of(target)
        for source in SOURCE_PREFERENCE:
            if source in m:
                return m[source]
        return next(iter(m.values()), None)

    def budget_results(self, target: str) -> list[BudgetResult]:
        return [r for r in (self.budgets.results if self.budgets else []) if r.target == target]

    def budget_verdict(self, target: str) -> Optional[bool]:
        """True all budgets met, False one missed, None no budget checked for this target."""
        results = self.budget_results(target)
        return None if not results else all(r.passed for r in results)

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

    def save(self, run_dir: Optional[Path] = None) -> Path:
        """Write report.json into ``run_dir`` (default: where it was read from) atomically."""
        d = Path(run_dir) if run_dir is not None else self.run_dir
        fd, tmp = tempfile.mkstemp(prefix=".report.", suffix=".json.tmp", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.to_json())
            os.chmod(tmp, 0o644)
            os.replace(tmp, d / REPORT)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if run_dir is not None and self._dir is None:
            self._dir = d
        return d / REPORT

    @classmethod
    def load(cls, run: Path | str) -> RunRecord:
        """A run directory, its report.json, or a run name under ./runs/ -> the validated record."""
        path = resolve(run) / REPORT
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

