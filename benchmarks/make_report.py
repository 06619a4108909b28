"""Regenerate BENCHMARKS.md (repo root) from benchmarks/results/*.json.

    .venv/bin/python benchmarks/make_report.py [--results benchmarks/results] [--out BENCHMARKS.md]

Sections: the peers comparison (peers.json, else peers_quick.json), the pipeline's own cost
(pipeline_cost.json, else pipeline_cost_quick.json), the bars stated as met or missed with their numbers,
and benchmarks/results/notes.md (hand-written discussion of the numbers) verbatim when it exists.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOW_NAMES = {"fp32": "FP32 unpruned", "edgeship": "edgeship (the recipe's passes, INT8)", "peer": "peer default INT8"}


def load(results: Path, stem: str) -> dict | None:
    for name in (f"{stem}.json", f"{stem}_quick.json"):
        p = results / name
        if p.is_file():
            return json.loads(p.read_text()) | {"_file": name}
    return None


def ms(v) -> str:
    return "-" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}")


def x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def machine(env: dict) -> list[str]:
    v = env.get("runtime_versions") or {}
    return [f"- Machine: {env.get('cpu')} ({env.get('machine')}), {env.get('cores')} cores, {env.get('system')}; "
            f"CPU features: {', '.join(env.get('cpu_features') or [])}",
            f"- Python {env.get('python')}, torch {env.get('torch')}, "
            + ", ".join(f"{k} {val}" for k, val in v.items() if val)]


def peers_section(d: dict) -> list[str]:
    m = d["method"]
    threads = [str(t) for t in m["threads"]]
    quick = " (QUICK run: reduced settings, not a verdict)" if d["quick"] else ""
    if not d.get("complete", True):
        quick += f" (PARTIAL run: cut off after {len(d['rows'])} rows)"
    out = [f"## edgeship against the peers' default flows{quick}",
           "", f"Source: `benchmarks/results/{d['_file']}`, written by `{d['command']}`.", ""]
    out += machine(d["environment"])
    out += [f"- Started {d['environment'].get('time_utc')} UTC; load average (1/5/15 min) at start "
            f"{d['environment'].get('loadavg')}, before the latency runs {d.get('loadavg_before_measuring')}, "
            f"after {d.get('loadavg_after')}; latency runs took {d.get('measure_s')} s, the whole script "
            f"{d.get('wall_s')} s.",
            "", "Method:", "",
            f"- Each artifact is benchmarked by edgeship's host measurement (`edgeship.targets.measure` -> "
            f"`bench_runner.py`): a fresh subprocess with only its runtime imported, {m['warmup']} warm-up runs, then "
            f"{m['runs']} timed runs at a fixed thread count ({', '.join(threads)}); {m['input']}.",
            f"- Interleaving: {m['interleaving']}; {m['repeats']} repeats. p50 = {m['p50']}. "
            f"Speed-up = {m['speedup']}. Ratios, not absolute times, carry the claims (the machine is shared).",
            "- Top-1 on the recipe's test split with each artifact's own runtime (edgeship artifacts: the "
            "verification `edgeship export` runs; peers: the same data here).",
            "- Sizes: the artifact's files (sidecar `model.json` excluded).",
            *(["- OpenVINO on this CPU (avx512_bf16/AMX) runs float layers in bf16 unless told otherwise. edgeship's "
               "IRs (the FP32 one and the INT8 one) are timed with the settings their sidecar records and their "
               "verification used, INFERENCE_PRECISION_HINT f32; the peer's IR with OpenVINO's defaults (bf16 for "
               "its float layers), as its user would run it. Each measurement records the precision used."]
              if {"avx512_bf16", "amx_bf16"} & set(d["environment"].get("cpu_features") or []) else []), "",
            "The contenders on each runtime:", "",
            "- **FP32 unpruned**: `edgeship export` with no passes and an FP32 target (ONNX: `torch.onnx.export` "
            "dynamo=False opset 17; OpenVINO: `convert_model` saved as an f32 IR; TFLite: torch.fx -> TF -> "
            "`TFLiteConverter` without optimizations).",
            "- **edgeship**: `edgeship export` of the recipe's passes with one INT8 target per format (the QAT "
            "model lowered with its own learned ranges: QDQ ONNX, FakeQuantize IR, FakeQuant -> full-int8 TFLite).",
            "- **peer default INT8**, run on the same FP32 model and the same calibration samples "
            "(the ones the QAT pass calibrated with):"]
    out += [f"  - {fmt}: {text}" for fmt, text in m["peer_flows"].items()]
    out += ["  - onnx2tf and litert-torch (what Ultralytics-style exporters use for TFLite) do not install beside "
            "the pinned torch/TF/numpy/pydantic (see `edgeship/targets/torch2tf.py`), so the TFLite peer reuses "
            "edgeship's float lowering and applies only the converter's own default full-integer PTQ.", ""]
    for name, info in d["models"].items():
        sizes = info.get("data_sizes") or {}
        fp, comp = info.get("fp32") or {}, info.get("compressed") or {}
        out += [f"### {name}", "",
                f"Recipe `{info['recipe']}`, checkpoint `{info['checkpoint']}`; torch FP32 top-1 "
                f"{pct(info['torch_fp32_top1'])} % on {sizes.get('test')} test images; MACs "
                f"{fp.get('macs'):,} -> {comp.get('macs'):,} ({comp.get('macs') / fp.get('macs'):.2f}), params "
                f"{fp.get('params'):,} -> {comp.get('params'):,}; compressed torch (QAT) top-1 "
                f"{pct(comp.get('top1_test'))} %.", "",
                "| runtime | contender | top-1 % | size KiB | " + " | ".join(f"p50 ms {t}T" for t in threads)
                + " | " + " | ".join(f"vs FP32 {t}T" for t in threads) + " | "
                + " | ".join(f"vs peer {t}T" for t in threads) + " |",
                "|---|---|---|---|" + "---|" * (3 * len(threads))]
        for r in (r for r in d["rows"] if r["model"] == name):
            if r["status"] != "ok":
                out.append(f"| {r['runtime']} | {FLOW_NAMES[r['flow']]} | failed: {r.get('error')} |"
                           + " |" * (2 + 3 * len(threads)))
                continue
            size = "-" if r.get("size_bytes") is None else f"{r['size_bytes'] / 1024:.0f}"
            out.append(f"| {r['runtime']} | {FLOW_NAMES[r['flow']]} | {pct(r.get('top1'))} | {size} | "
                       + " | ".join(ms(r["p50_ms"].get(t)) for t in threads) + " | "
                       + " | ".join(x(r["speedup_vs_fp32"].get(t)) for t in threads) + " | "
                       + " | ".join(x(r["speedup_vs_peer"].get(t)) for t in threads) + " |")
        out.append("")
    out += ["### Bars (every edgeship INT8 artifact)", "",
            "Bar: >= 2.5x faster than the FP32 unpruned model on the same runtime, >= 1.3x faster than the peer's "
            "default flow at equal or better top-1, and within 0.5 pt of the FP32 baseline's top-1 (the FP32 "
            "artifact on the same runtime); speed bars at every measured thread count.", "",
            "| model | runtime | vs FP32 | >= 2.5x | vs peer | >= 1.3x | top-1 % (peer) | >= peer | "
            "drop vs FP32 (pt) | <= 0.5 pt | all |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in d["bars"]:
        vf, vp = speedups(b, "speedup_vs_fp32", threads), speedups(b, "speedup_vs_peer", threads)
        out.append(f"| {b['model']} | {b['format']} | {vf} | {verdict(b['faster_2_5x_than_fp32'])} | {vp} | "
                   f"{verdict(b['faster_1_3x_than_peer'])} | {pct(b['top1'])} ({pct(b['peer_top1'])}) | "
                   f"{verdict(b['top1_at_least_peer'])} | {b['drop_vs_fp32_pt']} | "
                   f"{verdict(b['within_0_5pt_of_fp32'])} | {verdict(b['met'])} |")
    return out + bars_met(d["bars"], threads, "every bar")


def speedups(bar: dict, key: str, threads: list[str]) -> str:
    """A bar row's speed-ups at each thread count, ``1 / 2`` style."""
    return " / ".join(x((bar[key] or {}).get(t)) for t in threads)


def bars_met(bars: list[dict], threads: list[str], which: str) -> list[str]:
    """The line under a bars table: the thread counts of its speed-ups and how many artifacts met ``which``."""
    counts = " / ".join(t + " thread" + ("s" if t != "1" else "") for t in threads)
    return ["", f"Speed-ups are given as {counts}. {sum(b['met'] for b in bars)} of {len(bars)} edgeship INT8 "
            f"artifacts meet {which}.", ""]


def rss(cost: dict) -> str:
    """A command's peak RSS as scale.py recorded it; runs before its launcher reported the benchmark's own."""
    if cost.get("rusage"):
        return f"peak RSS {cost.get('peak_rss_mb_largest_process')} MB (largest process)"
    return ("peak RSS of the largest process not shown (recorded before pipeline_cost.LAUNCHER: it held the "
            "benchmark process's own high-water mark, which Linux carries over exec)")


def layer_sums(d: dict) -> dict[str, list[str]]:
    """Per runtime, the range of the summed per-layer times over the timed p50 of the 224x224 models' artifacts, per
    thread count (runs whose layers are untimed give none)."""
    out: dict[str, list[str]] = {}
    for rt in dict.fromkeys(r["runtime"] for r in d["rows"]):
        cells = []
        for t in ("1", "2"):
            v = [p["total_ms"] / r["p50_ms"][t] for r in d["rows"] if r["runtime"] == rt and "_224" in r["model"]
                 and (p := (r.get("profile") or {}).get(t)) and p.get("total_ms") and (r.get("p50_ms") or {}).get(t)]
            cells.append(f"{min(v):.2f}-{max(v):.2f}x" if v else "-")
        if cells != ["-", "-"]:
            out[rt] = cells
    return out


