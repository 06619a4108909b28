"""``runs/<name>/report.html``: one self-contained page (inline CSS, plots as inline base64 PNG,
no scripts, no external URLs) rendered from the run record (report.json) alone.

Every figure on the page is a number from report.json, formatted (bytes shown as KiB, fractions
as percentages); what report.json does not hold is shown as "not measured", never estimated.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgeship.devices.budgets import LOWER_LIMITS, source_text
from edgeship.devices.measure import quantized_slower
from edgeship.record import BudgetResult, LatencyRounds, RunRecord, Target
from edgeship.report import plots
from edgeship.report.console import fmt_ms, on_device, size_ratios, speed_ratios
from edgeship.targets.verify import wilson95

NOT_MEASURED = '<span class="na">not measured</span>'

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2330;
 margin:0;background:#f4f6f9}
main{max-width:1140px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:2px solid #e3e7ee;
 padding-bottom:4px}
.sub{color:#5b6475;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:16px 0}
.card{flex:1 1 130px;border:1px solid #e3e7ee;border-radius:8px;padding:8px 12px;background:#fafbfd}
.card b{display:block;font-size:18px}.card span{color:#5b6475;font-size:12px}
table{border-collapse:collapse;width:100%;margin:6px 0 4px;font-size:13px}
th,td{padding:5px 6px;border-bottom:1px solid #e8ebf0;text-align:right;white-space:nowrap}
th{background:#eef1f6;font-weight:600}th:first-child,td:first-child{text-align:left}
td.l,th.l{text-align:left}td.l{white-space:normal}td:first-child{white-space:nowrap}\
td:last-child{white-space:normal;min-width:90px}tr:nth-child(even) td{background:#fafbfc}
td.err{white-space:normal;text-align:left;color:#8a1c1c;background:#fdf1f1}
.ok{color:#1b7837;font-weight:600}.fail{color:#b2182b;font-weight:600}.na{color:#8a93a3;font-style:italic}
.badge{display:inline-block;white-space:nowrap;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.badge.ok{background:#e3f3e6}.badge.fail{background:#fbe3e3}.badge.na{background:#eef0f3}
.badge.unv{background:#fdf0d5;color:#8a5a00}
figure{margin:10px 0 4px}figure img{max-width:100%;border:1px solid #e3e7ee;border-radius:6px}
figcaption,.note{color:#5b6475;font-size:12px;margin-top:4px}
.slow{color:#8a1c1c;font-size:12px}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px}
pre{background:#f6f8fa;border:1px solid #e3e7ee;border-radius:6px;padding:10px;overflow:auto;max-height:420px}
.tw{overflow-x:auto}details{margin:8px 0}summary{cursor:pointer;color:#2166ac}
"""


# ---------------------------------------------------------------- formatting
def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def pct(v: float | None, digits: int = 2, missing: str = NOT_MEASURED) -> str:
    return missing if v is None else f"{v * 100:.{digits}f}%"


def count(v: int | None) -> str:
    return '<span class="na">unknown</span>' if v is None else f"{v:,}"


def kib(v: float | None, missing: str = NOT_MEASURED) -> str:
    return missing if v is None else f"{v / 1024:,.1f} KiB"


def num(v: float | None, unit: str = "", digits: int = 2) -> str:
    return NOT_MEASURED if v is None else f"{v:,.{digits}f}{unit}"


def ms(v: float | None) -> str:
    return NOT_MEASURED if v is None else fmt_ms(v)


def g4(v: float, sign: str = "") -> str:
    """Four significant digits, thousands separated rather than in exponent form."""
    return f"{v:{sign},.0f}" if abs(v) >= 1e4 else f"{v:{sign}.4g}"


