"""Every artifact is run with its own runtime on the held-out test split before a run calls it done, and each of its
outputs is compared with the torch model's by the output's task (``io:`` outputs; ``input:`` recipes have one
classification output, ``logits``):

- classification: top-1 against the ground truth (when the data has class ids), agreement of the argmax with the
  torch model's, logit differences; the gate is the top-1 drop (``max_accuracy_drop``) and, for FP32, agreement;
- score (probabilities, sigmoids): agreement of the decision at ``threshold``, and absolute errors;
- regression and any: max / mean absolute error and the relative error (mean |difference| / mean |torch|);
- embedding: cosine similarity per sample (mean and worst) and the relative error.

A metric other than top-1 is gated by the output's tolerance for the artifact's precision class (fp32, fp16, int8;
``recipe.DEFAULT_TOLERANCE`` unless the recipe gives one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeship.errors import TargetError
from edgeship.progress import progress_bar
from edgeship.recipe import HIGHER_IS_BETTER, IOOutput, IOSpec

Arrays = list[np.ndarray]


def run_batched(runner, inputs: Arrays | np.ndarray, batch_size: int = 500, label: str = "",
                quiet: bool = False) -> Arrays:
    """Every output of ``runner(*inputs)`` over all samples, in batches: one array per output."""
    inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    n = len(inputs[0])
    chunks: list[Arrays] = []
    with progress_bar(quiet) as bar:
        task = bar.add_task(f"verify {label}", total=n)
        for i in range(0, n, batch_size):
            outs = runner(*[a[i:i + batch_size] for a in inputs])
            chunks.append([np.asarray(o) for o in outs])
            bar.update(task, advance=min(batch_size, n - i))
    if not chunks:
        return []
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def wilson95(k: int, n: int) -> list[float]:
    """The 95% Wilson score interval of a proportion k/n (stays inside [0, 1] and is not empty at k = 0 or n)."""
    if n == 0:
        return [0.0, 1.0]
    p, z2 = k / n, Z95 * Z95
    centre, half = (p + z2 / (2 * n)) / (1 + z2 / n), Z95 * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def paired_drop95_pt(torch_right: np.ndarray, art_right: np.ndarray) -> list[float]:
    """The 95% interval of the top-1 drop (points) on the same samples: only the samples where exactly one of the
    two is right carry information (a paired, McNemar-style difference; normal approximation with a continuity
    correction of half a sample)."""
    d = torch_right.astype(np.float64) - art_right.astype(np.float64)
    n = len(d)
    if n == 0:
        return [-100.0, 100.0]
    half = Z95 * np.sqrt(max(float(d.var()), 1.0 / n) / n) + 0.5 / n  # a floor: 0 discordant is not certainty
    return [round(100 * (float(d.mean()) - half), 2), round(100 * (float(d.mean()) + half), 2)]


def classification(out: np.ndarray, ref: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
    pred, want = out.argmax(1), ref.argmax(1)
    m = {"agreement": float((pred == want).mean()), "max_abs_logit_diff": float(np.abs(out - ref).max()),
         "mean_abs_logit_diff": float(np.abs(out - ref).mean())}
    if y is not None:
        right, torch_right = pred == y, want == y
        m.update(top1=float(right.mean()), torch_top1=float(torch_right.mean()),
                 top1_ci95=wilson95(int(right.sum()), len(y)),
                 accuracy_drop_ci95_pt=paired_drop95_pt(torch_right, right))
    return m


def numeric(out: np.ndarray, ref: np.ndarray, spec: IOOutput) -> dict[str, Any]:
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    diff = np.abs(out - ref)
    m: dict[str, Any] = {"max_abs_error": _finite(diff.max()) if diff.size else 0.0,
                         "mean_abs_error": _finite(diff.mean()) if diff.size else 0.0,
                         "relative_error": _finite(diff.mean() / max(float(np.abs(ref).mean()), 1e-12))}
    if spec.task == "score" or spec.judged_by == "agreement":
        m["agreement"] = float(((out >= spec.threshold) == (ref >= spec.threshold)).mean())
    if spec.task == "embedding" or spec.judged_by == "cosine":
        a, b = out.reshape(len(out), -1), ref.reshape(len(ref), -1)
        cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        m.update(cosine=_finite(cos.mean()), min_cosine=_finite(cos.min()))
    return m


def compare(logits: np.ndarray, torch_logits: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """An image classifier's artifact (``input:``): top-1, agreement and logit differences on the test split."""
    return {"n": int(len(y)), **classification(logits, torch_logits, y)}


def compare_outputs(outs: Arrays, refs: Arrays, io: IOSpec, labels: dict[str, np.ndarray | None],
                    precision_class: str) -> dict[str, Any]:
    """Every output against the torch model's. The first classification output also fills the top-level fields
    (top1, torch_top1, agreement, logit differences) that the accuracy budgets and the report read."""
    if len(outs) != len(refs):
        raise TargetError(f"the artifact returns {len(outs)} outputs but the model {len(refs)}",
                          "check the conversion log: an output was dropped or split")
    result: dict[str, Any] = {"n": int(len(refs[0])) if refs else 0, "outputs": {}}
    first = io.classification
    for out, ref, spec in zip(outs, refs, io.outputs):
        if out.shape != ref.shape:
            raise TargetError(f"output {spec.name!r} has shape {out.shape[1:]} per sample, the model's {ref.shape[1:]}",
                              "check the conversion log (a dynamic axis or the layout changed)")
        if spec.task == "classification":
            m = classification(out, ref, labels.get(spec.name))
        else:
            m = numeric(out, ref, spec)
        metric = spec.judged_by
        limit = spec.limit(precision_class)
        value = m.get("min_cosine" if metric == "cosine" else metric)
        passed = None if limit is None or value is None else (
            value >= limit if metric in HIGHER_IS_BETTER else value <= limit)
        if limit is not None and value is None:
            passed = False  # NaN/inf: no value passes
        result["outputs"][spec.name] = {"task": spec.task, **m, "metric": metric, "limit": limit, "passed": passed}
        if spec is first:
            result.update({k: m[k] for k in ("top1", "torch_top1", "agreement", "max_abs_logit_diff",
                                             "mean_abs_logit_diff", "top1_ci95", "accuracy_drop_ci95_pt") if k in m})
    return result


