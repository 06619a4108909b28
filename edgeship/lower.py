"""Every target of a run: lowered by its backend from the torch reference it is verified against, run with its own
runtime on the test split, each output compared with the torch model's, gated, and sized against the same format's
FP32 artifacts. A target's failure (conversion, a runtime that cannot run it, the accuracy gate) stays that target's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape

from edgeship.calibration.preprocess import Preprocessing
from edgeship.calibration.quant import LearnedQuantization, QuantSettings
from edgeship.errors import EdgeshipError, TargetError
from edgeship.limits import Deadline, DiskFull, Expired, disk_full_error, tree_bytes
from edgeship.models.io import lowerable, predict_io
from edgeship.models.load import clone_module
from edgeship.models.polyphase import prepare
from edgeship.pipeline.training import TensorData, predict
from edgeship.progress import info, warn
from edgeship.recipe import IOSpec, Recipe, TargetSpec
from edgeship.record import FP32_REFS_DIR, VERIFY_DIR, OpAudit, SizeReference, SizeVsFP32, Target, Verification
from edgeship.targets.base import FLOAT_PRECISIONS, LowerContext, Runner, get_backend
from edgeship.targets.verify import compare, compare_outputs, device_subset, gate, run_batched

TIMEOUT_FIX = ("raise timeouts.stage_s / timeouts.target_s in the recipe if it needs longer; a model whose forward() "
               "can loop forever must be fixed first")


def outputs_of(model: torch.nn.Module, io: IOSpec, data: TensorData) -> list[np.ndarray]:
    """Every declared output of the torch model on a split (an image classifier's: its logits)."""
    if io.image:
        return [predict(model, data.x).numpy()]
    return [t.numpy() for t in predict_io(model, io, data.x, data.extra)]


@dataclass
class Reference:
    """The torch model a target is lowered from and verified against."""

    model: torch.nn.Module
    outputs: list[np.ndarray]  # on the test split, one array per output
    quant: QuantSettings
    note: str


def references(compact: torch.nn.Module, outputs: list[np.ndarray], quant: QuantSettings,
               learned: LearnedQuantization | None, io: IOSpec, test: TensorData) -> dict[str, Reference]:
    """INT8 targets take the compact model as it is. After QAT, float targets take its float view
    (batch norm folded, fake quantization stripped, weights as QAT learned them): a float artifact
    must not carry quantize/dequantize pairs, and it is verified against that float model."""
    int_ref = Reference(compact, outputs, quant, "the compressed torch model")
    if learned is None:
        return {"int": int_ref, "float": int_ref}
    stripped = learned.float_model
    float_ref = Reference(stripped, outputs_of(stripped, io, test), QuantSettings(seed=quant.seed),
                          "the QAT model with fake quantization stripped (float weights QAT learned)")
    return {"int": int_ref, "float": float_ref}


def precision_class(precision: str) -> str:
    return "int8" if precision not in FLOAT_PRECISIONS else precision


@dataclass
class TargetJob:
    """What lowering any target of this run needs."""

    recipe: Recipe
    io: IOSpec
    calib: list[np.ndarray]  # every graph input's calibration samples
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    test: TensorData
    tmp: Path
    logs: Path
    learned: LearnedQuantization | None
    quiet: bool
    source_onnx: Path | None = None  # the user's ONNX file, when the compressed model is exactly that file
    test_inputs: list[np.ndarray] = field(init=False)
    device_subset: np.ndarray | None = field(init=False, default=None)  # the test samples a device is checked on

    def __post_init__(self) -> None:
        self.test_inputs = self.test.graph_inputs(self.io)

    def context(self, target: TargetSpec, quant: QuantSettings, log_path: Path, work_dir: Path) -> LowerContext:
        return LowerContext(target=target, input_shape=tuple(self.io.inputs[0].shape), calib=self.calib[0],
                            preprocessing=self.preprocessing, labels=self.labels, quant=quant, log_path=log_path,
                            work_dir=work_dir, threads=self.recipe.train.threads,
                            learned=self.learned if quant.qat else None, io=None if self.io.image else self.io,
                            extra_inputs=self.calib[1:], source_onnx=self.source_onnx)

    def run(self, runner: Runner, name: str) -> list[np.ndarray]:
        """The artifact on the whole test split. A runtime that runs one sample but not two means the graph fixes
        the batch size (a flatten that folded it into the features); any other runtime error is this target's."""
        one = [a[:1] for a in self.test_inputs]
        try:
            runner(*one)
        except Exception as e:
            raise TargetError(f"{name}: the runtime cannot run the artifact ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:240]})", "check the conversion log") from None
        try:
            runner(*[a[:2] for a in self.test_inputs])
        except Exception as e:
            raise TargetError(f"{name}: the artifact runs one sample but not a batch of two: its graph fixes the "
                              f"batch size ({' '.join(str(e).split())[:200]})",
                              "export the model with a dynamic batch axis (torch.export: dynamic_shapes with a "
                              "batch Dim; reshape with -1 for the batch, not x.size(0) baked in)") from None
        try:
            return run_batched(runner, self.test_inputs, label=name, quiet=self.quiet)
        except Exception as e:
            raise TargetError(f"{name}: the runtime failed on the test split ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:240]})", "check the conversion log") from None

    def class_ids(self) -> dict[str, np.ndarray | None]:
        """The test split's class ids of each classification output (None where the data has none)."""
        y = self.test.y.numpy()
        if self.io.image:
            return {self.io.outputs[0].name: y}
        labels: dict[str, np.ndarray | None] = {}
        first = self.io.classification
        for o in self.io.outputs:
            if o.task == "classification":
                key = o.labels or "y"
                labels[o.name] = (y if o is first and self.labels else
                                  self.test.extra[key].numpy() if key in self.test.extra else None)
        return labels

    def verify(self, t: TargetSpec, outs: list[np.ndarray], ref: Reference) -> dict:
        if self.io.image:
            return compare(outs[0], ref.outputs[0], self.test.y.numpy())
        return compare_outputs(outs, ref.outputs, self.io, self.class_ids(), precision_class(t.precision))

    def save_device_samples(self, seed: int) -> None:
        """verify/samples.npz: a seeded subset of the test split (x0, x1, ...: every graph input as the runners
        take it; y: the class ids of output ``classification`` when the data has them; -1 when no output is one),
        which `profile --ssh` sends to a device with each artifact's outputs on it here (verify/<target>.npz)."""
        n = len(self.test_inputs[0])
        self.device_subset = device_subset(n, sum(a[0].nbytes for a in self.test_inputs) if n else 0, seed)
        first = self.io.classification
        y = self.class_ids().get(first.name) if first is not None else None
        arrays = {f"x{k}": a[self.device_subset] for k, a in enumerate(self.test_inputs)}
        if y is not None:
            arrays["y"] = y[self.device_subset]
        (self.tmp / VERIFY_DIR).mkdir(exist_ok=True)
        np.savez(self.tmp / VERIFY_DIR / "samples.npz", **arrays, index=self.device_subset,
                 classification=self.io.outputs.index(first) if first is not None else -1)

    def lower(self, t: TargetSpec, ref: Reference) -> Target:
        """Lower, run on the test split, verify and gate one target; a failure stays this target's."""
        rec = Target(name=t.name, device=t.device, format=t.format, precision=t.precision, status="ok",
                     reference=ref.note)
        final = self.tmp / "targets" / t.name
        partial = self.tmp / "targets" / f".{t.name}.partial"
        partial.mkdir(parents=True)
        t0 = time.perf_counter()
        art = None
        try:
            backend = get_backend(t.format, t.precision)
            info(f"target {t.name}: lowering to {t.format} {t.precision}")
            art, outs, metrics, rec.lower_s = self.lower_once(backend, t, ref, ref.quant, partial)
            fallback = backend.accuracy_fallback(t.precision, ref.quant)
            if fallback is not None:
                try:
                    gate(t.name, t.precision, dict(metrics), t.max_accuracy_drop, self.recipe.min_agreement)
                except TargetError as missed:  # a default the backend chose for speed: once more without it
                    quant, how = fallback
                    why = missed.problem.removeprefix(f"{t.name}: ")
                    info(f"target {t.name}: {escape(why)}; lowering again with {how}")
                    shutil.rmtree(partial)
                    partial.mkdir(parents=True)
                    art = None  # gone with its directory: a failure below keeps nothing of it
                    art, outs, metrics, again_s = self.lower_once(
                        backend, t, ref, quant, partial, f"lowered again: the backend's default missed the gate "
                                                         f"({why})")
                    rec.lower_s = round(rec.lower_s + again_s, 2)
            audit = backend.op_audit(art)
            rec.op_audit = None if audit is None else OpAudit.model_validate(audit)
            rec.size_bytes = art.size_bytes()
            rec.zip_bytes = art.zip_bytes()
            try:
                gate(t.name, t.precision, metrics, t.max_accuracy_drop, self.recipe.min_agreement)
            finally:
                rec.verify = Verification.model_validate(_finite(metrics))
            self.keep(art, partial, final, rec)
            if self.device_subset is not None:
                np.savez(self.tmp / VERIFY_DIR / f"{t.name}.npz", **{f"out{k}": o[self.device_subset]
                                                                     for k, o in enumerate(outs)})
            info(f"target {t.name}: {summary(metrics)}, {rec.size_bytes / 1024:.1f} KiB")
            if metrics.get("gate_note"):
                warn(f"target {t.name}: {metrics['gate_note']}")
        except (TargetError, Expired) as e:  # Expired: past timeouts.target_s
            full = disk_full_error(e, final_paths(str(partial), self.tmp, self.recipe), self.tmp.parent,
                                   tree_bytes(self.tmp))
            if art is not None and full is None:  # lowered but failed to run, verify or gate: kept (marked failed)
                self.keep(art, partial, final, rec)
            else:
                shutil.rmtree(partial, ignore_errors=True)
            if full is not None:  # not this target's fault: the run cannot be written
                raise full from None
            rec.status = "failed"
            rec.error = final_paths(str(e), self.tmp, self.recipe)
            info(f"[red]target {t.name} failed:[/red] {escape(rec.error)}")
        rec.wall_s = round(time.perf_counter() - t0, 2)
        return rec

    def lower_once(self, backend: Any, t: TargetSpec, ref: Reference, quant: QuantSettings, partial: Path,
                   retry_note: str | None = None) -> tuple[Any, list[np.ndarray], dict, float]:
        """Lower with ``quant`` into ``partial``, run the artifact on the test split and verify it (not gated); the
        lowering's seconds."""
        ctx = self.context(t, quant, self.logs / f"{t.name}.log", self.tmp / "work" / t.name)
        ctx.retry_note = retry_note
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        model = prepare(clone_module(ref.model), ctx, backend.polyphase_taps.get(t.precision))
        art = backend.lower(lowerable(model, self.io), ctx, partial)
        seconds = round(time.perf_counter() - t0, 2)
        outs = self.run(backend.load(art, threads=self.recipe.train.threads), t.name)
        return art, outs, self.verify(t, outs, ref), seconds

    @staticmethod
    def keep(art: Any, partial: Path, final: Path, rec: Target) -> None:
        partial.rename(final)
        art.dir = final
        rec.artifact = str(Path("targets") / rec.name / art.main)
        rec.files = [str(Path("targets") / rec.name / f) for f in art.files]


def summary(metrics: dict) -> str:
    """One line of what verification found."""
    if "top1" in metrics:
        head = f"top-1 {metrics['top1']:.4f} (torch {metrics['torch_top1']:.4f}), agreement {metrics['agreement']:.4f}"
    elif "agreement" in metrics:
        head = f"agreement {metrics['agreement']:.4f}"
    else:
        head = ""
    outputs = metrics.get("outputs") or {}
    parts = [f"{n} {o['metric']} {o.get('min_cosine' if o['metric'] == 'cosine' else o['metric'])}"
             for n, o in outputs.items() if o["metric"] != "top1"]
    return ", ".join(p for p in [head, *parts] if p)


def final_paths(text: str, tmp: Path, recipe: Recipe) -> str:
    """A message written during the run names files under the temporary directory, which is renamed to
    the recipe's output when the run completes: name them where they will be."""
    return text.replace(str(tmp), str(recipe.output))


def _finite(v: Any) -> Any:
    """NaN/inf (an artifact that produced them) are recorded as null: JSON has neither."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    return None if isinstance(v, float) and not np.isfinite(v) else v


def size_references(records: list[Target], models: dict[str, torch.nn.Module],
                    job: TargetJob) -> dict[str, SizeReference]:
    """What each quantized or FP16 artifact's size compares with, in its own format: the FP32 artifact of
    the model the recipe started from (what the user would ship without edgeship) and of the compressed
    model (quantization's share alone). A run's own FP32 target of that format serves as the latter;
    anything else is lowered at FP32 (``Artifact.size_bytes``) and kept in ``FP32_REFS_DIR`` of the run's temporary
    directory, with links to the artifacts that serve, for export to time each target beside them
    (``devices.measure.speed_vs_fp32``); export deletes them before the run is renamed into place.
    Sets ``size_vs_fp32`` on each such target; returns {format: SizeReference}."""
    done = [r for r in records if r.ok]
    formats = sorted({r.format for r in done if r.precision != "fp32"})
    keep = job.tmp / FP32_REFS_DIR / (done[0].model if done else "main")
    out: dict[str, SizeReference] = {}
    for fmt in formats:
        row: dict[str, Any] = {}
        own = next((r for r in done if r.format == fmt and r.precision == "fp32"), None)
        for which, model in models.items():
            dest = keep / f"{fmt}-{which}"
            if which == "compressed_model" and own is not None:
                row[which] = own.size_bytes
                _link(dest, job.tmp / "targets" / own.name)
                continue
            same = next((w for w, m in models.items() if m is model and w in row), None)
            if same is not None:  # no passes: the input model is the compressed one
                row[which] = row[same]
                _link(dest, keep / f"{fmt}-{same}")
                continue
            row[which], error = _fp32_size(fmt, which, model, job, dest)
            if error:
                row[f"{which}_error"] = error
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


def _link(link: Path, to: Path) -> None:
    """``link`` -> ``to``, relative (the run directory moves), when ``to`` is there."""
    if to.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(to, link.parent), target_is_directory=True)


def _fp32_size(fmt: str, which: str, model: torch.nn.Module, job: TargetJob,
               keep: Path) -> tuple[int | None, str | None]:
    """(bytes, error) of ``model`` lowered at FP32 to ``fmt`` in scratch space, the artifact moved to ``keep``."""
    t0 = time.perf_counter()
    base = job.tmp / "work" / "size-references"
    base.mkdir(parents=True, exist_ok=True)  # a run with a search lowers one set of references per searched model
    work = Path(tempfile.mkdtemp(prefix=f"{which}-{fmt}-", dir=base))
    spec = TargetSpec(name=f"{which}-{fmt}-fp32", format=fmt, precision="fp32")
    ctx = job.context(spec, QuantSettings(seed=job.recipe.seed), job.logs / "size-references.log", work)
    size, error = None, None
    try:
        (work / "out").mkdir()
        with Deadline(job.recipe.timeouts.target_s, f"size reference {spec.name}", TIMEOUT_FIX, TargetError):
            backend = get_backend(fmt, "fp32")
            prepared = prepare(clone_module(model), ctx, backend.polyphase_taps.get("fp32"))
            size = backend.lower(lowerable(prepared, job.io), ctx, work / "out").size_bytes()
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(work / "out", keep)
    except (TargetError, EdgeshipError, Expired) as e:
        if isinstance(e, DiskFull):
            raise
        full = disk_full_error(e, final_paths(str(work), job.tmp, job.recipe), job.tmp.parent, tree_bytes(job.tmp))
        if full is not None:
            raise full from None
        error = final_paths(str(e), job.tmp, job.recipe)
    info(f"size reference: {which.replace('_', ' ')} as FP32 {fmt}: "
         + (f"{size / 1024:.1f} KiB" if size else "could not be lowered") + f" ({time.perf_counter() - t0:.1f} s)")
    return size, error