def table(headers: list[str], rows: list[list[str]], left: tuple[int, ...] = (0,)) -> str:
    """``rows`` hold already-escaped HTML cells; a row given as a str is inserted verbatim."""
    head = "".join(f'<th{" class=l" if i in left else ""}>{esc(h)}</th>' for i, h in enumerate(headers))
    body = []
    for r in rows:
        if isinstance(r, str):
            body.append(r)
            continue
        body.append("<tr>" + "".join(f'<td{" class=l" if i in left else ""}>{c}</td>' for i, c in enumerate(r))
                    + "</tr>")
    return f"<div class=tw><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


def badge(passed: bool | None, yes: str = "pass", no: str = "FAIL", none: str = "not checked") -> str:
    if passed is None:
        return f'<span class="badge na">{esc(none)}</span>'
    return f'<span class="badge ok">{esc(yes)}</span>' if passed else f'<span class="badge fail">{esc(no)}</span>'


def status_badge(status: str | None, yes: str = "pass", no: str = "FAIL") -> str:
    """pass / fail / unverified (no number from the target's device could judge it) / not checked."""
    if status == "unverified":
        return '<span class="badge unv">unverified</span>'
    return badge(None if status is None else status == "pass", yes, no)


# ---------------------------------------------------------------- budgets
def limit_text(r: BudgetResult) -> str:
    if r.limit is None:
        return "-"
    op = "&ge;" if r.budget in LOWER_LIMITS else "&le;"
    return f"{op} {g4(r.limit)}{(' ' + esc(r.unit)) if r.unit else ''}"


def value_text(r: BudgetResult) -> str:
    if r.value is None:
        return NOT_MEASURED
    return f"{g4(r.value)}{(' ' + esc(r.unit)) if r.unit else ''}"


def budget_cell(results: list[BudgetResult]) -> str:
    if not results:
        return badge(None)
    failed = [r for r in results if r.status != "pass"]
    if not failed:
        return badge(True)
    why = "; ".join(f"{esc(r.budget)} {value_text(r)}, limit {limit_text(r)}" if r.value is not None
                    else f"{esc(r.budget)}: {esc(r.note or 'no value')}" for r in failed
                    if r.budget != "artifact")
    status = "fail" if any(r.status == "fail" for r in failed) else "unverified"
    return f'{status_badge(status)} <span class="note">{why}</span>'


# ---------------------------------------------------------------- sections
def header(rec: RunRecord) -> str:
    m = rec.machine
    ok = sum(t.ok for t in rec.targets)
    budgets = rec.budgets
    verdict = status_badge((budgets.status if budgets else None), "budgets met", "budgets missed")
    base, final = rec.baseline, rec.final
    cards = [
        (f"{ok}/{len(rec.targets)}", "targets verified"),
        (verdict, "budget verdict" + (f" ({esc(source_text(budgets))} latency)" if budgets else "")),
        (pct(base.top1_test), "torch top-1 before passes"),
        (pct(final.top1_test), "torch top-1 after passes"),
        (count(final.params), f"parameters (from {base.params:,})"),
        (kib(final.size_fp32_bytes), f"FP32 weights (from {base.size_fp32_bytes / 1024:,.1f} KiB)"),
    ]
    return (f"<h1>{esc(rec.recipe.name)}: edgeship report</h1>"
            f'<p class="sub">created {esc(rec.created)} by edgeship {esc(rec.edgeship_version)} from '
            f"<code>{esc(rec.recipe_path)}</code> (recipe hash <code>{esc(rec.recipe_hash)}</code>); run took "
            f"{num(rec.wall_s, ' s', 1)}{carried_note(rec)}<br>machine: {esc(m.cpu or '?')}, {esc(m.cores or '?')} "
            f"cores, Python {esc(m.python or '?')}, torch {esc(m.torch or '?')}<br>data: {esc(rec.data.source)}, "
            + ", ".join(f"{esc(k)} {v:,}" for k, v in rec.data.sizes.items()) + " samples</p>"
            + '<div class="cards">' + "".join(f"<div class=card><b>{v}</b><span>{t}</span></div>" for v, t in cards)
            + "</div>")


