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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from edgeship import rundir
from edgeship.calibration.datasets import Splits, load_splits
from edgeship.calibration.io_data import load_io_splits
from edgeship.calibration.preprocess import Preprocessing
from edgeship.calibration.quant import QuantSettings
from edgeship.calibration.readers import check_calibration_inputs
from edgeship.devices.measure import measure_and_check
from edgeship.errors import EdgeshipError, TargetError
from edgeship.limits import Deadline, DiskFull, disk_full_error, tree_bytes
from edgeship.lower import TIMEOUT_FIX, TargetJob, final_paths, outputs_of, references, size_references
from edgeship.models.io import IOModel, check_signature, to_model_dtype
from edgeship.models.load import build_model, fp32_size_bytes, model_stats, save_module, set_eval
from edgeship.pipeline.base import PassConfig, PassContext, check_model_for_passes, planned_quant
from edgeship.pipeline.distributed import process_group, resolve_device
from edgeship.pipeline.runner import StageCache, model_hash, run_passes
from edgeship.pipeline.training import TensorData, check_labels_for_training, set_determinism, top1
from edgeship.progress import info, warn
from edgeship.recipe import IOSpec, Recipe, SearchSpec, TargetSpec
from edgeship.record import (
    FP32_REFS_DIR,
    REPORT,
    VERIFY_DIR,
    DataInfo,
    Machine,
    ModelFacts,
    RunRecord,
    Target,
    Variant,
    is_run_dir,
)
from edgeship.report.html import write_report_html
from edgeship.search import Search, preflight
from edgeship.targets.base import FLOAT_PRECISIONS, get_backend
from edgeship.version import __version__

RUN_ENTRIES = {REPORT, "report.html", "model", "targets", "logs", VERIFY_DIR}  # what an export writes in its run dir


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
    io = recipe.model_io()
    n_named = len(recipe.labels) if recipe.labels else None
    splits = load_splits(recipe.data, recipe.input, n_named) if recipe.input is not None else \
        load_io_splits(recipe.data, io)
    labels = tuple(recipe.labels) if recipe.labels else splits.labels
    if labels or io.image:
        top = max(int(getattr(splits, k).y.max()) for k in ("train", "val", "calib", "test") if len(getattr(splits, k)))
        if top >= len(labels):
            raise EdgeshipError(f"the recipe's labels: names {len(labels)} classes but the data has class id {top}",
                                f"give labels: one name per class id 0..{top}, or remove labels: to number them")
    with Deadline(recipe.timeouts.stage_s, "stage baseline (loading the input model)", TIMEOUT_FIX):
        model = build_model(recipe.model, recipe.input if recipe.input is not None else io, len(labels),
                            trust_pickle=trust_pickle)
    first = io.data_inputs[0].preprocessing_obj() if not io.image else None
    pre = recipe.input.preprocessing_obj() if recipe.input is not None else first or Preprocessing(scale=1.0)
    data = {k: TensorData.from_array(getattr(splits, k), pre, io) for k in ("train", "val", "calib", "test")}
    if not io.image:
        with Deadline(recipe.timeouts.stage_s, "stage baseline (running the model on two samples)", TIMEOUT_FIX):
            check_signature(model, io, data["test"].graph_inputs(io, slice(0, 2)))
    return Prepared(splits, labels, model, pre, data)


def calib_subset(calib: TensorData, quant: QuantSettings, io: IOSpec | None = None) -> list[np.ndarray]:
    """The seeded calibration subset: every graph input's samples (an image classifier's: one array)."""
    rng = np.random.default_rng(quant.seed)
    n = min(quant.samples, len(calib))
    idx = np.sort(rng.permutation(len(calib))[:n])
    if io is None or io.image:
        return [calib.x.numpy()[idx]]
    return [a[idx] for a in calib.graph_inputs(io)]


def export(recipe: Recipe, recipe_path: str, pass_configs: list[tuple[str, PassConfig]],
           only: list[str] | None = None, trust_pickle: bool = False, quiet: bool = False, measure: bool = True,
           measure_runs: int = 50) -> RunRecord | None:
    """Run the whole job for a checked recipe and its validated pass configs; returns the run record (saved
    under the recipe's output). Bad input raises EdgeshipError before anything is written.

    Inside a torchrun job every rank calls this: the training passes run on all of them, rank 0 alone writes
    and returns the record, the others return None."""
    device = resolve_device(recipe.train.device)
    with process_group(device) as w:
        if not w.main:
            _train_along(recipe, pass_configs, trust_pickle, device)
            return None
        return _export(recipe, recipe_path, pass_configs, only, trust_pickle, quiet, measure, measure_runs, device)


