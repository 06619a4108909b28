"""The main job: recipe -> model -> passes -> backends -> verification -> report.json.

Everything is written into a temporary directory beside the run directory and renamed into
place when complete, so bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from edgeship import __version__
from edgeship.calibration.datasets import load_splits
from edgeship.calibration.quant import QuantSettings
from edgeship.errors import EdgeshipError, TargetError
from edgeship.models.load import build_model, fp32_size_bytes, model_stats, save_module, set_eval
from edgeship.pipeline.base import PassContext, check_model_for_passes
from edgeship.pipeline.runner import StageCache, model_hash, run_passes
from edgeship.pipeline.training import TensorData, predict, set_determinism, top1
from edgeship.progress import info
from edgeship.recipe import Recipe, TargetSpec, load_recipe
from edgeship.report_html import write_report_html
from edgeship.targets.base import LowerContext, get_backend
from edgeship.targets.verify import compare, gate, run_batched


def machine_facts() -> dict:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": platform.node(), "machine": platform.machine(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "system": platform.platform()}


def prepare(recipe: Recipe, trust_pickle: bool = False):
    """Load data and model: every bad-input error surfaces here, before any output is written."""
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
    return splits, labels, model, pre, data


def calib_subset(calib: TensorData, quant: QuantSettings) -> np.ndarray:
    rng = np.random.default_rng(quant.seed)
    n = min(quant.samples, len(calib))
    return calib.x.numpy()[np.sort(rng.permutation(len(calib))[:n])]


def export(recipe_path: Path, only: Optional[list[str]] = None, trust_pickle: bool = False,
           quiet: bool = False, measure: bool = True, measure_runs: int = 50) -> tuple[dict, int]:
    """Returns (report, exit code): 0 all targets passed, 1 some failed. Bad input raises EdgeshipError."""
    t_start = time.perf_counter()
    recipe = load_recipe(recipe_path)
    targets = recipe.targets
    if only:
        unknown = sorted(set(only) - {t.name for t in targets})
        if unknown:
            raise EdgeshipError(f"no target named {', '.join(unknown)} in {recipe_path}",
                                f"use one of: {', '.join(t.name for t in targets) or '(the recipe has none)'}")
        targets = [t for t in targets if t.name in only]
    for t in targets:
        get_backend(t.format, t.precision)  # unknown format/precision pairs are bad input
    pass_configs = recipe.pass_configs()
    out = Path(recipe.output)
    check_output(out)
    splits, labels, model, pre, data = prepare(recipe, trust_pickle)
    check_calibration_early(recipe, targets, pass_configs, data)

    make_parent(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise EdgeshipError(f"cannot write in {out.parent} ({e.strerror})", "set output: to a writable path") from None
    try:
        report = _run(recipe, recipe_path, targets, pass_configs, splits, labels, model, pre, data, tmp, quiet)
        if only:
            carry_over(out, tmp, report, [t.name for t in recipe.targets])
        if measure:  # host latency/RAM of each OK artifact (fresh subprocess), then the budget verdict
            from edgeship.targets.measure import measure_and_check

            measure_and_check(report, tmp, [t.name for t in targets], runs=measure_runs, quiet=quiet)
        report["wall_s"] = round(time.perf_counter() - t_start, 2)
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str))
        write_report_html(tmp)  # report.html, rendered from the report.json just written
        if out.exists():
            old = out.with_name(f".{out.name}.old-{int(time.time())}")
            out.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.chmod(0o755)  # mkdtemp makes it private
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    failed = [t for t in report["targets"] if t["status"] != "ok"]
    return report, (1 if failed else 0)


CALIBRATED = ("int8", "int8_float_io")  # precisions a post-training quantizer calibrates (dynamic_int8 needs none)


def check_calibration_early(recipe, targets, pass_configs, data) -> None:
    """The calibration set the INT8 targets will get, checked before the baseline and the passes: too few
    samples is bad input, and finding out after minutes of compression helps nobody. A QAT pipeline
    calibrates nothing at lowering."""
    from edgeship.calibration.readers import check_calibration

    names = [name for name, _ in pass_configs]
    if "qat" in names or not any(t.precision in CALIBRATED for t in targets):
        return
    cfg = dict(pass_configs).get("calibrate")
    quant = QuantSettings(seed=recipe.seed, **({"samples": cfg.samples} if cfg is not None else {}))
    check_calibration(calib_subset(data["calib"], quant))


RUN_ENTRIES = {"report.json", "report.html", "model", "targets", "logs"}  # what an export writes in its run dir


def is_run_dir(path: Path) -> bool:
    """A directory an earlier export wrote (its report.json names edgeship's version)."""
    try:
        return "edgeship_version" in json.loads((path / "report.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


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


def carry_over(prev_dir: Path, tmp: Path, report: dict, order: list[str]) -> None:
    """`export --target X` keeps the other targets of the previous run when they came from the same
    recipe and the same compressed model; otherwise they are dropped (they would be stale)."""
    try:
        prev = json.loads((prev_dir / "report.json").read_text())
    except (OSError, ValueError):
        return
    same = (prev.get("recipe_hash") == report["recipe_hash"]
            and prev.get("final", {}).get("model_hash") == report["final"]["model_hash"])
    if not same:
        info("[yellow]previous run came from another recipe or model: its other targets are not kept[/yellow]")
        return
    done = {t["name"] for t in report["targets"]}
    for t in prev.get("targets", []):
        name = t["name"]
        if name in done or name not in order:
            continue
        if (prev_dir / "targets" / name).is_dir():
            shutil.copytree(prev_dir / "targets" / name, tmp / "targets" / name)
        if (prev_dir / "logs" / f"{name}.log").is_file():
            shutil.copy2(prev_dir / "logs" / f"{name}.log", tmp / "logs" / f"{name}.log")
        report["targets"].append({**t, "carried_over": True})
        for section in ("measurements",):
            if name in prev.get(section, {}):
                report.setdefault(section, {})[name] = prev[section][name]
    for fmt, row in (prev.get("size_references") or {}).items():  # what the kept targets' size_vs_fp32 refer to
        report.setdefault("size_references", {}).setdefault(fmt, row)
    report["targets"].sort(key=lambda t: order.index(t["name"]))


def _run(recipe, recipe_path, targets, pass_configs, splits, labels, model, pre, data, tmp: Path, quiet: bool) -> dict:
    shape = tuple(recipe.input.shape)
    logs = tmp / "logs"
    logs.mkdir()
    check_model_for_passes(model, [name for name, _ in pass_configs])
    base_logits = predict(model, data["test"].x)
    baseline = {"top1_val": top1(predict(model, data["val"].x), data["val"].y),
                "top1_test": top1(base_logits, data["test"].y), **model_stats(model, shape),
                "size_fp32_bytes": fp32_size_bytes(model)}
    info(f"baseline: test top-1 {baseline['top1_test']:.4f}, params {baseline['params']:,}, "
         f"MACs {baseline['macs'] or 0:,}")

    ctx = PassContext(splits=splits, data=data, preprocessing=pre, input_shape=shape, teacher=None,
                      work_dir=tmp / "work", seed=recipe.seed, threads=recipe.train.threads, quiet=quiet)
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

    refs = references(compact, torch_logits, quant, data["test"].x)
    target_reports = []
    for t in targets:
        ref = refs["float"] if t.precision in FLOAT_PRECISIONS else refs["int"]
        target_reports.append(_one_target(t, ref, recipe, shape, calib, pre, labels, tmp, logs,
                                          data["test"].x.numpy(), y, quiet))
    size_refs = size_references(target_reports, {"compressed_model": refs["float"].model, "input_model": model},
                                shape, calib, pre, labels, tmp, logs, recipe)
    shutil.rmtree(tmp / "work", ignore_errors=True)
    return {
        "edgeship_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "recipe_path": str(recipe_path),
        "recipe_hash": recipe.hash(),
        "recipe": recipe.model_dump(mode="json"),
        "machine": machine_facts(),
        "data": {"sizes": splits.sizes(), "labels": list(labels), "source": recipe.data.source.kind},
        "baseline": baseline,
        "stages": result.stages,
        "final": {"top1_test": top1(torch_logits, y), **model_stats(compact, shape),
                  "model_hash": model_hash(compact),
                  "size_fp32_bytes": fp32_size_bytes(compact)},
        "quantization": quant.to_dict(),
        "size_references": size_refs,
        "targets": target_reports,
    }


FLOAT_PRECISIONS = ("fp32", "fp16")

def final_paths(text: str, tmp: Path, recipe) -> str:
    """A message written during the run names files under the temporary directory, which is renamed to
    the recipe's output when the run completes: name them where they will be."""
    return text.replace(str(tmp), str(recipe.output))


def own_copy(model: torch.nn.Module) -> torch.nn.Module:
    """Each lowering gets its own copy: converters may change the module they are given (torch.onnx.export
    rewrites a TorchScript module's graph in place, after which openvino.convert_model fails on it)."""
    import copy
    import io

    if isinstance(model, torch.jit.ScriptModule):  # a deepcopy shares the graphs (one compilation unit)
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        buf.seek(0)
        return torch.jit.load(buf)
    return copy.deepcopy(model)


def size_references(reports: list[dict], models: dict, shape, calib, pre, labels, tmp: Path, logs: Path,
                    recipe) -> dict:
    """What each quantized or FP16 artifact's size compares with, in its own format: the FP32 artifact of
    the model the recipe started from (what the user would ship without edgeship) and of the compressed
    model (quantization's share alone). A run's own FP32 target of that format serves as the latter;
    anything else is lowered at FP32 into scratch space, measured and deleted (``Artifact.size_bytes``).
    Writes ``size_vs_fp32`` into each such target's report; returns {format: {reference: bytes or null}}."""
    done = [r for r in reports if r["status"] == "ok"]
    formats = sorted({r["format"] for r in done if r["precision"] != "fp32"})
    out: dict[str, dict] = {}
    for fmt in formats:
        row: dict = {}
        own = next((r for r in done if r["format"] == fmt and r["precision"] == "fp32"), None)
        for which, model in models.items():
            if which == "compressed_model" and own is not None:
                row[which] = own["size_bytes"]
                continue
            same = next((w for w, m in models.items() if m is model and w in row), None)
            if same is not None:  # no passes: the input model is the compressed one
                row[which] = row[same]
                continue
            t0 = time.perf_counter()
            work = tmp / "work" / "size-references" / f"{which}-{fmt}"
            work.mkdir(parents=True)
            spec = TargetSpec(name=f"{which}-{fmt}-fp32", format=fmt, precision="fp32")
            ctx = LowerContext(target=spec, input_shape=shape, calib=calib, preprocessing=pre, labels=labels,
                               quant=QuantSettings(seed=recipe.seed), log_path=logs / "size-references.log",
                               work_dir=work, threads=recipe.train.threads)
            try:
                (work / "out").mkdir()
                art = get_backend(fmt, "fp32").lower(own_copy(model), ctx, work / "out")
                row[which] = art.size_bytes()
            except TargetError as e:
                row[which] = None
                row[f"{which}_error"] = final_paths(str(e), tmp, recipe)
            info(f"size reference: {which.replace('_', ' ')} as FP32 {fmt}: "
                 + (f"{row[which] / 1024:.1f} KiB" if row[which] else "could not be lowered")
                 + f" ({time.perf_counter() - t0:.1f} s)")
        out[fmt] = row
    for r in done:
        if r["precision"] == "fp32":
            continue
        size = r["size_bytes"]  # the files a device loads, as for the references
        r["size_vs_fp32"] = {"bytes": size, **{which: (round(size / ref, 4) if ref else None)
                                               for which, ref in out[r["format"]].items()
                                               if not which.endswith("_error")}}
        same = r["size_vs_fp32"].get("compressed_model")
        if same is not None and same >= 1:
            info(f"[yellow]note:[/yellow] {r['name']} ({r['format']} {r['precision']}) is {same:.2f}x the size of the "
                 "same model's FP32 artifact: at this size the file is mostly graph and per-channel scales (or its "
                 "weights were too small for the converter to quantize)")
    return out


@dataclass
class Reference:
    """The torch model a target is lowered from and verified against."""

    model: torch.nn.Module
    logits: np.ndarray  # on the test split
    quant: QuantSettings
    note: str


def references(compact, logits: np.ndarray, quant: QuantSettings, x_test: torch.Tensor) -> dict[str, Reference]:
    """INT8 targets take the compact model as it is. After QAT, float targets take its float copy
    (batch norm folded, fake quantization stripped, weights as QAT learned them): a float artifact
    must not carry quantize/dequantize pairs, and it is verified against that float model."""
    int_ref = Reference(compact, logits, quant, "the compressed torch model")
    if not quant.qat:
        return {"int": int_ref, "float": int_ref}
    from edgeship.pipeline.qat import fold_and_strip

    stripped = fold_and_strip(compact)
    float_ref = Reference(stripped, predict(stripped, x_test).numpy(), QuantSettings(seed=quant.seed),
                          "the QAT model with fake quantization stripped (float weights QAT learned)")
    return {"int": int_ref, "float": float_ref}


def _one_target(t, ref: Reference, recipe, shape, calib, pre, labels, tmp, logs, x_test, y, quiet) -> dict:
    model, quant, torch_logits = ref.model, ref.quant, ref.logits
    rep = {"name": t.name, "device": t.device, "format": t.format, "precision": t.precision, "status": "ok",
           "error": None, "reference": ref.note}
    final = tmp / "targets" / t.name
    partial = tmp / "targets" / f".{t.name}.partial"
    partial.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        backend = get_backend(t.format, t.precision)
        ctx = LowerContext(target=t, input_shape=shape, calib=calib, preprocessing=pre, labels=labels,
                           quant=quant, log_path=logs / f"{t.name}.log", work_dir=tmp / "work" / t.name,
                           threads=recipe.train.threads)
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        info(f"target {t.name}: lowering to {t.format} {t.precision}")
        art = backend.lower(own_copy(model), ctx, partial)
        rep["lower_s"] = round(time.perf_counter() - t0, 2)
        runner = backend.load(art, threads=recipe.train.threads)
        logits = run_batched(runner, x_test, label=t.name, quiet=quiet)
        metrics = compare(logits, torch_logits, y)
        rep["verify"] = metrics
        rep["op_audit"] = backend.op_audit(art)
        rep["size_bytes"] = art.size_bytes()
        gate(t.name, t.precision, metrics, t.max_accuracy_drop, recipe.min_agreement)
        partial.rename(final)
        art.dir = final
        rep["artifact"] = str(Path("targets") / t.name / art.main)
        rep["files"] = [str(Path("targets") / t.name / f) for f in art.files]
        info(f"target {t.name}: top-1 {metrics['top1']:.4f} (torch {metrics['torch_top1']:.4f}), "
             f"agreement {metrics['agreement']:.4f}, {rep['size_bytes'] / 1024:.1f} KiB")
    except TargetError as e:
        shutil.rmtree(partial, ignore_errors=True)
        rep["status"] = "failed"
        rep["error"] = final_paths(str(e), tmp, recipe)
        info(f"[red]target {t.name} failed:[/red] {rep['error']}")
    rep["wall_s"] = round(time.perf_counter() - t0, 2)
    return rep