def with_ci(top1: float | None, n: int | None) -> str:
    """A top-1 with its 95% Wilson interval on ``n`` samples."""
    if top1 is None or not n:
        return pct(top1)
    lo, hi = wilson95(round(top1 * n), n)
    return f'{pct(top1)}<br><span class="note">95% CI {lo * 100:.1f}-{hi * 100:.1f}</span>'


def stage_section(rec: RunRecord) -> str:
    b, final = rec.baseline, rec.final
    n_test, n_val = rec.data.sizes.get("test"), rec.data.sizes.get("val")
    rows = [["baseline (input model)", with_ci(b.top1_val, n_val), with_ci(b.top1_test, n_test), count(b.params),
             count(b.macs), kib(b.size_fp32_bytes), "-", "-", ""]]
    for s in rec.stages:
        shown = ", ".join(f"{k}={v}" for k, v in s.config.items() if v is not None and not isinstance(v, (dict, list)))
        rows.append([esc(s.stage), with_ci(s.top1_val, n_val), '<span class="na">-</span>', count(s.params),
                     count(s.macs), kib(s.size_fp32_bytes), num(s.wall_s, "", 1),
                     "yes" if s.cached else "no", f'<span class="note">{esc(shown)}</span>'])
    if rec.stages:
        rows.append(["<b>final (compressed) model</b>", '<span class="na">-</span>', with_ci(final.top1_test, n_test),
                     count(final.params), count(final.macs), kib(final.size_fp32_bytes), "-", "-", ""])
    note = "" if rec.stages else '<p class="note">The recipe has no passes: the input model is exported as is.</p>'
    return ("<h2>Stages</h2>" + table(["stage", "val top-1", "test top-1", "params", "MACs", "FP32 weights",
                                       "wall s", "cached", "config"], rows, left=(0, 8)) + note)


def sensitivity_section(rec: RunRecord) -> str:
    """The per-layer sensitivity a mixed_precision stage measured, and which layers it kept in float."""
    out = []
    for s in rec.stages:
        table_ = s.metrics.get("layer_sensitivity")
        if not isinstance(table_, dict):
            continue
        kept = set(s.metrics.get("float_layers") or [])
        rows = [[esc(name), count(r.get("rank")), f"{r.get('kl', 0):.2e}", num(r.get("top1_drop_pt"), " pt", 2),
                 "<b>float</b>" if name in kept else "int8"]
                for name, r in sorted(table_.items(), key=lambda kv: kv[1].get("rank", 0))]
        out.append(f"<h2>Per-layer sensitivity ({esc(s.stage)})</h2>"
                   + table(["layer", "rank", "KL vs float", "top-1 change", "on INT8 targets"], rows, left=(0,))
                   + f'<p class="note">Each conv/linear layer alone quantized to int8 (weights and input) in torch, '
                     f'on {s.metrics.get("eval_samples", "?")} validation images: the mean KL divergence of its '
                     "outputs from the float model's (the ranking) and its top-1 change. Simulated top-1: float "
                     f'{pct(s.metrics.get("float_top1_sim"))}, every layer int8 {pct(s.metrics.get("int8_top1_sim"))}, '
                     f'with the float layers {pct(s.metrics.get("mixed_top1_sim"))}.</p>')
    return "".join(out)


def carried_note(rec: RunRecord) -> str:
    kept = [t.name for t in rec.targets if t.carried_over]
    return (f" (an <code>export -t</code> run: {len(kept)} target{'s' if len(kept) != 1 else ''} carried over from "
            "the run before, not redone)") if kept else ""


