"""The main job: recipe -> model -> passes -> backends -> verification -> measurements -> verdict -> run
record (report.json) and report.html.

Everything is written into a temporary directory beside the run directory and renamed into place when
complete, so bad input never leaves a half-written run behind. ``export`` takes a recipe already checked
against the registries (``edgeship.api.load_recipe``); the API and the CLI call it through ``api.export``.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeship.calibration.datasets import Splits, load_splits
from edgeship.calibration.preprocess import Preprocessing
from edgeship.calibration.quant import LearnedQuantization, QuantSettings
from edgeship.calibration.readers import check_calibration
from edgeship.devices.measure import measure_and_check
from edgeship.errors import EdgeshipError, TargetError
from edgeship.models.load import build_model, clone_module, fp32_size_bytes, model_stats, save_module, set_eval
from edgeship.pipeline.base import PassConfig, PassContext, check_model_for_passes, planned_quant
from edgeship.pipeline.runner import StageCache, model_hash, run_passes
from edgeship.pipeline.training import TensorData, predict, set_determinism, top1
from edgeship.progress import info
from edgeship.recipe import Recipe, TargetSpec
from edgeship.record import (
    REPORT,
    DataInfo,
    Machine,
    ModelFacts,
    OpAudit,
    RunRecord,
    SizeReference,
    SizeVsFP32,
    Target,
    Verification,
    is_run_dir,
)
from edgeship.report.html import write_report_html
from edgeship.targets.base import FLOAT_PRECISIONS, LowerContext, get_backend
from edgeship.targets.verify import compare, gate, run_batched
from edgeship.version import __version__

RUN_ENTRIES = {REPORT, "report.html", "model", "targets", "logs"}  # what an export writes in its run dir


def machine_facts() -> Machine:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return Machine(hostname=platform.node(), machine=platform.machine(), cpu=cpu, cores=os.cpu_count(),
                   python=platform.python_version(), torch=torch.__version__, system=platform.platform())


@dataclass
class Prepared:
    """The recipe's data and model, loaded and checked (every bad-input error surfaces before any output)."""

    splits: Splits
    labels: tuple[str, ...]
    model: torch.nn.Module
    preprocessing: Preprocessing
    data: dict[str, TensorData]


def prepare(recipe: Recipe, trust_pickle: bool = False) -> Prepared:
    set_determinism(recipe.seed)
    splits = load_splits(recipe.data, recipe.input)
    labels = tuple(recipe.labels) if recipe.labels else splits.labels
    top = max(int(getattr(splits, k).y.max()) for k in ("train", "val", "calib", "test") if len(getattr(splits, k)))
    if top >= len(labels):
        raise EdgeshipError(f"the recipe's labels: names {len(labels)} classes but the data has class id {top}",
                            f"give labels: one name per class id 0..{top}, or remove labels: to number them")
    model = build_model(recipe.model, recipe.input, len(labels), trust_pickle=trust_pickle)
    pre = recipe.input.preprocessing_obj()
    data = {k: TensorData.from_array(getattr(splits, k), pre) for k in ("train", "val", "calib", "test")}
    return Prepared(splits, labels, model, pre, data)


def calib_subset(calib: TensorData, quant: QuantSettings) -> np.ndarray:
    rng = np.random.default_rng(quant.seed)
    n = min(quant.samples, len(calib))
    return calib.x.numpy()[np.sort(rng.permutation(len(calib))[:n])]


