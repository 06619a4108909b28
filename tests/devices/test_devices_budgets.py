"""Device catalog, budget inheritance and evaluation, the JUnit/Markdown outputs, estimates."""

from __future__ import annotations

import platform
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import tomllib
import yaml

from edgeship.api import load_recipe
from edgeship.devices import budgets
from edgeship.devices import catalog as devices
from edgeship.devices.bench_runner import cpu_features
from edgeship.devices.estimate import estimate
from edgeship.errors import EdgeshipError
from edgeship.record import BudgetResult, Measurement
from helpers import run_record

REPO = Path(__file__).resolve().parents[2]


def test_catalog_has_the_devices_and_each_profile_is_complete():
    assert set(devices.names()) == {"host", "rpi4", "rpi5", "pixel", "jetson-nano", "x86-edge"}
    for p in devices.catalog():
        assert p.cpu.cores >= 1 and p.threads >= 1 and p.formats
        assert set(p.estimate.factor) == {"fp32", "fp16", "int8"}
        assert p.budgets.latency_ms_p90 and p.budgets.peak_ram_mb and p.budgets.model_size_kb
    rpi5, rpi4 = devices.get("rpi5"), devices.get("rpi4")
    assert "dotprod" in rpi5.cpu.features and "dotprod" not in rpi4.cpu.features
    assert devices.get("pixel").connect == "adb" and devices.get("pixel").formats == ["tflite"]
    assert "avx_vnni" in devices.get("x86-edge").cpu.features


def test_host_is_detected_from_this_machine():
    host = devices.get("host")
    assert host.detected and host.cpu.arch == platform.machine()
    assert host.ram_mb > 0 and host.cpu.model
    # this venv has all three runtimes; a host only lists formats it can run
    assert host.formats == ["onnx", "openvino", "tflite"]
    assert host.runtimes["tflite"] in ("ai-edge-litert", "tflite-runtime")
    if platform.machine() == "x86_64":
        assert "avx2" in host.cpu.features


def test_cpu_features_from_cpuinfo_of_both_architectures():
    x86 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni avx_vnni\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes crc32 asimdhp asimddp i8mm\nCPU part\t: 0xd0b\n"
    assert cpu_features(x86) == ["avx", "avx2", "avx512_vnni", "avx512f", "avx_vnni", "fma", "sse4_2"]
    assert cpu_features(arm) == ["crc32", "dotprod", "fp16", "i8mm", "neon"]  # crc32: the rpi4 profile lists it


def test_unknown_device_is_bad_input():
    with pytest.raises(EdgeshipError, match="unknown device 'rpi9'.*rpi4"):
        devices.get("rpi9")


def test_package_data_ships_the_device_yaml():
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["edgeship"]
    shipped = {p for pat in patterns for p in (REPO / "edgeship").glob(pat)}
    assert {p for p in devices.CATALOG_DIR.glob("*.yaml")} <= shipped
    assert len(list(devices.CATALOG_DIR.glob("*.yaml"))) == 6


@pytest.mark.parametrize("where", ["recipe", "target"])
def test_unknown_budget_key_is_a_recipe_error(tmp_path, digits_recipe, where):
    path = digits_recipe()
    r = yaml.safe_load(path.read_text())
    if where == "recipe":
        r["budgets"] = {"latency_p90": 5}
    else:
        r["targets"][0]["budgets"] = {"latency_ms_p90": 5, "ram": 10}
    path.write_text(yaml.safe_dump(r))
    with pytest.raises(EdgeshipError) as e:
        load_recipe(path)
    assert "unknown key" in str(e.value) and "latency_ms_p90, peak_ram_mb, model_size_kb" in str(e.value)


def test_unknown_device_in_recipe_is_a_recipe_error(digits_recipe):
    path = digits_recipe()
    r = yaml.safe_load(path.read_text())
    r["targets"][0]["device"] = "raspberry"
    path.write_text(yaml.safe_dump(r))
    with pytest.raises(EdgeshipError, match="targets.0.device: unknown device 'raspberry'"):
        load_recipe(path)


# --------------------------------------------------------------------------- budgets
def _report(target_budgets=None, recipe_budgets=None, device="rpi4", meas=None, status="ok"):
    t = {"name": "t1", "device": device, "format": "tflite", "precision": "int8", "status": status,
         "error": None if status == "ok" else "conversion failed", "size_bytes": 204800,
         "verify": {"n": 100, "top1": 0.95, "torch_top1": 0.96, "accuracy_drop_pt": 1.0}}
    spec = {"name": "t1", "device": device, "format": "tflite", "precision": "int8", "budgets": target_budgets}
    return run_record({"targets": [spec], "budgets": recipe_budgets or {}}, targets=[t],
                      measurements={"t1": meas or {}})


