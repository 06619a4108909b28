"""Reading a run's report.json (what it holds for a target) and printing it as tables. The HTML
page (report_html.py) reads it through the same accessors."""

from __future__ import annotations

from typing import Optional

from rich.table import Table

SOURCE_PREFERENCE = ("device", "host", "estimate")  # the latency a target's summary shows


def measurements_of(report: dict, target: str) -> dict[str, dict]:
    """{source: measurement} of one target; empty when nothing was measured."""
    return (report.get("measurements") or {}).get(target) or {}


def preferred_measurement(report: dict, target: str) -> Optional[dict]:
    """The device measurement where there is one, else the host's, else the estimate."""
    m = measurements_of(report, target)
    for source in SOURCE_PREFERENCE:
        if source in m:
            return m[source]
    return next(iter(m.values()), None)


def budget_results(report: dict, target: str) -> list[dict]:
    return [r for r in (report.get("budgets") or {}).get("results") or [] if r.get("target") == target]


def budget_verdict(report: dict, target: str) -> Optional[bool]:
    """True all budgets met, False one missed, None no budget checked for this target."""
    results = budget_results(report, target)
    return None if not results else all(r.get("passed") for r in results)


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def fmt_ms(v: float) -> str:
    """Milliseconds with about four significant digits: 0.0099, 4.568, 12.35, 123.5."""
    return f"{v:.4f}" if v < 1 else f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def size_ratios(t: dict, suffix: str = "") -> str:
    """``0.10 / 0.35``: the files a device loads against the same format's FP32 artifact of the input model and
    of the compressed model (report.json's ``size_vs_fp32``); ``-`` for an FP32 target, ``?`` for a missing one."""
    r = t.get("size_vs_fp32")
    if not r:
        return "-"
    return " / ".join("?" if r.get(k) is None else f"{r[k]:.2f}{suffix}" for k in ("input_model", "compressed_model"))


def summary_tables(report: dict) -> list[Table]:
    st = Table(title=f"{report['recipe']['name']}: stages")
    for col in ("stage", "val top-1", "params", "MACs", "FP32 size", "wall s", "cached"):
        st.add_column(col, justify="right" if col != "stage" else "left")
    b = report["baseline"]
    st.add_row("baseline", _pct(b["top1_val"]), f"{b['params']:,}", f"{b['macs'] or 0:,}",
               f"{b['size_fp32_bytes'] / 1024:.1f} KiB", "-", "-")
    for s in report["stages"]:
        st.add_row(s["stage"], _pct(s["top1_val"]), f"{s['params']:,}", f"{s['macs'] or 0:,}",
                   f"{s['size_fp32_bytes'] / 1024:.1f} KiB", f"{s['wall_s']:.1f}", "yes" if s.get("cached") else "no")
    tt = Table(title="targets (verified on the test split)")
    ratios = any(t.get("size_vs_fp32") for t in report["targets"])
    # one line per target at 140 columns: the max logit error and per-source latencies are in report.json/html
    for col in ("target", "format", "status", "top-1 (torch)", "agreement", "size", *(["vs FP32"] if ratios else []),
                "p50 / p90 ms", "budgets"):
        # names and ratios never wrap or shorten (a cut target name is useless); the other columns may wrap
        keep = {"target": max([len(t["name"]) for t in report["targets"]] + [6]), "vs FP32": 11}
        tt.add_column(col, no_wrap=col in keep, min_width=keep.get(col), overflow="fold")
    for t in report["targets"]:
        v = t.get("verify") or {}
        m = preferred_measurement(report, t["name"])
        status = "[green]ok[/green]" if t["status"] == "ok" else "[red]failed[/red]"
        verdict = {None: "-", True: "[green]pass[/green]", False: "[red]FAIL[/red]"}[budget_verdict(report, t["name"])]
        tt.add_row(t["name"], f"{t['format']} {t['precision']}", status,
                   f"{_pct(v.get('top1'))} ({_pct(v.get('torch_top1'))})" if v else "-",
                   _pct(v.get("agreement")),
                   "-" if t.get("size_bytes") is None else f"{t['size_bytes'] / 1024:.1f} KiB",
                   *([size_ratios(t)] if ratios else []),
                   f"{fmt_ms(m['p50_ms'])} / {fmt_ms(m['p90_ms'])} ({m['source']})"
                   if m and m.get("p50_ms") is not None else "not measured", verdict)
    if ratios:
        tt.caption = ("vs FP32: the files a device loads as a fraction of the same format's FP32 artifact of "
                      "the input model / of the compressed model")
    return [st, tt]