def scale_section(d: dict, title: str = "At deployment sizes: 96x96 and 224x224") -> list[str]:
    """scale.json (issue 20): the peers' method on deployment-size models, thread scaling, pipeline cost."""
    m = d["method"]
    threads = [str(t) for t in m["threads"]]
    quick = f" (QUICK run: {m.get('quick')}; not a verdict)" if d["quick"] else ""
    out = [f"## {title}{quick}", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d['command']}`.", ""]
    out += machine(d["environment"])
    out += [f"- {d.get('machine_note')}: load average (1/5/15 min) at start {d['environment'].get('loadavg')}, "
            f"before the latency runs {d.get('loadavg_before_measuring')}, after {d.get('loadavg_after')}. "
            f"Latency runs took {d.get('measure_s')} s, the whole script {d.get('wall_s')} s.",
            f"- Method: as in the peers section (same contenders, peer flows and host measurement), {m['warmup']} "
            f"warm-up and {m['runs']} timed runs per measurement, {m['repeats']} interleaved repeats. Thread scaling "
            f"= {m['thread_scaling']}"
            + (f"; paired (the bar's) = {m['thread_scaling_paired']}" if m.get("thread_scaling_paired") else "")
            + f". Per-layer profiles: {m['profile']}.", ""]
    for name, info in d["models"].items():
        sizes, fp, comp = info.get("data_sizes") or {}, info.get("fp32") or {}, info.get("compressed") or {}
        c, h, w = info["input"]
        acc = (f"torch FP32 top-1 {pct(info['torch_fp32_top1'])} % on {sizes.get('test')} test images"
               if info["accuracy_measured"] else "**random weights**: latency, size and memory only (top-1 not an "
               "accuracy)")
        ck = info.get("checkpoint") or {}
        trained = ""
        if ck:
            tm = ck.get("metrics") or {}
            trained = (f" Checkpoint `{ck['checkpoint']}`: trained on {tm.get('train_samples')} images for "
                       f"{tm.get('epochs')} epochs in {tm.get('wall_s') or 0:.0f} s ({tm.get('threads')} threads), "
                       f"test top-1 {pct(tm.get('test_top1'))} % on the recipe's test split.")
        out += [f"### {name} ({c}x{h}x{w})", "",
                f"Recipe `{info['recipe']}`; {acc}; MACs {fp.get('macs'):,} -> {comp.get('macs'):,}, params "
                f"{fp.get('params'):,} -> {comp.get('params'):,}; passes "
                f"`{json.dumps([p['name'] for p in info.get('passes') or []])}`.{trained}", "",
                "| runtime | contender | top-1 % | size KiB | peak RSS MB | "
                + " | ".join(f"p50 ms {t}T" for t in threads) + " | " + " | ".join(f"vs FP32 {t}T" for t in threads)
                + " | " + " | ".join(f"vs peer {t}T" for t in threads)
                + " | 1T/2T | 1T/2T paired | float fallbacks | layout ops |",
                "|---|---|---|---|---|" + "---|" * (3 * len(threads) + 4)]
        for r in (r for r in d["rows"] if r["model"] == name):
            if r["status"] != "ok":
                out.append(f"| {r['runtime']} | {FLOW_NAMES[r['flow']]} | failed: {r.get('error')} |"
                           + " |" * (7 + 3 * len(threads)))
                continue
            prof = (r.get("profile") or {}).get(threads[0]) or {}
            size = "-" if r.get("size_bytes") is None else f"{r['size_bytes'] / 1024:.0f}"
            top1 = pct(r.get("top1")) if info["accuracy_measured"] else "n/a"
            falls = "-" if not prof else f"{len(prof.get('float_fallbacks') or [])} of {prof.get('compute_layers')}"
            layout = ("-" if not prof else f"{ms(prof['layout_conversion_ms'])} ms"
                      if prof.get("layout_conversion_ms") is not None else f"{prof.get('layout_conversions')} ops")
            out.append(f"| {r['runtime']} | {FLOW_NAMES[r['flow']]} | {top1} | {size} | "
                       f"{ms(r.get('peak_rss_mb'))} | " + " | ".join(ms(r["p50_ms"].get(t)) for t in threads) + " | "
                       + " | ".join(x(r["speedup_vs_fp32"].get(t)) for t in threads) + " | "
                       + " | ".join(x(r["speedup_vs_peer"].get(t)) for t in threads)
                       + f" | {x(r.get('thread_scaling'))} | {x(r.get('thread_scaling_paired'))} | {falls} "
                       f"| {layout} |")
        cost = info.get("pipeline_cost") or {}
        ex, tr = cost.get("export") or {}, cost.get("train") or {}
        out += ["", f"Pipeline cost (`edgeship export --no-measure` of the recipe, cold stage cache"
                f"{'' if not cost.get('stages_cached') else ', cached: ' + ', '.join(cost['stages_cached'])}): "
                f"{ex.get('wall_s')} s wall, {rss(ex)}, tree PSS {ex.get('peak_pss_mb_tree_sampled')} MB (sampled)"
                + (f"; training the checkpoint: {tr.get('wall_s')} s wall, {rss(tr)}" if tr else "") + ".", ""]
    out += ["### Where the INT8 artifacts' time goes (per-layer profiles, 1 thread)", "",
            "The runtime's own counters (ONNX Runtime's profiler, OpenVINO's PERF_COUNT, LiteRT's C API profiler; "
            "a run from before edgeship read that profiler lists LiteRT's ops untimed): the three costliest op "
            "types, the compute layers that ran in float kernels, and the layout conversions (Transpose, "
            "ReorderInput/ReorderOutput, Reorder, TRANSPOSE).", ""]
    for r in (r for r in d["rows"] if r["status"] == "ok" and r["precision"].startswith("int8")):
        prof = (r.get("profile") or {}).get(threads[0])
        if not prof:
            continue
        ops = sorted((prof.get("by_op_ms") or {}).items(), key=lambda kv: -kv[1])[:3]
        top = ", ".join(f"{op} {ms(v)} ms" for op, v in ops) or "untimed"
        falls = prof.get("float_fallbacks") or []
        layout = (f"{ms(prof['layout_conversion_ms'])} ms of layout conversions"
                  if prof.get("layout_conversion_ms") is not None else f"{prof.get('layout_conversions')} layout ops")
        out.append(f"- {r['model']}, {r['runtime']}, {FLOW_NAMES[r['flow']]}: {top} (of {ms(prof.get('total_ms'))} "
                   f"ms summed); {len(falls)} of {prof.get('compute_layers')} compute layers in float"
                   + (f" ({', '.join(falls[:3])}{', ...' if len(falls) > 3 else ''})" if falls else "")
                   + f"; {layout}.")
    sums = layer_sums(d)
    if sums:
        out += ["", "Summed layer times over the timed p50, every artifact of the 224x224 models (range by runtime; "
                "1 thread / 2 threads): " + "; ".join(f"{rt} {' / '.join(v)}" for rt, v in sums.items()) + "."]
    spread = sorted((max(v) - min(v)) / min(v) for r in d["rows"] for v in (r.get("p50_repeats") or {}).values()
                    if v and min(v) > 0)
    if spread:
        out += ["", f"One artifact's repeats spread by a median {100 * statistics.median(spread):.0f} % ((max - min) / "
                f"min over {len(spread)} artifact-thread pairs; 90th percentile "
                f"{100 * spread[int(0.9 * len(spread))]:.0f} %)."]
    out += ["", "### Bars (issue 20: every edgeship INT8 artifact)", "",
            f"Bars: >= {d['bars_stated']['vs_fp32']}x faster than the FP32 unpruned model and >= "
            f"{d['bars_stated']['vs_peer']}x faster than the peer's default flow at every measured thread count; "
            f"within {d['bars_stated']['max_drop_pt']} pt of the FP32 artifact's top-1 where accuracy is measured; "
            f"2-thread p50 >= {d['bars_stated']['thread_scaling_224']}x faster than 1-thread for the 224x224 "
            "models (judged on the paired ratio where the run has one). n/a: not judged for that model.", "",
            "| model | runtime | vs FP32 | >= 2.5x | vs peer | >= 1.3x | drop vs FP32 (pt) | <= 0.5 pt | 1T/2T | "
            "1T/2T paired | >= 1.6x | all |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    na = "n/a"
    for b in d["bars"]:
        vf, vp = speedups(b, "speedup_vs_fp32", threads), speedups(b, "speedup_vs_peer", threads)
        acc = "within_0_5pt_of_fp32" in b
        two = "two_threads_1_6x" in b
        out.append(f"| {b['model']} | {b['format']} | {vf} | {verdict(b['faster_2_5x_than_fp32'])} | {vp} | "
                   f"{verdict(b['faster_1_3x_than_peer'])} | {b.get('drop_vs_fp32_pt') if acc else na} | "
                   f"{verdict(b['within_0_5pt_of_fp32']) if acc else na} | {x(b.get('thread_scaling'))} | "
                   f"{x(b.get('thread_scaling_paired'))} | {verdict(b['two_threads_1_6x']) if two else na} | "
                   f"{verdict(b['met'])} |")
    return out + bars_met(d["bars"], threads, "every bar that applies to them")


def cost_section(d: dict) -> list[str]:
    e = d["export"]
    peak = max(e["peak_rss_mb_largest_process"], e["peak_pss_mb_tree_sampled"])
    quick = " (QUICK run: reduced settings, not a verdict)" if d["quick"] else ""
    if not d.get("complete", True):
        quick += f" (PARTIAL run: cut off after {len(d['rows'])} rows)"
    out = [f"## The pipeline's own cost{quick}", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d['command']}`: `edgeship {e['command']}` "
           f"on `{d['recipe']}` in a subprocess, stage cache empty, training excluded (the checkpoint existed or "
           f"was trained first), {d['threads']} torch threads.", ""]
    out += machine(d["environment"])
    out += [f"- Started {d['environment'].get('time_utc')} UTC; load average at start "
            f"{d['environment'].get('loadavg')}, at the end {e.get('loadavg_after')}.", "",
            f"Whole `edgeship export` (compression, lowering, verification on the test split, host measurement, "
            f"report): **{e['wall_s']:.1f} s** wall ({e['cpu_user_s']} s user + {e['cpu_sys_s']} s system CPU), "
            f"peak RSS **{e['peak_rss_mb_largest_process']:.0f} MB** in its largest process (wait4) and "
            f"{e['peak_pss_mb_tree_sampled']:.0f} MB PSS for the whole process tree (sampled every "
            f"{e.get('sample_s', 0.05) * 1000:.0f} ms); exit code {e['exit_code']}.", "",
            f"Bar: under {d['bar']['wall_s'] / 60:.0f} minutes: {verdict(d['met']['wall'])} ({e['wall_s']:.0f} s); "
            f"under {d['bar']['peak_rss_mb'] / 1024:.0f} GiB: {verdict(d['met']['ram'])} ({peak:.0f} MB).", "",
            "| stage | wall s | peak PSS MB (process tree, sampled) |", "|---|---|---|"]
    out += [f"| {s['stage']} | {s['wall_s']:.1f} | {ms(s['peak_pss_mb'])} |" for s in e["stages"]]
    rec = d.get("recorded_by_export") or {}
    if rec.get("passes"):
        out += ["", "As recorded by export itself (report.json): "
                + ", ".join(f"{p['stage']} {p['wall_s']} s" for p in rec["passes"]) + "; "
                + ", ".join(f"{t['name']} lowered in {t['lower_s']} s"
                            for t in rec.get("targets", []) if t.get("lower_s"))
                + "."]
    if rec.get("final_top1_test") is not None:
        arts = ", ".join(f"{k} {pct(v)}" for k, v in (rec.get("targets_top1_test") or {}).items())
        out += ["", f"Test top-1 of this run: FP32 {pct(rec.get('baseline_top1_test'))} %, compressed torch model "
                f"{pct(rec['final_top1_test'])} %; artifacts: {arts}."]
    if rec.get("artifact_sizes"):
        bar = d.get("size_bar") or {}
        verdict_line = (f" Size bar on this run: {'met' if bar.get('met') else 'missed'}." if bar else "")
        out += ["", "Artifact sizes of this run, as export reports them: the files a device loads (the sidecar "
                "model.json not counted; runs before 2026-11-26 06:30 UTC counted it, about 2 KiB). / FP32: export's "
                "`size_vs_fp32`, those files against the same format's FP32 "
                "artifact of the input model, and of the compressed model (quantization's share alone). The backends "
                "issue's bar: every INT8 artifact at most 1/3.5 = 0.286 of the input model's." + verdict_line
                + " For ONNX files, the bytes by content:", "",
                "| target | format | precision | KiB | / FP32 of input | / FP32 of compressed | ONNX: int8 weights / "
                "float (scales, biases) / zero points / graph, names, metadata (KiB) |",
                "|---|---|---|---|---|---|---|"]
        for name, a in rec["artifact_sizes"].items():
            ob = a.get("onnx_bytes")
            parts = " / ".join(f"{ob[k] / 1024:.1f}" for k in ("int8_weights", "float", "zero_points",
                                                               "graph_names_metadata")) if ob else "-"
            r = a.get("size_vs_fp32") or {}
            vs_input, vs_compressed = (f"{r[k]:.3f}" if r.get(k) is not None else "-"
                                       for k in ("input_model", "compressed_model"))
            out.append(f"| {name} | {a['format']} | {a['precision']} | {a['size_bytes'] / 1024:.1f} | "
                       f"{vs_input} | {vs_compressed} | {parts} |")
    return out + [""]


def passes_summary(passes: list[dict]) -> str:
    """`drop 4, prune 0.45/4, KD 5` from a recipe's passes: the knobs the sweep varies."""
    out = []
    for p in passes:
        if p["name"] == "drop_blocks":
            out.append(f"drop {p['blocks']}")
        elif p["name"] == "prune":
            out.append(f"prune {p.get('macs_ratio') or p.get('channel_ratio')}/{p.get('round_to') or 1}"
                       + (f" sw {p['spatial_weight']}" if p.get("spatial_weight") else ""))
        elif p["name"] == "distill":
            out.append(f"KD {p.get('epochs')}")
    return ", ".join(out)


def sweep_section(results: Path) -> list[str]:
    """One row per model and format of each sweep/*.json (peers.py runs of recipe variants)."""
    files = sorted((results / "sweep").glob("*.json"))
    if not files:
        return []
    out = ["## Depth and width sweep", "",
           "Each file in `benchmarks/results/sweep/` is a full `benchmarks/peers.py` run (same method as above) of "
           "one recipe from `benchmarks/recipes/sweep/` (`--recipe NAME=benchmarks/recipes/sweep/NAME.yaml "
           "--models NAME`; `uniform_nearest_rounding.json` ran two, named in their headers). Passes: `drop N` = "
           "drop_blocks blocks, `prune r/k` = prune macs_ratio (of what "
           "drop_blocks left) / round_to, `KD e` = distill epochs; all end with the demo's QAT. Speed-ups 1 thread "
           "/ 2 threads; bars as above. FP32 top-1 tells the checkpoints apart: a rerun uses the one in "
           "`checkpoints/` (what `edgeship train` writes today), so rows run on an earlier checkpoint do not "
           "reproduce exactly (see the discussion). † OpenVINO timed through `request.infer({0: x})` (the "
           "runner before commit 937dc5a), whose 25-46 us of binding overhead per call understates its speed-ups "
           "(benchmarks/results/runner_overhead.json). ‡ Pruned with torch-pruning's rounding (before commit "
           "0a627d7: at least round_to channels from every group at each step, whatever the ratio), so the "
           "recipe gives a different model today.", "",
           "| file | FP32 top-1 % | passes | MACs vs FP32 | runtime | top-1 % (peer) | vs FP32 | vs peer | bars met |",
           "|---|---|---|---|---|---|---|---|---|"]
    for f in files:
        d = json.loads(f.read_text())
        for name, m in d["models"].items():
            ratio = m["compressed"]["macs"] / m["fp32"]["macs"]
            for b in (b for b in d["bars"] if b["model"] == name):
                checks = ("faster_2_5x_than_fp32", "faster_1_3x_than_peer", "top1_at_least_peer",
                          "within_0_5pt_of_fp32")
                met = [c for c in checks if b[c]]
                mark = "" if b["format"] != "openvino" or d["method"].get("openvino_call") else " †"
                rounding = "" if d["method"].get("prune_rounding") else " ‡"
                sp = " / ".join(x(b["speedup_vs_fp32"].get(t)) for t in sorted(b["speedup_vs_fp32"])) + mark
                pp = " / ".join(x(b["speedup_vs_peer"].get(t)) for t in sorted(b["speedup_vs_peer"])) + mark
                out.append(f"| `{f.name}` | {pct(m['torch_fp32_top1'])} | {passes_summary(m['passes'])}{rounding} | "
                           f"{ratio:.3f} | {b['format']} | "
                           f"{pct(b['top1'])} ({pct(b['peer_top1'])}) | {sp} | {pp} | {len(met)} of 4 |")
    return out + [""]


