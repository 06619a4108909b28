"""A hostile or broken device, through the real loopback sshd: its "Python" prints what a compromised board might
(invalid JSON, a list, strings where numbers go, NaN and Infinity, negative times, nesting to blow the parser's
stack, a line of 17 MB, terminal escapes); a changed host key; a target named like a module the device runner
imports. Each is one line (exit 1: that target's measurement failed), nothing is stored as a measurement, and
report.json never holds NaN or Infinity."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from faultlib import cli, one_line

GOOD = {"ok": True, "p50_ms": 1.0, "p90_ms": 1.2, "p99_ms": 1.5, "mean_ms": 1.05, "std_ms": 0.1, "min_ms": 0.9,
        "max_ms": 1.6, "samples_ms": [1.0, 1.2], "load_ms": 3.0, "peak_rss_mb": 40.0, "threads": 1, "runs": 2}
MARK = "EDGESHIP_BENCH "

PAYLOADS = {
    "invalid JSON": (MARK + "{not json", "invalid JSON"),
    "a JSON list": (MARK + "[1, 2, 3]", "a JSON list, not an object"),
    "a string where a number goes": (MARK + json.dumps({**GOOD, "p90_ms": "fast"}), "invalid p90_ms"),
    "NaN": (MARK + json.dumps({**GOOD, "p50_ms": float("nan")}), "NaN is not a number JSON allows"),
    "Infinity": (MARK + json.dumps({**GOOD, "p90_ms": float("inf")}), "Infinity is not a number JSON allows"),
    "NaN inside the facts": (MARK + json.dumps({**GOOD, "facts": {"temp_c": float("nan")}}), "NaN is not a number"),
    "a negative latency": (MARK + json.dumps({**GOOD, "p90_ms": -1.0}), "invalid p90_ms"),
    "nesting 100000 deep": (MARK + "[" * 100000 + "]" * 100000, "nested too deep"),
    "a 17 MB line": (MARK + '{"x": "' + "a" * (17 << 20) + '"}', "characters, not a measurement"),
    "terminal escapes in its message": (
        MARK + json.dumps({"ok": False, "error": "failed", "message": "\x1b]0;owned\x07\x1b[2Jboom\rsecret"}),
        "boom secret"),
    "rich markup in its message": (MARK + json.dumps({"ok": False, "error": "failed", "message": "[/bold] [link=x]y"}),
                                   "[/bold] [link=x]y"),
    "a missing package without its name": (MARK + json.dumps({"ok": False, "error": "missing_package"}),
                                           "has no Python package ?"),
}


def refuse(name: str):
    raise AssertionError(f"report.json holds {name}")


def fake_python(tmp: Path, payload: str, facts: str = MARK + json.dumps({"ok": True, "facts": {}})) -> str:
    """The device's "Python": answers the runner's ``--facts`` with ``facts`` and prints ``payload`` for anything
    else it is asked to run (a benchmark)."""
    (tmp / "payload.txt").write_text(payload + "\n")
    (tmp / "facts.txt").write_text(facts + "\n")
    py = tmp / "python3"
    py.write_text(f'#!/bin/sh\nif [ "$2" = "--facts" ]; then cat {tmp / "facts.txt"}; else cat {tmp / "payload.txt"}; '
                  "fi\n")
    py.chmod(0o755)
    return str(py)


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_hostile_device_output(run_copy, guard, loopback_sshd, tmp_path, name):
    """What the device's runner printed: one line, nothing stored, no NaN or Infinity in report.json."""
    payload, needle = PAYLOADS[name]
    args = loopback_sshd.cli_args()
    args[args.index("--remote-python") + 1] = fake_python(tmp_path, payload)
    res = cli("--quiet", "profile", run_copy, *args, "--runs", 2)
    said = guard.tell(one_line(res.stderr, 1, res.exit_code, "onnx-fp32:", needle))
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr, said
    report = json.loads((run_copy / "report.json").read_text(), parse_constant=refuse)  # standard JSON only
    assert "device" not in report["measurements"]["onnx-fp32"]
    assert "device" in report["measurement_errors"]["onnx-fp32"]


FACTS = {
    "invalid JSON": (MARK + "{not json", "invalid JSON"),
    "a JSON list": (MARK + "[1]", "a JSON list, not an object"),
    "facts that are a list": (MARK + json.dumps({"ok": True, "facts": [1, 2]}), "facts as a JSON list"),
    "NaN in the facts": (MARK + json.dumps({"ok": True, "facts": {"emulated": float("nan")}}), "NaN is not a number"),
    "not ok, escapes on stderr": (MARK + json.dumps({"ok": False}) + "\n\x1b]0;owned\x07 >&2", "cannot run edgeship"),
}


