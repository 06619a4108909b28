"""Verification on the device for bench_runner.py ``--samples/--reference``: the artifact's outputs on the run's
test-split samples, computed by the device's runtime, against the same artifact's outputs on the host.

Self-contained like bench_runner.py (it runs beside it on devices, loaded by path): numpy is passed in, nothing
else is imported.
"""

from __future__ import annotations


def _finite(v: float) -> float | None:
    return v if v == v and abs(v) != float("inf") else None  # JSON has no NaN/inf: an artifact that made them


def verify(np, infer, samples: str, reference: str, meta: dict) -> dict:
    """The artifact on the host's test-split samples (``x0``, ``x1``, ...: each graph input; ``y``: the class ids of
    the classification output ``classification``, when the data has them), one sample at a time, against the same
    artifact's outputs on the host (``out0``, ``out1``, ...): per output, the absolute differences and, for a
    classification output (the sidecar's task), the agreement of the top class; the classification output's top-1
    and agreement also on top."""
    with np.load(samples) as f:
        inputs = [f[f"x{k}"] for k in range(sum(1 for key in f.files if key[:1] == "x" and key[1:].isdigit()))]
        y = f["y"] if "y" in f.files else None
        cls = int(f["classification"]) if "classification" in f.files else 0
    with np.load(reference) as f:
        refs = [f[f"out{k}"].astype(np.float32) for k in range(len(f.files))]
    per_sample = [infer(*[np.ascontiguousarray(a[i:i + 1]) for a in inputs]) for i in range(len(inputs[0]))]
    if any(len(o) != len(refs) for o in per_sample):
        raise ValueError(f"the artifact returns {len(per_sample[0])} outputs here, {len(refs)} on the host")
    described = meta.get("outputs") or []
    checks, top = [], {"top1": None, "host_top1": None, "agreement": None, "max_abs_logit_diff": None,
                       "mean_abs_logit_diff": None}
    for k, ref in enumerate(refs):
        out = np.concatenate([np.asarray(o[k], np.float32).reshape(1, *ref.shape[1:]) for o in per_sample])
        diff = np.abs(out - ref)
        entry = described[k] if k < len(described) else {}
        c = {"name": entry.get("name") or f"output_{k}", "agreement": None,
             "max_abs_diff": _finite(float(diff.max())) if diff.size else 0.0,
             "mean_abs_diff": _finite(float(diff.mean())) if diff.size else 0.0}
        if entry.get("task", "classification") == "classification" and ref.ndim == 2 and ref.shape[1] > 1:
            pred, host = out.argmax(1), ref.argmax(1)
            c["agreement"] = float((pred == host).mean())
            if k == cls:
                top.update(agreement=c["agreement"], max_abs_logit_diff=c["max_abs_diff"],
                           mean_abs_logit_diff=c["mean_abs_diff"])
                if y is not None:
                    top.update(top1=float((pred == y).mean()), host_top1=float((host == y).mean()))
        checks.append(c)
    return {"n": int(len(inputs[0])), **top, "outputs": checks}