def size_section(d: dict) -> list[str]:
    """size_scaling.json: INT8/FP32 file size per format against the model's size."""
    out = ["## INT8 size against model size", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d['command']}`: seeded random "
           "initializations of the zoo models (size depends on the architecture only), FP32 and INT8 "
           "(post-training, each backend's quantizer) artifacts of each format from `edgeship export`. "
           f"Each cell: the INT8 file against the same model's FP32 file of that format (quantization's share "
           f"alone); '(met)' where it is at most {d['bar']:.3f} (1/3.5). The backends issue's bar is judged against "
           "the input model's FP32 file (the pipeline-cost section has the demo's).", "",
           "| model | params | weights per output channel | ONNX | OpenVINO IR | TFLite |", "|---|---|---|---|---|---|"]
    for m in d["models"]:
        cells = []
        for fmt in ("onnx", "openvino", "tflite"):
            c = m["formats"].get(fmt) or {}
            r = c.get("ratio")
            cells.append("-" if r is None else f"{r:.3f}" + (" (met)" if c.get("bar_met") else ""))
        out.append(f"| {m['model']} | {m['params']:,} | {m['weights_per_output_channel']} | "
                   + " | ".join(cells) + " |")
    return out + [""]


def kib(v) -> str:
    return "-" if v is None else f"{v / 1024:,.1f}"


def profile_text(p: dict | None) -> list[str]:
    """methods.json's profile: what data and fine-tuning budget the table's numbers come from."""
    if not p:
        return []
    ft = p["fine_tune_samples_per_epoch"]
    data = p["data"] if isinstance(p["data"], str) else (
        f"{p['data']['test_size']:,} test images, {p['data']['val_size']:,} validation, "
        f"{p['data']['calib_size']:,} calibration, for {p['data']['applies_to']}")
    return [f"Profile `{p['name']}`: data: {data}; " + (f"{p['checkpoints']}; " if p.get("checkpoints") else "")
            + f"fine-tuning images per epoch: {ft['deep_compression']:,} for Deep Compression, "
            f"{ft['other methods']:,} for the other methods (epochs as listed below the table); mixed precision's "
            f"per-layer sensitivity on {p['mixed_precision_eval_samples']:,} validation images.", ""]


def methods_section(d: dict, title: str = "Compression methods side by side") -> list[str]:
    """methods.json: every compression method on the reference models, side by side (methods_full.json: the rows of
    the full profile run so far, under their own title)."""
    quick = " (QUICK run: the quick profile below, fewer test and fine-tuning images)" if d["quick"] else ""
    if not d.get("complete", True):
        quick += f" (PARTIAL run: cut off after {len(d['rows'])} rows)"
    lat = d["latency"]
    out = [f"## {title}{quick}", "", *([d["note"].capitalize() + ".", ""] if d.get("note") else []),
           *profile_text(d.get("profile")),
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d['command']}` at commit "
           f"{(d.get('commit') or '?')[:7]} in {d['wall_s'] / 60:.0f} min "
           f"(load average at start {d['environment'].get('loadavg')}, after {d.get('loadavg_after')})"
           + ("; the rows it did not run were kept (`--merge`) from earlier runs: " + "; ".join(
               f"{', '.join(e['rows'])} by `{e['command']}` at commit {(e.get('commit') or '?')[:7]} in "
               f"{e['wall_s'] / 60:.0f} min" + (f" (its note then: {e['note']})" if e.get("note") else "")
               for e in d["earlier_runs"]) if d.get("earlier_runs") else "") + ".", ""]
    out += machine(d["environment"])
    tests = sorted({f"{r['test_samples']:,}" for r in d["rows"]})
    text = ("Each row is one `edgeship export` of the model's recipe with the method's passes; top-1 on the "
            f"{' / '.join(tests)} test images with the artifact's own runtime; drop against the model's FP32 ONNX "
            "artifact; MACs of the compressed model; size: the files a device loads; zip: the same files zipped "
            "(deflate); coded / packed: Deep Compression's size (sparse relative indices and cluster indices "
            "Huffman-coded, codebooks, other floats at 32 bits) for `cluster`, the size at the trained bit width "
            "for `lowbit` (the artifacts hold those weights as int8 codes: no runtime here runs fewer bits); p50: "
            f"one inference at batch 1, {lat['threads']} thread, {lat['runs']} runs after {lat['warmup']} warm-up, "
            f"{lat['how']}; passes s: wall time of the method's passes (their fine-tuning budgets, images per epoch "
            "and epochs, are in the list below the table); 'cached' where the stage cache served them.")
    out += ["", text, "",
            "| model | method | target | top-1 % | drop pt | MACs | size KiB | zip KiB | coded / packed KiB | "
            "p50 ms | passes s | within 2 pt |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        coded = next((s.get("deep_compression", {}).get("bytes") or s.get("packed_bytes") for s in r["stages"]
                      if "deep_compression" in s or "packed_bytes" in s), None)
        wall = f"{r['pass_wall_s']}" + (" (cached)" if r["all_cached"] else "")
        for t in r["targets"]:
            ok = t.get("within_2pt")
            cell = "-" if ok is None else ("yes" if ok else f"**no**: {r.get('why_off') or 'not explained'}")
            top1 = pct(t["top1"]) if t["status"] == "ok" else f"failed: {t['error']}"
            drop = "-" if t.get("drop_pt") is None else f"{t['drop_pt']:+.2f}"
            out.append(f"| {r['model']} | {r['method']} | {t['format']} {t['precision']} | {top1} | {drop} | "
                       f"{r['final_macs']:,} | {kib(t['size_bytes'])} | {kib(t['zip_bytes'])} | {kib(coded)} | "
                       f"{ms(t['p50_ms_1t'])} | {wall} | {cell} |")
    out += ["", "What each method is:", ""]
    seen = set()
    for r in d["rows"]:
        if r["method"] not in seen:
            seen.add(r["method"])
            loads = "; ".join(f"{q['model']} {q['loadavg_after']}" for q in d["rows"]
                              if q["method"] == r["method"] and q.get("loadavg_after"))
            out.append(f"- `{r['method']}`: {r['what']}; passes `{json.dumps(r['passes'])}`"
                       + (f" (load average after the row, beside its p50: {loads})" if loads else ""))
    for r in d["rows"]:
        study = r.get("early_exit")
        if not study:
            continue
        names = [e["exit"] for e in study["exits"]]
        out += ["", f"Early exit on {r['model']} (one FP32 ONNX artifact per exit, each run with ONNX Runtime on the "
                f"{study['test_samples']:,} test images and timed at batch 1, 1 thread): "
                + "; ".join(f"{e['exit']}: top-1 {pct(e['top1'])} %, {e['macs']:,} MACs, p50 {ms(e['p50_ms_1t'])} ms"
                            for e in study["exits"]) + ". An input leaves at the first exit whose top softmax "
                "probability reaches the threshold; mean latency one pass: the exit artifact's own p50 (what a "
                "multi-output artifact would cost), re-run: the per-exit artifacts run one after another until one "
                "is confident (what these separate artifacts cost).", "",
                "| threshold | exit rates (" + " / ".join(names) + ") | top-1 % | mean MACs | mean ms one pass | "
                "mean ms re-run |", "|---|---|---|---|---|---|"]
        for t in study["thresholds"]:
            out.append(f"| {t['threshold']} | {' / '.join(f'{100 * v:.1f}%' for v in t['exit_rates'])} | "
                       f"{pct(t['top1'])} | {t['mean_macs']:,} | {ms(t['mean_ms_one_pass'])} | "
                       f"{ms(t['mean_ms_rerun'])} |")
    bars = d["bars"]["deep_compression"]
    if bars:
        bar = next(iter(bars.values()))["bar"]
        out += ["", f"Deep Compression's bar (pruning + clustering + Huffman coding; {bar}):", "",
                "| model | FP32 ONNX KiB | coded KiB | smaller by | vs 4 bytes/param | clustered ONNX zip KiB | "
                "FP32 top-1 % | top-1 % | drop pt | bar |", "|---|---|---|---|---|---|---|---|---|---|"]
        for model, b in bars.items():
            out.append(f"| {model} | {kib(b['fp32_artifact_bytes'])} | {kib(b['deep_compression_bytes'])} | "
                       f"{b['ratio_vs_fp32_artifact']:.1f}x | {b['ratio_vs_fp32_params']:.1f}x | "
                       f"{kib(b['zip_bytes_fp32_artifact'])} | {pct(b['top1_fp32'])} | "
                       f"{pct(b['top1_deep_compression'])} | {b['drop_pt']:+.2f} | {verdict(b['met'])} |")
    return out + [""]


def metric_value(o: dict) -> str:
    v = o.get("value")
    if v is None:
        return "NaN"
    return f"{v:.3f}" if o["metric"] in ("agreement", "top1", "cosine") else f"{v:.1e}"


def zoo_cell(t: dict) -> str:
    if t["status"] != "ok":
        return "**failed**"
    outs = " ".join(metric_value(o) for o in t.get("outputs", {}).values())
    size = f"{t['size_bytes'] / 1e6:.2f} MB" if t.get("size_bytes") else "-"
    return f"ok {outs}<br>{size}, {ms(t.get('p50_ms'))} ms"


def zoo_limit(o: dict | None) -> str:
    """The INT8 cells' limit on an output (the recipe's tolerance, or edgeship's default), e.g. ``; int8 >= 0.95``."""
    if not o or o.get("limit") is None:
        return ""
    better = o["metric"] in ("agreement", "top1", "cosine")
    return f"; int8 {'>=' if better else '<='} {o['limit']:g}"


def zoo_section(d: dict) -> list[str]:
    """The corpus (benchmarks/zoo.py): real pretrained models, every target, every output against the original."""
    targets = ["onnx-fp32", "onnx-int8", "openvino-fp16", "openvino-int8", "tflite-fp32", "tflite-int8"]
    env = d.get("environment", {})
    out = ["## The corpus: real pretrained models from public packages", "",
           f"`benchmarks/zoo.py` on {env.get('time_utc', '?')} UTC: **{d.get('cells_ok')} of {d.get('cells')} "
           "model x target cells ok**. Each model comes from a package that ships its weights (nothing downloaded); "
           "its recipe in `benchmarks/zoo/` declares its inputs and outputs (`io:`) and says where its data comes "
           "from (real or constructed: `benchmarks/zoo/make_data.py`). A cell gives each output's metric against "
           "the original model on the held-out test split (errors: relative error, mean |diff| / mean |original|; "
           "agreement, top-1 and worst cosine: higher is better), the artifact's size and its host p50 for one "
           "sample. The machine (2 cores) was shared with other jobs while this ran (load average per model in "
           "`benchmarks/results/zoo.json`): latencies are indicative only.", "",
           "| model | kind (package) | data | outputs (metric; INT8 limit) | " + " | ".join(targets) + " |",
           "|---|---|---|---|" + "---|" * len(targets)]
    failures = []
    for name, m in d["models"].items():
        about = m.get("about", {})
        first = next((t for t in m["targets"].values() if t.get("outputs")), {})
        int8 = next((t["outputs"] for n, t in m["targets"].items() if n.endswith("int8") and t.get("outputs")), {})
        outs = ", ".join(f"{k} ({o['metric']}{zoo_limit(int8.get(k))})" for k, o in first.get("outputs", {}).items())
        cells = []
        for tname in targets:
            t = m["targets"].get(tname)
            cells.append("-" if t is None else zoo_cell(t))
            if t is not None and t["status"] != "ok":
                failures.append(f"- {name} / {tname}: {t.get('reason')}")
        out.append(f"| {name} | {about.get('kind', '')} ({about.get('package', '')}) | {about.get('data', '')} | "
                   f"{outs} | " + " | ".join(cells) + " |")
    out += [""]
    notes = [f"- {name}: {m['note']}" for name, m in d["models"].items() if m.get("note")]
    if notes:
        out += ["Notes:", "", *notes, ""]
    if failures:
        out += ["Failures, each with the reason edgeship reported:", "", *failures, ""]
    return out


def distributed_section(d: dict, stream: dict | None) -> list[str]:
    """distributed.json (the demo's distill stage on 1 and 2 processes, and on 2 nodes on loopback) and
    streaming.json (peak RAM of a loaded against a streamed .npz), then what they say about more than one
    machine."""
    st = d["stage"]
    out = ["## Distributed training (torch.distributed) and streamed data", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d['command']}` on "
           f"{d['environment'].get('cores')} cores shared with other engineers' jobs (load averages beside each "
           f"run). The demo's distill stage ({st.get('epochs')} epochs, lr {st.get('lr')}, on the output of "
           f"{st['input']}) on 1 process, on N processes (`--nproc-per-node N`, gloo) and on N nodes of one "
           "process each (`--nnodes N --node-rank K --master-addr 127.0.0.1`: N launchers started as N machines "
           "would start them, meeting over TCP on loopback; whole command = until every node has exited): the same "
           "cores split between the processes, so this measures the overhead and the equivalence of the "
           "distributed path, not a speed-up from more hardware.", "",
           "| nodes | processes | threads each | distill stage s | of which training s | whole command s | "
           "val top-1 % | test top-1 % | peak RSS MB per process | load avg before -> after |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["runs"]:
        out.append(f"| {r.get('nodes', 1)} | {r['processes']} | {r['threads_per_process']} | "
                   f"{r['stage_wall_s']:.0f} | {r['train_wall_s']:.0f} | {r['command_wall_s']:.0f} | "
                   f"{pct(r['val_top1'])} | {pct(r['test_top1'])} | "
                   f"{', '.join(f'{v:.0f}' for v in r['peak_rss_mb_per_process'])} | "
                   f"{r['loadavg_before'][0]:.1f} -> {r['loadavg_after'][0]:.1f} |")
    if stream:
        out += ["", f"Streaming (`benchmarks/results/{stream['_file']}`, `{stream['command']}`): `edgeship train` "
                f"on a {stream['data']['file_mb']:.0f} MB .npz ({stream['data']['samples']:,} Fashion-MNIST images), "
                "peak RSS of the whole process:", "",
                "| data.source.stream | peak RSS MB | training samples | test top-1 % |", "|---|---|---|---|"]
        out += [f"| {str(r['stream']).lower()} | {r['peak_rss_mb']:.0f} | {r['train_samples']:,} | "
                f"{pct(r['test_top1'])} |" for r in stream["runs"]]
    return out + ["", DISTRIBUTED_ARGUMENT, ""]


DISTRIBUTED_ARGUMENT = (
    "**Past one machine: what is measured, what is argued.** Only one 2-core machine was available. Measured here: "
    "that N processes train the model one process does (the test suite checks it to float rounding on a model "
    "without batch norm; the table is the demo's MobileNetV2, whose batch norm sees each rank's share of a batch) "
    "and what the extra processes cost in memory and time on shared cores; and the multi-node path itself, on "
    "loopback: the nodes row above, and in the test suite two `--nnodes 2` launchers, each its own process group "
    "as two machines would run them, meeting at node 0's port (the rendezvous, the gradient all-reduce and the "
    "broadcasts over gloo's TCP transport), where node 0 alone writes the run and the cache, node 1 writes nothing "
    "and exits 0, the model equals the 1-process one, a node whose data is missing stops node 0 with one line and "
    "nothing written, and a node that never comes is given up after `--join-timeout` with one line. Argued, not "
    "measured: a real network and GPUs. Loopback has no latency and no bandwidth limit, so the time a real network "
    "adds is not in the table. The structure bounds it: each step exchanges one all-reduce of the gradients (DDP "
    "buckets it and overlaps it with the backward pass); the teacher's logits are computed once, each rank doing "
    "1/N; each rank reads only its samples (with `stream: true`, from its own disk or a shared file system). The "
    "training time per epoch then falls roughly as 1/N as long as a rank's compute per step (batch_size / N "
    "samples) outweighs the all-reduce of the model's gradients: for the demo's 42k-parameter student that is "
    "about 170 KB per step, negligible on a data-center network, so scaling is bound by the per-rank batch "
    "(batch_size / N must keep an accelerator busy and batch norm meaningful; raise batch_size with N) rather than "
    "by communication. NCCL on GPUs is the same code path with another backend (`device: auto` picks "
    "cuda:LOCAL_RANK and NCCL), never run here. The stage cache is portable between CPU and GPU runs by "
    "construction, not by a test: training returns the model to the CPU before its stage is recorded, cached or "
    "lowered; the cache loads with `map_location=\"cpu\"` (TorchScript entries too); and its key hashes the "
    "model's CPU bytes, the pass options, the data and the torch release without its build tag (a +cpu and a "
    "+cu128 build key alike: tested), not the device, so a GPU run reuses a CPU run's stages and the reverse (a "
    "stage trained on a GPU differs from a CPU one only by float rounding). What does not scale: "
    "everything after the passes (baseline, lowering, verification, measurement) and each stage's evaluation run "
    "once, on rank 0, so with many GPUs they become the floor of a run's time. Several nodes need the same data "
    "path and code on each; the run directory and the stage cache are node 0's.")


