"""The run record's measurements (latency, memory, device-side verification, per-layer profiles, predictions)
and the budget verdict judged on them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from edgeship.record.base import BudgetStatus, CheckSource, NonNegative, Record, Source


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
    op: str  # the runtime's operator or node type (QLinearConv, Convolution, XNNPACK's "Convolution (NHWC, QC8) IGEMM")
    kernel: str | None = None  # OpenVINO's execution type (jit_avx2_I8), ONNX Runtime's provider, where LiteRT ran it
    # ("XNNPACK": in the delegate; "builtin": LiteRT's own kernels; its input dtype first when untimed: "int8 XNNPACK")
    precision: Literal["int8", "float"] | None = None  # the arithmetic of a compute layer (conv, matmul, FC)
    ms: float | None = None  # time per inference (None: no per-op timer, as LiteRT without its C API profiler)
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
    # LiteRT: operators its XNNPACK delegate did not take (run by its builtin kernels); None: no delegate to report
    not_delegated: list[str] | None = None
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
    # operators of the artifact no kernel of the predictor models, by type (its error was measured without them):
    # a prediction that leaves any out does not back a budget
    unmodelled_ops: dict[str, int] = Field(default_factory=dict)
    # the family whose validation architectures the error was measured on ("1d", "2d"; None: all of them, as files
    # before it), and why that error does not hold for this model (a 1-D model, too few 1-D architectures behind
    # it): such a prediction backs no budget
    error_family: str | None = None
    unvalidated: str | None = None


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
    profile: LayerProfile | None = None  # per-layer times (host, SSH and adb measurements; None: not profiled)


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


