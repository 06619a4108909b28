"""Measurement on the host, on a device over a REAL loopback OpenSSH server, estimates, and the
`edgeship check` gate, all on a real exported run (the small CNN on digits, ONNX Runtime)."""

from __future__ import annotations

import importlib.util
import json
import shlex
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgeship.cli import app

_spec = importlib.util.spec_from_file_location("_root_conftest", Path(__file__).resolve().parents[1] / "conftest.py")
root_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(root_conftest)

RUNS = 30
GENEROUS = {"latency_ms_p90": 1000.0, "peak_ram_mb": 4096.0, "model_size_kb": 10000.0, "min_top1": 0.5}
TIGHT = {"latency_ms_p90": 0.0001, "peak_ram_mb": 1.0}
CONTRACT = ("source", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "samples_ms", "load_ms", "peak_rss_mb",
            "arena_mb", "size_bytes", "threads", "runs", "facts", "method")


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def export_run(tmp: Path, checkpoint: Path, budgets: dict, name: str, targets=None) -> Path:
    r = root_conftest.digits_recipe_dict(tmp, name=name, budgets=budgets, output=str(tmp / "runs" / name))
    r["model"]["weights"] = str(checkpoint)
    if targets:
        r["targets"] = targets
    recipe = root_conftest.write_recipe(tmp, r, f"{name}.yaml")
    res = cli("export", recipe, "--runs", RUNS)
    assert res.exit_code == 0, res.stderr + res.stdout
    return tmp / "runs" / name


def report(run: Path) -> dict:
    return json.loads((run / "report.json").read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_checkpoint) -> Path:
    return export_run(tmp_path_factory.mktemp("measure"), digits_checkpoint, GENEROUS, "generous")


def test_export_measures_on_the_host_and_checks_budgets(run):
    rep = report(run)
    m = rep["measurements"]["onnx-fp32"]["host"]
    assert all(k in m for k in CONTRACT)
    assert m["source"] == "host" and m["threads"] == 1 and m["runs"] == RUNS == len(m["samples_ms"])
    assert 0 < m["min_ms"] <= m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"] <= m["max_ms"]
    assert m["load_ms"] > 0 and m["runtime"] == "onnxruntime" and m["input_shape"] == [1, 1, 8, 8]
    assert m["peak_rss_mb"] > m["rss_before_load_mb"] > 10  # a fresh process: python + numpy + onnxruntime
    assert m["size_bytes"] == rep["targets"][0]["size_bytes"]
    assert m["facts"]["uname"] and m["facts"]["cpu"] and m["facts"]["cores"] >= 1
    b = rep["budgets"]
    assert b["source"] == "auto" and b["passed"]  # the target's device is this machine: host numbers are its own
    assert {r["source"] for r in b["results"] if r["budget"] in ("latency_ms_p90", "peak_ram_mb")} == {"host"}
    assert {r["budget"] for r in b["results"]} == set(GENEROUS)
    assert all(r["origin"] == "recipe" for r in b["results"])


def test_check_passes_with_generous_budgets(run, tmp_path):
    res = cli("check", run, "--source", "host", "--junit", tmp_path / "junit.xml", "--markdown",
              tmp_path / "summary.md")
    assert res.exit_code == 0, res.stderr + res.stdout
    assert "all 4 passed (source: host)" in res.stdout
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "4" and suite.get("failures") == "0"
    assert "(passed)" in (tmp_path / "summary.md").read_text()


