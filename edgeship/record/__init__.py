"""The run record: everything `edgeship export` found, as one typed schema (pydantic), written to
``runs/<name>/report.json`` and read back by `profile`, `check`, `report` and the Python API.

This package owns the schema, where a run lives (``resolve``), reading it (``RunRecord.load``: a file of
the wrong shape is one line naming the key) and writing it (``RunRecord.save``: a temporary file in the
same directory, then an atomic rename, so a reader never sees half a file). Nothing else parses or
writes report.json. ``docs/report.schema.json`` is generated from these models
(``edgeship schema report > docs/report.schema.json``; a test keeps it current).

Floats that cannot be measured are null, never NaN or infinity (JSON has neither).

The sections are split by what they record: ``base`` (the strict base models and the source names),
``measurements`` (measurements and the budget verdict), and here the run's inputs, its targets, searches and
the record itself with its files; everything is importable from ``edgeship.record``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError

from edgeship.calibration.quant import QuantSettings
from edgeship.errors import EdgeshipError
from edgeship.limits import disk_full_error
from edgeship.recipe import Recipe
from edgeship.record.base import (
    CHECK_SOURCES,
    FP32_REFS,
    FP32_REFS_DIR,
    MAX_RECORD_BYTES,
    REPORT,
    SCHEMA_VERSION,
    SOURCE_PREFERENCE,
    SOURCES,
    VERIFY_DIR,
    BudgetStatus,
    CheckSource,
    NonNegative,
    Open,
    Record,
    Source,
)
from edgeship.record.measurements import (
    BudgetResult,
    DeviceOutputCheck,
    DeviceVerification,
    LayerProfile,
    LayerTime,
    Measurement,
    Prediction,
    Verdict,
    overall_status,
)
from edgeship.schema import format_validation_error

__all__ = ["CHECK_SOURCES", "FP32_REFS", "FP32_REFS_DIR", "MAX_RECORD_BYTES", "REPORT", "SCHEMA_VERSION",
           "SOURCE_PREFERENCE", "SOURCES", "VERIFY_DIR", "BudgetResult", "BudgetStatus", "CheckSource",
           "DeviceOutputCheck", "DeviceVerification", "LayerProfile", "LayerTime", "Measurement", "NonNegative",
           "Open", "Prediction", "Record", "Source", "Verdict", "overall_status"]


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


class SpeedVsFP32(Record):
    """An INT8/FP16 artifact's host p50 against the same format's FP32 artifact of each model, all timed side by side
    in the same fresh processes (``devices.measure.speed_vs_fp32``): how many times faster than each it ran (FP32
    p50 over this p50, the median over the processes; below 1: slower), and those processes' figures."""

    input_model: float | None = None  # against the FP32 artifact of the model the recipe started from
    compressed_model: float | None = None  # of the compressed model: quantization's share alone
    input_model_ratios: list[float] = Field(default_factory=list)  # one per process
    compressed_model_ratios: list[float] = Field(default_factory=list)
    p50_ms: float | None = None  # this artifact's, the median over the processes
    input_model_p50_ms: float | None = None
    compressed_model_p50_ms: float | None = None
    threads: int
    processes: int
    source: Literal["host"] = "host"
    error: str | None = None  # the timing failed: why


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
    speed_vs_fp32: SpeedVsFP32 | None = None  # host targets timed at export beside their FP32 references
    carried_over: bool = False  # `export -t`: kept from the run before, not redone

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------- searches
class LatencyRounds(Record):
    """A latency measured on this machine in repeated rounds (each a fresh process): the budget is judged on the
    median of the rounds' p90s; the spread is their lowest and highest."""

    p90_rounds_ms: list[float]  # each round's p90, in the order timed
    p50_rounds_ms: list[float]
    median_p90_ms: float
    median_p50_ms: float
    spread_ms: list[float]  # [lowest, highest] round p90
    runs: int  # timed runs per round
    remeasured: bool = False  # the budget lay within the spread of the first rounds: more rounds were timed
    how: str  # in words, e.g. "median of 5 rounds of p90 (30 runs each), spread 0.11-0.14 ms"
    vs_recipe_rounds: list[float] | None = None  # latency_vs_recipe: each round's p90 over the recipe's model's
    vs_recipe: float | None = None  # their median: what a relative budget is judged on


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
    timing: LatencyRounds | None = None  # measured: the rounds latency_ms is the median of
    vs_recipe: float | None = None  # latency_vs_recipe: p90 over the recipe's own model's, side by side (median)
    feasible: bool = False  # within the budget and the accuracy floor
    finalist: bool = False
    finetuned_top1_val: float | None = None  # a finalist after its brief fine-tune
    final_latency_ms: float | None = None  # a finalist lowered to the target's format
    final_source: str | None = None
    final_timing: LatencyRounds | None = None  # a measured finalist's rounds (timed interleaved with the others)
    winner: bool = False
    note: str | None = None


class SearchRecord(Record):
    name: str
    targets: list[str]
    device: str
    budget_ms: float  # with latency_vs_recipe: the tighter of the absolute budget and that ratio times the recipe's
    # model's median p90 here (what the Pareto plot draws)
    min_top1: float
    trials: int
    latency_vs_recipe: float | None = None  # the relative budget (a candidate's p90 over the recipe's model's)
    recipe_model_p90_ms: float | None = None  # that model's median p90 over every round it was timed in
    candidates: list[SearchCandidate] = Field(default_factory=list)
    winner: int | None = None  # index into candidates
    why: str
    wall_s: float
    timing: str | None = None  # how measured latencies were judged (rounds, re-measuring near the budget)
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