def _host(p90=4.0, threads=1) -> Measurement:
    return Measurement(source="host", p50_ms=3.0, p90_ms=p90, p99_ms=5.0, mean_ms=3.2, std_ms=0.4, min_ms=2.9,
                       max_ms=5.5, samples_ms=[3.0] * 5, load_ms=12.0, first_run_ms=4.0, peak_rss_mb=80.0,
                       size_bytes=204800, threads=threads, runs=5, facts={"cpu": "x"})


def _evaluate(rep, source) -> dict:
    return budgets.evaluate(rep, source).model_dump()


def test_budgets_inherit_target_then_recipe_then_device():
    rep = _report(target_budgets={"latency_ms_p90": 3.0}, recipe_budgets={"latency_ms_p90": 9.0, "min_top1": 0.9})
    eff = budgets.effective(rep, rep.targets[0])
    assert eff["latency_ms_p90"] == (3.0, "target")
    assert eff["min_top1"] == (0.9, "recipe")
    rpi4 = devices.get("rpi4").budgets
    assert eff["peak_ram_mb"] == (rpi4.peak_ram_mb, "device rpi4")
    assert eff["model_size_kb"] == (rpi4.model_size_kb, "device rpi4")
    assert "max_accuracy_drop" not in eff  # set nowhere


def test_evaluate_pass_fail_and_margins():
    rep = _report(target_budgets={"latency_ms_p90": 3.0, "min_top1": 0.96, "max_accuracy_drop": 2.0,
                                  "model_size_kb": 250}, meas={"host": _host(p90=4.0)})
    v = _evaluate(rep, "host")
    rows = {r["budget"]: r for r in v["results"]}
    assert not v["passed"]
    assert rows["latency_ms_p90"]["passed"] is False and rows["latency_ms_p90"]["margin"] == pytest.approx(-1.0)
    assert rows["min_top1"]["passed"] is False and rows["min_top1"]["margin"] == pytest.approx(-0.01)
    assert rows["max_accuracy_drop"]["passed"] is True and rows["max_accuracy_drop"]["margin"] == pytest.approx(1.0)
    assert rows["model_size_kb"]["value"] == pytest.approx(200.0) and rows["model_size_kb"]["passed"]
    assert rows["peak_ram_mb"]["passed"] and rows["peak_ram_mb"]["source"] == "host"
    assert rows["model_size_kb"]["source"] == "artifact"


def test_accuracy_lost_to_compression_is_judged_against_the_input_model():
    """The artifact loses 1 pt to lowering (passes max_accuracy_drop 2) but 4 pt against the model before the
    passes: max_drop_vs_input 2 fails it."""
    rep = _report(target_budgets={"max_accuracy_drop": 2.0, "max_drop_vs_input": 2.0}, meas={"host": _host()})
    rep.baseline.top1_test = 0.99
    rows = {r["budget"]: r for r in _evaluate(rep, "host")["results"]}
    assert rows["max_accuracy_drop"]["passed"] is True
    vs_input = rows["max_drop_vs_input"]
    assert vs_input["passed"] is False and vs_input["value"] == pytest.approx(4.0) and vs_input["unit"] == "pt"
    assert "input model" in vs_input["basis"]


def test_the_speed_budget_names_why_it_has_no_value():
    """min_speedup_vs_fp32 without a value is unverified and says which of the three reasons holds: never timed
    (--no-measure), the timing failed, or no FP32 artifact of the input model to time it beside."""
    from edgeship.record import SpeedVsFP32

    for speed, why in ((None, "not timed: export times it"),
                       (SpeedVsFP32(threads=1, processes=3, error="the runtime refused it"), "failed: the runtime"),
                       (SpeedVsFP32(threads=1, processes=3, compressed_model=1.2, p50_ms=1.0),
                        "no FP32 tflite artifact of the input model"),
                       (SpeedVsFP32(threads=1, processes=3, input_model=2.5, compressed_model=1.2, p50_ms=1.0), "")):
        rep = _report(target_budgets={"min_speedup_vs_fp32": 2.0}, device="host", meas={"host": _host()})
        rep.targets[0].speed_vs_fp32 = speed
        (row,) = [r for r in _evaluate(rep, "auto")["results"] if r["budget"] == "min_speedup_vs_fp32"]
        assert row["source"] == "host" and row["unit"] == "x"
        if why:
            assert row["status"] == "unverified" and why in row["note"], row
        else:
            assert row["status"] == "pass" and row["value"] == 2.5 and row["margin"] == pytest.approx(0.5)