def _train_along(recipe: Recipe, pass_configs: list[tuple[str, PassConfig]], trust_pickle: bool,
                 device: str) -> None:
    """A rank other than 0: the same checks and data, then the passes' training; it writes nothing (its stage
    scratch is a private temporary directory, the cache and the run directory are rank 0's)."""
    check_output(Path(recipe.output))
    prep = prepare(recipe, trust_pickle)
    check_model_for_passes(prep.model, [name for name, _ in pass_configs], recipe.model_io())
    check_labels_for_training(pass_configs, bool(prep.splits.labels))
    with tempfile.TemporaryDirectory(prefix="edgeship-rank-") as scratch:
        ctx, spec = pass_setup(recipe, prep, Path(scratch) / "work", True, device)
        run_passes(prep.model, pass_configs, ctx, StageCache(Path(scratch) / "cache"), spec, recipe.timeouts.stage_s)


def _export(recipe: Recipe, recipe_path: str, pass_configs: list[tuple[str, PassConfig]], only: list[str] | None,
            trust_pickle: bool, quiet: bool, measure: bool, measure_runs: int, device: str) -> RunRecord:
    t_start = time.perf_counter()
    targets = recipe.targets
    if only:
        unknown = sorted(set(only) - {t.name for t in targets})
        if unknown:
            raise EdgeshipError(f"no target named {', '.join(unknown)} in {recipe_path}",
                                f"use one of: {', '.join(t.name for t in targets) or '(the recipe has none)'}")
        targets = [t for t in targets if t.name in only]
    out = Path(recipe.output)
    rundir.recover(out)  # a run an interrupted export stranded goes back in place; dead exports' leftovers go
    check_output(out)
    if pass_configs:
        StageCache(out.parent / ".cache").ready()  # a cache others could write is refused before any work
    for spec in recipe.search:  # a search without a budget or a way to score latency: before any work
        preflight(spec, recipe)
    prep = prepare(recipe, trust_pickle)
    check_model_for_passes(prep.model, [name for name, _ in pass_configs], recipe.model_io())
    check_labels_for_training(pass_configs, bool(prep.splits.labels))
    check_calibration_early(recipe, targets, pass_configs, prep.data)

    make_parent(out)
    try:
        tmp = rundir.temp_run_dir(out)
    except OSError as e:
        raise EdgeshipError(f"cannot write in {out.parent} ({e.strerror})", "set output: to a writable path") from None
    try:
        record = _run(recipe, recipe_path, targets, pass_configs, prep, tmp, quiet, device)
        record.place(tmp)
        if only:
            carry_over(out, tmp, record, [t.name for t in recipe.targets])
        if measure:  # host latency/RAM of each OK artifact (fresh subprocess), then the budget verdict
            measure_and_check(record, [t.name for t in targets], runs=measure_runs, quiet=quiet)
        shutil.rmtree(tmp / FP32_REFS_DIR, ignore_errors=True)  # timed beside the targets: scratch now
        record.wall_s = round(time.perf_counter() - t_start, 2)
        record.save(tmp)
        write_report_html(record)  # report.html, rendered from the record just written
        rundir.swap_in(tmp, out)  # atomic: runs/<name> is the previous run or this one at every instant
        record.place(out)
    except BaseException as e:
        fix = (f"free space on that file system (or raise `ulimit -f`) and export again; {out} is as it was and "
               "finished stages stay cached")
        full = DiskFull(e.problem, fix) if isinstance(e, DiskFull) else None if isinstance(e, EdgeshipError) else \
            disk_full_error(e, final_paths(str(getattr(e, "filename", None) or tmp), tmp, recipe), out.parent,
                            tree_bytes(tmp), fix)
        shutil.rmtree(tmp, ignore_errors=True)
        rundir.release(tmp)
        if full is not None:
            raise full from None
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
    io = recipe.model_io()
    check_calibration_inputs(calib_subset(data["calib"], quant, io), io.inputs)


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
    cwd = Path.cwd().resolve()
    where = out.absolute().parent.resolve() / out.name
    if where != cwd and cwd not in where.parents:  # output: ../../../../etc/x must not go there without a word
        note = f"writing the run to {where}, outside the working directory {cwd}"
        # a relative path that climbs out with '..' is what a crafted recipe does: said even in quiet mode
        (warn if not out.is_absolute() else info)(f"[yellow]note:[/yellow] {note}")
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
        bad = rundir.escapes(prev_dir, prev_dir / "targets" / t.name)
        if bad is not None:
            warn(f"[yellow]{t.name} of the previous run is not kept: {bad} leads outside {prev_dir}[/yellow]")
            continue
        if (prev_dir / "targets" / t.name).is_dir():
            shutil.copytree(prev_dir / "targets" / t.name, tmp / "targets" / t.name)
        for kept in (Path("logs") / f"{t.name}.log", Path(VERIFY_DIR) / f"{t.name}.npz"):
            if (prev_dir / kept).is_file() and rundir.escapes(prev_dir, prev_dir / kept) is None:
                shutil.copy2(prev_dir / kept, tmp / kept)
        record.targets.append(t.model_copy(update={"carried_over": True}))
        if t.name in prev.measurements:
            record.measurements[t.name] = prev.measurements[t.name]
    for fmt, row in prev.size_references.items():  # what the kept targets' size_vs_fp32 refer to
        record.size_references.setdefault(fmt, row)
    record.targets.sort(key=lambda t: order.index(t.name))