@pytest.mark.parametrize("name", list(FACTS))
def test_hostile_device_facts(run_copy, guard, loopback_sshd, tmp_path, name):
    """What the device answered when asked for its facts (before any benchmark): one line naming the device, exit 2,
    nothing stored."""
    facts, needle = FACTS[name]
    args = loopback_sshd.cli_args()
    args[args.index("--remote-python") + 1] = fake_python(tmp_path, MARK + json.dumps(GOOD), facts)
    before = (run_copy / "report.json").read_text()
    res = cli("--quiet", "profile", run_copy, *args, "--runs", 2)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "127.0.0.1", needle))
    assert "\x1b" not in res.stderr and "\x07" not in res.stderr, res.stderr
    assert (run_copy / "report.json").read_text() == before


def test_changed_host_key_is_said_and_never_answered_with_keyscan(run_copy, guard, loopback_sshd, tmp_path):
    """The device presents a key other than the one known_hosts holds (a man-in-the-middle, or a reinstall)."""
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    kind, key = other.with_suffix(".pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{loopback_sshd.port} {kind} {key}\n")
    args = [a.replace(str(loopback_sshd.known_hosts), str(known)) for a in loopback_sshd.cli_args()]
    res = cli("--quiet", "profile", run_copy, *args, "--runs", 2)
    said = guard.tell(one_line(res.stderr, 2, res.exit_code, "has CHANGED", "SHA256:", "REMOTE HOST IDENTIFICATION",
                               f"ssh-keygen -R '[127.0.0.1]:{loopback_sshd.port}'"))
    assert "keyscan" not in said
    assert "device" not in json.loads((run_copy / "report.json").read_text())["measurements"]["onnx-fp32"]


def test_unknown_host_key_still_gets_the_keyscan_advice(run_copy, loopback_sshd, tmp_path):
    """The other case stays as it was: a key never seen (first connection) is answered with keyscan and verify."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = [a.replace(str(loopback_sshd.known_hosts), str(empty)) for a in loopback_sshd.cli_args()]
    res = cli("--quiet", "profile", run_copy, *args, "--runs", 2)
    one_line(res.stderr, 2, res.exit_code, "ssh-keyscan", "then verify it")


def test_target_named_like_a_module_runs_no_code_on_the_device(run_copy, guard, loopback_sshd):
    """A run whose target is named 'json' and lists an __init__.py: on the device, the runner's `import json` must
    not import it (the bundle keeps artifacts away from the runner's sys.path)."""
    d = json.loads((run_copy / "report.json").read_text())
    old = run_copy / "targets" / "onnx-fp32"
    d["targets"][0]["name"] = "json"
    d["measurements"] = {"json": d["measurements"]["onnx-fp32"]}
    (run_copy / "report.json").write_text(json.dumps(d))
    old.rename(run_copy / "targets" / "json")
    (run_copy / "targets" / "json" / "__init__.py").write_text(
        f"open({str(guard.marker)!r}, 'w').write('ran')\nfrom json.decoder import *\n")
    side = json.loads((run_copy / "targets" / "json" / "model.json").read_text())
    side["files"].append("__init__.py")
    (run_copy / "targets" / "json" / "model.json").write_text(json.dumps(side))
    res = cli("--quiet", "profile", run_copy, *loopback_sshd.cli_args(), "--runs", 2)
    assert res.exit_code == 0, res.stderr
    assert not guard.marker.exists()


def test_thread_count_over_the_cores_is_refused(run_copy, guard, loopback_sshd):
    """profile --threads 100000 (the issue's probe: load average past 2000): refused before any thread starts, on
    the host and for a device the catalog does not describe."""
    res = cli("--quiet", "profile", run_copy, "--threads", 100000)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "--threads 100000 is more than the host's", "cores"))
    res = cli("--quiet", "profile", run_copy, *loopback_sshd.cli_args(), "--threads", 100000)
    one_line(res.stderr, 2, res.exit_code, "edgeship's cap", "between 1 and 256")
    res = cli("--quiet", "profile", run_copy, "--estimate", "--device", "rpi4", "--threads", 100000)
    one_line(res.stderr, 2, res.exit_code, "--threads 100000 is more than")
