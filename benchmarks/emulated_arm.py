"""The demo run on the EMULATED Raspberry Pi (issue 17's bar): after `make demo`, the one documented command
`make demo-arm` (scripts/arm64_device.sh profile runs/fashion_mnist --device rpi4) must leave, in the demo run's
report.json, for every target whose format has an aarch64 runtime, an `emulated` measurement whose verification
(the aarch64 runtime on the run's test samples) agrees with the host artifact's outputs on >= 99 % of them.

    .venv/bin/python benchmarks/emulated_arm.py                  # runs `make demo-arm`, then the same on a Pi 5
    .venv/bin/python benchmarks/emulated_arm.py --run runs/other --no-rpi5

Writes benchmarks/results/emulated_arm.json. Everything in it is EMULATED (qemu-user TCG on an x86 host): the
agreement and top-1 are what the aarch64 builds of the runtimes compute, with the CPU features of the emulated
core; nothing here is a latency, and the wall times are this machine's emulation cost, not a Pi's speed.
The Pi 5 pass profiles a copy of the run, so the demo run's report keeps the Pi 4's measurements. A target whose
agreement is below 1 is run once more on that device (bench_runner's own loader, every verify/ sample's output kept)
and `flips` says which samples change class and how far apart the host's top two classes were on them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
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


# on the device: one artifact through bench_runner's own loader (the code `profile` ran), every verify/ sample's
# classification output saved, so the host can see WHICH samples disagree (the runner reports only the totals)
DEVICE_OUTPUTS = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import bench_runner as b
art = json.load(open(sys.argv[2] + "/model.json"))
runtime, _ = b.import_runtime(art["format"])
_, _, infer = b.LOADERS[art["format"]](runtime, sys.argv[2] + "/" + art["main"], 1, art.get("meta") or {}, 0, np)
with np.load(sys.argv[1] + "/samples.npz") as f:
    xs = [f[f"x{k}"] for k in range(sum(1 for key in f.files if key[:1] == "x" and key[1:].isdigit()))]
outs = [np.asarray(infer(*[np.ascontiguousarray(x[i:i + 1]) for x in xs])[0], np.float32) for i in range(len(xs[0]))]
np.save(sys.argv[3], np.concatenate(outs))
"""


