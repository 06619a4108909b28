"""Budgets and the CI gate.

Keys (recipe ``BudgetSpec``): ``latency_ms_p90``, ``peak_ram_mb``, ``model_size_kb`` (upper limits),
``min_top1`` (a lower limit, 0..1), ``max_accuracy_drop`` (top-1 points below the compressed torch model: what
lowering cost), ``max_drop_vs_input`` (top-1 points below the input model: what the passes and lowering cost) and
``min_speedup_vs_fp32`` (a lower limit: how many times faster than the input model's FP32 artifact of the same format
an INT8/FP16 artifact ran, both timed side by side on this machine at export, ``Target.speed_vs_fp32``; judged for
targets of this machine only, and not for FP32 targets).
Each key of a target comes from the first place that sets it: the target's ``budgets:``, the
recipe's ``budgets:``, then the defaults of the target's device profile.

Size and accuracy are properties of the artifact (its files, and its own runtime on the test split) and are
the same wherever it runs. Latency and peak RAM belong to a device: a target's latency and RAM budgets are
judged on numbers from that target's device and nothing else. With the default source (``auto``) that is
a measurement on the device (``profile --ssh/--adb``), or, for a target whose device is this machine, the
host measurement, else a prediction for that device (``profile --predict``, from a predictor calibrated there),
which passes a latency budget only if the prediction plus the predictor's measured error bound does (it predicts
no memory: RAM stays unverified). Anything else (nothing measured there, or only the host's numbers for a
Raspberry Pi) is ``unverified``: never a pass, so ``check`` exits non-zero. Host numbers or estimates judge
another device's budgets only when asked for by name (``--source host``, ``--source estimate``), and then the
verdict, the table, the JUnit file and the Markdown summary all say which devices they stood in for.
An emulated device measures nothing (it checks the device's runtime): its latency and RAM rows are unverified
and a verdict on ``--source emulated`` never passes.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from edgeship.devices.catalog import HOST
from edgeship.devices.catalog import get as get_device
from edgeship.devices.kernels import ops_text
from edgeship.errors import EdgeshipError
from edgeship.recipe import BudgetSpec
from edgeship.record import CHECK_SOURCES, BudgetResult, Measurement, RunRecord, Target, Verdict

KEYS = tuple(BudgetSpec.model_fields)
LOWER_LIMITS = {"min_top1", "min_speedup_vs_fp32"}  # value must be >= limit; every other key: value <= limit
UNITS = {"latency_ms_p90": "ms", "peak_ram_mb": "MB", "model_size_kb": "KiB", "min_top1": "", "max_accuracy_drop": "pt",
         "max_drop_vs_input": "pt", "min_speedup_vs_fp32": "x"}
SPEED = "min_speedup_vs_fp32"
MEASURED = {"latency_ms_p90", "peak_ram_mb"}  # these depend on the source
ESTIMATE_WARNING = "ESTIMATED latency (not measured on the device): a planning number, not a release gate"
EMULATED_WARNING = ("EMULATED device (qemu): it checks the device's runtime, it measures no latency or memory, so no "
                    "verdict on it passes; measure on the real device (profile --ssh) and check --source device")
EMULATED_NOTE = "emulated: no latency or memory claim (qemu); this budget cannot pass on an emulated device"
STAND_IN_WARNING = ("{source} numbers judge the latency and RAM budgets of {devices}, which were not measured "
                    "(asked for with --source {source}): not a release gate for those devices")


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
    """``auto``: each target judged on its own device's numbers (see the module's docstring)."""
    return "auto"


def _evidence(source: str, device: str, by_source: dict[str, Measurement]) -> tuple[Measurement | None, str, str]:
    """(measurement, its source, note) that may judge a target on ``device`` when ``source`` is asked for."""
    on_host = device == HOST
    if source == "auto":
        if "device" in by_source:
            return by_source["device"], "device", ""
        if on_host and "host" in by_source:
            return by_source["host"], "host", ""
        if "predicted" in by_source:
            return by_source["predicted"], "predicted", ""
        return None, "device", f"no measurement from {device}: {_how_to_measure(device)}"
    m = by_source.get(source)
    if m is None and on_host and source != "host" and "host" in by_source:
        return by_source["host"], "host", f"the target's device is the host: host measurement used for {source}"
    if m is None:
        how = {"host": "`edgeship profile RUN`", "estimate": f"`edgeship profile RUN --estimate --device {device}`",
               "predicted": f"`edgeship profile RUN --predict --device {device}`"}
        return None, source, (f"no {source} measurement: run {how[source]}" if source in how
                              else f"no measurement from {device}: {_how_to_measure(device)}")
    return m, source, ""


def _how_to_measure(device: str) -> str:
    return (f"`edgeship profile RUN --ssh USER@HOST --device {device}` (or `--adb SERIAL`), or predict it with a "
            f"predictor calibrated there (`profile RUN --calibrate --device {device} --ssh USER@HOST`); "
            "`check --source host` judges it on this machine's numbers instead")


def _stands_in(used: str, device: str, meas: Measurement | None) -> bool:
    """Numbers that are not from the target's device: the host's, or an estimate."""
    return device != HOST and meas is not None and used in ("host", "estimate")


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
    if key == SPEED:
        s = target.speed_vs_fp32
        return ((s.input_model if s and not s.error else None),
                f"the input model's FP32 {target.format} p50 over this p50, timed side by side on this machine"
                + (f" (median of {s.processes} processes)" if s else ""))
    if key == "max_drop_vs_input":
        base = record.baseline.top1_test
        drop = None if v is None or v.top1 is None or base is None else (base - v.top1) * 100
        return drop, "top-1 points below the input model (before the passes)"
    raise KeyError(key)


def evaluate(record: RunRecord, source: str = "auto") -> Verdict:
    """The budget verdict for ``record``: latency and RAM from ``source`` (``auto``: each target's own device)."""
    if source not in CHECK_SOURCES:
        raise EdgeshipError(f"unknown measurement source {source!r}", f"use {', '.join(CHECK_SOURCES)}")
    results: list[BudgetResult] = []
    stand_ins: set[str] = set()
    for t in record.targets:
        if not t.ok:
            results.append(BudgetResult(target=t.name, budget="artifact", passed=False, source="artifact",
                                        note=f"target failed: {t.error}"))
            continue
        meas, used, why = _evidence(source, t.device or HOST, record.measurements_of(t.name))
        on_device = ("device", "emulated", "estimate", "predicted")
        measured_on = meas.device if meas is not None and used in on_device else None
        device = measured_on or t.device or HOST
        stand_in = _stands_in(used, device, meas)
        for key, (limit, origin) in effective(record, t, measured_on).items():
            if key == SPEED and t.precision == "fp32":
                continue  # its own FP32: nothing to be faster than
            row = _row(key, limit, origin, t, meas if key in MEASURED else None, used, device, record)
            if key == SPEED:
                _speed_row(row, t)
            elif key in MEASURED and used == "emulated":  # its timings, if any, say nothing about the device
                row.value = row.margin = row.margin_pct = None
                row.passed, row.status, row.note = False, "unverified", EMULATED_NOTE
            elif key in MEASURED and used == "predicted" and meas is not None:
                _predicted_row(row, key, meas)
            elif key in MEASURED:
                if row.value is None:
                    row.status, row.note = "unverified", why or "not measured"
                elif stand_in:
                    stand_ins.add(device)
                    row.note = f"{used} numbers stand in for {device} (asked for with --source {source})"
                elif why:
                    row.note = why
            results.append(row)
    warning = (ESTIMATE_WARNING if source == "estimate" else EMULATED_WARNING if source == "emulated" else
               STAND_IN_WARNING.format(source=source, devices=", ".join(sorted(stand_ins))) if stand_ins else None)
    return Verdict(source=source, estimate=source == "estimate", results=results,
                   passed=bool(results) and all(r.passed for r in results) and source != "emulated",
                   warning=warning,
                   stand_in_for=sorted(stand_ins))


def _speed_row(row: BudgetResult, t: Target) -> None:
    """The speed ratio is this machine's: timed at export for a target of this machine, never for another device."""
    row.source, row.device = "host", HOST
    if (t.device or HOST) != HOST:
        row.value = row.margin = row.margin_pct = None
        row.passed, row.status = False, "unverified"
        row.note = (f"timed on this machine only, and {t.device} is not this machine: move the budget to a target of "
                    "device host, or judge the device on latency_ms_p90")
    elif row.value is None:
        s = t.speed_vs_fp32
        row.note = (f"timing it beside its FP32 references failed: {s.error}" if s and s.error else
                    f"no FP32 {t.format} artifact of the input model to time it beside (report.json's "
                    "size_references says why)" if s else
                    "not timed: export times it (not with --no-measure), beside the FP32 artifacts it lowers")


def _measure_on(device: str | None) -> str:
    return f"measure on {device} (`edgeship profile RUN --ssh USER@HOST --device {device}`)"


def _predicted_row(row: BudgetResult, key: str, meas: Measurement) -> None:
    """A prediction judges a latency budget by its upper bound (prediction + the predictor's measured error);
    it predicts no memory, so a RAM budget stays unverified."""
    p = meas.prediction
    if key != "latency_ms_p90" or p is None:
        row.value = row.margin = row.margin_pct = None
        row.passed, row.status = False, "unverified"
        row.note = f"the {meas.device} predictor predicts latency, not memory: {_measure_on(meas.device)}"
        return
    if p.unmodelled_ops:  # the error bound was measured on graphs without these: it bounds nothing here
        row.value = row.margin = row.margin_pct = None
        row.passed, row.status = False, "unverified"
        row.note = (f"the {meas.device} predictor does not model {ops_text(p.unmodelled_ops)} of this artifact "
                    f"(its predicted p90 {meas.p90_ms:.4g} ms leaves them out): {_measure_on(meas.device)}")
        return
    if p.unvalidated:  # a 1-D model on an error measured on 2-D ones: p30's LiteRT file, 96 % stated, 27-43 % met
        row.value = row.margin = row.margin_pct = None
        row.passed, row.status = False, "unverified"
        row.note = (f"the {meas.device} predictor's error does not hold for this artifact: {p.unvalidated} "
                    f"(predicted p90 {meas.p90_ms:.4g} ms): calibrate again or {_measure_on(meas.device)}")
        return
    bound = p.p90_upper_pct if p.p90_upper_pct is not None else p.upper_pct
    row.basis = "predicted p90 + the predictor's error bound"
    _judge(row, p.p90_upper_ms)
    row.note = (f"PREDICTED p90 {meas.p90_ms:.4g} ms + {bound:.1f}% error bound (95th percentile of its "
                f"under-prediction on {p.n_validation} unseen{' 1-D' if p.error_family == '1d' else ''} "
                f"architectures; p50 MAPE {p.mape_pct:.1f}%) = "
                f"{p.p90_upper_ms:.4g} ms")


def _row(key: str, limit: float, origin: str, t: Target, meas: Measurement | None, used: str,
         device: str, record: RunRecord) -> BudgetResult:
    """One budget of one target, judged on its value (no value: not passed; the caller says why)."""
    value, basis = _value(key, t, meas, record)
    row = BudgetResult(target=t.name, budget=key, limit=limit, passed=False, status="fail",
                       source=used if key in MEASURED else "artifact", origin=origin, unit=UNITS[key], basis=basis,
                       device=device if key in MEASURED else None)
    if value is None:
        row.status, row.note = "unverified", "not recorded in report.json"
        return row
    _judge(row, value)
    return row


def _judge(row: BudgetResult, value: float) -> None:
    limit = float(row.limit or 0.0)
    margin = value - limit if row.budget in LOWER_LIMITS else limit - value
    row.value, row.margin, row.passed = round(float(value), 4), round(float(margin), 4), bool(margin >= 0)
    row.status = "pass" if row.passed else "fail"
    row.margin_pct = round(100 * margin / limit, 2) if limit else None


# ------------------------------------------------------------------ outputs
def _fmt(v, key: str = "", sign: str = "") -> str:
    if v is None:
        return "-"
    if key == "min_top1":
        return f"{v:{sign}.4f}"
    return f"{v:{sign}.4g}" if abs(v) < 1000 else f"{v:{sign},.0f}"


RESULT_TEXT = {"pass": "pass", "fail": "FAIL", "unverified": "UNVERIFIED"}


def _row_text(r: BudgetResult) -> tuple[str, str, str, str, str]:
    op = ">=" if r.budget in LOWER_LIMITS else "<="
    unit = f" {r.unit}" if r.unit else ""
    limit = f"{op} {_fmt(r.limit, r.budget)}{unit}" if r.limit is not None else "-"
    value = _fmt(r.value, r.budget) + (unit if r.value is not None else "")
    margin = "-" if r.margin is None else _fmt(r.margin, r.budget, "+") + unit
    if r.margin_pct is not None:
        margin += f" ({r.margin_pct:+.0f}%)"
    return limit, value, margin, RESULT_TEXT[r.status], r.note or ""


def source_text(verdict: Verdict) -> str:
    if verdict.source == "auto":
        return "each target's device"
    return verdict.source + (f", standing in for {', '.join(verdict.stand_in_for)}" if verdict.stand_in_for else "")


def table(verdict: Verdict):
    from rich.markup import escape  # a note may quote an error that names io.outputs[name]
    from rich.table import Table

    title = f"budgets (source: {source_text(verdict)})"
    if verdict.warning:
        title += f"\n[bold yellow]{verdict.warning}[/bold yellow]"
    marks = repeated_notes([r.note or "" for r in verdict.results])
    tb = Table(title=title, caption="\n".join(f"note {i}: {escape(n)}" for n, i in marks.items()) or None,
               caption_justify="left")
    for col in ("target", "budget", "limit", "value", "margin", "result", "source", "note"):
        tb.add_column(col)
    colors = {"pass": "green", "fail": "red", "unverified": "yellow"}
    for r in verdict.results:
        limit, value, margin, result, note = _row_text(r)
        note = escape(short_note(note, marks))
        color = colors[r.status]
        tb.add_row(r.target, r.budget, limit, value, margin, f"[{color}]{result}[/{color}]", r.source, note)
    return tb


def repeated_notes(notes: list[str]) -> dict[str, int]:
    """Long notes that more than one row carries (the how-to-measure advice of every unverified budget of a device),
    numbered in order of first use: the table prints each once, below it, instead of wrapping it into every row."""
    return {n: i for i, n in enumerate((n for n in dict.fromkeys(notes) if len(n) > 60 and notes.count(n) > 1), 1)}


def short_note(note: str, marks: dict[str, int]) -> str:
    """A row's note, or its head and a reference when ``repeated_notes`` prints it below the table."""
    if note not in marks:
        return note
    return (note.split(": ", 1)[0] + ": " if ": " in note else "") + f"see note {marks[note]}"


def summary_line(verdict: Verdict) -> str:
    n = len(verdict.results)
    failed = [r for r in verdict.results if r.status == "fail"]
    unverified = verdict.unverified
    tag = (" [ESTIMATE]" if verdict.estimate else " [EMULATED]" if verdict.source == "emulated" else
           " [HOST NUMBERS]" if verdict.stand_in_for else "")
    source = f"source: {source_text(verdict)}"
    if not n:
        return f"budgets{tag}: nothing to check (no budgets and no targets)"
    if not failed and verdict.source == "emulated":
        return f"budgets{tag}: FAILED: an emulated device measures nothing, so no verdict on it passes"
    if not failed and not unverified:
        return f"budgets{tag}: all {n} passed ({source})"
    parts = []
    if failed:
        parts.append(f"{len(failed)} of {n} FAILED ({source}): " + ", ".join(f"{r.target}:{r.budget}" for r in failed))
    if unverified:
        devices = sorted({r.device for r in unverified if r.device and r.budget in MEASURED})
        why = "; ".join(([] if failed else [source])
                        + ([f"no latency or RAM measured on {', '.join(devices)} itself"] if devices else []))
        parts.append(f"{len(unverified)} of {n} UNVERIFIED" + (f" ({why})" if why else "") + ": "
                     + ", ".join(f"{r.target}:{r.budget}" for r in unverified))
    return f"budgets{tag}: " + "; ".join(parts)


def junit_xml(verdict: Verdict) -> str:
    """One testcase per (target, budget); a failing case names both, an unverified one is an error (no value
    could judge it)."""
    source = verdict.source
    failures = sum(r.status == "fail" for r in verdict.results)
    errors = len(verdict.unverified)
    suites = ET.Element("testsuites", name="edgeship check", tests=str(len(verdict.results)), failures=str(failures),
                        errors=str(errors))
    suite = ET.SubElement(suites, "testsuite", name=f"edgeship budgets (source: {source_text(verdict)})",
                          tests=str(len(verdict.results)), failures=str(failures), errors=str(errors), skipped="0")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="source", value=source)
    if verdict.stand_in_for:
        ET.SubElement(props, "property", name="stand_in_for", value=",".join(verdict.stand_in_for))
    if verdict.warning:
        ET.SubElement(props, "property", name="warning", value=verdict.warning)
    for r in verdict.results:
        limit, value, margin, _, note = _row_text(r)
        tag = f" [{r.source}]" if r.source != "artifact" else ""
        case = ET.SubElement(suite, "testcase", classname=f"edgeship.budgets.{r.target}",
                             name=f"{r.target}: {r.budget} {limit}{tag}", time="0")
        if r.status == "fail":
            msg = (f"{r.target}: budget {r.budget} failed: value {value}, limit {limit}, margin {margin}"
                   f" (source: {r.source})" + (f"; {note}" if note else ""))
            ET.SubElement(case, "failure", message=msg, type="BudgetExceeded").text = msg
        elif r.status == "unverified":
            msg = f"{r.target}: budget {r.budget} unverified: {note or 'no value'}"
            ET.SubElement(case, "error", message=msg, type="BudgetUnverified").text = msg
        elif note:
            ET.SubElement(case, "system-out").text = note
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def markdown(verdict: Verdict, run_name: str = "") -> str:
    ok = verdict.passed
    state = "passed" if ok else "FAILED" if any(r.status == "fail" for r in verdict.results) else "UNVERIFIED"
    lines = [f"## edgeship budgets{': ' + run_name if run_name else ''} ({state})", ""]
    if verdict.warning:
        lines += [f"> **Warning:** {verdict.warning}.", ""]
    lines += [f"Source of latency and RAM: **{source_text(verdict)}**. {summary_line(verdict)}", "",
              "| target | budget | limit | value | margin | result | source |", "|---|---|---|---|---|---|---|"]
    marks = {"pass": "pass", "fail": "**FAIL**", "unverified": "**UNVERIFIED**"}
    notes = repeated_notes([r.note or "" for r in verdict.results])
    for r in verdict.results:
        limit, value, margin, _, note = _row_text(r)
        extra = f" ({short_note(note, notes)})" if note else ""
        lines.append(f"| {r.target} | {r.budget} | {limit} | {value}{extra} | {margin} | {marks[r.status]} | "
                     f"{r.source} |")
    if notes:
        lines += [""] + [f"- note {i}: {n}" for n, i in notes.items()]
    return "\n".join(lines) + "\n"