def load_lines(d: dict) -> list[str]:
    return [f"- Load average (1/5/15 min) before measuring: {d['loadavg_before_measuring']}, after: "
            f"{d['loadavg_after']}", ""]


def fastest_process(d: dict) -> list[str]:
    """Each configuration's fraction within +-10 % against every architecture's fastest process (its least p50 over
    the repeats), where the repeats spread: a VM's slow state only ever slows a process down. Not the bar's measure
    (the median over the repeats)."""
    per: dict[str, list[bool]] = {}
    for r in d.get("rows") or []:
        if len(r.get("repeats_p50_ms") or []) > 1:
            per.setdefault(f"{r['config']}:{r['threads']}", []).append(
                abs(r["predicted_p50_ms"] / min(r["repeats_p50_ms"]) - 1) <= 0.1)
    if not per or all((s.get("repeat_spread_median_pct") or 0) < 5 for s in d["summary"].values()):
        return []
    return ["", "Against each architecture's fastest process (its least p50 of the repeats: a noisy VM's slow state "
            "only slows a process down; not the bar's measure): within +-10 % " + ", ".join(
                f"{k} {pct(sum(v) / len(v))} %" for k, v in per.items()) + "."]


def predictor_section(d: dict, title: str = "Latency predictor") -> list[str]:
    """predictor.json: the latency predictor's error on architectures it was not fitted on, per configuration."""
    m, cal = d["method"], d["calibration"]
    quick = " (QUICK run: reduced settings, not a verdict)" if d["quick"] else ""
    out = [f"## {title}{quick}", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `benchmarks/predictor.py`: this machine used as the "
           f"device. Calibration ({m['probes']} one-kernel probes, {m['fit_archs']} fitting and "
           f"{m['validation_archs']} validation architectures per configuration) took "
           f"**{cal['minutes']:.0f} minutes** for "
           f"{len(d['summary'])} configurations. Then {m['archs']} random architectures from seeds calibration never "
           f"used ({m['eval_seeds']}), lowered by edgeship's backends, were timed interleaved ({m['rounds']} rounds of "
           f"{m['runs']} runs, {m['repeats']} independent passes, priority: {', '.join(m.get('priority') or ['-'])}) "
           f"and predicted from their artifact files ({m['measured']}). Bar: " + d["bar"] + ".", ""]
    if reused := cal.get("reused"):
        out += [f"**Not calibrated in this run** (`--calibrated`): the predictor file judged here was calibrated at "
                f"{reused['created']} on a machine reporting the same CPU ({reused['facts'].get('cpu')}, "
                f"{', '.join(reused['facts'].get('features') or [])}); the minutes above sum its configurations' own "
                "calibration times, each of which counts the steps they share (sampling, lowering), so they exceed "
                "that calibration's wall time. "
                f"The evaluation started at {d['environment'].get('time_utc', '?')}: the predictor as a user judges "
                "the file they committed, later.", ""]
    out += machine(d["environment"]) + load_lines(d)
    cores = d["environment"].get("cores") or 1
    if (d["loadavg_before_measuring"] or [0])[0] > cores:
        out += [f"**Noisy:** the machine ({cores} cores) was shared with other jobs (load average above its core "
                "count) while this ran. The repeat spread column says how far two interleaved measurements of the same "
                "artifact differ: where it is near or above 10 %, the +-10 % bar cannot be judged from this run, and "
                "the 2-thread rows compete with the other jobs for both cores.", ""]
    anchored = any("at_speed" in s for s in d["summary"].values())
    if anchored:
        out += ["Each process also timed the calibration's anchors: **at the anchors' speed** scales each prediction "
                "by how fast they ran in that process against the calibration (the predictor's own error, without the "
                "machine's drift between calibration and measurement); **process speeds** are those factors.", ""]
    extra = " | at the anchors' speed: within +-10 % / MAPE | process speeds" if anchored else ""
    out += ["| runtime, precision, threads | archs | within +-10 % | MAPE | median error | repeat spread (median) "
            f"| stored validation MAPE / within +-10 %{extra} | bar |",
            "|---|---|---|---|---|---|---|" + ("---|---|" if anchored else "") + "---|"]
    for k, s in d["summary"].items():
        v = s["stored_validation_error"]
        a = s.get("at_speed") or {}
        more = (f" | {pct(a.get('within_10pct'))} % / {a.get('mape_pct')} % | "
                f"{', '.join(f'{f:.2f}' for f in s.get('process_speeds') or [])}") if anchored else ""
        out.append(f"| {k} | {s['n']} | {pct(s['within_10pct'])} % | {s['mape_pct']} % | {s['median_error_pct']:+} % | "
                   f"{s['repeat_spread_median_pct']} % | {v['mape_pct']} % / {pct(v['within_10pct'])} %{more} | "
                   f"{verdict(s['bar_met'])} |")
    out += fastest_process(d)
    aside = (d.get("evaluation") or {}).get("processes_set_aside")
    if m.get("max_speed"):
        every = {k: s["with_set_aside_processes"] for k, s in d["summary"].items()
                 if s.get("with_set_aside_processes")}
        out += ["", f"A process whose anchors ran over {m['max_speed']}x their calibration time was measured again in "
                f"a new process (up to {m['retries']} times): {len(aside or [])} set aside" + (
                    " (" + "; ".join(f"{k}: {s['processes_set_aside']}, within +-10 % over every process "
                                     f"{pct(every[k]['within_10pct'])} % / MAPE {every[k]['mape_pct']} %"
                                     for k, s in d["summary"].items() if k in every) + ")" if every else "") + "."]
    slow = slow_processes(d)
    if slow:
        out += ["", "Processes whose anchors ran over 1.3x their calibration time, 2-thread p50 over the same "
                "architecture's 1-thread p50 (median; in the other processes in brackets): " + "; ".join(
                    f"{k}: {a:.2f} ({b:.2f}), {n} process(es)" for k, (a, b, n) in slow.items()) + "."]
    ctx = {k: s for k, s in d["summary"].items() if s.get("in_context")}
    if ctx:
        out += ["", "Forests fitted on kernel times inside the fitting architectures (the runtime's per-layer "
                "counters) instead of the one-kernel probes; in brackets, the same calibration fitted on the probes "
                "alone, on these measurements: within +-10 % / MAPE. " + "; ".join(
                    f"{k}: {', '.join(s['in_context'])}" + (f" ({pct(s['probes_only']['within_10pct'])} % / "
                                                            f"{s['probes_only']['mape_pct']} %)"
                                                            if s.get("probes_only") else "")
                    for k, s in ctx.items()) + "."]
    based = {k: s for k, s in d["summary"].items() if s.get("base_threads") and s.get("kernel_sums")}
    if based:
        out += ["", "At more threads the correction scales the same runtime's 1-thread prediction; in brackets, the "
                "same calibration with its correction on the kernel sums instead, on these measurements: within "
                "+-10 % / MAPE. " + "; ".join(f"{k}: {pct(s['within_10pct'])} % / {s['mape_pct']} % "
                                              f"({pct(s['kernel_sums']['within_10pct'])} % / "
                                              f"{s['kernel_sums']['mape_pct']} %)" for k, s in based.items()) + "."]
    fams = {k: s for k, s in d["summary"].items() if s.get("stored_family_errors")}
    if fams:
        out += ["", "**The error each family's predictions carry** (the file's validation architectures of that "
                "family: count, within +-10 %, MAPE, upper bound), and how many of these timings lie at or below "
                "the bound the predictions stated: " + "; ".join(
                    f"{k}: " + ", ".join(f"{f} {e['n_archs']} archs {pct(e['within_10pct'])} % / {e['mape_pct']} % / "
                                         f"+{e['upper_pct']} %" for f, e in sorted(s["stored_family_errors"].items()))
                    + f", bound covers {pct(s.get('stated_bound_covers'))} %" for k, s in fams.items()) + "."]
    if split := extras_split(d):
        out += ["", "**Architectures with extras** (element-wise operators beside the kernels: "
                f"{', '.join(m.get('extras') or ['prelu, softmax, sigmoid, pad, swap'])}, `archs.EXTRAS`) against "
                "those without: count, within +-10 %, MAPE: " + "; ".join(
                    f"{k}: with {w[0]} {100 * w[1]:.0f} % / {w[2]} %, without {o[0]} {100 * o[1]:.0f} % / {o[2]} %"
                    for k, (w, o) in split.items()) + "."]
    if any(s.get("as_calibrated") for s in d["summary"].values()):
        out += ["", "**Refitted** (`--refit`): the predictor judged above is the calibrated file fitted again from its "
                "kept data sets with this edgeship's fitting; the file as calibrated, on these same measurements, "
                "within +-10 % / MAPE: " + "; ".join(
                    f"{k}: {pct(s['as_calibrated']['within_10pct'])} % / {s['as_calibrated']['mape_pct']} %"
                    for k, s in d["summary"].items() if s.get("as_calibrated")) + "."]
    return out + [""]


def extras_split(d: dict) -> dict[str, tuple[tuple, tuple]]:
    """Per configuration and thread count (a summary key): (count, within +-10 %, MAPE) of the judged architectures
    with extras (their description ends in ``+<extra>...``) and of those without; {} when none has extras."""
    extra = {name for name, a in d.get("archs", {}).items() if " +" in a.get("description", "")}
    if not extra:
        return {}
    out = {}
    within = d["method"].get("extras_formats")  # the formats whose artifacts had them (else every one's)
    for key in d["summary"]:
        if within is not None and key.split(":")[0] not in within:
            continue
        rows = [r for r in d["rows"] if f"{r['config']}:{r['threads']}" == key and r.get("error_pct") is not None]

        def stats(on: list[dict]) -> tuple:
            e = [abs(r["error_pct"]) for r in on]
            return (len(e), sum(x <= 10 for x in e) / len(e), round(statistics.mean(e), 1)) if e else (0, None, None)
        out[key] = (stats([r for r in rows if r["arch"] in extra]), stats([r for r in rows if r["arch"] not in extra]))
    return out


def slow_processes(d: dict, cut: float = 1.3) -> dict[str, tuple[float, float, int]]:
    """Per configuration with processes whose anchors ran over ``cut`` x their calibration time: the median of
    2-thread p50 / 1-thread p50 (same architecture) in those processes and in the others, and how many there were."""
    rows = {(r["config"], r["threads"], r["arch"]): r for r in d["rows"]}
    out = {}
    for config in dict.fromkeys(r["config"] for r in d["rows"]):
        slow, other, n = [], [], set()
        for (c, t, a), r in rows.items():
            one = rows.get((c, 1, a))
            if c != config or t != 2 or one is None:
                continue
            for i, (p50, f) in enumerate(zip(r.get("repeats_p50_ms") or [], r.get("speeds") or [])):
                (slow if f > cut else other).append(p50 / one["measured_p50_ms"])
                n |= {i} if f > cut else set()
        if slow and other:
            out[config] = (statistics.median(slow), statistics.median(other), len(n))
    return out