def ssh_env(port: str) -> dict:
    out = subprocess.run(["scripts/arm64_device.sh", "env", "--port", port], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return dict(shlex.split(line)[0].split("=", 1) for line in out.splitlines() if "=" in line)


def flips(run: Path, device: str, names: list[str]) -> dict:
    """For each target whose emulated agreement is below 1: its outputs on the same device, per sample, against the
    host's (verify/<target>.npz): which samples change class, and whether they are near-ties (the host's margin
    between its top two classes, against every sample's and against the largest output difference)."""
    import numpy as np

    from edgeship.devices.measure import RUNNER

    port = subprocess.run(["scripts/arm64_device.sh", "start", "--device", device, "--port", "auto"], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout.strip()
    result = {}
    try:
        e = ssh_env(port)
        ssh = ["ssh", *shlex.split(e["EDGESHIP_ARM64_SSH_OPTS"])]
        scp = ["scp", *shlex.split(e["EDGESHIP_ARM64_SCP_OPTS"])]
        dest = f"{e['EDGESHIP_ARM64_USER']}@{e['EDGESHIP_ARM64_HOST']}"
        subprocess.run([*ssh, dest, "mkdir -p /tmp/flips"], check=True)
        script = run / "verify" / ".device_outputs.py"
        script.write_text(DEVICE_OUTPUTS)
        try:
            subprocess.run([*scp, "-q", "-r", str(RUNNER), str(script), str(run / "verify" / "samples.npz"),
                            *[str(run / "targets" / n) for n in names], f"{dest}:/tmp/flips/"], check=True)
        finally:
            script.unlink()
        with np.load(run / "verify" / "samples.npz") as f:
            y, index = f["y"], f["index"]
        for n in names:
            subprocess.run([*ssh, dest, f"python3 /tmp/flips/.device_outputs.py /tmp/flips /tmp/flips/{n} "
                                        f"/tmp/flips/{n}.npy"], check=True)
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run([*scp, "-q", f"{dest}:/tmp/flips/{n}.npy", tmp], check=True)
                arm = np.load(Path(tmp) / f"{n}.npy")
            with np.load(run / "verify" / f"{n}.npz") as f:
                host = f["out0"].astype(np.float32)
            fmt = json.loads((run / "targets" / n / "model.json").read_text())["format"]
            ref = qdq_reference(run / "targets" / n, run / "verify")
            result[n] = compare(host, arm, y, index, ref, REFERENCES.get(fmt, ""))
    finally:
        subprocess.run(["scripts/arm64_device.sh", "stop", "--port", port], cwd=ROOT, capture_output=True)
    return result


REFERENCES = {"onnx": "ONNX Runtime, graph optimizations off: the QDQ operators as written, float arithmetic, no "
                       "integer kernel",
              "openvino": "OpenVINO without its low-precision transformations (LP_TRANSFORMS_MODE off): the "
                          "FakeQuantize operators as written, float arithmetic, no integer kernel"}


def qdq_reference(art_dir: Path, verify: Path):
    """An INT8 ONNX or OpenVINO artifact as its quantization operators define it, on this machine with no integer
    kernel: which of the two INT8 runs (x86, Arm) stays closer to it says whose kernels deviate. None otherwise."""
    import numpy as np

    sidecar = json.loads((art_dir / "model.json").read_text())
    if sidecar["format"] not in REFERENCES or sidecar["precision"] != "int8":
        return None
    with np.load(verify / "samples.npz") as f:
        x = f["x0"]
    if sidecar["format"] == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(art_dir / sidecar["main"]), so, providers=["CPUExecutionProvider"])
        return np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x[i:i + 1]})[0] for i in range(len(x))])
    import openvino as ov

    config = {**(sidecar["meta"].get("runtime_config") or {}), "LP_TRANSFORMS_MODE": False, "INFERENCE_NUM_THREADS": 1}
    compiled = ov.Core().compile_model(str(art_dir / sidecar["main"]), "CPU", config)
    return np.concatenate([compiled(x[i:i + 1])[0] for i in range(len(x))])


def compare(host, arm, y, index, reference=None, what: str = "") -> dict:
    import numpy as np

    hp, ap = host.argmax(1), arm.argmax(1)
    top2 = np.sort(host, 1)
    margin = top2[:, -1] - top2[:, -2]  # the host's lead of its class over the runner-up, in logits
    diff = np.abs(host - arm).max(1)
    flipped = np.flatnonzero(hp != ap)
    ref = {}
    if reference is not None:  # how far each INT8 run is from the QDQ graph's own arithmetic
        rp = reference.argmax(1)
        ref = {"qdq_reference": {
            "what": what,
            "x86_agreement": float((hp == rp).mean()), "arm_agreement": float((ap == rp).mean()),
            "x86_max_abs_logit_diff": float(np.abs(host - reference).max()),
            "arm_max_abs_logit_diff": float(np.abs(arm - reference).max()),
            "x86_mean_abs_logit_diff": float(np.abs(host - reference).mean()),
            "arm_mean_abs_logit_diff": float(np.abs(arm - reference).mean()),
            "x86_top1": float((hp == y).mean()), "arm_top1": float((ap == y).mean()), "top1": float((rp == y).mean())}}
    return {**ref,
        "n": int(len(y)), "flipped": int(len(flipped)), "agreement": float((hp == ap).mean()),
        "samples_with_any_difference": int((diff > 0).sum()), "max_abs_logit_diff": float(diff.max()),
        "median_abs_logit_diff_of_differing": float(np.median(diff[diff > 0])) if (diff > 0).any() else 0.0,
        "host_margin_median_all": float(np.median(margin)),
        "host_margin_of_flipped": [round(float(margin[i]), 4) for i in flipped],
        "samples_with_host_margin_below_max_diff": int((margin < diff.max()).sum()),
        "flipped_samples": [{"test_index": int(index[i]), "label": int(y[i]), "host_class": int(hp[i]),
                             "arm_class": int(ap[i]), "host_margin": round(float(margin[i]), 4),
                             "max_abs_logit_diff": round(float(diff[i]), 4),
                             "host_right": bool(hp[i] == y[i]), "arm_right": bool(ap[i] == y[i])} for i in flipped],
    }


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
               "missing": missing,
               "errors": {n: (rec.measurement_errors.get(n) or {}).get("emulated") for n in missing},
               "min_agreement": min((r["verification"]["agreement"] for r in out
                                                         if r["verification"]), default=None),
               "bar_met": not missing and all(r["meets_bar"] for r in out)}
    return out, summary


