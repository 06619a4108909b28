"""Every artifact is run with its own runtime on the held-out test split before a run calls it done."""

from __future__ import annotations

import numpy as np

from edgeship.errors import TargetError
from edgeship.progress import progress_bar


def run_batched(runner, x: np.ndarray, batch_size: int = 500, label: str = "", quiet: bool = False) -> np.ndarray:
    outs = []
    with progress_bar(quiet) as bar:
        task = bar.add_task(f"verify {label}", total=len(x))
        for i in range(0, len(x), batch_size):
            outs.append(np.asarray(runner(x[i:i + batch_size]), np.float32))
            bar.update(task, advance=len(x[i:i + batch_size]))
    return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def compare(logits: np.ndarray, torch_logits: np.ndarray, y: np.ndarray) -> dict:
    pred, ref = logits.argmax(1), torch_logits.argmax(1)
    return {
        "n": int(len(y)),
        "top1": float((pred == y).mean()),
        "torch_top1": float((ref == y).mean()),
        "agreement": float((pred == ref).mean()),
        "max_abs_logit_diff": float(np.abs(logits - torch_logits).max()),
        "mean_abs_logit_diff": float(np.abs(logits - torch_logits).mean()),
    }


def gate(target: str, precision: str, metrics: dict, max_drop_pt: float, min_agreement: float) -> None:
    """Fail a target whose top-1 fell too far (silent INT8 collapse), or an FP32 file that disagrees."""
    drop = (metrics["torch_top1"] - metrics["top1"]) * 100
    metrics["accuracy_drop_pt"] = round(drop, 3)
    if not np.isfinite(metrics["max_abs_logit_diff"]):
        raise TargetError(f"{target}: the artifact produced NaN/inf logits", "check the conversion log")
    if drop > max_drop_pt:
        raise TargetError(f"{target}: top-1 {metrics['top1']:.4f} is {drop:.2f} pt below the torch model's "
                          f"{metrics['torch_top1']:.4f} (allowed: {max_drop_pt} pt)",
                          "use more or better calibration data, another calibration method, or the qat pass")
    if precision == "fp32" and metrics["agreement"] < min_agreement:
        raise TargetError(f"{target}: top-1 agreement with torch is {metrics['agreement']:.4%}, "
                          f"below the required {min_agreement:.1%}", "check the conversion log for warnings")