def target_section(rec: RunRecord) -> str:
    rows: list[Any] = []
    checked = any(rec.device_verification(t.name) for t in rec.targets)
    for t in rec.targets:
        v = t.verify
        na = NOT_MEASURED if t.ok else "-"  # a failed target's row is followed by its error
        m = rec.preferred_measurement(t.name)
        lat = (f"{ms(m.p50_ms)} / {ms(m.p90_ms)} ms<br><span class=note>({esc(m.source)})</span>"
               if m and m.p50_ms is not None else na)
        ram = num(m.peak_rss_mb, " MB", 1) if m else na
        drop = v.accuracy_drop_pt if v else None
        top1_cell = pct(v.top1 if v else None, missing=na)
        if v is not None and v.top1_ci95:
            top1_cell += f"<br><span class=note>95% CI {v.top1_ci95[0] * 100:.1f}-{v.top1_ci95[1] * 100:.1f}</span>"
        drop_cell = na if drop is None else f"{drop:.2f} pt"
        if v is not None and drop is not None and v.accuracy_drop_ci95_pt:
            lo, hi = v.accuracy_drop_ci95_pt
            drop_cell += f"<br><span class=note>95% CI {lo:.2f}..{hi:.2f}</span>"
        zipped = f"<br><span class=note>zip {kib(t.zip_bytes)}</span>" if t.zip_bytes else ""
        name = esc(t.name) + ("" if t.model == "main" else f'<br><span class="note">model: {esc(t.model)}</span>')
        rows.append([name, esc(t.device), f"{esc(t.format)} {esc(t.precision)}",
                     badge(t.ok, "ok", "failed"), top1_cell,
                     drop_cell, pct(v.agreement if v else None, missing=na),
                     na if v is None or v.max_abs_logit_diff is None else f"{v.max_abs_logit_diff:.2e}",
                     *([esc(on_device(d)) if (d := rec.device_verification(t.name)) else na] if checked else []),
                     lat, ram, kib(t.size_bytes, missing=na) + zipped, size_ratios(t, "x") + speed_cell(t),
                     budget_cell(rec.budget_results(t.name))])
        if not t.ok:
            rows.append(f'<tr><td></td><td class="err" colspan="{12 + checked}">{esc(t.error or "failed")}</td></tr>')
        if v is not None and v.gate_note:
            rows.append(f'<tr><td></td><td class="note" colspan="{12 + checked}">{esc(v.gate_note)}</td></tr>')
    if not rows:
        return "<h2>Targets</h2><p class=note>The recipe has no targets.</p>"
    return ("<h2>Targets</h2>"
            + table(["target", "device", "format", "status", "top-1", "top-1 drop", "agreement", "max |Δlogit|",
                     *(["on device: top-1 / agreement"] if checked else []), "latency p50 / p90", "peak RAM", "size",
                     "vs FP32", "budgets"], rows, left=(0, 1, 2, 12 + checked))
            + '<p class="note">top-1, drop, agreement and the largest logit difference: every artifact run with its '
              f'own runtime on the {rec.data.sizes.get("test", "?")} test samples and compared with the torch '
              "model's predictions (drop: torch top-1 minus the artifact's, in points). Latency shows the device "
              "measurement where there is one, else the prediction, else the host's, else the estimate; the source "
              "is named in brackets. "
              + ("On device: the device's own runtime (over ssh; an emulated device's aarch64 runtime counts here, "
                 "its timings do not) on a seeded subset of the test split, its top-1 / agreement with the same "
                 "artifact's outputs on the exporting machine (the machine and the sample count in brackets). "
                 if checked else "")
              + "Size: the files a device loads (the sidecar model.json not counted), and zipped (deflate). vs FP32: "
                "that size as a fraction of the same format's FP32 artifact of the input model / of the compressed "
                "model (quantization's share alone), for INT8 and FP16 artifacts" + size_references_note(rec) + ". "
                "Speed: how many times faster than those two FP32 artifacts the artifact ran on this machine, all "
                "timed side by side in the same fresh processes at export (the median over the processes; below 1: "
                "slower), for INT8 and FP16 targets of this machine.</p>")


def speed_cell(t: Target) -> str:
    """The speed ratios under the size ratios: ``speed 4.10x / 1.21x``, a quantized artifact slower than its own
    model's FP32 in red (an FP16 file is a size format on most CPUs: export's note skips it too), a failed timing
    named."""
    r = t.speed_vs_fp32
    if r is None:
        return ""
    if r.error:
        return f"<br><span class=note>speed: not timed ({esc(r.error)})</span>"
    slow = quantized_slower(r, t.precision)
    return (f'<br><span class="{"slow" if slow else "note"}">speed {esc(speed_ratios(t))}'
            f' ({r.processes} processes, {r.threads} thread{"s" if r.threads != 1 else ""})</span>')