def test_check_fails_with_tight_budgets(tmp_path, digits_checkpoint):
    tight = export_run(tmp_path, digits_checkpoint, TIGHT, "tight")
    assert report(tight)["budgets"]["passed"] is False  # export's own verdict
    res = cli("check", tight, "--junit", tmp_path / "junit.xml", "--markdown", tmp_path / "summary.md")
    assert res.exit_code == 1
    assert "FAILED" in res.stderr and "onnx-fp32:latency_ms_p90" in res.stderr
    failed = [c for c in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase") if c.find("failure") is not None]
    names = sorted(c.get("name") for c in failed)
    assert len(names) == 2 and names[0].startswith("onnx-fp32: latency_ms_p90 <= 0.0001 ms [host]")
    assert names[1].startswith("onnx-fp32: peak_ram_mb <= 1 MB [host]")
    md = (tmp_path / "summary.md").read_text()
    assert "(FAILED)" in md and "| onnx-fp32 | latency_ms_p90 |" in md and "**FAIL**" in md


def test_profile_over_ssh_agrees_with_the_host(run, loopback_sshd):
    host = cli("profile", run, "--runs", RUNS)
    assert host.exit_code == 0, host.stderr
    res = cli("profile", run, *loopback_sshd.cli_args(), "--runs", RUNS)
    assert res.exit_code == 0, res.stderr + res.stdout
    ms = report(run)["measurements"]["onnx-fp32"]
    dev, h = ms["device"], ms["host"]
    assert all(k in dev for k in CONTRACT)
    assert dev["source"] == "device" and dev["transport"] == "ssh" and dev["remote"].endswith(str(loopback_sshd.port))
    assert dev["threads"] == h["threads"] == 1 and len(dev["samples_ms"]) == RUNS
    assert dev["facts"]["uname"] == h["facts"]["uname"]  # the loopback "device" is this machine
    assert dev["size_bytes"] == h["size_bytes"] and dev["runtime_version"] == h["runtime_version"]
    # same artifact, same runtime, same machine: agreement within the noise of a shared machine
    assert 0.25 < dev["p50_ms"] / h["p50_ms"] < 4, (dev["p50_ms"], h["p50_ms"])
    assert 0.5 < dev["peak_rss_mb"] / h["peak_rss_mb"] < 2
    assert not Path(dev["remote_dir"]).exists()  # the bundle was removed from the device
    # where the time goes on the device: its runtime's per-layer counters after the timed runs, as on the host
    dp, hp = dev["profile"], h["profile"]
    assert dp["total_ms"] > 0 and dp["source"] == hp["source"] and dp["runs"] == hp["runs"] > 0
    assert dp["layer_count"] == hp["layer_count"] and set(dp["by_op_ms"]) == set(hp["by_op_ms"])
    assert "onnx-fp32: slowest layers" in res.stdout + res.stderr
    # the device's runtime on the test samples export kept: this "device" is the host, so it agrees exactly
    v = dev["verification"]
    assert v["n"] == min(256, report(run)["data"]["sizes"]["test"]) and v["agreement"] == 1.0
    assert v["top1"] == v["host_top1"] > 0.8 and v["max_abs_logit_diff"] < 1e-5
    # check judges on the device measurement once there is one
    chk = cli("check", run)
    assert chk.exit_code == 0, chk.stdout
    rows = report(run)["budgets"]["results"]
    assert {r["source"] for r in rows if r["budget"] in ("latency_ms_p90", "peak_ram_mb")} == {"device"}


def test_a_pi_target_is_unverified_until_measured_there(tmp_path, digits_checkpoint):
    """Host numbers never pass a Pi's budget by default; `--source host` does, and says so everywhere."""
    pi = export_run(tmp_path, digits_checkpoint, GENEROUS, "pi",
                    targets=[{"name": "pi-onnx", "device": "rpi4", "format": "onnx", "precision": "fp32"}])
    b = report(pi)["budgets"]  # export's own verdict: unverified rows, the export itself succeeded
    assert b["source"] == "auto" and not b["passed"]
    assert {r["budget"] for r in b["results"] if r["status"] == "unverified"} == {"latency_ms_p90", "peak_ram_mb"}
    res = cli("check", pi, "--junit", tmp_path / "j.xml", "--markdown", tmp_path / "s.md")
    assert res.exit_code == 1 and "2 of 4 UNVERIFIED" in res.stderr
    assert "no latency or RAM measured on rpi4 itself" in res.stderr
    assert 'errors="2"' in (tmp_path / "j.xml").read_text() and "**UNVERIFIED**" in (tmp_path / "s.md").read_text()
    res = cli("check", pi, "--source", "host", "--junit", tmp_path / "j.xml", "--markdown", tmp_path / "s.md")
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "[HOST NUMBERS]" in res.stdout and "standing in for rpi4" in res.stdout
    assert 'name="stand_in_for" value="rpi4"' in (tmp_path / "j.xml").read_text()
    assert "standing in for rpi4" in (tmp_path / "s.md").read_text()
    assert report(pi)["budgets"]["stand_in_for"] == ["rpi4"]


def _error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr  # one line, no traceback
    return lines[0]


def test_unreachable_host_is_one_clear_line(run, loopback_sshd, closed_port):
    args = loopback_sshd.cli_args()
    args[args.index("--ssh-port") + 1] = str(closed_port)
    res = cli("profile", run, *args, "--connect-timeout", 2, "--runs", 3)
    assert res.exit_code == 2
    line = _error_line(res)
    assert line.startswith(f"error: cannot reach {loopback_sshd.dest} port {closed_port} over ssh")
    assert "refused" in line and "Fix:" in line


def test_connect_timeout_bounds_a_silent_host(run, loopback_sshd):
    # a host that accepts the TCP connection but never speaks SSH: only ConnectTimeout ends the wait
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        args = loopback_sshd.cli_args()
        args[args.index("--ssh-port") + 1] = str(silent.getsockname()[1])
        res = cli("profile", run, *args, "--connect-timeout", 1, "--runs", 3)
    assert res.exit_code == 2
    line = _error_line(res)
    assert f"cannot reach {loopback_sshd.dest}" in line and "timed out" in line, line


def test_host_key_checking_stays_on(run, loopback_sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = [a.replace(str(loopback_sshd.known_hosts), str(empty)) for a in loopback_sshd.cli_args()]
    res = cli("profile", run, *args, "--runs", 3)
    assert res.exit_code == 2
    line = _error_line(res)
    assert "Host key verification failed" in line and "ssh-keyscan -p" in line


def test_device_without_the_runtime_names_the_package(run, loopback_sshd, tmp_path):
    # a real Python on the "device" that has numpy but no onnxruntime: a venv of the base interpreter
    # whose only extra package is this venv's numpy (linked in through a .pth directory)
    venv = tmp_path / "device-venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    import numpy

    only = tmp_path / "numpy-only"
    only.mkdir()
    site = Path(numpy.__file__).parents[1]
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            (only / name).symlink_to(site / name)
    (next(venv.glob("lib/python3*/site-packages")) / "numpy_only.pth").write_text(str(only) + "\n")
    py = str(venv / "bin" / "python")
    assert subprocess.run([py, "-c", "import numpy"]).returncode == 0
    assert subprocess.run([py, "-c", "import onnxruntime"], capture_output=True).returncode != 0
    args = loopback_sshd.cli_args()
    args[args.index("--remote-python") + 1] = py
    res = cli("profile", run, *args, "--runs", 3)
    assert res.exit_code == 1
    line = _error_line(res)
    assert "has no Python package onnxruntime" in line and f"{py} -m pip install onnxruntime" in line


def test_device_without_numpy_names_numpy(run, loopback_sshd, tmp_path):
    venv = tmp_path / "bare-venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    args = loopback_sshd.cli_args()
    args[args.index("--remote-python") + 1] = str(venv / "bin" / "python")
    res = cli("profile", run, *args, "--runs", 3)
    assert res.exit_code == 2
    assert "has no Python package numpy" in _error_line(res) and "pip install numpy" in res.stderr


def test_missing_remote_python_is_a_clear_error(run, loopback_sshd):
    args = loopback_sshd.cli_args()
    args[args.index("--remote-python") + 1] = "/nonexistent dir/python3"  # quoted: the space stays in the path
    res = cli("profile", run, *args, "--runs", 3)
    assert res.exit_code == 2
    assert "/nonexistent dir/python3 not found on" in _error_line(res)


def test_run_without_artifacts_is_a_clear_error(run, tmp_path):
    empty = tmp_path / "no-artifacts"
    empty.mkdir()
    rep = report(run)
    for t in rep["targets"]:
        t["status"], t["error"] = "failed", "conversion failed"
    (empty / "report.json").write_text(json.dumps(rep))
    res = cli("profile", empty)
    assert res.exit_code == 2 and "has no artifacts to measure" in _error_line(res)
    nothing = tmp_path / "not-a-run"
    nothing.mkdir()
    res = cli("check", nothing)
    assert res.exit_code == 2 and "has no report.json" in _error_line(res)
    res = cli("profile", run, "--target", "nope")
    assert res.exit_code == 2 and "no target named nope" in _error_line(res)


def test_estimate_is_marked_and_never_mixed(run, tmp_path):
    res = cli("profile", run, "--estimate", "--device", "rpi4", "--runs", RUNS)
    assert res.exit_code == 0, res.stderr + res.stdout
    assert "ESTIMATES, not measurements" in res.stdout
    ms = report(run)["measurements"]["onnx-fp32"]
    est, host = ms["estimate"], ms["host"]
    assert est["source"] == "estimate" and est["method"].startswith("ESTIMATE") and est["samples_ms"] == []
    assert est["p90_ms"] == pytest.approx(host["p90_ms"] * 3.0, rel=1e-3)  # rpi4 fp32 factor
    chk = cli("check", run, "--source", "estimate", "--junit", tmp_path / "j.xml", "--markdown", tmp_path / "s.md")
    assert chk.exit_code == 0 and "ESTIMATE" in chk.stdout
    assert "[estimate]" in (tmp_path / "j.xml").read_text() and "Warning:" in (tmp_path / "s.md").read_text()
    assert report(run)["budgets"]["estimate"] is True


FORMATS = [("onnx-int8", "onnx", "int8"), ("ov-fp16", "openvino", "fp16"), ("tfl-int8", "tflite", "int8")]


@pytest.mark.slow
def test_every_format_measured_on_host_and_over_ssh(tmp_path, digits_checkpoint, loopback_sshd):
    """The runner loads ONNX Runtime, OpenVINO IR and TFLite (NHWC, int8 input) artifacts the backends wrote."""
    from edgeship.targets.base import backends

    assert all((f, p) in backends() for _, f, p in FORMATS)
    targets = [{"name": n, "format": f, "precision": p, "max_accuracy_drop": 5.0} for n, f, p in FORMATS]
    run = export_run(tmp_path, digits_checkpoint, GENEROUS, "formats", targets)
    res = cli("profile", run, *loopback_sshd.cli_args(), "--runs", 10)
    assert res.exit_code == 0, res.stderr + res.stdout
    ms = report(run)["measurements"]
    expect = {"onnx-int8": ("onnxruntime", [1, 1, 8, 8]), "ov-fp16": ("openvino", [1, 1, 8, 8]),
              "tfl-int8": ("ai-edge-litert", [1, 8, 8, 1])}
    for name, (runtime, shape) in expect.items():
        for source in ("host", "device"):
            m = ms[name][source]
            assert m["runtime"] == runtime and m["input_shape"] == shape and len(m["samples_ms"]) >= 10
            assert m["p50_ms"] > 0 and m["peak_rss_mb"] > 0
        assert 0.25 < ms[name]["device"]["p50_ms"] / ms[name]["host"]["p50_ms"] < 4
    assert ms["tfl-int8"]["host"]["input_dtype"] == "int8"  # quantized from the interpreter's parameters
    # timed with the numerics it was verified with: f32, not OpenVINO's bf16 default on AMX CPUs
    assert ms["ov-fp16"]["host"]["inference_precision"] == ms["ov-fp16"]["device"]["inference_precision"] == "f32"


def test_example_ci_workflow_calls_real_options(tmp_path):
    """examples/ci-pi.yml's profile and check lines parse: they fail only because the run is missing."""
    import os

    wf = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "ci-pi.yml").read_text())
    env = {**wf["env"], "RUN": str(tmp_path / "missing-run"), "HOME": str(tmp_path)}
    lines = [ln for j in wf["jobs"].values() for s in j["steps"] if "run" in s
             for ln in s["run"].replace("\\\n", " ").splitlines() if "bin/edgeship" in ln]
    used = set()
    for ln in lines:
        words = shlex.split(os.path.expandvars(ln.replace("~/", "$HOME/").replace("$HOME", env["HOME"])
                                               .replace("$RUN", env["RUN"]).replace("$PI", env["PI"])
                                               .replace("$RECIPE", str(tmp_path / "missing.yaml"))))
        args = [w for w in words[words.index(next(w for w in words if w.endswith("bin/edgeship"))) + 1:]]
        res = cli(*args)
        assert res.exit_code == 2, (ln, res.stdout, res.stderr)
        assert "not found" in res.stderr, (ln, res.stderr)
        used.add(next(a for a in args if not a.startswith("-")))
    assert {"profile", "check", "export", "train"} <= used