def pass_setup(recipe: Recipe, prep: Prepared, work_dir: Path, quiet: bool, device: str) -> tuple[PassContext, dict]:
    """The passes' context and the data spec their cache keys hold."""
    io = recipe.model_io()
    ctx = PassContext(splits=prep.splits, data=prep.data, preprocessing=prep.preprocessing,
                      input_shape=tuple(io.inputs[0].shape), teacher=None, work_dir=work_dir, seed=recipe.seed,
                      threads=recipe.train.threads, quiet=quiet, io=io, device=device)
    # the model's spec too: a factory whose arguments change what forward() does can print the same module
    # with the same weights (the module hash alone would hand it another model's cached stages)
    data_spec = recipe.data.model_dump(mode="json") | {"input": io.model_dump(mode="json"),
                                                        "model": recipe.model.model_dump(mode="json")}
    if recipe.input is not None:  # the key image recipes always had (their cached stages stay valid)
        data_spec["input"] = recipe.input.model_dump(mode="json")
    return ctx, data_spec


def _run(recipe: Recipe, recipe_path: str, targets: list[TargetSpec], pass_configs: list[tuple[str, PassConfig]],
         prep: Prepared, tmp: Path, quiet: bool, device: str) -> RunRecord:
    io = recipe.model_io()
    model, data = prep.model, prep.data
    logs = tmp / "logs"
    logs.mkdir()
    with Deadline(recipe.timeouts.stage_s, "stage baseline (evaluating the input model)", TIMEOUT_FIX):
        baseline = facts(model, io, prep, val=True)
    top = f"test top-1 {baseline.top1_test:.4f}, " if baseline.top1_test is not None else ""
    info(f"baseline: {top}params {baseline.params:,}, MACs {baseline.macs or 0:,}")

    ctx, data_spec = pass_setup(recipe, prep, tmp / "work", quiet, device)
    cache = StageCache(Path(recipe.output).parent / ".cache")
    searched = {n for s in recipe.search for n in s.targets}
    main_targets = [t for t in targets if t.name not in searched]
    # every target is searched: the recipe's own pipeline feeds none of them and is not run (a recipe with no
    # targets at all still runs its passes: a compression-only export)
    own = pass_configs if main_targets or not recipe.search else []
    result = run_passes(model, own, ctx, cache, data_spec, recipe.timeouts.stage_s)
    compact = set_eval(result.model)
    quant = result.quant or QuantSettings(seed=recipe.seed)

    saved, not_saved = save_module(compact, tmp / "model", example(io, data["test"]))
    if not_saved:
        warn(f"the compressed torch module could not be saved ({not_saved}); the targets are lowered from it "
             "all the same")
    outputs = outputs_of(compact, io, data["test"])
    final = facts(compact, io, prep, outputs=outputs)
    unchanged = recipe.model.onnx is not None and model_hash(compact) == model_hash(model)
    job = TargetJob(recipe, io, calib_subset(data["calib"], quant, io), prep.preprocessing, prep.labels, data["test"],
                    tmp, logs, result.learned, quiet, source_onnx=Path(recipe.model.onnx) if unchanged else None)
    refs = references(compact, outputs, quant, result.learned, io, data["test"])
    job.save_device_samples(recipe.seed)  # what `edgeship profile --ssh` checks a device's runtime on
    records = []
    for t in main_targets:  # a target past its deadline fails (lower catches Expired), the others go on
        with Deadline(recipe.timeouts.target_s, f"target {t.name}", TIMEOUT_FIX, TargetError):
            records.append(job.lower(t, refs["float" if t.precision in FLOAT_PRECISIONS else "int"]))
    size_refs = size_references(records, {"compressed_model": refs["float"].model, "input_model": model}, job)
    record = RunRecord(
        edgeship_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        recipe_path=str(recipe_path), recipe_hash=recipe.hash(), recipe=recipe, machine=machine_facts(),
        data=DataInfo(sizes=prep.splits.sizes(), labels=list(prep.labels), source=recipe.data.source.kind),
        baseline=baseline, stages=result.stages, final=final.model_copy(update={
            "model_hash": model_hash(compact), "not_saved": not_saved,
            "saved_as": saved.relative_to(tmp).as_posix() if saved else None}),
        quantization=quant, size_references=size_refs, targets=records)
    for spec in recipe.search:
        wanted = [t for t in targets if t.name in spec.targets]
        if wanted:
            searched_model(spec, wanted, record, pass_configs, ctx, cache, data_spec, job, prep)
    record.targets.sort(key=lambda t: [x.name for x in targets].index(t.name))
    shutil.rmtree(tmp / "work", ignore_errors=True)
    return record