def size_references_note(rec: RunRecord) -> str:
    parts = [f"{esc(fmt)} {kib(r.input_model, missing='?')} / {kib(r.compressed_model, missing='?')}"
             for fmt, r in sorted(rec.size_references.items())]
    return f" (those FP32 artifacts: {'; '.join(parts)})" if parts else ""


def measurement_section(rec: RunRecord) -> str:
    rows = []
    for t in rec.targets:
        for source, m in rec.measurements_of(t.name).items():
            facts = m.facts
            where = m.method or m.remote or ", ".join(str(facts[k]) for k in ("hostname", "cpu") if facts.get(k))
            runtime = " ".join(str(x) for x in (m.runtime, m.runtime_version) if x)
            runs = count(m.runs) + (f" + {m.warmup}" if m.warmup else "")
            spread = NOT_MEASURED if m.mean_ms is None else (
                ms(m.mean_ms) + ("" if m.std_ms is None else f" &plusmn; {ms(m.std_ms)}"))
            p90 = ms(m.p90_ms) + ("" if m.prediction is None else
                                  f'<br><span class="note">bound {ms(m.prediction.p90_upper_ms)}</span>')
            rows.append([esc(t.name), esc(source), esc(runtime), ms(m.p50_ms), p90,
                         ms(m.p99_ms), spread, runs,
                         count(m.threads), num(m.load_ms, "", 1), num(m.peak_rss_mb, "", 1),
                         num(m.arena_mb, "", 1), f'<span class="note">{esc(where)}</span>'])
    headers = ["target", "source", "runtime", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms", "runs + warm-up",
               "threads", "load ms", "peak RSS MB", "arena MB", "method / where"]
    if rows and all(r[11] == NOT_MEASURED for r in rows):  # no runtime here reports an arena: say so once
        headers.pop(11)
        rows = [r[:11] + r[12:] for r in rows]
        arena_note = '<p class="note">Arena (the runtime\'s own allocator): not measured.</p>'
    else:
        arena_note = ""
    errors = [(name, source, e)
              for name, by_source in rec.measurement_errors.items() for source, e in by_source.items()]
    failed = "".join(f'<p class="note"><span class=fail>{"prediction" if s == "predicted" else "measurement"} failed'
                     f'</span> {esc(n)} ({esc(s)}): {esc(e)}</p>' for n, s, e in errors)
    if not rows:
        return ("<h2>Measurements</h2><p>Latency and memory: " + NOT_MEASURED
                + ". <span class=note>Run <code>edgeship profile RUN</code> to measure them.</span></p>" + failed)
    return ("<h2>Measurements</h2>"
            + table(headers, rows, left=(0, 1, 2, len(headers) - 1)) + arena_note + failed)