def test_nothing_reaches_the_remote_shell_unquoted(run, loopback_sshd, tmp_path):
    from edgeship.devices.remote import SshTarget, quote_cmd
    from edgeship.errors import EdgeshipError

    marker = tmp_path / "injected"
    hostile = f"python3; touch {marker}; $(touch {marker})"
    args = loopback_sshd.cli_args()
    args[args.index("--remote-python") + 1] = hostile
    res = cli("profile", run, *args, "--runs", 3)
    assert res.exit_code == 2 and f"{hostile} not found on" in _error_line(res)
    assert not marker.exists()  # the whole string was one (missing) program name on the device
    parts = ["/opt/my py/python3", "/tmp/b;rm -rf ~/bundle/bench_runner.py", "--dir", "$(id)"]
    assert shlex.split(quote_cmd(parts)) == parts
    for bad in ("-oProxyCommand=touch /tmp/x", "pi@host name", "pi@host;id"):
        with pytest.raises(EdgeshipError, match="not an ssh destination"):
            SshTarget(bad)
    with pytest.raises(EdgeshipError, match="KEY=VALUE"):
        SshTarget("pi@host", options=["-F/etc/passwd"])


def test_a_target_slower_than_its_fp32_gets_a_note_an_fp16_one_does_not(tmp_path, monkeypatch):
    """The note's rule, on timings given to it (the timing itself is the export test's): an INT8 target whose
    side-by-side ratio to its own model's FP32 is under 1 is named with its float operators; an FP16 file (a size
    format on most CPUs) and an INT8 file that is faster are not."""
    from edgeship.devices import measure
    from edgeship.devices.measure import RunArtifact, speed_vs_fp32
    from edgeship.record import FP32_REFS_DIR
    from helpers import run_record

    targets = [{"name": n, "format": "onnx", "precision": p, "status": "ok",
                "op_audit": {"runtime": "onnxruntime", "total_ops": 20, "n_float_ops": 12}}
               for n, p in (("slow8", "int8"), ("fast8", "int8"), ("half", "fp16"))]
    record = run_record(targets=targets).place(tmp_path)
    for which in ("input_model", "compressed_model"):
        ref = tmp_path / FP32_REFS_DIR / "main" / f"onnx-{which}"
        ref.mkdir(parents=True)
        (ref / "model.json").write_text("{}")
    p50 = {"slow8": 1.25, "fast8": 0.5, "half": 1.02}  # against FP32 p50s of 1.0 ms

    current: list[str] = []

    def timed(dirs, *args, **kwargs):  # the artifact under its key, "timed"; the references at 1.0 ms
        return {name: [{"p50_ms": p50[current[0]] if name == measure.TIMED else 1.0}] * 3 for name in dirs}

    printed: list[str] = []
    monkeypatch.setattr(measure, "measure_interleaved", timed)
    monkeypatch.setattr(measure, "info", printed.append)
    for name in p50:
        printed.clear()
        current[:] = [name]
        s = speed_vs_fp32(record, RunArtifact(name, "host", "onnx", record.target(name).precision, tmp_path / name,
                                              [], ""), 1)
        said = " ".join(" ".join(printed).split())
        assert s.compressed_model == round(1.0 / p50[name], 3) == record.target(name).speed_vs_fp32.compressed_model
        assert ("ran slower than the same model's FP32 onnx" in said) == (name == "slow8"), said
        if name == "slow8":
            assert "0.80x as fast" in said and "12 of its 20 operators run in float" in said