def test_missing_measurement_is_unverified_never_passed():
    v = _evaluate(_report(meas={"host": _host()}), "device")
    rows = {r["budget"]: r for r in v["results"]}
    assert rows["latency_ms_p90"]["passed"] is False and rows["latency_ms_p90"]["value"] is None
    assert rows["latency_ms_p90"]["status"] == "unverified"
    assert "no measurement from rpi4" in rows["latency_ms_p90"]["note"]
    assert not v["passed"]


def test_a_pi_budget_is_not_passed_on_host_numbers():
    """The default verdict (auto) judges a Pi target on the Pi's numbers: a fast host leaves it unverified."""
    rep = _report(target_budgets={"latency_ms_p90": 50.0}, meas={"host": _host(p90=0.2)})
    v = budgets.evaluate(rep, budgets.default_source(rep))
    rows = {r.budget: r for r in v.results}
    assert v.source == "auto" and not v.passed and v.status == "unverified" and v.stand_in_for == []
    for key in ("latency_ms_p90", "peak_ram_mb"):
        assert rows[key].status == "unverified" and rows[key].value is None and rows[key].device == "rpi4"
        assert "--device rpi4" in rows[key].note
    assert rows["model_size_kb"].status == "pass"  # size is the artifact's, the same on every device
    assert "2 of 3 UNVERIFIED" in budgets.summary_line(v) and "rpi4" in budgets.summary_line(v)
    suite = ET.fromstring(budgets.junit_xml(v)).find("testsuite")
    errors = [c for c in suite.iter("testcase") if c.find("error") is not None]
    assert suite.get("errors") == "2" and suite.get("failures") == "0" and len(errors) == 2
    assert errors[0].find("error").get("type") == "BudgetUnverified"
    md = budgets.markdown(v)
    assert "(UNVERIFIED)" in md and "**UNVERIFIED**" in md
    # the console table prints the how-to-measure advice once, below it, not wrapped into both rows
    from rich.console import Console
    console = Console(record=True, width=300)  # wide enough that no cell wraps
    console.print(budgets.table(v))
    text = console.export_text()
    assert text.count("no measurement from rpi4: see note 1") == 2 and text.count("note 1: no measurement") == 1
    assert text.count("--device rpi4") == 2  # `profile ... --device rpi4` and `--calibrate --device rpi4`, once
    assert md.count("(no measurement from rpi4: see note 1)") == 2 and md.count("- note 1: no measurement") == 1
    # measured on the Pi: judged, and passed
    rep.store("t1", _host(p90=30.0).model_copy(update={"source": "device", "device": "rpi4"}))
    v = budgets.evaluate(rep, "auto")
    rows = {r.budget: r for r in v.results}
    assert v.passed and rows["latency_ms_p90"].value == 30.0 and rows["latency_ms_p90"].source == "device"


def test_host_numbers_judge_a_pi_only_when_asked_and_say_so():
    rep = _report(target_budgets={"latency_ms_p90": 50.0}, meas={"host": _host(p90=0.2)})
    v = budgets.evaluate(rep, "host")
    rows = {r.budget: r for r in v.results}
    assert v.passed and v.stand_in_for == ["rpi4"] and "rpi4" in v.warning and "--source host" in v.warning
    assert rows["latency_ms_p90"].status == "pass" and "stand in for rpi4" in rows["latency_ms_p90"].note
    assert "[HOST NUMBERS]" in budgets.summary_line(v) and "standing in for rpi4" in budgets.summary_line(v)
    props = {p.get("name"): p.get("value") for p in ET.fromstring(budgets.junit_xml(v)).iter("property")}
    assert props["stand_in_for"] == "rpi4" and "rpi4" in props["warning"]
    assert "**Warning:**" in budgets.markdown(v) and "standing in for rpi4" in budgets.markdown(v)
    # a target on this machine: host numbers are its own, nothing stands in
    v = budgets.evaluate(_report(device="host", meas={"host": _host(p90=0.2)}), "auto")
    assert v.passed and v.stand_in_for == [] and v.warning is None


