"""The demo run on the EMULATED Raspberry Pi (issue 17's bar): after `make demo`, the one documented command
`make demo-arm` (scripts/arm64_device.sh profile runs/fashion_mnist --device rpi4) must leave, in the demo run's
report.json, for every target whose format has an aarch64 runtime, an `emulated` measurement whose verification
(the aarch64 runtime on the run's test samples) agrees with the host artifact's outputs on >= 99 % of them.

    .venv/bin/python benchmarks/emulated_arm.py                  # runs `make demo-arm`, then the same on a Pi 5
    .venv/bin/python benchmarks/emulated_arm.py --run runs/other --no-rpi5

Writes benchmarks/results/emulated_arm.json. Everything in it is EMULATED (qemu-user TCG on an x86 host): the
agreement and top-1 are what the aarch64 builds of the runtimes compute, with the CPU features of the emulated
core; nothing here is a latency, and the wall times are this machine's emulation cost, not a Pi's speed.
The Pi 5 pass profiles a copy of the run, so the demo run's report keeps the Pi 4's measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import RESULTS, ROOT, environment, write_json

from edgeship.record import RunRecord
from edgeship.targets.base import formats

BAR = 0.99
LABEL = ("EMULATED: qemu-user (TCG) on an x86 host running Debian arm64 with the aarch64 runtimes; agreement and "
         "top-1 are what those runtimes compute on the emulated CPU model; no number here is a Pi's latency")


def profile(run: Path, device: str) -> dict:
    """The documented command (make demo-arm is this with rpi4), timed; its output kept."""
    cmd = ["scripts/arm64_device.sh", "profile", str(run), "--device", device]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "EDGESHIP": str(ROOT / ".venv" / "bin" / "edgeship")})
    wall = round(time.perf_counter() - t0, 1)
    print(p.stdout[-3000:], p.stderr[-3000:], sep="\n")
    return {"command": " ".join(cmd), "exit_code": p.returncode, "wall_s": wall}


def backfill_verify(run: Path) -> dict:
    """verify/ for a run exported before export wrote it (the on-device check's samples and each artifact's host
    outputs on them): what export writes (lower.py TargetJob.save_device_samples and lower), computed here from the
    run's recipe, its test split and each artifact run by its backend's own runner on this machine."""
    import numpy as np

    from edgeship.calibration.datasets import load_splits
    from edgeship.pipeline.training import TensorData
    from edgeship.record import VERIFY_DIR
    from edgeship.targets.base import Artifact, get_backend
    from edgeship.targets.verify import device_subset, run_batched

    rec = RunRecord.load(run)
    recipe = rec.recipe
    io = recipe.model_io()
    if not io.image:
        sys.exit("--backfill-verify covers image classifiers (input: recipes) only; re-export the run instead")
    raw = load_splits(recipe.data, recipe.input, len(recipe.labels) if recipe.labels else None).test
    test = TensorData.from_array(raw, recipe.input.preprocessing_obj(), io)  # as export's prepare() makes it
    inputs, y = test.graph_inputs(io), test.y.numpy()
    subset = device_subset(len(y), sum(a[0].nbytes for a in inputs), recipe.seed)
    (run / VERIFY_DIR).mkdir(exist_ok=True)
    np.savez(run / VERIFY_DIR / "samples.npz", **{f"x{k}": a[subset] for k, a in enumerate(inputs)}, y=y[subset],
             index=subset, classification=0)
    done = {}
    for t in rec.targets:
        if not t.ok:
            continue
        art = Artifact.from_sidecar(run / "targets" / t.name / "model.json")
        outs = run_batched(get_backend(t.format, t.precision).load(art), [a[subset] for a in inputs], quiet=True)
        np.savez(run / VERIFY_DIR / f"{t.name}.npz", **{f"out{k}": o for k, o in enumerate(outs)})
        done[t.name] = float((outs[0].argmax(1) == y[subset]).mean())
    return {"samples": int(len(subset)), "host_top1_on_them": done}


def rows(run: Path) -> tuple[list[dict], dict]:
    rec = RunRecord.load(run)
    arm_formats = sorted(f for f, b in formats().items() if b.device_loader)
    out, missing = [], []
    for t in rec.targets:
        m = rec.measurements_of(t.name).get("emulated")
        if t.format in arm_formats and (m is None or m.verification is None):
            missing.append(t.name)
        if m is None:
            continue
        v = m.verification
        out.append({
            "target": t.name, "format": t.format, "precision": t.precision, "target_device": t.device,
            "emulated_device": m.device, "cpu": (m.facts.get("emulated") or {}).get("cpu"),
            "machine": m.facts.get("machine"), "features": m.facts.get("features"),
            "runtime": m.runtime, "runtime_version": m.runtime_version, "inference_precision": m.inference_precision,
            "verification": v.model_dump() if v else None,
            "host_verification_full_test_split": t.verify.model_dump() if t.verify else None,
            "meets_bar": bool(v and v.agreement is not None and v.agreement >= BAR),
        })
    summary = {"targets": len(rec.targets), "arm_formats": arm_formats, "with_emulated_verification": len(out),
               "missing": missing, "min_agreement": min((r["verification"]["agreement"] for r in out
                                                         if r["verification"]), default=None),
               "bar_met": not missing and all(r["meets_bar"] for r in out)}
    return out, summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/fashion_mnist", help="the run (default: the demo's)")
    ap.add_argument("--no-rpi5", action="store_true", help="only the Pi 4 (the documented command)")
    ap.add_argument("--backfill-verify", action="store_true",
                    help="a run exported before export wrote verify/: write it first (as export would)")
    args = ap.parse_args()
    run = (ROOT / args.run) if not Path(args.run).is_absolute() else Path(args.run)
    if not (run / "report.json").is_file():
        sys.exit(f"{run} has no report.json: run `make demo` first")
    t0 = time.perf_counter()
    result = {"label": LABEL, "bar": f"every target whose format has an aarch64 runtime: an emulated measurement "
                                      f"with agreement >= {BAR} against the host artifact's outputs",
              "environment": environment(), "run": str(run.relative_to(ROOT) if run.is_relative_to(ROOT) else run),
              "devices": {}}
    if args.backfill_verify:
        result["verify_backfilled"] = {**backfill_verify(run), "why": "the run was exported before export wrote "
                                       "verify/; written here from its recipe and artifacts as export would"}
    done = profile(run, "rpi4")  # what `make demo-arm` runs
    result["devices"]["rpi4"] = {**done, "documented_as": "make demo-arm", "report": "the demo run's report.json",
                                 **dict(zip(("targets", "summary"), rows(run)))}
    if not args.no_rpi5:
        with tempfile.TemporaryDirectory(prefix="emulated-rpi5-") as tmp:
            copy = Path(tmp) / run.name
            shutil.copytree(run, copy)
            done = profile(copy, "rpi5")
            result["devices"]["rpi5"] = {**done, "report": "a copy of the run (the demo's keeps the Pi 4's)",
                                         **dict(zip(("targets", "summary"), rows(copy)))}
    result["bar_met"] = result["devices"]["rpi4"]["summary"]["bar_met"]
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    out = RESULTS / "emulated_arm.json"
    write_json(out, result)
    print(json.dumps({d: r["summary"] for d, r in result["devices"].items()}, indent=2))
    print(f"wrote {out}")
    return 0 if result["bar_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