def gate(target: str, precision: str, metrics: dict, max_drop_pt: float, min_agreement: float) -> None:
    """Fail a target whose top-1 fell too far (silent INT8 collapse), an FP32 file that disagrees, NaN/inf outputs,
    or an output outside its tolerance."""
    failed = []
    for name, o in (metrics.get("outputs") or {}).items():
        if o.get("passed") is False:
            value = o.get("min_cosine" if o["metric"] == "cosine" else o["metric"])
            label = "worst cosine" if o["metric"] == "cosine" else o["metric"]
            shown = "NaN/inf" if value is None else f"{label} {value:.4g}"
            op = ">=" if o["metric"] in HIGHER_IS_BETTER else "<="
            failed.append((name, f"output {name!r}: {shown} ({o['metric']} {op} {o['limit']:g})"))
    if failed:  # every failing output in the one line, not only the first
        names = ", ".join(f"io.outputs[{name}].tolerance" for name, _ in failed)
        raise TargetError(f"{target}: {'; '.join(text for _, text in failed)} "
                          f"{'is' if len(failed) == 1 else 'are'} outside {'its' if len(failed) == 1 else 'their'} "
                          f"tolerance for {precision}",
                          "use more or better calibration data, keep these outputs' layers (mixed_precision) or "
                          "operator types (the target's float_ops) in float, "
                          f"or set {names} if the difference is acceptable")
    if "top1" in metrics or "agreement" in metrics:
        first = next((o for o in (metrics.get("outputs") or {}).values() if o["task"] == "classification"), None)
        try:
            _gate_classification(target, precision, metrics, max_drop_pt, min_agreement)
        except TargetError:
            if first is not None:
                first["passed"] = False
            raise
        if first is not None:  # the first classification output is the one the top-1 gate judged
            first["passed"] = True


def too_small_for_gate(n: int, max_drop_pt: float) -> str | None:
    """Why a test split of ``n`` samples cannot resolve the accuracy gate (one sample moves top-1 by more than the
    allowed drop), or None."""
    if n and 100.0 / n > max_drop_pt:
        return (f"the test split has {n} samples: one sample is {100.0 / n:.2g} pt of top-1, more than the "
                f"{max_drop_pt:g} pt the gate allows; the gate cannot tell one sample from a real drop (give at "
                f"least {int(np.ceil(100.0 / max_drop_pt)) if max_drop_pt > 0 else 'more'} test samples)")
    return None


def _gate_classification(target: str, precision: str, metrics: dict, max_drop_pt: float, min_agreement: float) -> None:
    if "max_abs_logit_diff" in metrics and not np.isfinite(metrics["max_abs_logit_diff"]):
        raise TargetError(f"{target}: the artifact produced NaN/inf logits", "check the conversion log")
    if "top1" in metrics and "torch_top1" in metrics:
        drop = (metrics["torch_top1"] - metrics["top1"]) * 100
        metrics["accuracy_drop_pt"] = round(drop, 3)
        coarse = too_small_for_gate(metrics.get("n", 0), max_drop_pt)
        if coarse:
            metrics["gate_note"] = coarse
        if drop > max_drop_pt:
            lo, hi = metrics.get("accuracy_drop_ci95_pt") or (drop, drop)
            raise TargetError(f"{target}: top-1 {metrics['top1']:.4f} is {drop:.2f} pt below the torch model's "
                              f"{metrics['torch_top1']:.4f} (allowed: {max_drop_pt} pt; 95% interval of the drop "
                              f"{lo:.2f}..{hi:.2f} pt on {metrics.get('n')} test samples)",
                              "give a larger test split (data.test_size)" if coarse else
                              "use more or better calibration data, another calibration method, or the qat pass")
    if precision == "fp32" and metrics.get("agreement", 1.0) < min_agreement:
        raise TargetError(f"{target}: top-1 agreement with torch is {metrics['agreement']:.4%}, "
                          f"below the required {min_agreement:.1%}", "check the conversion log for warnings")


DEVICE_SAMPLES = 256  # test samples a device runs to check its runtime against the host's outputs
DEVICE_SAMPLES_BYTES = 8 << 20  # ... at most this much input (the samples travel to the device with the bundle)


def device_subset(n_test: int, sample_bytes: int, seed: int) -> np.ndarray:
    """The test-split indices a device is verified on: a seeded random subset of ``DEVICE_SAMPLES`` (fewer when
    the inputs are large: at most ``DEVICE_SAMPLES_BYTES`` in all, at least 16), sorted."""
    n = min(n_test, DEVICE_SAMPLES, max(16, DEVICE_SAMPLES_BYTES // max(sample_bytes, 1)))
    return np.sort(np.random.default_rng(seed).permutation(n_test)[:n])