def test_a_record_from_before_statuses_loads_with_them_derived():
    rows = [BudgetResult.model_validate({"target": "t", "budget": "min_top1", "passed": p, "source": "artifact"})
            for p in (True, False)]
    assert [r.status for r in rows] == ["pass", "fail"]


def test_failed_target_fails_the_gate():
    v = _evaluate(_report(status="failed"), "host")
    assert not v["passed"] and v["results"][0]["budget"] == "artifact"


def test_the_console_table_prints_a_failed_targets_error_as_written():
    """An error that names ``io.outputs[pitch].tolerance`` keeps its brackets (rich reads [pitch] as markup)."""
    from rich.console import Console

    rep = _report(status="failed")
    rep.targets[0].error = "t1: output 'pitch' is outside its tolerance. Fix: set io.outputs[pitch].tolerance"
    console = Console(record=True, width=400)
    console.print(budgets.table(budgets.evaluate(rep, "host")))
    assert "io.outputs[pitch].tolerance" in console.export_text()


def test_junit_names_the_failed_target_and_budget():
    rep = _report(target_budgets={"latency_ms_p90": 3.0}, meas={"host": _host(p90=4.0)})
    xml = budgets.junit_xml(budgets.evaluate(rep, "host"))
    root = ET.fromstring(xml)
    failed = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert len(failed) == 1
    assert failed[0].get("name").startswith("t1: latency_ms_p90 <= 3 ms")
    assert "margin -1 ms" in failed[0].find("failure").get("message")
    assert root.find("testsuite").get("failures") == "1"


def test_estimates_are_labelled_everywhere():
    rep = _report(target_budgets={"latency_ms_p90": 100.0}, meas={"host": _host(p90=4.0)})
    est = estimate(rep.measurements["t1"]["host"], devices.get("rpi4"), "int8", "t1")
    rep.store("t1", est)
    factor = devices.get("rpi4").estimate.factor["int8"]
    assert est.p90_ms == pytest.approx(4.0 * factor) and est.samples_ms == []
    assert est.method.startswith("ESTIMATE")
    v = budgets.evaluate(rep, "estimate")
    assert v.estimate and budgets.ESTIMATE_WARNING == v.warning
    assert "ESTIMATE" in budgets.junit_xml(v) and "[estimate]" in budgets.junit_xml(v)
    assert "Warning:" in budgets.markdown(v) and "[ESTIMATE]" in budgets.summary_line(v)
    # estimates never count as measurements
    assert not budgets.evaluate(rep, "device").passed


def test_estimate_needs_a_one_thread_host_measurement():
    with pytest.raises(EdgeshipError, match="1-thread"):
        estimate(_host(threads=4), devices.get("rpi4"), "fp32", "t1")


def test_host_targets_use_the_host_measurement_for_device_and_estimate():
    rep = _report(device="host", meas={"host": _host(p90=4.0)})
    for source in ("device", "estimate"):
        rows = {r["budget"]: r for r in _evaluate(rep, source)["results"]}
        assert rows["latency_ms_p90"]["value"] == 4.0 and rows["latency_ms_p90"]["source"] == "host"
        assert "device is the host" in rows["latency_ms_p90"]["note"]
    # a device target never borrows the host's numbers
    rows = {r["budget"]: r for r in _evaluate(_report(meas={"host": _host()}), "device")["results"]}
    assert rows["latency_ms_p90"]["value"] is None


def test_an_estimate_is_judged_by_the_limits_of_the_device_it_was_made_for():
    """`profile --estimate --device rpi4` on a host target: the Pi's default limits, not the host's."""
    rep = _report(device="host", meas={"host": _host(p90=4.0)})
    rep.store("t1", estimate(_host(p90=4.0), devices.get("rpi4"), "int8", "t1"))
    rows = {r["budget"]: r for r in _evaluate(rep, "estimate")["results"]}
    rpi4, host = devices.get("rpi4").budgets, devices.get("host").budgets
    assert rpi4.latency_ms_p90 != host.latency_ms_p90
    assert rows["latency_ms_p90"]["limit"] == rpi4.latency_ms_p90 and rows["latency_ms_p90"]["origin"] == "device rpi4"
    assert rows["latency_ms_p90"]["source"] == "estimate"
    # the host source keeps the target's own device
    rows = {r["budget"]: r for r in _evaluate(rep, "host")["results"]}
    assert rows["latency_ms_p90"]["limit"] == host.latency_ms_p90
