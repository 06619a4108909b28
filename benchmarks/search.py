"""The budget-driven search's bar (issue 16): the demo model, two budgets, two models.

1. Export the search recipe (``recipes/fashion_mnist_search.yaml`` unless ``--recipe``): the demo's hand-written
   pipeline for its own targets, and two searches, each giving one ONNX INT8 target on this machine a model of
   its own within that target's latency budget (the "edge" budget roomy, the "tight" one not).
2. Time the artifacts that matter interleaved in one process (``bench_runner.py --many --priority``): each
   search's winner and the hand-written recipe's ONNX INT8 artifact (``--reference``).
3. Write, per search: the candidates evaluated, the winner's latency as the search judged it and as measured
   here, its test top-1, the search's wall time; and the bar: the roomy search's winner at least as accurate as
   the hand-written recipe's artifact at equal or lower measured latency, and each winner within its budget.

    .venv/bin/python benchmarks/search.py                     # -> benchmarks/results/search.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import RESULTS, ROOT, environment, loadavg, write_json  # noqa: E402


def measure(dirs: dict[str, Path], threads: int, runs: int, rounds: int, repeats: int) -> dict[str, list[dict]]:
    from edgeship.devices.measure import RUNNER, parse_runner_output

    with tempfile.TemporaryDirectory(prefix="edgeship-search-bench-") as tmp:
        for name, d in dirs.items():
            shutil.copytree(d, Path(tmp) / name)
        out: dict[str, list[dict]] = {name: [] for name in dirs}
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="3")
        for r in range(repeats):
            p = subprocess.run([sys.executable, str(RUNNER), "--many", tmp, "--threads", str(threads), "--runs",
                                str(runs), "--rounds", str(rounds), "--seed", str(r), "--priority"],
                               capture_output=True, text=True, env=env, timeout=3600)
            raw = parse_runner_output(p.stdout)
            if not raw or not raw.get("ok"):
                raise SystemExit(f"measurement failed: {p.stderr[-2000:]}")
            for name in dirs:
                out[name].append(raw["results"][name])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "fashion_mnist_search.yaml")
    ap.add_argument("--reference", default="x86-onnx-int8", help="the hand-written recipe's target to compare with")
    ap.add_argument("--roomy", default="edge", help="the search held to the hand-written artifact's bar")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--predictors", type=Path, help="score candidates with the predictors in this directory (a "
                    "host.json from benchmarks/predictor.py --predictors DIR) instead of measuring each")
    ap.add_argument("--out", type=Path, default=RESULTS / "search.json")
    args = ap.parse_args()

    from edgeship import api
    from edgeship.devices import predictor

    if args.predictors:
        predictor.PREDICTORS_DIR = args.predictors

    env = environment()
    t0 = time.time()
    record = api.export(args.recipe, quiet=True)
    export_s = time.time() - t0
    run_dir = record.run_dir
    targets = {t.name: t for t in record.targets}
    ref = targets[args.reference]
    dirs = {args.reference: run_dir / "targets" / ref.name}
    for v in record.variants:
        for name in v.targets:
            if targets[name].ok:
                dirs[name] = run_dir / "targets" / name
    load_before = loadavg()
    measured = measure(dirs, 1, args.runs, args.rounds, args.repeats)
    stats = {n: {"p50_ms": round(statistics.median(r["p50_ms"] for r in rs), 4),
                 "p90_ms": round(statistics.median(r["p90_ms"] for r in rs), 4),
                 "p50_repeats": [r["p50_ms"] for r in rs], "p90_repeats": [r["p90_ms"] for r in rs]}
             for n, rs in measured.items()}
    searches = {}
    for v in record.variants:
        s = v.search
        w = s.candidates[s.winner] if s.winner is not None else None
        name = v.targets[0]
        t = targets[name]
        searches[s.name] = {
            "target": name, "device": s.device, "budget_ms": s.budget_ms, "min_top1": s.min_top1,
            "candidates": len(s.candidates), "finalists": sum(c.finalist for c in s.candidates),
            "search_wall_s": s.wall_s, "why": s.why,
            "winner": None if w is None else {
                "blocks": w.blocks, "macs_ratio": w.macs_ratio, "macs": v.final.macs if v.final else None,
                "params": v.final.params if v.final else None, "candidate_latency_ms": w.latency_ms,
                "candidate_latency_source": w.latency_source, "finalist_latency_ms": w.final_latency_ms,
                "finalist_latency_source": w.final_source,
                "test_top1": t.verify.top1 if t.verify else None,
                "torch_test_top1": v.final.top1_test if v.final else None, "measured": stats.get(name),
                "within_budget": (stats.get(name) or {}).get("p90_ms", 1e9) <= s.budget_ms},
            "candidate_table": [c.model_dump(mode="json") for c in s.candidates]}
    ref_top1 = ref.verify.top1 if ref.verify else None
    roomy = searches.get(args.roomy, {}).get("winner") or {}
    bar_accuracy = roomy.get("test_top1") is not None and ref_top1 is not None and roomy["test_top1"] >= ref_top1
    bar_latency = bool(roomy.get("measured")) and roomy["measured"]["p50_ms"] <= stats[args.reference]["p50_ms"]
    models = {v.name: (v.final.model_hash if v.final else None) for v in record.variants}
    out = {
        "environment": env, "recipe": str(args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT)
                                          else args.recipe), "export_wall_s": round(export_s, 1),
        "predictors": str(args.predictors) if args.predictors else None,
        "loadavg_before_measuring": load_before, "loadavg_after": loadavg(),
        "method": {"runs": args.runs, "rounds": args.rounds, "repeats": args.repeats, "threads": 1,
                   "measured": "median over repeats of each interleaved pass's p50/p90 (bench_runner --many "
                               "--priority), the reference and the winners in one process"},
        "reference": {"target": args.reference, "passes": [p.name for p in record.recipe.passes],
                      "test_top1": ref_top1, "macs": record.final.macs, "measured": stats[args.reference]},
        "searches": searches,
        "different_models": len(set(models.values())) == len(models) and None not in models.values(),
        "bar": {"roomy_search": args.roomy, "at_least_as_accurate": bar_accuracy,
                "equal_or_lower_latency": bar_latency,
                "every_winner_within_its_budget": all((s.get("winner") or {}).get("within_budget") for s in
                                                      searches.values()),
                "met": bar_accuracy and bar_latency},
    }
    write_json(args.out, out)
    print(json.dumps(out["bar"], indent=2))


if __name__ == "__main__":
    main()
