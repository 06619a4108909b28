"""Budgets and the CI gate.

Keys (recipe ``BudgetSpec``): ``latency_ms_p90``, ``peak_ram_mb``, ``model_size_kb`` (upper limits),
``min_top1`` (a lower limit, 0..1), ``max_accuracy_drop`` (top-1 points below the compressed torch model: what
lowering cost) and ``max_drop_vs_input`` (top-1 points below the input model: what the passes and lowering cost).
Each key of a target comes from the first place that sets it: the target's ``budgets:``, the
recipe's ``budgets:``, then the defaults of the target's device profile.

Latency and peak RAM come from the measurement of the chosen source (host, device, emulated or estimate);
size and accuracy are properties of the artifact (its files, and its own runtime on the test split)
and are the same for every source. A budget whose value is missing (nothing measured from that
source) fails: a gate must not pass on no data. A verdict built on estimates says so everywhere. An
emulated device measures nothing (it checks the device's runtime): a verdict on it never passes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgeship.devices.catalog import HOST
from edgeship.devices.catalog import get as get_device
from edgeship.errors import EdgeshipError
from edgeship.recipe import BudgetSpec
from edgeship.record import SOURCES, BudgetResult, Measurement, RunRecord, Target, Verdict

KEYS = tuple(BudgetSpec.model_fields)
LOWER_LIMITS = {"min_top1"}  # value must be >= limit; every other key: value <= limit
UNITS = {"latency_ms_p90": "ms", "peak_ram_mb": "MB", "model_size_kb": "KiB", "min_top1": "", "max_accuracy_drop": "pt",
         "max_drop_vs_input": "pt"}
MEASURED = {"latency_ms_p90", "peak_ram_mb"}  # these depend on the source
ESTIMATE_WARNING = "ESTIMATED latency (not measured on the device): a planning number, not a release gate"
EMULATED_WARNING = ("EMULATED device (qemu): it checks the device's runtime, it measures no latency or memory, so no "
                    "verdict on it passes; measure on the real device (profile --ssh) and check --source device")
EMULATED_NOTE = "emulated: no latency or memory claim (qemu); this budget cannot pass on an emulated device"


def effective(record: RunRecord, target: Target, measured_on: str | None = None) -> dict[str, tuple[float, str]]:
    """{key: (limit, where it came from)} for one target of a record's recipe. ``measured_on``: the device a
    device measurement or an estimate was made for, whose defaults then apply (an estimate for a Pi is
    judged by the Pi's limits even when the recipe's target names another device)."""
    recipe = record.recipe
    spec = next((t for t in recipe.targets if t.name == target.name), None)
    device = get_device(measured_on or (spec.device if spec else target.device) or HOST)
    layers = [("target", spec.budgets if spec and spec.budgets else BudgetSpec()), ("recipe", recipe.budgets),
              (f"device {device.name}", device.budgets)]
    out = {}
    for key in KEYS:
        for origin, layer in layers:
            value = getattr(layer, key)
            if value is not None:
                out[key] = (float(value), origin)
                break
    return out


def default_source(record: RunRecord) -> str:
    """device when anything was measured on a device, else host. Estimates only when asked for."""
    return "device" if any("device" in m for m in record.measurements.values()) else "host"


def _value(key: str, target: Target, meas: Measurement | None, record: RunRecord) -> tuple[float | None, str]:
    v = target.verify
    if key == "latency_ms_p90":
        return ((meas.p90_ms if meas else None),
                (meas.p90_method if meas and meas.p90_method else "p90 of the timed runs"))
    if key == "peak_ram_mb":
        return (meas.peak_rss_mb if meas else None), "peak RSS of the benchmark process"
    if key == "model_size_kb":
        return (None if target.size_bytes is None else target.size_bytes / 1024), "artifact files"
    if key == "min_top1":
        return (v.top1 if v else None), "top-1 on the test split"
    if key == "max_accuracy_drop":
        drop = v.accuracy_drop_pt if v else None
        if drop is None and v is not None and v.top1 is not None and v.torch_top1 is not None:
            drop = (v.torch_top1 - v.top1) * 100
        return drop, "top-1 points below torch"
    if key == "max_drop_vs_input":
        base = record.baseline.top1_test
        drop = None if v is None or v.top1 is None or base is None else (base - v.top1) * 100
        return drop, "top-1 points below the input model (before the passes)"
    raise KeyError(key)


def evaluate(record: RunRecord, source: str) -> Verdict:
    """The budget verdict for ``record`` against measurements of ``source``."""
    if source not in SOURCES:
        raise EdgeshipError(f"unknown measurement source {source!r}", f"use one of: {', '.join(SOURCES)}")
    results: list[BudgetResult] = []
    for t in record.targets:
        by_source = record.measurements_of(t.name)
        meas, used = by_source.get(source), source
        if meas is None and source != "host" and t.device == HOST and "host" in by_source:
            meas, used = by_source["host"], "host"  # the target's device IS this machine
        if not t.ok:
            results.append(BudgetResult(target=t.name, budget="artifact", passed=False, source="artifact",
                                        note=f"target failed: {t.error}"))
            continue
        measured_on = meas.device if meas is not None and used in ("device", "emulated", "estimate") else None
        for key, (limit, origin) in effective(record, t, measured_on).items():
            value, basis = _value(key, t, meas, record)
            row = BudgetResult(target=t.name, budget=key, limit=limit, passed=False,
                               source=used if key in MEASURED else "artifact", origin=origin, unit=UNITS[key],
                               basis=basis)
            if key in MEASURED and used != source:
                row.note = f"the target's device is the host: host measurement used for {source}"
            if value is None:
                row.note = (f"no {source} measurement: run `edgeship profile`" if key in MEASURED
                            else "not recorded in report.json")
                if key in MEASURED and meas is not None and used == "emulated":
                    row.note = EMULATED_NOTE
            else:
                margin = value - limit if key in LOWER_LIMITS else limit - value
                row.value, row.margin, row.passed = round(float(value), 4), round(float(margin), 4), bool(margin >= 0)
                row.margin_pct = round(100 * margin / limit, 2) if limit else None
            results.append(row)
    return Verdict(source=source, estimate=source == "estimate", results=results,
                   passed=bool(results) and all(r.passed for r in results) and source != "emulated",
                   warning={"estimate": ESTIMATE_WARNING, "emulated": EMULATED_WARNING}.get(source))


# ------------------------------------------------------------------ outputs
def _fmt(v, key: str = "", sign: str = "") -> str:
    if v is None:
        return "-"
    if key == "min_top1":
        return f"{v:{sign}.4f}"
    return f"{v:{sign}.4g}" if abs(v) < 1000 else f"{v:{sign},.0f}"


def _row_text(r: BudgetResult) -> tuple[str, str, str, str, str]:
    op = ">=" if r.budget in LOWER_LIMITS else "<="
    unit = f" {r.unit}" if r.unit else ""
    limit = f"{op} {_fmt(r.limit, r.budget)}{unit}" if r.limit is not None else "-"
    value = _fmt(r.value, r.budget) + (unit if r.value is not None else "")
    margin = "-" if r.margin is None else _fmt(r.margin, r.budget, "+") + unit
    if r.margin_pct is not None:
        margin += f" ({r.margin_pct:+.0f}%)"
    return limit, value, margin, ("pass" if r.passed else "FAIL"), r.note or ""


def table(verdict: Verdict):
    from rich.table import Table

    title = f"budgets (source: {verdict.source})"
    if verdict.warning:
        title += f"\n[bold yellow]{verdict.warning}[/bold yellow]"
    tb = Table(title=title)
    for col in ("target", "budget", "limit", "value", "margin", "result", "source", "note"):
        tb.add_column(col)
    for r in verdict.results:
        limit, value, margin, result, note = _row_text(r)
        color = "green" if r.passed else "red"
        tb.add_row(r.target, r.budget, limit, value, margin, f"[{color}]{result}[/{color}]", r.source, note)
    return tb


def summary_line(verdict: Verdict) -> str:
    n = len(verdict.results)
    failed = [r for r in verdict.results if not r.passed]
    tag = " [ESTIMATE]" if verdict.estimate else " [EMULATED]" if verdict.source == "emulated" else ""
    if not n:
        return f"budgets{tag}: nothing to check (no budgets and no targets)"
    if not failed and verdict.source == "emulated":
        return f"budgets{tag}: FAILED: an emulated device measures nothing, so no verdict on it passes"
    if not failed:
        return f"budgets{tag}: all {n} passed (source: {verdict.source})"
    names = ", ".join(f"{r.target}:{r.budget}" for r in failed)
    return f"budgets{tag}: {len(failed)} of {n} FAILED (source: {verdict.source}): {names}"


def junit_xml(verdict: Verdict) -> str:
    """One testcase per (target, budget); a failing case names both."""
    source = verdict.source
    failures = sum(not r.passed for r in verdict.results)
    suites = ET.Element("testsuites", name="edgeship check", tests=str(len(verdict.results)), failures=str(failures))
    suite = ET.SubElement(suites, "testsuite", name=f"edgeship budgets (source: {source})",
                          tests=str(len(verdict.results)), failures=str(failures), errors="0", skipped="0")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="source", value=source)
    if verdict.warning:
        ET.SubElement(props, "property", name="warning", value=verdict.warning)
    for r in verdict.results:
        limit, value, margin, _, note = _row_text(r)
        tag = f" [{r.source}]" if r.source != "artifact" else ""
        case = ET.SubElement(suite, "testcase", classname=f"edgeship.budgets.{r.target}",
                             name=f"{r.target}: {r.budget} {limit}{tag}", time="0")
        if not r.passed:
            msg = (f"{r.target}: budget {r.budget} failed: value {value}, limit {limit}, margin {margin}"
                   f" (source: {r.source})" + (f"; {note}" if note else ""))
            ET.SubElement(case, "failure", message=msg, type="BudgetExceeded").text = msg
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def markdown(verdict: Verdict, run_name: str = "") -> str:
    ok = verdict.passed
    lines = [f"## edgeship budgets{': ' + run_name if run_name else ''} ({'passed' if ok else 'FAILED'})", ""]
    if verdict.warning:
        lines += [f"> **Warning:** {verdict.warning}.", ""]
    lines += [f"Source of latency and RAM: **{verdict.source}**. {summary_line(verdict)}", "",
              "| target | budget | limit | value | margin | result | source |", "|---|---|---|---|---|---|---|"]
    for r in verdict.results:
        limit, value, margin, result, note = _row_text(r)
        mark = "pass" if r.passed else "**FAIL**"
        extra = f" ({note})" if note else ""
        lines.append(f"| {r.target} | {r.budget} | {limit} | {value}{extra} | {margin} | {mark} | {r.source} |")
    return "\n".join(lines) + "\n"