def export(recipe: Recipe, recipe_path: str, pass_configs: list[tuple[str, PassConfig]],
           only: list[str] | None = None, trust_pickle: bool = False, quiet: bool = False, measure: bool = True,
           measure_runs: int = 50) -> RunRecord:
    """Run the whole job for a checked recipe and its validated pass configs; returns the run record (saved
    under the recipe's output). Bad input raises EdgeshipError before anything is written."""
    t_start = time.perf_counter()
    targets = recipe.targets
    if only:
        unknown = sorted(set(only) - {t.name for t in targets})
        if unknown:
            raise EdgeshipError(f"no target named {', '.join(unknown)} in {recipe_path}",
                                f"use one of: {', '.join(t.name for t in targets) or '(the recipe has none)'}")
        targets = [t for t in targets if t.name in only]
    out = Path(recipe.output)
    check_output(out)
    prep = prepare(recipe, trust_pickle)
    check_calibration_early(recipe, targets, pass_configs, prep.data)

    make_parent(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise EdgeshipError(f"cannot write in {out.parent} ({e.strerror})", "set output: to a writable path") from None
    try:
        record = _run(recipe, recipe_path, targets, pass_configs, prep, tmp, quiet)
        record.place(tmp)
        if only:
            carry_over(out, tmp, record, [t.name for t in recipe.targets])
        if measure:  # host latency/RAM of each OK artifact (fresh subprocess), then the budget verdict
            measure_and_check(record, [t.name for t in targets], runs=measure_runs, quiet=quiet)
        record.wall_s = round(time.perf_counter() - t_start, 2)
        record.save(tmp)
        write_report_html(record)  # report.html, rendered from the record just written
        if out.exists():
            old = out.with_name(f".{out.name}.old-{int(time.time())}")
            out.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.chmod(0o755)  # mkdtemp makes it private
        tmp.rename(out)
        record.place(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def check_calibration_early(recipe: Recipe, targets: list[TargetSpec], pass_configs: list[tuple[str, PassConfig]],
                            data: dict[str, TensorData]) -> None:
    """The calibration set the INT8 targets will get, checked before the baseline and the passes: too few
    samples is bad input, and finding out after minutes of compression helps nobody. A QAT pipeline
    calibrates nothing at lowering."""
    quant = planned_quant(pass_configs, recipe.seed)
    calibrated = [t for t in targets if t.precision in get_backend(t.format, t.precision).calibrated]
    if quant.qat or not calibrated:
        return
    check_calibration(calib_subset(data["calib"], quant))


def check_output(out: Path) -> None:
    """export replaces its output directory whole: refuse anything that is not an earlier run (or empty), and
    paths that cannot be written, before any work."""
    fix = "set output: to a new directory such as runs/<name>"
    if out.is_symlink():
        raise EdgeshipError(f"output {out} is a symbolic link (export replaces its output by renaming a directory "
                            "into place)", f"set output: to the directory itself ({out.resolve()})")
    if out.name in ("", ".", ".."):
        raise EdgeshipError(f"output {str(out)!r} names no run directory of its own", fix)
    if out.exists() and not out.is_dir():
        raise EdgeshipError(f"output {out} is a file, not a run directory", fix)
    if out.is_dir() and any(out.iterdir()) and not is_run_dir(out):
        raise EdgeshipError(f"output {out} exists and is not an edgeship run directory (export would replace it "
                            "and everything in it)", f"{fix}, or move {out} away")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in RUN_ENTRIES) if out.is_dir() else []
    if foreign:
        raise EdgeshipError(f"output {out} is an earlier run but also holds {', '.join(foreign[:5])}"
                            f"{', ...' if len(foreign) > 5 else ''}, which export did not write (it replaces the run "
                            "directory whole)", f"move those files out of {out}, or {fix[0].lower() + fix[1:]}")
    base = out.absolute().parent  # nothing is created before the input is known to be good: find where it would be
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise EdgeshipError(f"cannot create the output {out}: {base} is a file", "set output: to a writable path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise EdgeshipError(f"cannot create the output {out}: {base} is not writable", "set output: to a writable path")


def make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeshipError(f"cannot create {out.parent} for the output ({e.strerror})",
                            "set output: to a writable path") from None


def carry_over(prev_dir: Path, tmp: Path, record: RunRecord, order: list[str]) -> None:
    """`export --target X` keeps the other targets of the previous run when they came from the same
    recipe and the same compressed model; otherwise they are dropped (they would be stale)."""
    if not (prev_dir / REPORT).is_file():
        return
    try:
        prev = RunRecord.load(prev_dir)
    except EdgeshipError as e:
        info(f"[yellow]the previous run's record is unreadable ({e}): its other targets are not kept[/yellow]")
        return
    if prev.recipe_hash != record.recipe_hash or prev.final.model_hash != record.final.model_hash:
        info("[yellow]previous run came from another recipe or model: its other targets are not kept[/yellow]")
        return
    done = {t.name for t in record.targets}
    for t in prev.targets:
        if t.name in done or t.name not in order:
            continue
        if (prev_dir / "targets" / t.name).is_dir():
            shutil.copytree(prev_dir / "targets" / t.name, tmp / "targets" / t.name)
        if (prev_dir / "logs" / f"{t.name}.log").is_file():
            shutil.copy2(prev_dir / "logs" / f"{t.name}.log", tmp / "logs" / f"{t.name}.log")
        record.targets.append(t.model_copy(update={"carried_over": True}))
        if t.name in prev.measurements:
            record.measurements[t.name] = prev.measurements[t.name]
    for fmt, row in prev.size_references.items():  # what the kept targets' size_vs_fp32 refer to
        record.size_references.setdefault(fmt, row)
    record.targets.sort(key=lambda t: order.index(t.name))


def _run(recipe: Recipe, recipe_path: str, targets: list[TargetSpec], pass_configs: list[tuple[str, PassConfig]],
         prep: Prepared, tmp: Path, quiet: bool) -> RunRecord:
    shape = tuple(recipe.input.shape)
    model, data = prep.model, prep.data
    logs = tmp / "logs"
    logs.mkdir()
    check_model_for_passes(model, [name for name, _ in pass_configs])
    baseline = ModelFacts(top1_val=top1(predict(model, data["val"].x), data["val"].y),
                          top1_test=top1(predict(model, data["test"].x), data["test"].y), **model_stats(model, shape),
                          size_fp32_bytes=fp32_size_bytes(model))
    info(f"baseline: test top-1 {baseline.top1_test:.4f}, params {baseline.params:,}, MACs {baseline.macs or 0:,}")

    ctx = PassContext(splits=prep.splits, data=data, preprocessing=prep.preprocessing, input_shape=shape,
                      teacher=None, work_dir=tmp / "work", seed=recipe.seed, threads=recipe.train.threads, quiet=quiet)
    # the model's spec too: a factory whose arguments change what forward() does can print the same module
    # with the same weights (the module hash alone would hand it another model's cached stages)
    data_spec = recipe.data.model_dump(mode="json") | {"input": recipe.input.model_dump(mode="json"),
                                                        "model": recipe.model.model_dump(mode="json")}
    result = run_passes(model, pass_configs, ctx, StageCache(Path(recipe.output).parent / ".cache"), data_spec)
    compact = set_eval(result.model)
    quant = result.quant or QuantSettings(seed=recipe.seed)

    save_module(compact, tmp / "model", shape)
    torch_logits = predict(compact, data["test"].x).numpy()
    y = data["test"].y.numpy()
    calib = calib_subset(data["calib"], quant)

    refs = references(compact, torch_logits, quant, result.learned, data["test"].x)
    job = TargetJob(recipe, shape, calib, prep, tmp, logs, result.learned, data["test"].x.numpy(), y, quiet)
    records = [job.lower(t, refs["float" if t.precision in FLOAT_PRECISIONS else "int"]) for t in targets]
    size_refs = size_references(records, {"compressed_model": refs["float"].model, "input_model": model}, job)
    shutil.rmtree(tmp / "work", ignore_errors=True)
    return RunRecord(
        edgeship_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        recipe_path=str(recipe_path), recipe_hash=recipe.hash(), recipe=recipe, machine=machine_facts(),
        data=DataInfo(sizes=prep.splits.sizes(), labels=list(prep.labels), source=recipe.data.source.kind),
        baseline=baseline, stages=result.stages,
        final=ModelFacts(top1_test=top1(torch_logits, y), **model_stats(compact, shape), model_hash=model_hash(compact),
                         size_fp32_bytes=fp32_size_bytes(compact)),
        quantization=quant, size_references=size_refs, targets=records)


def final_paths(text: str, tmp: Path, recipe: Recipe) -> str:
    """A message written during the run names files under the temporary directory, which is renamed to
    the recipe's output when the run completes: name them where they will be."""
    return text.replace(str(tmp), str(recipe.output))


@dataclass
class Reference:
    """The torch model a target is lowered from and verified against."""

    model: torch.nn.Module
    logits: np.ndarray  # on the test split
    quant: QuantSettings
    note: str


def references(compact: torch.nn.Module, logits: np.ndarray, quant: QuantSettings,
               learned: LearnedQuantization | None, x_test: torch.Tensor) -> dict[str, Reference]:
    """INT8 targets take the compact model as it is. After QAT, float targets take its float view
    (batch norm folded, fake quantization stripped, weights as QAT learned them): a float artifact
    must not carry quantize/dequantize pairs, and it is verified against that float model."""
    int_ref = Reference(compact, logits, quant, "the compressed torch model")
    if learned is None:
        return {"int": int_ref, "float": int_ref}
    stripped = learned.float_model
    float_ref = Reference(stripped, predict(stripped, x_test).numpy(), QuantSettings(seed=quant.seed),
                          "the QAT model with fake quantization stripped (float weights QAT learned)")
    return {"int": int_ref, "float": float_ref}


@dataclass
class TargetJob:
    """What lowering any target of this run needs."""

    recipe: Recipe
    shape: tuple[int, ...]
    calib: np.ndarray
    prep: Prepared
    tmp: Path
    logs: Path
    learned: LearnedQuantization | None
    x_test: np.ndarray
    y_test: np.ndarray
    quiet: bool

    def context(self, target: TargetSpec, quant: QuantSettings, log_path: Path, work_dir: Path) -> LowerContext:
        return LowerContext(target=target, input_shape=self.shape, calib=self.calib,
                            preprocessing=self.prep.preprocessing, labels=self.prep.labels, quant=quant,
                            log_path=log_path, work_dir=work_dir, threads=self.recipe.train.threads,
                            learned=self.learned if quant.qat else None)

    def lower(self, t: TargetSpec, ref: Reference) -> Target:
        """Lower, run on the test split, verify and gate one target; a failure stays this target's."""
        rec = Target(name=t.name, device=t.device, format=t.format, precision=t.precision, status="ok",
                     reference=ref.note)
        final = self.tmp / "targets" / t.name
        partial = self.tmp / "targets" / f".{t.name}.partial"
        partial.mkdir(parents=True)
        t0 = time.perf_counter()
        try:
            backend = get_backend(t.format, t.precision)
            ctx = self.context(t, ref.quant, self.logs / f"{t.name}.log", self.tmp / "work" / t.name)
            ctx.work_dir.mkdir(parents=True, exist_ok=True)
            info(f"target {t.name}: lowering to {t.format} {t.precision}")
            art = backend.lower(clone_module(ref.model), ctx, partial)
            rec.lower_s = round(time.perf_counter() - t0, 2)
            runner = backend.load(art, threads=self.recipe.train.threads)
            logits = run_batched(runner, self.x_test, label=t.name, quiet=self.quiet)
            metrics = compare(logits, ref.logits, self.y_test)
            audit = backend.op_audit(art)
            rec.op_audit = None if audit is None else OpAudit.model_validate(audit)
            rec.size_bytes = art.size_bytes()
            try:
                gate(t.name, t.precision, metrics, t.max_accuracy_drop, self.recipe.min_agreement)
            finally:
                rec.verify = Verification.model_validate({k: _finite(v) for k, v in metrics.items()})
            partial.rename(final)
            art.dir = final
            rec.artifact = str(Path("targets") / t.name / art.main)
            rec.files = [str(Path("targets") / t.name / f) for f in art.files]
            info(f"target {t.name}: top-1 {metrics['top1']:.4f} (torch {metrics['torch_top1']:.4f}), "
                 f"agreement {metrics['agreement']:.4f}, {rec.size_bytes / 1024:.1f} KiB")
        except TargetError as e:
            shutil.rmtree(partial, ignore_errors=True)
            rec.status = "failed"
            rec.error = final_paths(str(e), self.tmp, self.recipe)
            info(f"[red]target {t.name} failed:[/red] {rec.error}")
        rec.wall_s = round(time.perf_counter() - t0, 2)
        return rec


def _finite(v: Any) -> Any:
    """NaN/inf (an artifact that produced them) are recorded as null: JSON has neither."""
    return None if isinstance(v, float) and not np.isfinite(v) else v


def size_references(records: list[Target], models: dict[str, torch.nn.Module],
                    job: TargetJob) -> dict[str, SizeReference]:
    """What each quantized or FP16 artifact's size compares with, in its own format: the FP32 artifact of
    the model the recipe started from (what the user would ship without edgeship) and of the compressed
    model (quantization's share alone). A run's own FP32 target of that format serves as the latter;
    anything else is lowered at FP32 into scratch space, measured and deleted (``Artifact.size_bytes``).
    Sets ``size_vs_fp32`` on each such target; returns {format: SizeReference}."""
    done = [r for r in records if r.ok]
    formats = sorted({r.format for r in done if r.precision != "fp32"})
    out: dict[str, SizeReference] = {}
    for fmt in formats:
        row: dict[str, Any] = {}
        own = next((r for r in done if r.format == fmt and r.precision == "fp32"), None)
        for which, model in models.items():
            if which == "compressed_model" and own is not None:
                row[which] = own.size_bytes
                continue
            same = next((w for w, m in models.items() if m is model and w in row), None)
            if same is not None:  # no passes: the input model is the compressed one
                row[which] = row[same]
                continue
            t0 = time.perf_counter()
            work = job.tmp / "work" / "size-references" / f"{which}-{fmt}"
            work.mkdir(parents=True)
            spec = TargetSpec(name=f"{which}-{fmt}-fp32", format=fmt, precision="fp32")
            ctx = job.context(spec, QuantSettings(seed=job.recipe.seed), job.logs / "size-references.log", work)
            try:
                (work / "out").mkdir()
                row[which] = get_backend(fmt, "fp32").lower(clone_module(model), ctx, work / "out").size_bytes()
            except TargetError as e:
                row[which] = None
                row[f"{which}_error"] = final_paths(str(e), job.tmp, job.recipe)
            info(f"size reference: {which.replace('_', ' ')} as FP32 {fmt}: "
                 + (f"{row[which] / 1024:.1f} KiB" if row[which] else "could not be lowered")
                 + f" ({time.perf_counter() - t0:.1f} s)")
        out[fmt] = SizeReference(**row)
    for r in done:
        if r.precision == "fp32" or r.size_bytes is None:
            continue
        ref = out[r.format]
        ratio = {which: (round(r.size_bytes / b, 4) if b else None)
                 for which, b in (("input_model", ref.input_model), ("compressed_model", ref.compressed_model))}
        r.size_vs_fp32 = SizeVsFP32(bytes=r.size_bytes, **ratio)
        same = ratio["compressed_model"]
        if same is not None and same >= 1:
            info(f"[yellow]note:[/yellow] {r.name} ({r.format} {r.precision}) is {same:.2f}x the size of the "
                 "same model's FP32 artifact: at this size the file is mostly graph and per-channel scales (or its "
                 "weights were too small for the converter to quantize)")
    return out