def predictor_zoo_section(d: dict, title: str = "Latency predictor on pretrained models",
                          run: str = "the run above") -> list[str]:
    """predictor_zoo.json: the latency predictor on models packages ship with their weights."""
    s, m = d["summary"], d["method"]
    out = [f"## {title}", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `benchmarks/predictor_zoo.py` with the predictor "
           f"file of {run} (calibrated {d['predictor_created']}): each model as its package ships it, lowered "
           f"to every configuration, timed with the calibration's anchors interleaved in one process per thread count "
           f"({m['repeats']} processes), predicted from its artifact. **Left out**: operators no kernel of the "
           "predictor models and its validation architectures did not hold; a prediction that leaves any out backs "
           f"no budget (`unverified`). Of {s['artifacts_timed']} artifact timings, {s['backs_a_budget']} are "
           f"predictions that back a budget; of those, {s['backed_within_10pct']} within +-10 % of the measured p50 "
           f"(MAPE {s['backed_mape_pct']} %), and {s['backed_under_upper_bound']} measured under the prediction's "
           f"upper bound (prediction + the error bound a budget adds: what a budget is judged on); under it in "
           f"all rows, backed or not: {s['all_under_upper_bound']}.", ""]
    out += machine(d["environment"]) + load_lines(d)
    out += ["| model (input) | runtime, precision, threads | kernels | left out | measured p50 ms | predicted p50 ms "
            "| error | at the anchors' speed | upper bound ms | backs a budget |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        shape = "x".join(str(v) for v in d["models"][r["model"]]["input"])
        left = ", ".join(f"{k} x{v}" for k, v in (r.get("left_out", r["unmodelled_ops"]) or {}).items()) or "-"
        pred = r.get("predicted_p50_ms")
        err = "-" if pred is None else f"{r['error_pct']:+} %"
        speed = "-" if pred is None else f"{r['error_at_speed_pct']:+} %"
        out.append(f"| {r['model']} ({shape}) | {r['config']}:{r['threads']} | {r['kernels']} | {left} | "
                   f"{ms(r['measured_p50_ms'])} | {ms(pred) if pred is not None else '-'} | {err} | {speed} | "
                   f"{ms(r['p50_upper_ms']) if pred is not None else '-'} | "
                   f"{'yes' if r.get('backs_a_budget') else 'no'} |")
    return out + [""]


def rounds(t: dict | None) -> str:
    """A latency the search timed in rounds: their spread and count beside the median."""
    return "" if not t else f" ({ms(t['spread_ms'][0])}-{ms(t['spread_ms'][1])}, {len(t['p90_rounds_ms'])} rounds)"


def search_section(d: dict, title: str = "Budget-driven search per device") -> list[str]:
    """search*.json: budget-driven search per device on one recipe's model, against its hand-written passes."""
    ref, bar = d["reference"], d["bar"]
    quick = " (QUICK run: reduced settings, not a verdict)" if d.get("quick") else ""
    b = d.get("budgets") or {}
    out = [f"## {title}{quick}", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `benchmarks/search.py`: one export of "
           f"`{d['recipe']}` ({d['export_wall_s']:.0f} s), whose hand-written passes give `{ref['target']}` and whose "
           "`search:` entries give each other target a model of its own within its latency budget (candidates "
           "measured on this machine, the device of every target here). Then the winners and the hand-written "
           f"artifact were timed interleaved in one process ({d['method']['repeats']} passes of "
           f"{d['method']['rounds']} rounds x {d['method']['runs']} runs, 1 thread). This 2-core machine is shared "
           "with other engineers' jobs: latencies are noisy, hence the interleaving and the load average recorded "
           "beside them.", ""]
    out += machine(d["environment"])
    out += [f"- Load average (1/5/15 min) before measuring: {d['loadavg_before_measuring']}, after: "
            f"{d['loadavg_after']}"]
    if d.get("quick_settings"):
        out.append(f"- Quick settings (`--quick`, the reference and the winners alike): {d['quick_settings']}")
    if b.get("per_target_ms"):
        j = b["judged_reference_p90"]
        out.append(f"- Budgets: {b['how']}: the hand-written artifact's p90 {ms(j['p90_ms'])} ms (rounds "
                   f"{', '.join(ms(v) for v in j['p90_repeats'])}, timed after its own export of "
                   f"{d['reference_export_wall_s']:.0f} s) -> "
                   + ", ".join(f"`{t}` {ms(v)} ms" for t, v in b["per_target_ms"].items()))
    elif b.get("per_target_vs_reference"):
        out.append(f"- Budgets: {b['how']}: " + ", ".join(f"`{t}` {v:g}x" for t, v in
                                                          b["per_target_vs_reference"].items()))
    ft = d.get("fine_tuning")
    if ft:
        pr = ft["candidate_prefix"]["prune"] or {}
        fin = "; ".join(f"`{n}` {f['distill_epochs']} epoch(s) of distill on {f['distill_samples']:,} samples"
                        for n, f in ft["finalists"].items())
        dist, qat = ft["winner_and_reference"]["distill"] or {}, ft["winner_and_reference"]["qat"] or {}
        steps = ft["candidate_prefix"]["prune_steps"]
        out.append(f"- Training per stage: a candidate gets prune's own fine-tuning ({steps} steps, each "
                   f"{pr.get('epochs')} epoch on {pr.get('samples', 0):,} samples); a finalist {fin}; the winner, "
                   f"like the hand-written model, the full recovery (distill {dist.get('epochs')} epochs on the "
                   f"training split, QAT {qat.get('epochs')} epoch on {qat.get('samples', 0):,} samples)")
    out += ["",
            "| model | latency budget | candidates | search (s) | winner: blocks dropped, MACs kept | MACs | "
            "latency the search judged (ms) | measured p50 / p90 (ms) | p50 / p90 vs the hand-written, same passes | "
            "test top-1 | within budget |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            f"| hand-written ({ref['target']}) | - | - | - | {' '.join(ref['passes'])} | {ref['macs']:,} | - | "
            f"{ms(ref['measured']['p50_ms'])} / {ms(ref['measured']['p90_ms'])} | 1 / 1 | "
            f"{pct(ref['test_top1'])} % | - |"]
    for name, s in d["searches"].items():
        w = s.get("winner")
        if w is None:
            out.append(f"| search `{name}` ({s['target']}) | {search_budget(s)} | {s['candidates']} | "
                       f"{s['search_wall_s']:.0f} | none: {s['why']} | - | - | - | - | - | no |")
            continue
        m, vs = w.get("measured") or {}, w.get("vs_reference") or {}
        ratios = f"{vs['p50_ratio']:.3g} / {vs['p90_ratio']:.3g}" if vs else "-"
        if vs and w.get("budget_vs_reference"):
            ratios += f" (budget: {w['budget_vs_reference']:.3g})"
        out.append(f"| search `{name}` ({s['target']}) | {search_budget(s)} | {s['candidates']} | "
                   f"{s['search_wall_s']:.0f} | {w['blocks']}, {w['macs_ratio']} | {(w['macs'] or 0):,} | "
                   f"{ms(w['finalist_latency_ms'])} ({w['finalist_latency_source']}) | {ms(m.get('p50_ms'))} / "
                   f"{ms(m.get('p90_ms'))} | {ratios} | {pct(w['test_top1'])} % | {verdict(w['within_budget'])} |")
    out += ["", f"Bar: the `{bar['roomy_search']}` search's winner at least as accurate as the hand-written recipe "
            f"({verdict(bar['at_least_as_accurate'])}) at equal or lower measured p50, as the median over the "
            "passes of its ratio to the hand-written artifact's in the same pass "
            f"({verdict(bar['equal_or_lower_latency'])}); every winner within its budget when measured (its p90 "
            "ratio within the budget's fraction of the hand-written artifact's judged p90): "
            f"{verdict(bar['every_winner_within_its_budget'])}; two different models: "
            f"{verdict(d['different_models'])}." + (" The roomy search's winner is the hand-written model itself "
                                                    "(same blocks and MACs ratio, same weights)."
                                                    if d.get("winner_is_the_hand_written_model") else ""), ""]
    if d.get("verdict_note"):
        out += [d["verdict_note"], ""]
    for name, s in d["searches"].items():
        out += [f"### Search `{name}`: {s['target']} (budget {search_budget(s)}, top-1 floor "
                f"{pct(s['min_top1'])} %)", "",
                f"Space: blocks dropped {s.get('space', {}).get('blocks')} x MACs kept "
                f"{s.get('space', {}).get('macs_ratio')}; {s['candidates']} candidates, {s['finalists']} finalists, "
                f"{s['search_wall_s']:.0f} s. Why the winner won: {s['why']}."
                + (f" Latency: {s['timing']}." if s.get("timing") else ""), ""]
        if s.get("pareto_png"):
            out += [f"![search {name}: validation top-1 against latency](benchmarks/results/{s['pareto_png']})", ""]
        out += ["| blocks dropped | MACs kept | MACs | val top-1 % | latency judged (ms) | source | within budget "
                "and floor | after a brief fine-tune % | lowered to the target (ms) | |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for c in s.get("candidate_table", []):
            out.append(f"| {c['blocks']} | {c['macs_ratio']} | {(c.get('macs') or 0):,} | {pct(c['top1_val'])} | "
                       f"{ms(c['latency_ms'])}{rounds(c.get('timing'))}{vs_recipe(c.get('vs_recipe'))} | "
                       f"{c['latency_source']} | "
                       f"{'yes' if c['feasible'] else 'no'} | "
                       f"{pct(c['finetuned_top1_val']) if c['finalist'] else '-'} | "
                       f"{ms(c['final_latency_ms']) + rounds(c.get('final_timing')) if c['finalist'] else '-'} | "
                       f"{'**winner**' if c['winner'] else ''} |")
        out.append("")
    return out


def search_budget(s: dict) -> str:
    """A search's latency budget in words: relative to the hand-written model, and/or absolute (ms p90)."""
    if s.get("latency_vs_recipe") is not None:
        return (f"{s['latency_vs_recipe']:g}x the hand-written model's p90 (its median here "
                f"{ms(s.get('recipe_model_p90_ms'))} ms)")
    return f"{s['budget_ms']} ms p90"


def vs_recipe(x: float | None) -> str:
    return f", {x:.3f}x the hand-written" if x is not None else ""


def emulated_section(d: dict) -> list[str]:
    """emulated_arm.json: the demo run's artifacts on the aarch64 runtimes under qemu-user, per catalog device."""
    out = ["## The demo run on an EMULATED Raspberry Pi 4 and 5 (aarch64 runtimes under qemu-user)", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `benchmarks/emulated_arm.py` ({d['run']}). "
           f"{d['label']}. The bar: {d['bar']}." + (f" The run: {d['run_note']}." if d.get("run_note") else ""), "",
           "| device (emulated CPU) | target | runtime | inference precision | agreement with x86 % | top-1 % Arm / "
           "x86 (same samples) | max abs logit diff |", "|---|---|---|---|---|---|---|"]
    for dev, r in d["devices"].items():
        for t in r["targets"]:
            v, prec = t["verification"] or {}, t["inference_precision"] or "-"
            out.append(f"| {dev} ({t['cpu']}) | {t['target']} | {t['runtime']} {t['runtime_version'].split('-')[0]} | "
                       f"{prec.split(' (')[0]}{' *' if ' (' in prec else ''} | "
                       f"{pct(v.get('agreement'))} | {pct(v.get('top1'))} / {pct(v.get('host_top1'))} | "
                       f"{v.get('max_abs_logit_diff', 0):.3g} |")
        for name in r["summary"]["missing"]:
            why = r["summary"].get("errors", {}).get(name) or "no measurement"
            out.append(f"| {dev} | {name} | failed: {why} |||||")
    lpt = [t["inference_precision"] for r in d["devices"].values() for t in r["targets"]
           if " (" in (t["inference_precision"] or "")]
    if lpt:
        out += ["", f"\\* {lpt[0].split(' (', 1)[1].rstrip(')')}."]
    for dev, r in d["devices"].items():
        for name, f in (r.get("flips") or {}).items():
            margins = ", ".join(f"{m:.3g}" for m in f["host_margin_of_flipped"])
            out += ["", f"{dev}, {name}: {f['flipped']} of {f['n']} samples change class; the x86 runtime's lead of "
                    f"its class over the runner-up on them: {margins} "
                    f"(median over all samples {f['host_margin_median_all']:.3g}); outputs differ on "
                    f"{f['samples_with_any_difference']} samples, by up to {f['max_abs_logit_diff']:.3g}."]
            if q := f.get("qdq_reference"):
                out[-1] += (f" Against the QDQ graph's own arithmetic ({q['what']}; top-1 {pct(q['top1'])} %): x86 "
                            f"agrees on {pct(q['x86_agreement'])} % (max logit diff {q['x86_max_abs_logit_diff']:.3g}, "
                            f"top-1 {pct(q['x86_top1'])} %), Arm on {pct(q['arm_agreement'])} % (max logit diff "
                            f"{q['arm_max_abs_logit_diff']:.3g}, top-1 {pct(q['arm_top1'])} %).")
    return out + [""]


def weight_bits_section(d: dict) -> list[str]:
    """qat_weight_bits.json: the demo's qat pass with 8-bit and 7-bit weights; calibrated OpenVINO INT8 with NNCF's
    overflow fix on the first layer and on every layer."""
    out = ["## INT8 weights on x86 without VNNI: 8 against 7 bits", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `benchmarks/qat_weight_bits.py` on "
           f"{', '.join(d['environment']['cpu_features'])} ({d['test_samples']} test samples). "
           f"{d['what'][:1].upper()}{d['what'][1:]}. "
           "`vs graph` is each x86 runtime against the INT8 graph's own arithmetic (its quantize/dequantize "
           "operators computed in float, which is what an ARM device's int32 sums give).", "",
           "| route | weights | top-1 % torch / graph | top-1 % ONNX / OpenVINO / TFLite | ONNX vs graph: agreement %, "
           "max logit diff | OpenVINO vs graph: agreement %, max logit diff |", "|---|---|---|---|---|---|"]

    def vs(r: dict, fmt: str) -> str:
        v = r["vs_graph_arithmetic"].get(fmt)
        return f"{pct(v['agreement'])}, {v['max_abs_logit_diff']:.3g}" if v else "-"

    for r in d["rows"]:
        t = r["top1"]
        out.append(f"| qat | {r['weights']} | {pct(t['torch_qat'])} / {pct(t.get('graph_arithmetic'))} | "
                   f"{pct(t.get('onnx'))} / {pct(t.get('openvino'))} / {pct(t.get('tflite'))} | {vs(r, 'onnx')} | "
                   f"{vs(r, 'openvino')} |")
    for r in (d.get("calibrated_openvino") or {}).get("rows", []):
        t = r["top1"]
        out.append(f"| nncf.quantize ({r['calibration_samples']} samples) | overflow fix: {r['overflow_fix']} | - / "
                   f"{pct(t['graph_arithmetic'])} | - / {pct(t['openvino'])} / - | - | {vs(r, 'openvino')} |")
    return out + [""]


# (result file stem, its section), in the order BENCHMARKS.md gives them; stem None: the section reads several
def prelu_section(d: dict) -> list[str]:
    """prelu_ort.json: ONNX Runtime's PRelu against edgeship's rewrite of it (edgeship.targets.onnx_prelu)."""
    env = d["environment"]
    out = ["## PReLU on ONNX Runtime: the branching kernel and the rewrite", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d.get('command', 'benchmarks/prelu_ort.py')}` "
           f"on {env['cpu']} ({env['cores']} cores; {', '.join(env['cpu_features'])}), {d['seconds']:.0f} s, load "
           f"average {d['loadavg_start']} at the start. ONNX Runtime's PRelu picks x or slope * x per element with a "
           "branch; edgeship writes a PReLU over >= 16384 elements as Relu(x) + slope * Min(x, 0) (the same "
           "function bit for bit; kept float in INT8 artifacts, as the quantizer leaves a PReLU).", "",
           "One PRelu (per-channel slopes) over a map whose elements are negative in the given fraction, one "
           "thread, in one process (medians):", "",
           "| negative elements | elements | PRelu us | rewritten us | same output |", "|---|---|---|---|---|"]
    for r in d["signs"]:
        out.append(f"| {r['negative_fraction']:.0%} | {r['elements']} | {r['prelu_us']} | {r['rewritten_us']} | "
                   f"{'yes' if r['same_output'] else 'NO'} |")
    out += ["", f"MTCNN's pretrained networks lowered by edgeship's ONNX backends with the rewrite and without it; "
            f"edgeship's host measurement (a fresh process per measurement, the runner's random inputs), "
            f"{d['repeats']} alternating repeats of {d['runs']} runs; speed-up = PRelu p50 / rewritten p50 within a "
            "repeat (median over repeats, [min-max]):", "",
            "| model | input | precision | PReLUs rewritten / kept | p50 ms 1T PRelu -> rewritten | speed-up 1T | "
            "p50 ms 2T PRelu -> rewritten | speed-up 2T | every PReLU rewritten: speed-up 1T / 2T | "
            "largest output difference |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["models"]:
        med = {k: statistics.median(v) for k, v in r["p50_ms"].items()}
        sp = r["speedup"]
        out.append(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['precision']} | {r['prelus_rewritten']} / "
                   f"{r['prelus_kept']} | {med['prelu:1']:.3f} -> {med['rewritten:1']:.3f} | {sp['1']['median']:.2f}x "
                   f"[{sp['1']['min']:.2f}-{sp['1']['max']:.2f}] | {med['prelu:2']:.3f} -> {med['rewritten:2']:.3f} | "
                   f"{sp['2']['median']:.2f}x [{sp['2']['min']:.2f}-{sp['2']['max']:.2f}] | "
                   + (f"{r['speedup_all']['1']['median']:.2f}x / {r['speedup_all']['2']['median']:.2f}x | "
                      if "speedup_all" in r else "- | ") + f"{r['max_abs_output_difference']:.3g} |")
    return out + [""]


def prelu_litert_section(d: dict) -> list[str]:
    """prelu_litert.json: a PReLU's slopes on LiteRT, one against one per channel (why the predictor's are)."""
    env = d["environment"]
    h, w = d["map"]
    out = ["## PReLU on LiteRT: one slope against a slope per channel", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d.get('command', 'benchmarks/prelu_litert.py')}` "
           f"on {env['cpu']} ({env['cores']} cores; {', '.join(env['cpu_features'])}), load average "
           f"{d['loadavg_before']} at the start. litert-torch writes a PReLU as RELU, MUL, MUL, SUB (float, also in "
           "an INT8 file); trained models have a slope per channel, each its own, which XNNPACK broadcasts per "
           "position of the channels-last map. A 1x1 depthwise convolution, the PReLU and a global pool over a "
           f"{h} x {w} map, edgeship's TFLite INT8 backend, 1 thread, {d['runs']} timed runs, then as many with "
           "LiteRT's per-operator profiler: the model's p50 and the slopes' MUL.", "",
           "| channels | p50 ms, one slope | p50 ms, per channel | MUL ms, one slope | MUL ms, per channel | "
           "MUL ns per position, per channel | MUL per channel / one slope |", "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        one, per = r["one"], r["per_channel"]
        out.append(f"| {r['channels']} | {one['p50_ms']:.3f} | {per['p50_ms']:.3f} | {one['slowest_mul_ms']:.4f} | "
                   f"{per['slowest_mul_ms']:.4f} | {per['mul_ns_per_position']} | {r['mul_ratio']:.2f}x |")
    return out + [""]


def ort_pool_align_section(d: dict) -> list[str]:
    """ort_pool_align.json: a depthwise convolution aligned through the pool before it (onnx_align.POOLS)."""
    env, m = d["environment"], d["method"]
    out = ["## ONNX Runtime INT8: a depthwise convolution aligned through the pool before it", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d['command']}` "
           f"on {env['cpu']} ({env['cores']} cores), {d['wall_s']:.0f} s. The first {m['archs']} random architectures "
           f"from seed {m['seed']} whose stem (not a multiple of 16 wide) feeds a max pool and a depthwise "
           "convolution, "
           "lowered by edgeship's ONNX INT8 backend with pools passing the alignment (`pools`, shipped) and without "
           "(`plain`); outputs equal bit for bit on 8 random inputs. Side by side in fresh processes "
           f"(`benchlib.time_rows`, {m['repeats']} repeats): a file's p50 over `pools`'s, median [min-max].", "",
           "| seed | architecture | outputs equal | stem, depthwise (cin, cout) plain -> pools | pools p50 ms 1T | "
           "plain / pools 1T | plain / pools 2T | FP32 / pools 1T | FP32 / pools 2T |", "|---" * 9 + "|"]

    def r_(t: dict, k: str) -> str:
        v = t["p50_over_pools"][k]
        return f"{v['median']:.2f}x [{v['min']:.2f}-{v['max']:.2f}]"
    for r in d["rows"]:
        t1, t2 = r["timing"]["1"], r["timing"]["2"]
        k = r["first_kernels_cin_cout"]
        out.append(f"| {r['seed']} | {r['description']} | {r['outputs_equal']} | {k['plain']} -> {k['pools']} | "
                   f"{t1['p50_ms']['pools']:.3f} | {r_(t1, 'plain')} | {r_(t2, 'plain')} | {r_(t1, 'fp32')} | "
                   f"{r_(t2, 'fp32')} |")
    med = d["plain_over_pools_median"]
    return out + ["", f"Median over the architectures, plain / pools: {med['1']:.2f}x at 1 thread, {med['2']:.2f}x at "
                  "2. The stem's input padded to 4 channels is read as 3 (the kernel reader's view).", ""]


def ort_stem_section(d: dict) -> list[str]:
    """ort_stem.json: edgeship's ONNX Runtime INT8 rewrites (tile_slopes, align_narrow, pad_stem_input)."""
    env, m = d["environment"], d["method"]
    out = ["## ONNX Runtime INT8: a stem's fourth input channel, narrow convolutions widened, PReLU slopes tiled", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d.get('command', 'benchmarks/ort_stem.py')}` "
           f"on {env['cpu']} ({env['cores']} cores; {', '.join(env['cpu_features'])}), {d['wall_s']:.0f} s. "
           "Each model lowered by edgeship's ONNX backends; the other INT8 files are built from the same quantized "
           "graph with the rewrites off (plain) or one left out, each with edgeship's outputs bit for bit. "
           f"{m['repeats']} repeats of edgeship's host measurement ({m['runs']} runs, a fresh process each), "
           "round-robin over every file, rotated each repeat; speed-up = reference p50 / p50 within a repeat "
           "(median [min-max]).", ""]
    if d.get("models"):
        out += ["| model | input | weights | INT8 file | rewrites (tile / widen / stem pad) | KiB | p50 ms 1T | p50 ms "
                "2T | vs plain 1T | vs plain 2T | vs FP32 1T | vs FP32 2T |", "|---" * 12 + "|"]

    def sp(r: dict, key: str, t: str) -> str:
        v = r[key][t]
        return f"{v['median']:.2f}x [{v['min']:.2f}-{v['max']:.2f}]"
    models = d.get("models", {})
    for r in d["rows"]:
        info = models.get(r["model"])
        if info is None:
            continue
        rw = r.get("rewrites")
        out.append(f"| {r['model']} | {'x'.join(map(str, info['input'][1:]))} | {info['weights']} | {r['contender']} | "
                   + (f"{rw['tile']} / {rw['widen']} / {rw['stem_pad']}" if rw else "-")
                   + f" | {r['size_bytes'] / 1024:.1f} | {r['p50_ms']['1']:.3f} | {r['p50_ms']['2']:.3f} | "
                   f"{sp(r, 'speedup_vs_plain', '1')} | {sp(r, 'speedup_vs_plain', '2')} | "
                   f"{sp(r, 'speedup_vs_fp32', '1')} | {sp(r, 'speedup_vs_fp32', '2')} |")
    convs = [r for r in d["rows"] if "conv" in r and r["contender"] == "stem_pad"]
    if convs:
        out += [""] * bool(out[-1]) + [
                "One convolution over an image (+ ReLU, random weights), plain against its input padded to 4 "
                "channels (whatever its outputs: the rule's evidence):", "",
                "| convolution | channels in -> out | input | FP32 p50 ms 1T | INT8 plain p50 ms 1T | padded p50 ms "
                "1T | padded vs plain 1T | padded vs plain 2T |", "|---|---|---|---|---|---|---|---|"]
        for r in convs:
            c = r["conv"]
            by = {x["contender"]: x for x in d["rows"] if x["model"] == r["model"]}
            out.append(f"| {c['k']}x{c['k']} stride {c['stride']} | {c['cin']} -> {c['cout']} | "
                       f"{c['input'][0]}x{c['input'][1]} | "
                       f"{by['fp32']['p50_ms']['1']:.3f} | {by['plain']['p50_ms']['1']:.3f} | "
                       f"{r['p50_ms']['1']:.3f} | {sp(r, 'speedup_vs_plain', '1')} | "
                       f"{sp(r, 'speedup_vs_plain', '2')} |")
    return out + [""]


def speed_ratio_section(d: dict) -> list[str]:
    """speed_ratio.json: export's speed_vs_fp32 (side by side) against two separately timed processes."""
    env, m = d["environment"], d["method"]
    out = ["## INT8 against FP32: timed side by side (export's `speed_vs_fp32`) or in separate processes", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d.get('command', 'benchmarks/speed_ratio.py')}` "
           f"on {env['cpu']} ({env['cores']} cores), {d['wall_s']:.0f} s, {m['repeats']} repeats at 1 thread. "
           f"side: {m['side']['processes']} fresh processes timing blocks of {m['side']['block_runs']} runs of each "
           f"in turn, the median over the processes of FP32 p50 / INT8 p50 (export's own call); separate: export's "
           f"host measurement of each ({m['separate']['runs']} runs, its own process). busy: {m['busy']}. Ratio "
           "median [min-max], spread = max / min - 1, and the farthest ratio from the quiet side-by-side median.", "",
           "| pair | condition | side by side | spread | farthest | separate processes | spread | farthest |",
           "|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        for c in ("quiet", "busy"):
            a, b = r[f"{c}_side"], r[f"{c}_separate"]
            out.append(f"| {r['pair']} | {c} | {a['median']:.2f}x [{a['min']:.2f}-{a['max']:.2f}] | "
                       f"{a['spread_pct']:.0f} % | {a['max_off_quiet_side_pct']:.0f} % | {b['median']:.2f}x "
                       f"[{b['min']:.2f}-{b['max']:.2f}] | {b['spread_pct']:.0f} % | "
                       f"{b['max_off_quiet_side_pct']:.0f} % |")
    return out + [""]


def _ratio_cells(ratios: dict, keys: tuple[str, ...]) -> str:
    """Table cells "median x [min-max]" of time_beside ratios, one per key."""
    return " | ".join(f"{ratios[k]['median']:.2f}x [{ratios[k]['min']:.2f}-{ratios[k]['max']:.2f}]" for k in keys)


def prelu_split_section(d: dict) -> list[str]:
    """prelu_split.json: ONNX Runtime INT8 with a convolution's PReLU split by sign, against it left float."""
    env = d["environment"]
    out = ["## ONNX Runtime INT8: a convolution's PReLU split by sign (`onnx_prelu.split_prelu`)", "",
           f"Source: `benchmarks/results/{d['_file']}`, written by `{d.get('command', 'benchmarks/prelu_split.py')}` "
           f"on {env['cpu']} ({env['cores']} cores), {d['seconds']:.0f} s, {d['repeats']} repeats of 3 fresh "
           "processes timing every contender of a row side by side (export's `time_beside`). Ratio: the other's p50 "
           "over the reference's in the same process, median [min-max]: above 1, the reference is faster. "
           f"Shipped rule: split when (C_in / groups) x kernel area + 2 C <= {d['split_max_macs']} and groups = 1.",
           "", "| layer (input) | extra MACs / element | shipped rule splits | none / all, 1 thread | 2 threads |",
           "|---|---|---|---|---|"]
    for r in d.get("layers", []):
        cells = [f"{r[t]['p50_ms']['none']:.3f} / {r[t]['p50_ms']['all']:.3f} ms = "
                 f"{1 / r[t]['p50_over_none']['all']['median']:.2f}x" for t in ("1", "2")]
        out.append(f"| {r['layer']} ({'x'.join(map(str, r['input']))}, groups {r['groups']}) | "
                   f"{r['extra_macs_per_element']} | {'yes' if r['shipped_rule_splits'] else 'no'} | "
                   f"{cells[0]} | {cells[1]} |")
    out += ["", "(none / all: how many times faster the split file ran; below 1, slower.)", "",
            "| model | PReLUs split (shipped / all) | threads | shipped p50 | none / shipped | all / shipped | "
            "FP32 / shipped | mean abs vs FP32 (shipped / none) | face calls as FP32's (shipped / none) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in d.get("models", []):
        o = r["outputs_vs_fp32"]
        for t in ("1", "2"):
            q = r[t]["p50_over_shipped"]
            out.append(f"| {r['model']} {'x'.join(map(str, r['input'][1:]))} | {r['split']['shipped']} / "
                       f"{r['split']['all']} | {t} | {r[t]['p50_ms']['shipped']:.3f} ms | "
                       + _ratio_cells(q, ("none", "all", "fp32"))
                       + f" | {o['shipped']['mean_abs']:.4f} / {o['none']['mean_abs']:.4f} | "
                       f"{o['shipped']['face_call_agreement']:.3f} / {o['none']['face_call_agreement']:.3f} |")
    if d.get("qat"):
        out += ["", "QAT route (the networks fake-quantized as the qat pass does before fine-tuning, ranges observed "
                "on the calibration crops; the QDQ export, no calibration): the shipped rule against no split.", "",
                "| model | PReLUs split | threads | shipped p50 | none / shipped | FP32 / shipped | mean abs vs the "
                "fake-quantized torch model (shipped / none) | vs FP32 (shipped / none) | face calls as FP32's "
                "(shipped / none) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in d.get("qat", []):
        o = r["outputs"]
        for t in ("1", "2"):
            q = r[t]["p50_over_shipped"]
            out.append(f"| {r['model']} {'x'.join(map(str, r['input'][1:]))} | {r['split']['shipped']} | {t} | "
                       f"{r[t]['p50_ms']['shipped']:.3f} ms | " + _ratio_cells(q, ("none", "fp32"))
                       + " | " + " | ".join(f"{o['shipped'][k]:.4f} / {o['none'][k]:.4f}"
                                            for k in ("mean_abs_vs_qat_torch", "mean_abs_vs_fp32"))
                       + f" | {o['shipped']['face_call_agreement_vs_fp32']:.3f} / "
                       f"{o['none']['face_call_agreement_vs_fp32']:.3f} |")
    return out + [""]


def _written_by(d: dict, script: str) -> str:
    """A section's first words: its result file, the command that wrote it and the machine."""
    env = d["environment"]
    return (f"Source: `benchmarks/results/{d['_file']}`, written by `{d.get('command', script)}` on {env['cpu']} "
            f"({env['cores']} cores)")


def hardswish_section(d: dict) -> list[str]:
    """hardswish_tflite.json: LiteRT INT8 with hard swish as one HARD_SWISH against ADD and MULs."""
    f = d["files"]
    how = (f"{d['network']}; {d['calibration']}. {d['repeats']} repeats of 3 fresh processes timing the three files "
           "side by side (export's `time_beside`): a ratio is the file's p50 over `unfused`'s in the same process, "
           "median [min-max].")
    out = ["## LiteRT INT8: hard swish outside XNNPACK (`targets.tflite_hardswish`)", "",
           _written_by(d, "benchmarks/hardswish_tflite.py") + f", {d['seconds']:.0f} s. " + how, "",
           "| file | operators | outside XNNPACK | 1 thread p50 | / unfused | 2 threads p50 | / unfused | "
           "relative error vs FP32 | top-1 as FP32's |", "|---|---|---|---|---|---|---|---|---|"]
    for k in ("unfused", "fused", "fp32"):
        ops = ", ".join(f"{op} {n}" for op, n in f[k]["op_counts"].items() if op in ("HARD_SWISH", "ADD", "MUL"))
        o = d["outputs_vs_fp32"].get(k)
        cells = [f"{d[t]['p50_ms'][k]:.3f} ms | " + ("1" if k == "unfused" else _ratio_cells(
            d[t]["p50_over_unfused"], (k,))) for t in ("1", "2")]
        out.append(f"| {k} | {ops} | {f[k]['not_delegated']} | {cells[0]} | {cells[1]} | "
                   + (f"{o['relative_error']:.4f} | {o['top1_agreement']:.3f} |" if o else "- | - |"))
    if d.get("pretrained"):
        pt = d["pretrained"]
        out += ["", f"{pt['model']}, exported from its corpus recipe (litert-torch route), top-1 on "
                f"{pt['test_samples']} test pages (torch {pt['torch_top1']:.4f}):", "",
                "| file | HARD_SWISH | outside XNNPACK | 1 thread p50 | / unfused | 2 threads p50 | / unfused | "
                "top-1 |",
                "|---|---|---|---|---|---|---|---|"]
        for k in ("unfused", "fused", "fp32"):
            cells = [f"{pt[t]['p50_ms'][k]:.3f} ms | " + ("1" if k == "unfused" else _ratio_cells(
                pt[t]["p50_over_unfused"], (k,))) for t in ("1", "2")]
            out.append(f"| {k} | {pt['files'][k]['op_counts'].get('HARD_SWISH', 0)} | {pt['files'][k]['not_delegated']}"
                       f" | {cells[0]} | {cells[1]} | {pt['top1'][k]:.4f} |")
    return out + [""]


def hardswish_onnx_section(d: dict) -> list[str]:
    """hardswish_onnx.json: ONNX Runtime INT8 with hard sigmoids left float against them as int8 Adds."""
    out = ["## ONNX Runtime INT8: hard sigmoids and hard swishes left float (`targets.onnx_hardswish`)", "",
           _written_by(d, "benchmarks/hardswish_onnx.py") + f", {d['seconds']:.0f} s. {d['repeats']} repeats of 3 "
           "fresh processes timing the three files side by side (export's `time_beside`): a ratio is the file's p50 "
           "over `rewritten`'s in the same process, median [min-max]; `float ops`: operators of ONNX Runtime's "
           "optimized graph computing in float.", ""]

    def rows(part: dict, last: str, cell) -> list[str]:
        lines = ["| file | QLinearAdd | float ops | 1 thread p50 | / rewritten | 2 threads p50 | / rewritten | "
                 f"{last} |", "|---|---|---|---|---|---|---|---|"]
        for k in ("rewritten", "float", "fp32"):
            f = part["files"][k]
            cells = [f"{part[t]['p50_ms'][k]:.3f} ms | " + ("1" if k == "rewritten" else _ratio_cells(
                part[t]["p50_over_rewritten"], (k,))) for t in ("1", "2")]
            lines.append(f"| {k} | {f['op_counts'].get('QLinearAdd', 0)} | {f['n_float_ops']} "
                         f"({', '.join(f['float_ops']) or '-'}) | {cells[0]} | {cells[1]} | {cell(k)} |")
        return lines
    if d.get("pretrained"):
        pt = d["pretrained"]
        out += [f"{pt['model']}, exported from its corpus recipe, top-1 on {pt['test_samples']} test pages (torch "
                f"{pt['torch_top1']:.4f}) and mean absolute difference from torch's logits:", ""]
        diff = pt["mean_abs_logit_diff_vs_torch"]
        out += rows(pt, "top-1 (mean diff)", lambda k: f"{pt['top1'][k]:.4f} ({diff[k]:.4f})")
        out.append("")
    if d.get("files"):
        o = d["outputs_vs_fp32"]
        out += [f"{d['network']}; {d['calibration']}:", ""]
        out += rows(d, "relative error vs FP32", lambda k: f"{o[k]['relative_error']:.4f}" if k in o else "-")
        out.append("")
    return out


def _versions_table(c: dict, ref: str, other: str) -> list[str]:
    """One row per target of two versions of an export timed side by side: ``ref``'s p50 and ``other`` over it at
    1 and 2 threads, and each version's pitch error."""
    out = [f"| target | {ref} p50, 1 thread | {other} / {ref} | {ref} p50, 2 threads | {other} / {ref} | pitch error "
           f"{ref} | {other} |", "|---|---|---|---|---|---|---|"]
    for name, r in c["targets"].items():
        if "1" not in r:
            out.append(f"| {name} | {r[ref]['status']} | | | | | |")
            continue
        cells = [f"{r[t]['p50_ms'][ref]:.3f} ms | {_ratio_cells(r[t][f'p50_over_{ref}'], (other,))}"
                 for t in ("1", "2")]
        out.append(f"| {name} | {cells[0]} | {cells[1]} | {r[ref]['pitch_relative_error']:.3g} | "
                   f"{r[other]['pitch_relative_error']:.3g} |")
    return [*out, ""]


def polyphase_section(d: dict) -> list[str]:
    """polyphase.json: a strided convolution over few input channels as a stride-1 one over its input's phases."""
    out = ["## A long strided first layer over one channel, lowered over its input's phases (`models.polyphase`)", "",
           _written_by(d, "benchmarks/polyphase.py") + f", {d['seconds']:.0f} s. {d['repeats']} repeats of 3 fresh "
           "processes timing a target's two files side by side (export's `time_beside`): a ratio is `plain`'s p50 "
           "over `rewritten`'s in the same process, median [min-max] (above 1: the rewrite is faster).", ""]
    if d.get("crepe"):
        out += [f"{d['crepe']['model']}, exported from its corpus recipe with the rewrite and without; the pitch "
                "output's relative error against torch on the recipe's test frames:", "",
                *_versions_table(d["crepe"], "rewritten", "plain")]
    if d.get("crepe_pad"):
        out += ["Its OpenVINO INT8 file (rewritten, asymmetric activations as its recipe lowers it) with the input's "
                "quantizer moved past the model's own Pad (`targets.openvino_pad`, `moved`) and left where NNCF put "
                "it (`left`: the first layer runs float):", "", *_versions_table(d["crepe_pad"], "moved", "left")]
    if d.get("sweep"):
        sw = d["sweep"]
        targets = list(dict.fromkeys(r["target"] for r in sw["rows"]))
        out += [f"{sw['model']}, the rewrite forced on every target: plain p50 over rewritten, 1 / 2 threads, by "
                "taps per phase (each backend's `polyphase_taps` takes it where its column pays):", "",
                "| taps per phase | " + " | ".join(targets) + " |", "|---|" + "---|" * len(targets)]
        for taps in dict.fromkeys(r["taps_per_phase"] for r in sw["rows"]):
            by = {r["target"]: r for r in sw["rows"] if r["taps_per_phase"] == taps}
            out.append(f"| {taps} | " + " | ".join(f"{by[t]['plain_over_rewritten_1']:.2f}x / "
                                                   f"{by[t]['plain_over_rewritten_2']:.2f}x" for t in targets) + " |")
        out.append("")
    return out


SECTIONS = (
    ("peers", peers_section), ("pipeline_cost", cost_section), (None, sweep_section), ("scale", scale_section),
    ("scale_epyc", lambda d: scale_section(d, "At deployment sizes on an AMD EPYC (AVX-512 VNNI, no AMX)")),
    ("scale_zen5", lambda d: scale_section(d, "At deployment sizes on the AMD EPYC of family 26 (Zen 5: AVX-512 VNNI "
                                             "and AVX-VNNI, no AMX)")),
    ("prelu_ort", prelu_section), ("prelu_litert", prelu_litert_section), ("ort_stem", ort_stem_section),
    ("ort_pool_align", ort_pool_align_section),
    ("prelu_split", prelu_split_section), ("hardswish_tflite", hardswish_section),
    ("hardswish_onnx", hardswish_onnx_section), ("polyphase", polyphase_section),
    ("speed_ratio", speed_ratio_section),
    ("size_scaling", size_section),
    ("methods", methods_section),
    ("methods_full", lambda d: methods_section(d, "Compression methods, full profile (the rows run so far)")),
    ("zoo", zoo_section), ("emulated_arm", emulated_section), ("qat_weight_bits", weight_bits_section),
    (None, lambda results: distributed_section(d, load(results, "streaming"))
     if (d := load(results, "distributed")) else []),
    ("predictor", predictor_section), ("predictor_zoo", predictor_zoo_section),
    ("predictor_epyc", lambda d: predictor_section(d, "Latency predictor on an AMD EPYC (AVX-512 VNNI, no AMX)")),
    ("predictor_litert_in_context", lambda d: predictor_section(
        d, "Latency predictor, LiteRT with its kernels fitted in context (AMD EPYC)")),
    ("predictor_epyc_p20", lambda d: predictor_section(d, "Latency predictor on an AMD EPYC, second run")),
    ("predictor_epyc_p21", lambda d: predictor_section(
        d, "Latency predictor on an AMD EPYC, third run (slow measuring processes measured again)")),
    ("predictor_epyc_p22", lambda d: predictor_section(
        d, "Latency predictor on an AMD EPYC, fourth run (the calibration's slow processes measured again)")),
    ("predictor_epyc_p23", lambda d: predictor_section(
        d, "Latency predictor on an AMD EPYC, fifth run (slow probe chunks and configurations measured again)")),
    ("predictor_epyc_p24", lambda d: predictor_section(
        d, "Latency predictor on an AMD EPYC, sixth run (processes still slow after their retries dropped)")),
    ("predictor_epyc_p25", lambda d: predictor_section(
        d, "Latency predictor on an AMD EPYC, seventh run (the correction fitted on every measured architecture)")),
    ("predictor_epyc_p26", lambda d: predictor_section(
        d, "Latency predictor on an AMD EPYC without AVX-512 (AVX2 only), eighth run (in-context times by work; "
        "evaluated the day after its calibration)")),
    ("predictor_zoo_epyc", lambda d: predictor_zoo_section(
        d, "Latency predictor on pretrained models, AMD EPYC", "the sixth AMD run above (predictor_epyc_p24.json)")),
    ("predictor_epyc_p26_refit", lambda d: predictor_section(
        d, "Latency predictor on an AMD EPYC without AVX-512, the eighth run refitted with the probes beyond "
        "in-context reach, judged on new measurements")),
    ("predictor_zoo_epyc_p26", lambda d: predictor_zoo_section(
        d, "Latency predictor on pretrained models, AMD EPYC without AVX-512",
        "the eighth AMD run above (predictor_epyc_p26.json)")),
    ("predictor_epyc_p28", lambda d: predictor_section(
        d, "Latency predictor on an AMD EPYC without AVX-512, ninth run (the probes beyond in-context reach from the "
        "start; evaluation architectures from new seeds)")),
    ("predictor_epyc_p28_judged", lambda d: predictor_section(
        d, "Latency predictor on an AMD EPYC without AVX-512, the ninth run's file judged again on 30 more new "
        "architectures")),
    ("predictor_1d_epyc", lambda d: predictor_section(
        d, "Latency predictor on 1-D architectures (audio and sensor models), ONNX Runtime, AMD EPYC without "
        "AVX-512")),
    ("predictor_1d_epyc_2d", lambda d: predictor_section(
        d, "Latency predictor with 1-D kernels (the run above) judged on 2-D architectures, ONNX Runtime")),
    ("predictor_zoo_1d_epyc", lambda d: predictor_zoo_section(
        d, "Latency predictor with 1-D kernels on pretrained models, ONNX Runtime, AMD EPYC without AVX-512",
        "the 1-D run above (predictor_1d_epyc.json)")),
    ("predictor_1d_tflite_epyc", lambda d: predictor_section(
        d, "Latency predictor on 1-D architectures, LiteRT (1-D models through the torch.fx lowering), AMD EPYC "
        "without AVX-512")),
    ("predictor_1d_tflite_epyc_judged", lambda d: predictor_section(
        d, "Latency predictor on 1-D architectures, LiteRT: the run above refitted (1-D kernels on their own sums "
        "at 2 threads) and judged on 30 new 1-D architectures")),
    ("predictor_1d_tflite_epyc_2d", lambda d: predictor_section(
        d, "Latency predictor with LiteRT's 1-D kernels (the run above, refitted) judged on 2-D architectures")),
    ("predictor_1d_tflite_zen5", lambda d: predictor_section(
        d, "Latency predictor on 1-D architectures, LiteRT, AMD EPYC with AVX-512 VNNI (family 26): 12 1-D "
        "validation architectures, each family's error stated apart")),
    ("predictor_1d_tflite_zen5_judged", lambda d: predictor_section(
        d, "Latency predictor on 1-D architectures, LiteRT: the run above refitted (1-D forests on the probes, "
        "1-D models' own 2-thread weight) and judged on 30 new 1-D architectures")),
    ("predictor_1d_tflite_zen5_2d", lambda d: predictor_section(
        d, "Latency predictor on 1-D architectures, LiteRT: the run above refitted, judged on 2-D architectures")),
    ("predictor_zen5", lambda d: predictor_section(
        d, "Latency predictor, all four configurations, AMD EPYC with AVX-512 VNNI (family 26)")),
    ("predictor_zen5_p37", lambda d: predictor_section(
        d, "Latency predictor, all four configurations, the same EPYC, next run (ONNX Runtime INT8 PReLUs split by "
        "sign; 30 other unseen architectures)")),
    ("predictor_zen4_p39", lambda d: predictor_section(
        d, "Latency predictor, all four configurations, AMD EPYC with AVX-512 VNNI (family 25, Zen 4; 30 other unseen "
        "architectures)")),
    ("predictor_zen4_p40", lambda d: predictor_section(
        d, "Latency predictor, the p39 calibration refitted with the image-input term (Correction.g), judged on 30 "
        "new unseen architectures (seeds 400700-400729), the same Zen 4 EPYC")),
    ("predictor_ort_eltwise_zen4_p41", lambda d: predictor_section(
        d, "Latency predictor, ONNX Runtime calibrated WITH element-wise kernels (an experiment: "
        "calibrate.ELTWISE_FORMATS with onnx, not adopted), judged on predictor_zen4_p40's 30 architectures")),
    ("predictor_zen4_p42", lambda d: predictor_section(
        d, "Latency predictor, the p39 calibration refitted with element-wise kernels apart at 2 threads "
        "(Correction.apart) and ONNX Runtime INT8 depthwise convolutions aligned through pools, judged on 30 new "
        "unseen architectures (seeds 400800-400829); the VM in a noisy state (repeat spreads 3.5-17 %)")),
    ("predictor_zen4_p43", lambda d: predictor_section(
        d, "Latency predictor, the same refitted file judged on 30 more new architectures (seeds 400900-400929); the "
        "VM quiet at one thread (repeat spreads 0.8-3.2 %), noisy at two (9.6-21.5 %)")),
    ("predictor_zen4_p44", lambda d: predictor_section(
        d, "Latency predictor, the same refitted file judged on 30 more new architectures (seeds 401000-401029); the "
        "VM noisy throughout (repeat spreads 4.3-23 %): not a judgement")),
    ("predictor_zen4_p45", lambda d: predictor_section(
        d, "Latency predictor, the p39 calibration refitted with ONNX Runtime's in-context times net of its "
        "profiler's steady per-layer cost, judged on 30 new architectures (seeds 401100-401129); the VM noisy "
        "throughout (repeat spreads 6.7-21.7 %): not a judgement")),
    ("predictor_zen4_p46", lambda d: predictor_section(
        d, "Latency predictor, the same file (ONNX Runtime's in-context times net of its profiler's steady per-layer "
        "cost) judged on 30 more new architectures (seeds 401200-401229); the VM near quiet at one thread (repeat "
        "spreads 2.5-8.5 %), noisy at two (14-31 %)")),
    ("predictor_zen4_p47", lambda d: predictor_section(
        d, "Latency predictor, the same file judged on 30 more new architectures (seeds 401300-401329); the VM noisy "
        "throughout (repeat spreads 12-20 %): not a judgement")),
    ("predictor_zen4_p48", lambda d: predictor_section(
        d, "Latency predictor, the p39 calibration refitted with ONNX Runtime's profiler cost read off the smaller "
        "half of the fitting architectures, judged on 30 new architectures (seeds 401400-401429); one thread less "
        "noisy (repeat spreads 1.3-8.7 %), two threads noisy (11.7-17.4 %)")),
    ("predictor_zen4_p49", lambda d: predictor_section(
        d, "Latency predictor, the same file judged on 30 more new architectures (seeds 401500-401529); the VM noisy "
        "(repeat spreads 5.2-29 %)")),
    ("predictor_zoo_zen4_p42", lambda d: predictor_zoo_section(
        d, "Latency predictor on pretrained models, the Zen 4 EPYC: the p39 calibration as edgeship now fits it "
        "(image-input term, element-wise kernels apart at 2 threads)",
        "the p39 calibration refitted from its kept data (predictor_zoo.py --refit)")),
    ("predictor_zoo_zen4_p45", lambda d: predictor_zoo_section(
        d, "Latency predictor on pretrained models, the Zen 4 EPYC: the p39 calibration as edgeship now fits it "
        "(ONNX Runtime's in-context times net of its profiler's steady per-layer cost as well); process speeds "
        "a median 1.01 against the calibration's anchors, up to 1.23 in one process per 2-thread configuration",
        "the p39 calibration refitted from its kept data (predictor_zoo.py --refit)")),
    ("predictor_zoo_zen4_p48", lambda d: predictor_zoo_section(
        d, "Latency predictor on pretrained models, the Zen 4 EPYC: the p39 calibration as edgeship now fits it "
        "(ONNX Runtime's profiler cost read off the smaller half of the fitting architectures)",
        "the p39 calibration refitted from its kept data (predictor_zoo.py --refit)")),
    ("predictor_eltwise_zen5", lambda d: predictor_section(
        d, "Latency predictor with element-wise kernels (PReLU, sigmoid, softmax, transpose, pad), 1 thread, AMD "
        "EPYC family 26: every configuration calibrated and judged on architectures with extras")),
    ("predictor_zoo_eltwise_zen5", lambda d: predictor_zoo_section(
        d, "Latency predictor with element-wise kernels on pretrained models (MTCNN, CREPE, MobileNetV2), 1 thread",
        "the run above (predictor_eltwise_zen5.json)")),
    ("predictor_zoo_eltwise_tflite_refit", lambda d: predictor_zoo_section(
        d, "Latency predictor with element-wise kernels on pretrained models, LiteRT, as edgeship now fits it "
        "(a correction weight per class; a softmax over a map not validated)",
        "the run above refitted from its kept data (predictor_zoo.py --refit)")),
    ("predictor_ort_eltwise_rewrite_zen5", lambda d: predictor_section(
        d, "Latency predictor with element-wise kernels on ONNX Runtime, its large PReLUs rewritten, 1 thread, AMD "
        "EPYC family 26 (calibrated with ONNX Runtime in ELTWISE_FORMATS; not adopted)")),
    ("predictor_tflite_scoremap_zen5", lambda d: predictor_section(
        d, "Latency predictor, LiteRT INT8 with softmax over maps (score maps) probed and held by the architectures, "
        "1 thread, AMD EPYC family 26")),
    ("predictor_zoo_tflite_scoremap_zen5", lambda d: predictor_zoo_section(
        d, "Latency predictor with softmax over maps on pretrained models, LiteRT",
        "the run above (predictor_tflite_scoremap_zen5.json), a float softmax over a map left out")),
    ("predictor_tflite_scoremap_zen5_rerun", lambda d: predictor_section(
        d, "Latency predictor, LiteRT INT8 with score maps, again after the PT2E softmax fix, 1 thread, AMD EPYC "
        "family 26")),
    ("predictor_zoo_tflite_scoremap_zen5_rerun", lambda d: predictor_zoo_section(
        d, "Latency predictor with score maps on pretrained models, LiteRT, the run after the fix",
        "the run above (predictor_tflite_scoremap_zen5_rerun.json); a float softmax over a map is never covered")),
    ("predictor_zoo_tflite_softmax_int8_zen5", lambda d: predictor_zoo_section(
        d, "Latency predictor on pretrained models, LiteRT, P-Net's score map int8 (the litert-torch softmax fix)",
        "predictor_tflite_scoremap_zen5_rerun.json's file, calibrated with PReLUs of one slope")),
    ("predictor_tflite_prelu_per_channel_zen5", lambda d: predictor_section(
        d, "Latency predictor, LiteRT INT8 with per-channel PReLU slopes in probes and architectures, 1 thread, AMD "
        "EPYC family 26")),
    ("predictor_zoo_tflite_prelu_per_channel_zen5", lambda d: predictor_zoo_section(
        d, "Latency predictor with per-channel PReLU slopes on pretrained models, LiteRT",
        "the run above (predictor_tflite_prelu_per_channel_zen5.json)")),
    ("search", search_section),
    ("search_96", lambda d: search_section(d, "Budget-driven search per device, MobileNetV2 0.35 at 96x96")),
)
# every stem a section renders (``load`` also reads its _quick run), and the two the distributed section reads
RENDERED = {q for stem, _ in SECTIONS if stem for q in (stem, f"{stem}_quick")} | {"distributed", "streaming"}


def other_files(results: Path) -> list[str]:
    """The result files no section renders, listed by name."""
    others = sorted(p.name for p in results.glob("*.json") if p.stem not in RENDERED)
    if not others:
        return []
    return ["## Other result files", "", "Written by the other benchmark scripts (see each script's docstring): "
            + ", ".join(f"`benchmarks/results/{n}`" for n in others) + ".", ""]


def render(results: Path) -> str:
    out = ["# Benchmarks", "",
           "Generated by `benchmarks/make_report.py` from `benchmarks/results/*.json`; do not edit by hand "
           "(the discussion comes from `benchmarks/results/notes.md`). Rerun:", "",
           "```",
           ".venv/bin/python benchmarks/peers.py           # ~12 min on 2 idle cores (~2.5 min when the stage cache "
           "holds the passes)",
           ".venv/bin/python benchmarks/pipeline_cost.py   # ~5 min",
           ".venv/bin/python benchmarks/size_scaling.py    # ~3 min",
           ".venv/bin/python benchmarks/scale.py           # 96x96 and 224x224 models (duration: its section)",
           ".venv/bin/python benchmarks/methods.py         # the compression methods side by side (duration: its "
           "section)",
           ".venv/bin/python benchmarks/predictor.py       # ~50 min on 2 cores, all four runtimes (calibration "
           "included: predictor.json's calibration.minutes; --predictors DIR keeps the fitted file)",
           ".venv/bin/python benchmarks/predictor_zoo.py --predictors DIR  # the pretrained models against it, ~3 min",
           ".venv/bin/python benchmarks/search.py          # two searches and the demo's own passes: > 90 min at a "
           "load of 10 (--quick: less training; 15 min with the demo's stages cached: search_quick.json's "
           "reference_export_wall_s + export_wall_s)",
           ".venv/bin/python benchmarks/make_report.py",
           "```", ""]
    for stem, section in SECTIONS:
        if stem is None:
            out += section(results)
            continue
        d = load(results, stem)
        if d:
            out += section(d)
    notes = results / "notes.md"
    if notes.is_file():
        out += [notes.read_text().strip(), ""]
    out += other_files(results)
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args(argv)
    if not any(load(args.results, s) for s in ("peers", "pipeline_cost", "scale")):
        print(f"{args.results} has no peers*.json, pipeline_cost*.json or scale*.json: run benchmarks/peers.py, "
              "benchmarks/pipeline_cost.py or benchmarks/scale.py first", file=sys.stderr)
        return 2
    text = render(args.results)
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