def layer_section(rec: RunRecord, top: int = 8) -> str:
    """Where each artifact's time goes (its runtime's per-layer counters) and whether its INT8 layers ran as INT8."""
    profiled = [(t.name, s, m.profile) for t in rec.targets for s, m in rec.measurements_of(t.name).items()
                if m.profile is not None]
    if not profiled:
        return ""
    summary, parts = [], []
    for name, source, p in profiled:
        fallback = (f'<span class=fail>{len(p.float_fallbacks)} in float: {esc(", ".join(p.float_fallbacks[:4]))}'
                    + ("&hellip;" if len(p.float_fallbacks) > 4 else "") + "</span>") if p.float_fallbacks else "none"
        if p.not_delegated:  # LiteRT: operators its XNNPACK delegate left to the builtin kernels
            fallback += (f'; <span class=fail>{len(p.not_delegated)} outside XNNPACK: '
                         f'{esc(", ".join(p.not_delegated[:4]))}</span>')
        summary.append([esc(name), esc(source), f'<span class="note">{esc(p.source)}</span>', count(p.layer_count),
                        f"{p.int8_compute_layers} / {p.compute_layers}", fallback, ms(p.total_ms)])
        rows = [[esc(r.name), esc(r.op), esc(r.kernel or ""), esc(r.precision or "")
                 + (" <span class=fail>float fallback</span>" if r.float_fallback else ""), ms(r.ms),
                 pct(r.share, 1, "")] for r in p.layers[:top]]
        parts.append(f"<details><summary>{esc(name)} ({esc(source)}): "
                     + ("slowest layers" if p.total_ms is not None else "layers (no per-layer times)")
                     + "</summary>" + table(["layer", "op", "kernel", "precision", "ms", "share"], rows,
                                            left=(0, 1, 2, 3)) + "</details>")
    series = [(f"{n} ({s})", p.by_op_ms) for n, s, p in profiled if p.by_op_ms]
    plot = img(plots.time_by_op(series), "time by operator type",
               "Each artifact's summed per-layer times by operator type (its runtime's own names).") if series else ""
    return ("<h2>Layers</h2>" + table(["target", "source", "profiler", "layers", "INT8 / compute layers",
                                        "compute layers in float", "summed layer ms"], summary, left=(0, 1, 2, 5))
            + '<p class="note">Run separately after the timed runs (the profilers cost time): each layer\'s time '
              "per inference over those runs (the middle mean of the runtime's readings; LiteRT's, in whole "
              "microseconds truncated, their mean + 0.5 us: the profiler column says which). "
              "Compute layers are convolutions, matrix multiplications and fully connected layers; in an INT8 "
              "artifact one that ran in a float kernel is flagged, and so is a LiteRT operator its XNNPACK "
              "delegate did not take.</p>" + plot + "".join(parts))


def budget_section(rec: RunRecord) -> str:
    budgets = rec.budgets
    if not budgets:
        return ("<h2>Budgets</h2><p>" + badge(None) + " <span class=note>no budget check in this run "
                "(<code>edgeship check RUN</code> runs one).</span></p>")
    rows = []
    for r in budgets.results:
        margin = "" if r.margin is None else g4(r.margin, "+") + (
            f" ({r.margin_pct:+.0f}%)" if r.margin_pct is not None else "")
        rows.append([esc(r.target), esc(r.budget), limit_text(r), value_text(r), margin,
                     esc(r.source or ""), esc(r.origin or ""), status_badge(r.status),
                     f'<span class="note">{esc(r.note or r.basis or "")}</span>'])
    unverified = ("" if not budgets.unverified else
                  " Unverified: no number from the target's device could judge the budget (nothing measured there); "
                  "it is not a pass. Measure on the device (<code>edgeship profile RUN --ssh USER@HOST --device "
                  "NAME</code>), or judge it on this machine's numbers by asking for them "
                  "(<code>edgeship check RUN --source host</code>).")
    return ("<h2>Budgets</h2><p>overall: " + status_badge(budgets.status)
            + f" <span class=note>latency and RAM from: {esc(source_text(budgets))}.{unverified}</span></p>"
            + (f'<p class="fail">{esc(budgets.warning)}</p>' if budgets.warning else "")
            + table(["target", "budget", "limit", "value", "margin", "source", "limit from", "verdict", "note"],
                    rows, left=(0, 1, 6, 8)))


