"""Benchmark: the demo's distill stage on 1 and on 2 processes (torch.distributed: DDP over gloo on this CPU),
and on 2 nodes of 1 process each (two launchers on loopback).

    .venv/bin/python benchmarks/distributed.py [--recipe recipes/fashion_mnist.yaml] [--work runs/bench_dist]
        [--nprocs 1 2] [--nodes 2] [--epochs N] [--out benchmarks/results/distributed.json]

The passes before distill (the demo's drop_blocks and prune) run once, on one process; their stage cache is
copied for each run, so each run computes the distill stage alone, with no targets: `edgeship export` on one
process, `edgeship export --nproc-per-node N` on N (the same seed, the same global batches), and with --nodes M
`edgeship export --nproc-per-node 1 --nnodes M --node-rank K --master-addr 127.0.0.1` started M times, as M
machines would run it (node K > 0 with its own copy of the recipe, whose directory must stay untouched: checked).
Recorded per run:
the whole command's wall time, the stage's wall time and its training time (rank 0), the stage's val top-1 and
the result's test top-1, every process's peak RSS (each rank's own getrusage, gathered by the training loop),
the threads per process, and os.getloadavg() before and after. This machine has 2 cores shared with other
engineers' jobs: read the times beside the load averages, and the 2-process run as 2 processes of 1 thread
against 1 process of 2 threads on the same 2 cores (no extra hardware), not as a scaling result.

Writes benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from benchlib import ROOT, command_line, environment, loadavg, write_json


def run(recipe: Path, nproc: int, threads: int, nodes: int = 1) -> dict:
    """`edgeship export` on ``nproc`` processes (each of ``nodes`` launchers on loopback: node K > 0 reads
    <recipe's folder>/node<K>/recipe.yaml); the wall time until every launcher has exited."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmds = [[sys.executable, "-m", "edgeship", "--quiet", "export", str(recipe), "--no-measure"]]
    if nodes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = str(s.getsockname()[1])
        cmds = [[*cmds[0][:5], str(recipe if k == 0 else recipe.parent / f"node{k}" / "recipe.yaml"), "--no-measure",
                 "--nproc-per-node", str(nproc), "--nnodes", str(nodes), "--node-rank", str(k), "--master-addr",
                 "127.0.0.1", "--master-port", port] for k in range(nodes)]
    elif nproc > 1:
        cmds[0] += ["--nproc-per-node", str(nproc)]
    before = loadavg()
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
             for c in cmds]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    for c, p, (_, err) in zip(cmds, procs, outs):
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(c)} failed:\n{err[-3000:]}")
    return {"command": " ".join(cmds[0][1:]), **({"other_nodes": [" ".join(c[1:]) for c in cmds[1:]]} if nodes > 1
                                                 else {}),
            "command_wall_s": round(wall, 1), "loadavg_before": before, "loadavg_after": loadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "fashion_mnist.yaml")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_dist")
    ap.add_argument("--nprocs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--nodes", type=int, nargs="*", default=[2], help="also run on M nodes of 1 process (loopback)")
    ap.add_argument("--epochs", type=int, default=None, help="distill epochs (default: the recipe's)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "distributed.json")
    args = ap.parse_args()
    started = time.perf_counter()
    env = environment()
    base = yaml.safe_load(args.recipe.read_text())
    names = [p["name"] for p in base["passes"]]
    k = names.index("distill")
    distill = dict(base["passes"][k], **({"epochs": args.epochs} if args.epochs else {}))
    cores = os.cpu_count() or 1

    def recipe(where: Path, passes: list[dict]) -> Path:
        r = dict(base, passes=passes, targets=[], output=str(where / "runs" / "demo"))
        r["model"] = dict(base["model"], weights=str(ROOT / base["model"]["weights"]))
        where.mkdir(parents=True, exist_ok=True)
        (where / "recipe.yaml").write_text(yaml.safe_dump(r, sort_keys=False))
        return where / "recipe.yaml"

    prefix = args.work / "prefix"  # drop_blocks and prune, once (cached across reruns of this script)
    prefix_run = run(recipe(prefix, base["passes"][:k]), 1, cores)
    rows = []
    for nodes, n in [*((m, 1) for m in args.nodes), *((1, n) for n in args.nprocs)]:  # the newest path first
        where = args.work / (f"nproc{n}" if nodes == 1 else f"nodes{nodes}")
        shutil.rmtree(where, ignore_errors=True)
        shutil.copytree(prefix / "runs" / ".cache", where / "runs" / ".cache")
        threads = max(1, cores // (n * nodes))
        for other in range(1, nodes):  # the other machines' copies of the recipe (their own output path)
            recipe(where / f"node{other}", [*base["passes"][:k], distill])
        row = run(recipe(where, [*base["passes"][:k], distill]), n, threads, nodes)
        for other in range(1, nodes):
            left = sorted(p.name for p in (where / f"node{other}").iterdir())
            assert left == ["recipe.yaml"], f"node {other} wrote {left}"
        report = yaml.safe_load((where / "runs" / "demo" / "report.json").read_text())
        stage = report["stages"][-1]
        assert stage["stage"].endswith("distill") and not stage["cached"], stage
        m = stage["metrics"]
        rows.append({"processes": n * nodes, "nodes": nodes, "threads_per_process": threads, **row,
                     "stage_wall_s": stage["wall_s"],
                     "train_wall_s": m["wall_s"], "epochs": m["epochs"], "val_top1": stage["top1_val"],
                     "val_top1_per_epoch": m["val_top1_per_epoch"], "test_top1": report["final"]["top1_test"],
                     "peak_rss_mb_per_process": m["peak_rss_mb_per_process"], "device": m.get("device")})
        print(f"{n * nodes} process(es) on {nodes} node(s): distill {stage['wall_s']} s (training {m['wall_s']} s), "
              f"val top-1 {stage['top1_val']:.4f}, test top-1 {report['final']['top1_test']:.4f}, peak RSS "
              f"{m['peak_rss_mb_per_process']} MB, load {row['loadavg_before']} -> {row['loadavg_after']}",
              file=sys.stderr)
    write_json(args.out, {
        "command": command_line(), "recipe": str(args.recipe.relative_to(ROOT) if args.recipe.is_relative_to(ROOT)
                                                 else args.recipe),
        "stage": {"name": "distill", **distill, "input": f"the demo's {' + '.join(names[:k])} stages (cached)"},
        "environment": env, "prefix_run": prefix_run,
        "runs": sorted(rows, key=lambda r: (r["nodes"], r["processes"])),
        "wall_s": round(time.perf_counter() - started, 1),
        "note": (f"{cores} cores shared with other engineers' jobs: times are as loaded as loadavg_before/after "
                 "say; N processes share the same cores (threads_per_process), so this measures the overhead and "
                 "the equivalence of the distributed path, not a speed-up from more hardware"),
    })
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
