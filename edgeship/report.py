"""Printing a run's report.json as a table."""

from __future__ import annotations

from rich.table import Table


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


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
    for col in ("target", "format", "precision", "status", "top-1", "torch top-1", "agreement", "max |dlogit|", "size"):
        tt.add_column(col)
    for t in report["targets"]:
        v = t.get("verify") or {}
        status = "[green]ok[/green]" if t["status"] == "ok" else "[red]failed[/red]"
        tt.add_row(t["name"], t["format"], t["precision"], status, _pct(v.get("top1")), _pct(v.get("torch_top1")),
                   _pct(v.get("agreement")),
                   "-" if "max_abs_logit_diff" not in v else f"{v['max_abs_logit_diff']:.2e}",
                   "-" if t.get("size_bytes") is None else f"{t['size_bytes'] / 1024:.1f} KiB")
    return [st, tt]