def search_section(rec: RunRecord) -> str:
    """Each budget-driven search: its candidates (table and Pareto plot) and why the winner won."""
    if not rec.variants:
        return ""
    parts = ["<h2>Searches</h2>"]
    for v in rec.variants:
        s = v.search
        points = [{"label": f"-{c.blocks}b {c.macs_ratio:g}", "latency_ms": c.latency_ms, "top1": c.top1_val or 0.0,
                   "source": c.latency_source, "finalist": c.finalist, "final_latency_ms": c.final_latency_ms,
                   "finetuned_top1": c.finetuned_top1_val, "winner": c.winner} for c in s.candidates
                  if c.latency_source != "refused"]  # no model: nothing to plot (the table says why)
        rows = [[f"{c.blocks}", f"{c.macs_ratio:g}", pct(c.top1_val), count(c.macs),
                 ms(c.latency_ms) + spread(c.timing), esc(c.latency_source), badge(c.feasible, "yes", "no"),
                 pct(c.finetuned_top1_val, missing="-") if c.finalist else "-",
                 (ms(c.final_latency_ms) + spread(c.final_timing) + f" ({esc(c.final_source)})")
                 if c.final_latency_ms is not None else "-",
                 "<b>winner</b>" if c.winner else ""] for c in s.candidates]
        top1 = f", test top-1 {pct(v.final.top1_test)}" if v.final else ""
        parts.append(f"<h3>{esc(s.name)}: for {esc(', '.join(s.targets))} on {esc(s.device)} (budget "
                     f"{g4(s.budget_ms)} ms, floor {pct(s.min_top1)})</h3>"
                     f"<p>{len(s.candidates)} candidates in {num(s.wall_s, ' s', 0)}. "
                     + (f"Latency: {esc(s.timing)}. " if s.timing else "")
                     + (f"<b>Why the winner won:</b> {esc(s.why)}{top1}." if s.winner is not None
                        else f'<span class="fail">No model: {esc(s.why)}.</span>') + "</p>")
        if points:
            parts.append(img(plots.search_pareto(points, s.budget_ms, s.min_top1), f"search {s.name}",
                             "Validation top-1 after the compression prefix against the latency the budget judges "
                             "(a prediction's upper bound, or a measurement); arrows: finalists after a brief "
                             "fine-tune, lowered to the target's format."))
        parts.append(table(["blocks dropped", "MACs kept", "val top-1", "MACs", "latency ms", "source",
                            "within budget", "fine-tuned top-1", "lowered", ""], rows))
    return "".join(parts)


def spread(t: LatencyRounds | None) -> str:
    """A latency timed in rounds: its rounds' spread beside the median (nothing for a prediction)."""
    if t is None:
        return ""
    return f" <span class=note>({g4(t.spread_ms[0])}-{g4(t.spread_ms[1])}, {len(t.p90_rounds_ms)} rounds)</span>"


def plot_section(rec: RunRecord) -> str:
    parts = ["<h2>Plots</h2>"]
    points, unmeasured = [], []
    for t in rec.targets:
        v = t.verify
        measured = {s: m for s, m in rec.measurements_of(t.name).items() if m.p50_ms is not None}
        if not t.ok or v is None or v.top1 is None or not measured:
            unmeasured.append(t.name)
            continue
        points += [{"label": t.name, "source": s, "latency_ms": m.p50_ms, "top1": v.top1} for s, m in measured.items()]
    if points:
        parts.append(img(plots.accuracy_vs_latency(points), "accuracy against latency",
                         "Accuracy against latency (p50) for every measured artifact; circled points are on the "
                         "Pareto front of their latency source (nothing both faster and more accurate)."))
    if unmeasured:
        parts.append(f'<p class="note">Not in the accuracy/latency plot (failed or not measured): '
                     f'{esc(", ".join(unmeasured))}.</p>')

    stages = [("baseline", rec.baseline.size_fp32_bytes)] + [(s.stage, s.size_fp32_bytes) for s in rec.stages]
    artifacts = [(t.name, t.size_bytes) for t in rec.targets if t.size_bytes is not None]
    parts.append(img(plots.size_across_stages(stages, artifacts), "size across stages",
                     "Size at each stage (the torch model's FP32 weights) and of each artifact's files on disk."))

    series = [(t.name, s, m.samples_ms) for t in rec.targets for s, m in rec.measurements_of(t.name).items()
              if m.samples_ms]
    if series:
        parts.append(img(plots.latency_distributions(series), "latency distributions",
                         "Latency of every timed run (samples_ms). Box: 25th to 75th percentile, whiskers: 1st "
                         "to 99th, line: median."))
    else:
        parts.append(f"<p>Latency distributions: {NOT_MEASURED}.</p>")
    return "".join(parts)