def searched_model(spec: SearchSpec, targets: list[TargetSpec], record: RunRecord,
                   pass_configs: list[tuple[str, PassConfig]], ctx: PassContext, cache: StageCache, data_spec: dict,
                   job: TargetJob, prep: Prepared) -> None:
    """A search's winner through the whole pipeline, lowered for its targets; a search that finds no model within
    its budget fails its targets (the others go on)."""
    ctx.quant = None
    passes, search_record = Search(spec, job.recipe, pass_configs, ctx, cache, data_spec).run(prep.model)
    if passes is None:
        info(f"[red]search {spec.name} found no model:[/red] {search_record.why}")
        for t in targets:
            record.targets.append(Target(name=t.name, model=spec.name, device=t.device, format=t.format,
                                         precision=t.precision, status="failed",
                                         error=f"search {spec.name}: {search_record.why}. Fix: loosen the budget or "
                                               "the accuracy floor, or widen the search space"))
        record.variants.append(Variant(name=spec.name, targets=[t.name for t in targets], search=search_record))
        return
    info(f"search {spec.name}: winner: {search_record.why}")
    ctx.quant = None
    result = run_passes(prep.model, passes, ctx, cache, data_spec)
    compact = set_eval(result.model)
    quant = result.quant or QuantSettings(seed=job.recipe.seed)
    io, test = job.io, prep.data["test"]
    saved, not_saved = save_module(compact, job.tmp / "model" / spec.name, example(io, test))
    if not_saved:
        warn(f"search {spec.name}: the winner's torch module could not be saved ({not_saved})")
    outputs = outputs_of(compact, io, test)
    vjob = replace(job, calib=calib_subset(prep.data["calib"], quant, io), learned=result.learned, source_onnx=None)
    vjob.device_subset = job.device_subset  # the same test samples a device is checked on (verify/)
    refs = references(compact, outputs, quant, result.learned, io, test)
    records = [vjob.lower(t, refs["float" if t.precision in FLOAT_PRECISIONS else "int"]) for t in targets]
    for r in records:
        r.model = spec.name
    size_references(records, {"compressed_model": refs["float"].model, "input_model": prep.model}, vjob)
    record.targets += records
    final = facts(compact, io, prep, outputs=outputs).model_copy(update={
        "model_hash": model_hash(compact), "not_saved": not_saved,
        "saved_as": saved.relative_to(job.tmp).as_posix() if saved else None})
    record.variants.append(Variant(name=spec.name, targets=[t.name for t in targets], stages=result.stages,
                                   quantization=quant, search=search_record, final=final))


def example(io: IOSpec, data: TensorData) -> tuple:
    """One sample of every graph input (an image classifier's: its input shape), for MAC counts and .pt2 exports."""
    if io.image:
        return tuple(io.inputs[0].shape)
    return tuple(to_model_dtype(i, torch.from_numpy(np.ascontiguousarray(a)))
                 for i, a in zip(io.inputs, data.graph_inputs(io, slice(0, 1))))


def facts(model: torch.nn.Module, io: IOSpec, prep: Prepared, val: bool = False,
          outputs: list[np.ndarray] | None = None) -> ModelFacts:
    """Params, MACs, FP32 size and (with class ids) top-1 of the model's classification output."""
    data = prep.data
    stats = model_stats(model if io.image else IOModel(model, io), example(io, data["test"]))
    top1s: dict[str, float | None] = {"top1_val": None, "top1_test": None}
    cls = io.classification
    if cls is not None and (io.image or prep.labels):
        k = io.outputs.index(cls)
        outputs = outputs if outputs is not None else outputs_of(model, io, data["test"])
        top1s["top1_test"] = top1(outputs[k], data["test"].y)
        if val:
            top1s["top1_val"] = top1(outputs_of(model, io, data["val"])[k], data["val"].y)
    return ModelFacts(**top1s, **stats, size_fp32_bytes=fp32_size_bytes(model))
