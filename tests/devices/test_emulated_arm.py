"""The Raspberry Pi's software stack, emulated (tests/devices/emulated.py): edgeship's artifacts on the aarch64
builds of ONNX Runtime, OpenVINO and LiteRT, reached over ssh exactly as a real Pi is. The measurements say
`emulated`: they carry the verification on the ARM runtime (top-1, agreement with the host's outputs of the same
artifact on test samples), no latency, and no budget passes on them. Emulated timings are never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_profile_and_check import GENEROUS, cli, export_run, report

from edgeship.devices import bench_runner, budgets
from edgeship.record import DeviceVerification, Measurement
from helpers import digits_recipe_dict, run_record, write_recipe

HWCAP_CRC32, HWCAP_ASIMDDP, HWCAP_SVE = 1 << 7, 1 << 20, 1 << 22
PROBE = ("python3 -c 'import ctypes, platform; g = ctypes.CDLL(None).getauxval; g.restype = ctypes.c_ulong; "
         "print(platform.machine(), g(16))'")
# every format with an aarch64 runtime, at the precisions that exercise the most different kernels
FORMATS = [{"name": "onnx-fp32", "format": "onnx", "precision": "fp32"},
           {"name": "onnx-int8", "format": "onnx", "precision": "int8"},
           {"name": "ov-int8", "format": "openvino", "precision": "int8"},
           {"name": "tfl-int8", "format": "tflite", "precision": "int8"}]
TIMINGS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "load_ms", "first_run_ms",
           "peak_rss_mb", "rss_before_load_mb")


def test_no_budget_passes_on_an_emulated_device():
    """Even with limits nothing could miss and an emulated entry that (hand-edited) carries timings."""
    target = {"name": "t", "device": "rpi4", "format": "onnx", "precision": "fp32", "status": "ok",
              "size_bytes": 1000, "verify": {"n": 10, "top1": 1.0, "torch_top1": 1.0}}
    check = DeviceVerification(n=10, top1=1.0, host_top1=1.0, agreement=1.0)
    for timings in ({}, {"p90_ms": 0.1, "peak_rss_mb": 1.0}):
        m = Measurement(source="emulated", device="rpi4", verification=check, **timings)
        rec = run_record({"budgets": {"latency_ms_p90": 1e6, "peak_ram_mb": 1e6}, "targets": [
            {"name": "t", "device": "rpi4", "format": "onnx", "precision": "fp32"}]},
            targets=[target], measurements={"t": {"emulated": m}})
        v = budgets.evaluate(rec, "emulated")
        assert v.passed is False and v.warning == budgets.EMULATED_WARNING
        assert "FAILED" in budgets.summary_line(v) and "[EMULATED]" in budgets.summary_line(v)
        assert "EMULATED" in budgets.markdown(v) and "EMULATED" in budgets.junit_xml(v)
        rows = {r.budget: r for r in v.results}
        assert rows["model_size_kb"].passed  # an artifact's own facts are still judged
        if not timings:
            assert not rows["latency_ms_p90"].passed and rows["latency_ms_p90"].note == budgets.EMULATED_NOTE
        assert budgets.default_source(rec) == "auto"  # emulated is never chosen for you
        assert rec.device_verification("t") is m


@pytest.mark.slow  # a device start (and, the first time on a machine, the ~5 min build): make test-fast skips it
@pytest.mark.parametrize("name", ["rpi4", "rpi5"])
def test_every_process_gets_the_devices_cpu_model(emulated_devices, name):
    """AT_HWCAP as the kernel (qemu) hands it to aarch64 processes: the A72 has no dot product, the A76 has it,
    neither has SVE (qemu's default 'max' CPU would), also for a process started with an empty environment."""
    dev = emulated_devices(name)
    for cmd in (PROBE, "env -i /opt/v/bin/" + PROBE):
        p = dev.run(cmd)
        assert p.returncode == 0, p.stderr
        machine, hwcap = p.stdout.split()
        assert machine == "aarch64"
        assert bool(int(hwcap) & HWCAP_ASIMDDP) == (name == "rpi5")
        assert int(hwcap) & HWCAP_CRC32 and not int(hwcap) & HWCAP_SVE
    said = json.loads(dev.run("cat /etc/edgeship/emulated.json").stdout)
    assert said["device"] == name and said["cpu"] == {"rpi4": "cortex-a72", "rpi5": "cortex-a76"}[name]


@pytest.fixture(scope="module")
def arm_run(tmp_path_factory, digits_checkpoint) -> Path:
    targets = [{**t, "device": "rpi4", "max_accuracy_drop": 5.0} for t in FORMATS]
    return export_run(tmp_path_factory.mktemp("arm"), digits_checkpoint, GENEROUS, "arm", targets)


@pytest.mark.slow
def test_export_keeps_the_samples_a_device_is_checked_on(arm_run):
    with np.load(arm_run / "verify" / "samples.npz") as f:
        assert sorted(f.files) == ["classification", "index", "x0", "y"]  # one graph input, one output
        x, y, index, cls = f["x0"], f["y"], f["index"], int(f["classification"])
    rep = report(arm_run)
    n_test = rep["data"]["sizes"]["test"]
    assert len(x) == len(y) == len(index) == min(256, n_test) and x.shape[1:] == (1, 8, 8) and x.dtype == np.float32
    assert np.all(np.diff(index) > 0) and index[-1] < n_test and cls == 0  # a sorted subset of the test split
    for t in FORMATS:
        with np.load(arm_run / "verify" / f"{t['name']}.npz") as f:
            assert f.files == ["out0"]
            host = f["out0"]
        assert host.shape == (len(x), 10) and host.dtype == np.float32
        # the host artifact's outputs on those samples: as accurate as export's verification said, on the subset
        assert abs(float((host.argmax(1) == y).mean()) - next(
            r["verify"]["top1"] for r in rep["targets"] if r["name"] == t["name"])) < 0.1


@pytest.mark.slow
def test_every_format_verified_on_the_emulated_pi4(arm_run, emulated_rpi4, tmp_path):
    res = cli("profile", arm_run, *emulated_rpi4.cli_args())
    assert res.exit_code == 0, res.stderr + res.stdout
    assert "EMULATED device" in res.stdout and "agreement with host" in res.stdout
    rep = report(arm_run)
    for t in FORMATS:
        by_source = rep["measurements"][t["name"]]
        assert "device" not in by_source  # the device said it is emulated: nothing claims to be a Pi
        m = by_source["emulated"]
        assert m["source"] == "emulated" and m["device"] == "rpi4" and m["transport"] == "ssh"
        assert all(m[k] is None for k in TIMINGS) and m["samples_ms"] == [] and m["method"].startswith("EMULATED")
        f = m["facts"]
        assert f["machine"] == "aarch64" and f["emulated"]["cpu"] == "cortex-a72"
        assert {"neon", "crc32"} <= set(f["features"]) and "dotprod" not in f["features"]
        assert m["runtime_version"] == by_source["host"]["runtime_version"]  # the root has the host's pins
        v = m["verification"]
        assert v["n"] == min(256, rep["data"]["sizes"]["test"])
        assert v["agreement"] >= 0.99, (t["name"], v)  # the aarch64 kernels agree with x86's on real samples
        assert v["top1"] == pytest.approx(v["host_top1"], abs=0.02) and v["top1"] > 0.8
        if t["precision"] == "fp32":  # INT8 kernels differ between x86 and Arm (ORT's u8s8 on AVX2 saturates)
            assert v["max_abs_logit_diff"] < 1e-4
        assert [o["agreement"] for o in v["outputs"]] == [v["agreement"]]  # one output, the classification one
    assert rep["measurements"]["tfl-int8"]["emulated"]["input_dtype"] == "int8"
    assert rep["measurements"]["ov-int8"]["emulated"]["runtime"] == "openvino"

    # the gate: a Pi's latency with only emulated numbers is unverified by default (emulated is never chosen for
    # you); host numbers pass only when asked for, and say so; nothing passes on the emulated device
    auto = cli("check", arm_run)
    assert auto.exit_code == 1 and "UNVERIFIED" in auto.stderr and "measured on rpi4 itself" in auto.stderr
    assert {r["status"] for r in report(arm_run)["budgets"]["results"] if r["budget"] == "latency_ms_p90"} \
        == {"unverified"}
    host = cli("check", arm_run, "--source", "host")
    assert host.exit_code == 0 and report(arm_run)["budgets"]["stand_in_for"] == ["rpi4"]
    chk = cli("check", arm_run, "--source", "emulated", "--junit", tmp_path / "j.xml", "--markdown", tmp_path / "s.md")
    assert chk.exit_code == 1
    assert "EMULATED" in chk.stdout and "[EMULATED]" in chk.stderr
    verdict = report(arm_run)["budgets"]
    assert verdict["source"] == "emulated" and verdict["passed"] is False and "EMULATED" in verdict["warning"]
    latency = [r for r in verdict["results"] if r["budget"] == "latency_ms_p90"]
    assert len(latency) == len(FORMATS) and all(not r["passed"] and "cannot pass" in r["note"] for r in latency)
    assert "EMULATED" in (tmp_path / "s.md").read_text() and "EMULATED" in (tmp_path / "j.xml").read_text()

    # the report shows each ARM target's top-1 and agreement as the ARM runtime computed them
    shown = cli("report", arm_run)
    assert shown.exit_code == 0 and "on device" in shown.stdout
    top1, agreement = (rep["measurements"]["tfl-int8"]["emulated"]["verification"][k] for k in ("top1", "agreement"))
    assert f"{top1:.1%} / {agreement:.1%} emu" in shown.stdout
    page = (arm_run / "report.html").read_text()
    assert "on device: top-1 / agreement" in page and "emulated aarch64" in page


@pytest.mark.slow
def test_openvino_on_the_emulated_pi5_runs_the_verified_precision(tmp_path, digits_checkpoint, emulated_devices):
    """The A76 has FP16 arithmetic, where OpenVINO's ARM plugin defaults to f16 inference; the runner applies the
    artifact's runtime_config (f32), so the Pi 5 runs the numerics export verified."""
    targets = [{"name": "ov-fp32", "format": "openvino", "precision": "fp32", "device": "rpi5"}]
    run = export_run(tmp_path, digits_checkpoint, GENEROUS, "pi5", targets)
    res = cli("profile", run, *emulated_devices("rpi5").cli_args())
    assert res.exit_code == 0, res.stderr + res.stdout
    m = report(run)["measurements"]["ov-fp32"]["emulated"]
    assert m["device"] == "rpi5" and {"dotprod", "fp16"} <= set(m["facts"]["features"])
    assert m["inference_precision"] == "f32"
    assert m["verification"]["agreement"] == 1.0 and m["verification"]["max_abs_logit_diff"] < 1e-4


@pytest.mark.slow
def test_openvino_int8_strided_convolutions_on_the_emulated_pi4(tmp_path, emulated_rpi4):
    """OpenVINO's aarch64 CPU plugin cannot compile an INT8 strided convolution with a bias on a core without FP16
    arithmetic, the Pi 4's Cortex-A72 ("object is not initialized"; the Pi 5's A76 can): the runner compiles such an
    IR without the plugin's low-precision transformations (FakeQuantize in float), says so, and still agrees with
    the host's INT8 kernels."""
    from edgeship.api import train

    model = {"zoo": "mobilenetv2", "args": {"width_mult": 0.5, "last_channels": 64, "dropout": 0.0}}
    r = digits_recipe_dict(tmp_path, name="strided", model={**model, "weights": str(tmp_path / "m.pt")},
                           train={"epochs": 6, "batch_size": 64, "lr": 0.01, "threads": 1},
                           budgets=GENEROUS, output=str(tmp_path / "runs" / "strided"),
                           targets=[{"name": "ov-int8", "format": "openvino", "precision": "int8", "device": "rpi4",
                                     "max_accuracy_drop": 20.0}])  # calibrated: its cost is not the point
    recipe = write_recipe(tmp_path, r, "strided.yaml")
    assert train(recipe, quiet=True)["test_top1"] > 0.5
    res = cli("export", recipe)
    assert res.exit_code == 0, res.stderr + res.stdout
    run = tmp_path / "runs" / "strided"
    xml = (run / "targets" / "ov-int8" / "model.xml").read_text()
    assert 'type="FakeQuantize"' in xml and '<data strides="2, 2"' in xml  # what the A72's plugin cannot compile
    res = cli("profile", run, *emulated_rpi4.cli_args())
    assert res.exit_code == 0, res.stderr + res.stdout
    m = report(run)["measurements"]["ov-int8"]["emulated"]
    assert m["inference_precision"].startswith("f32 (INT8 layers as FakeQuantize in float")
    assert str(bench_runner.LPT_OFF) in m["inference_precision"]  # what an application on that core must set too
    assert m["verification"]["agreement"] >= 0.99 and m["verification"]["top1"] > 0.5, m["verification"]


@pytest.mark.slow
def test_provision_a_clean_device(arm_run, fresh_emulated_rpi4):
    dev = fresh_emulated_rpi4
    # the device's system Python has no numpy: profile says how to provision
    res = cli("profile", arm_run, "-t", "onnx-int8", *dev.cli_args(), "--remote-python", "/usr/bin/python3")
    assert res.exit_code == 2
    assert "has no Python package numpy" in res.stderr and "edgeship provision --ssh root@127.0.0.1" in res.stderr

    # from the wheels on this machine (the build's aarch64 set: no network here), into ~/.edgeship/venv there
    args = ["provision", *dev.cli_args(), "--format", "onnx", "--wheels", dev.wheels]
    res = cli("--json", *args)
    assert res.exit_code == 0, res.stderr + res.stdout
    done = json.loads(res.stdout)
    assert done["packages"] == {"numpy": "2.4.6", "onnxruntime": "1.32.0"}
    assert sorted(done["installed"]) == ["numpy", "onnxruntime"]
    assert done["python"] == "/root/.edgeship/venv/bin/python" and done["platform"] == "cp311 manylinux_2_36_aarch64"
    p = dev.run("/root/.edgeship/venv/bin/python -c 'import onnxruntime, numpy; print(onnxruntime.__version__)'")
    assert p.returncode == 0 and p.stdout.strip() == "1.32.0", p.stderr

    again = cli(*args)  # idempotent: nothing fetched or copied
    assert again.exit_code == 0 and "already provisioned: nothing to do" in again.stdout
    assert "installed now" not in again.stdout and again.stdout.count("already there") == 2

    # profile finds the provisioned Python by itself
    res = cli("profile", arm_run, "-t", "onnx-int8", *dev.cli_args())
    assert res.exit_code == 0, res.stderr + res.stdout
    m = report(arm_run)["measurements"]["onnx-int8"]["emulated"]
    assert m["remote_python"] == "/root/.edgeship/venv/bin/python" and m["verification"]["agreement"] >= 0.99


@pytest.mark.slow
def test_two_inputs_two_outputs_on_the_emulated_pi4(tmp_path, monkeypatch, emulated_rpi4):
    """An io: model (a 1-D signal and a filled recurrent state in; a score and the new state out; no class ids): the
    device runner feeds every input from the test samples in the model's order (TFLite's litert-torch signature
    order too) and compares every output with the host's."""
    from test_io import _targets, stateful_recipe

    import edgeship

    pairs = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("tflite", "fp32")]
    run = edgeship.export(stateful_recipe(tmp_path, _targets(pairs), monkeypatch), quiet=True, measure=False)
    assert run.ok, [(t.name, t.error) for t in run.targets]
    assert run.target("tflite-fp32").verify is not None
    res = cli("profile", run.run_dir, *emulated_rpi4.cli_args())
    assert res.exit_code == 0, res.stderr + res.stdout
    for f, p in pairs:
        m = report(run.run_dir)["measurements"][f"{f}-{p}"]["emulated"]
        v = m["verification"]
        assert v["top1"] is None and v["agreement"] is None  # no classification output: no top-1 claimed
        described = json.loads((run.run_dir / "targets" / f"{f}-{p}" / "model.json").read_text())["meta"]["outputs"]
        assert [o["task"] for o in described] == ["score", "regression"]  # in the io: order: prob, state_out
        assert [o["name"] for o in v["outputs"]] == [o["name"] for o in described], (f, p, v)  # the artifact's names
        assert all(o["agreement"] is None for o in v["outputs"])  # a score and a state: no class to agree on
        if p == "fp32":  # the aarch64 runtime computes what x86's did, output by output
            assert all(o["max_abs_diff"] < 1e-4 for o in v["outputs"]), (f, v)
        else:
            assert all(o["max_abs_diff"] is not None for o in v["outputs"]), (f, v)
    shown = cli("report", run.run_dir)
    assert shown.exit_code == 0 and "max |diff|" in shown.stdout and "emu" in shown.stdout