def details_section(rec: RunRecord) -> str:
    audits = [(t.name, t.op_audit.model_dump()) for t in rec.targets if t.op_audit]
    out = []
    if audits:
        out.append("<details><summary>Operator audit of the quantized artifacts</summary>"
                   + "".join(f"<h3>{esc(n)}</h3><pre>{esc(json.dumps(a, indent=2))}</pre>" for n, a in audits)
                   + "</details>")
    out.append("<details><summary>Quantization settings</summary><pre>"
               f"{esc(json.dumps(rec.quantization.to_dict(), indent=2))}</pre></details>")
    out.append("<details><summary>Recipe (as validated)</summary><pre>"
               f"{esc(json.dumps(rec.recipe.model_dump(mode='json'), indent=2))}</pre></details>")
    artifacts = [[esc(t.name) + ("" if t.ok else " (failed: kept for inspection)"), f"<code>{esc(t.artifact)}</code>",
                  esc(", ".join(t.files))]
                 for t in rec.targets if t.artifact]
    if artifacts:
        out.append("<details><summary>Artifact files</summary>"
                   + table(["target", "model file", "files"], artifacts, left=(0, 1, 2)) + "</details>")
    return "<h2>Details</h2>" + "".join(out)


def output_section(rec: RunRecord) -> str:
    """Every output of every artifact against the torch model's (models with an io: signature)."""
    rows = []
    for t in rec.targets:
        for name, o in (t.verify.outputs if t.verify else {}).items():
            extra = o.model_dump()
            value = extra.get("min_cosine" if o.metric == "cosine" else o.metric)
            op = "&ge;" if o.metric in ("top1", "agreement", "cosine") else "&le;"
            metric = o.metric + (" (worst)" if o.metric == "cosine" else "")
            rows.append([esc(t.name), esc(name), esc(o.task), esc(metric),
                         NOT_MEASURED if value is None else g4(value),
                         "top-1 gate" if o.limit is None else f"{op} {g4(o.limit)}",
                         badge(o.passed, none="-"), num(extra.get("max_abs_error"), "", 6),
                         num(extra.get("mean_abs_error"), "", 6), num(extra.get("cosine"), "", 6)])
    if not rows:
        return ""
    return ("<h2>Outputs</h2>"
            + table(["target", "output", "task", "metric", "value", "tolerance", "verdict", "max |Δ|", "mean |Δ|",
                     "mean cosine"], rows, left=(0, 1, 2, 3))
            + '<p class="note">Each output of each artifact, run with its own runtime on the test split, against the '
              "torch model's: the metric its task is judged by and the tolerance for the artifact's precision class "
              "(the recipe's io.outputs[].tolerance, else edgeship's default).</p>")


def render_html(rec: RunRecord) -> str:
    body = "".join([header(rec), stage_section(rec), sensitivity_section(rec), target_section(rec), output_section(rec),
                    measurement_section(rec), layer_section(rec), budget_section(rec), search_section(rec),
                    plot_section(rec), details_section(rec)])
    title = f"{rec.recipe.name}: edgeship report"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body><main>{body}<p class=note>Every figure on this page is read from report.json in the same "
            "directory; <code>edgeship report RUN</code> rebuilds this page from it.</p></main></body></html>\n")


# ---------------------------------------------------------------- files
def write_report_html(run: Path | str | RunRecord) -> Path:
    """Render a run's record into ``<run>/report.html`` (written atomically); ``run``: the record, or a run
    directory, its report.json or a run name."""
    rec = run if isinstance(run, RunRecord) else RunRecord.load(run)
    run_dir = rec.run_dir
    text = render_html(rec)
    fd, tmp = tempfile.mkstemp(prefix=".report.html.", dir=run_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, run_dir / "report.html")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return run_dir / "report.html"
