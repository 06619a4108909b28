"""A run record as console tables (the summary `export` and `report` print)."""

from __future__ import annotations

from rich.table import Table

from edgeship.record import RunRecord, Target


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def fmt_ms(v: float) -> str:
    """Milliseconds with about four significant digits: 0.0099, 4.568, 12.35, 123.5."""
    return f"{v:.4f}" if v < 1 else f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def size_ratios(t: Target, suffix: str = "") -> str:
    """``0.10 / 0.35``: the files a device loads against the same format's FP32 artifact of the input model and
    of the compressed model (report.json's ``size_vs_fp32``); ``-`` for an FP32 target, ``?`` for a missing one."""
    r = t.size_vs_fp32
    if r is None:
        return "-"
    return " / ".join("?" if v is None else f"{v:.2f}{suffix}" for v in (r.input_model, r.compressed_model))


def speed_ratios(t: Target, suffix: str = "x") -> str:
    """``4.10x / 1.21x``: how many times faster than the same format's FP32 artifact of the input model and of the
    compressed model the artifact ran on this machine, timed side by side at export (report.json's
    ``speed_vs_fp32``); ``-`` where it was not timed, ``?`` for a missing one."""
    r = t.speed_vs_fp32
    if r is None or r.error:
        return "-"
    return " / ".join("?" if v is None else f"{v:.2f}{suffix}" for v in (r.input_model, r.compressed_model))


def _accuracy(v) -> str:
    """top-1 (torch's) of an image classifier; for an io: model, how many outputs are within their tolerance."""
    if v is None:
        return "-"
    if v.top1 is not None or not v.outputs:
        return f"{_pct(v.top1)} ({_pct(v.torch_top1)})"
    ok = sum(o.passed is not False for o in v.outputs.values())
    return f"{ok}/{len(v.outputs)} outputs ok"


def on_device(m, short: bool = False) -> str:
    """A device runtime's verification, top-1 / agreement with the host's outputs of the same artifact:
    ``91.41% / 100.00% (emulated aarch64, 256 samples)``, short: ``91.4% / 100.0% emu``."""
    v, emulated = m.verification, m.source == "emulated"
    if v.agreement is None and v.outputs:  # no classification output: how far the outputs are from the host's
        worst = max((o.max_abs_diff for o in v.outputs if o.max_abs_diff is not None), default=None)
        diff = "NaN/inf" if worst is None else f"{worst:.2g}"
        return (f"max |diff| {diff}" + (" emu" if emulated else "") if short else
                f"max |diff| {diff} ({'emulated ' if emulated else ''}"
                f"{m.facts.get('machine') or m.device or 'device'}, {v.n} samples)")
    if short:
        pct = lambda x: "-" if x is None else f"{x:.1%}"  # noqa: E731
        return f"{pct(v.top1)} / {pct(v.agreement)}" + (" emu" if emulated else "")
    return (f"{_pct(v.top1)} / {_pct(v.agreement)} ({'emulated ' if emulated else ''}"
            f"{m.facts.get('machine') or m.device or 'device'}, {v.n} samples)")


def summary_tables(record: RunRecord) -> list[Table]:
    st = Table(title=f"{record.recipe.name}: stages")
    for col in ("stage", "val top-1", "params", "MACs", "FP32 size", "wall s", "cached"):
        st.add_column(col, justify="right" if col != "stage" else "left")
    b = record.baseline
    st.add_row("baseline", _pct(b.top1_val), f"{b.params:,}", f"{b.macs or 0:,}", f"{b.size_fp32_bytes / 1024:.1f} KiB",
               "-", "-")
    for s in record.stages:
        st.add_row(s.stage, _pct(s.top1_val), f"{s.params:,}", f"{s.macs or 0:,}",
                   f"{s.size_fp32_bytes / 1024:.1f} KiB", f"{s.wall_s:.1f}", "yes" if s.cached else "no")
    tt = Table(title="targets (verified on the test split)")
    ratios = any(t.size_vs_fp32 for t in record.targets)
    speeds = any(t.speed_vs_fp32 and not t.speed_vs_fp32.error for t in record.targets)
    checked = any(record.device_verification(t.name) for t in record.targets)
    # one line per target at 140 columns: the max logit error and per-source latencies are in report.json/html
    for col in ("target", "format", "status", "top-1 (torch)", "agreement", "size", *(["vs FP32"] if ratios else []),
                *(["speed vs FP32"] if speeds else []), *(["on device"] if checked else []), "p50 / p90 ms",
                "budgets"):
        # names and ratios never wrap or shorten (a cut target name is useless); the other columns may wrap
        keep = {"target": max([len(t.name) for t in record.targets] + [6]), "vs FP32": 11, "speed vs FP32": 13,
                "on device": 19}
        tt.add_column(col, no_wrap=col in keep, min_width=keep.get(col), overflow="fold")
    for t in record.targets:
        v = t.verify
        m = record.preferred_measurement(t.name)
        status = "[green]ok[/green]" if t.ok else "[red]failed[/red]"
        verdict = {None: "-", "pass": "[green]pass[/green]", "fail": "[red]FAIL[/red]",
                   "unverified": "[yellow]unverified[/yellow]"}[record.budget_status(t.name)]
        tt.add_row(t.name, f"{t.format} {t.precision}" + ("" if t.model == "main" else f" ({t.model})"), status,
                   _accuracy(v), _pct(v.agreement if v else None),
                   "-" if t.size_bytes is None else f"{t.size_bytes / 1024:.1f} KiB",
                   *([size_ratios(t)] if ratios else []), *([speed_ratios(t)] if speeds else []),
                   *([on_device(d, short=True) if (d := record.device_verification(t.name)) else "-"]
                     if checked else []),
                   f"{fmt_ms(m.p50_ms)} / {fmt_ms(m.p90_ms or 0)} ({m.source})"
                   if m and m.p50_ms is not None else "not measured", verdict)
    notes = []
    if ratios:
        notes.append("vs FP32: the files a device loads as a fraction of the same format's FP32 artifact of "
                     "the input model / of the compressed model")
    if speeds:
        notes.append("speed vs FP32: how many times faster than those two FP32 artifacts each ran on this machine, "
                     "timed side by side at export (below 1: slower)")
    if checked:
        notes.append("on device: top-1 / agreement with the same artifact's outputs here, as the device's own "
                     "runtime computed them on test samples (emu: an emulated device)")
    coarse = next((t.verify.gate_note for t in record.targets if t.verify and t.verify.gate_note), None)
    if coarse:
        notes.append(f"[yellow]{coarse}[/yellow]")
    if notes:
        tt.caption = "\n".join(notes)
    return [st, tt]