def add_flips(entry: dict, run: Path, device: str) -> None:
    """Which samples change class on the Arm kernels, and how far apart the host's top two were on them."""
    differ = [r["target"] for r in entry["targets"] if r["verification"] and (r["verification"]["agreement"] or 1) < 1]
    if differ:
        entry["flips"] = flips(run, device, differ)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/fashion_mnist", help="the run (default: the demo's)")
    ap.add_argument("--no-rpi5", action="store_true", help="only the Pi 4 (the documented command)")
    ap.add_argument("--backfill-verify", action="store_true",
                    help="a run exported before export wrote verify/: write it first (as export would)")
    ap.add_argument("--flips-only", action="store_true",
                    help="recompute only each device's `flips` in the existing result file (same run; no profile)")
    ap.add_argument("--note", help="how the run was made, recorded with the results (e.g. not by `make demo`)")
    args = ap.parse_args()
    run = (ROOT / args.run) if not Path(args.run).is_absolute() else Path(args.run)
    if not (run / "report.json").is_file():
        sys.exit(f"{run} has no report.json: run `make demo` first")
    out = RESULTS / "emulated_arm.json"
    if args.flips_only:  # the artifacts and verify/ samples are the run's on every device (rpi5 profiled a copy)
        result = json.loads(out.read_text())
        if Path(result["run"]) not in (run, run.relative_to(ROOT) if run.is_relative_to(ROOT) else run):
            sys.exit(f"{out} is about {result['run']}, not {run}")
        for device, entry in result["devices"].items():
            add_flips(entry, run, device)
        write_json(out, result)
        print(f"wrote {out}")
        return 0
    t0 = time.perf_counter()
    result = {"label": LABEL, "bar": f"every target whose format has an aarch64 runtime: an emulated measurement "
                                      f"with agreement >= {BAR} against the host artifact's outputs",
              "environment": environment(), "run": str(run.relative_to(ROOT) if run.is_relative_to(ROOT) else run),
              **({"run_note": args.note} if args.note else {}), "devices": {}}
    if args.backfill_verify:
        result["verify_backfilled"] = {**backfill_verify(run), "why": "the run was exported before export wrote "
                                       "verify/; written here from its recipe and artifacts as export would"}
    done = profile(run, "rpi4")  # what `make demo-arm` runs
    result["devices"]["rpi4"] = {**done, "documented_as": "make demo-arm", "report": "the demo run's report.json",
                                 **dict(zip(("targets", "summary"), rows(run)))}
    add_flips(result["devices"]["rpi4"], run, "rpi4")
    if not args.no_rpi5:
        with tempfile.TemporaryDirectory(prefix="emulated-rpi5-") as tmp:
            copy = Path(tmp) / run.name
            shutil.copytree(run, copy)
            done = profile(copy, "rpi5")
            result["devices"]["rpi5"] = {**done, "report": "a copy of the run (the demo's keeps the Pi 4's)",
                                         **dict(zip(("targets", "summary"), rows(copy)))}
            add_flips(result["devices"]["rpi5"], copy, "rpi5")
    result["bar_met"] = result["devices"]["rpi4"]["summary"]["bar_met"]
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(out, result)
    print(json.dumps({d: r["summary"] for d, r in result["devices"].items()}, indent=2))
    print(f"wrote {out}")
    return 0 if result["bar_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
