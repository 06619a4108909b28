"""Hostile and broken run directories (CI profiles run directories downloaded from another job): paths in a
sidecar that climb out with '..', absolute paths, symbolic links out of the run, crafted target names, and
report.json files of the wrong shape. Each is one line, exit 2; nothing outside the run is read or written."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from faultlib import cli, complete, one_line

OUTSIDE = "a path outside its directory"
SIDECAR = Path("targets") / "onnx-fp32" / "model.json"


def sidecar(run: Path, **changes) -> None:
    d = json.loads((run / SIDECAR).read_text())
    d.update(changes)
    (run / SIDECAR).write_text(json.dumps(d))


def test_dotdot_through_a_symlink_in_a_sidecar_writes_nothing_outside(run_copy, guard, tmp_path, loopback_sshd):
    """The issue's probe: model.json lists 's/../../../../<dir>/escaped' with 's' a symlink in the run, then
    `profile --ssh` (which copies the listed files into a bundle)."""
    target = tmp_path / "outside"
    target.mkdir()
    (run_copy / "targets" / "onnx-fp32" / "s").symlink_to(run_copy / "targets")
    depth = len(run_copy.parts)
    sidecar(run_copy, files=["model.onnx", "model.json", "s/" + "../" * depth + str(target / "escaped")[1:]])
    res = cli("--quiet", "profile", run_copy, *loopback_sshd.cli_args(), "--runs", 2)
    guard.tell(one_line(res.stderr, 2, res.exit_code, OUTSIDE))
    assert list(target.iterdir()) == []


def test_absolute_main_file_is_refused(run_copy, guard):
    """model.json's main file is /etc/passwd: the host benchmark would open it."""
    sidecar(run_copy, main="/etc/passwd")
    res = cli("--quiet", "profile", run_copy, "--runs", 2)
    guard.tell(one_line(res.stderr, 2, res.exit_code, OUTSIDE, "/etc/passwd"))


def test_listed_file_that_is_a_symlink_out_is_refused(run_copy, guard, loopback_sshd):
    """A listed file that is a symbolic link to /etc/passwd (it would be copied to the device)."""
    (run_copy / "targets" / "onnx-fp32" / "notes.txt").symlink_to("/etc/passwd")
    sidecar(run_copy, files=["model.onnx", "model.json", "notes.txt"])
    res = cli("--quiet", "profile", run_copy, *loopback_sshd.cli_args(), "--runs", 2)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "leads outside", "/etc/passwd"))


def test_target_directory_that_is_a_symlink_out_is_refused(run_copy, guard, tmp_path):
    """targets/onnx-fp32 replaced by a symbolic link to a directory elsewhere (which holds a working model)."""
    elsewhere = tmp_path / "elsewhere"
    shutil.move(run_copy / "targets" / "onnx-fp32", elsewhere)
    (run_copy / "targets" / "onnx-fp32").symlink_to(elsewhere)
    res = cli("--quiet", "profile", run_copy, "--runs", 2)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "leads outside"))


@pytest.mark.parametrize("name", ["../../../../tmp/x", "a/b", "..", ".hidden", "x\ny"])
def test_crafted_target_name_in_the_record_is_refused(run_copy, guard, name):
    """report.json names a target whose directory would lie outside targets/."""
    d = json.loads((run_copy / "report.json").read_text())
    d["targets"][0]["name"] = name
    (run_copy / "report.json").write_text(json.dumps(d))
    res = cli("--quiet", "profile", run_copy, "--runs", 2)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "targets.0.name", "rerun `edgeship export`"))


SHAPES = {
    "a list": lambda d: [d],
    "targets as a dict": lambda d: {**d, "targets": {"onnx-fp32": d["targets"][0]}},
    "a number where a dict goes": lambda d: {**d, "measurements": 7},
    "a string where a number goes": lambda d: {**d, "final": {**d["final"], "params": "many"}},
    "a missing section": lambda d: {k: v for k, v in d.items() if k != "baseline"},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_report_json_of_the_wrong_shape(run_copy, guard, shape):
    """report.json rewritten into another shape: check, profile and report each say what is wrong in one line."""
    d = json.loads((run_copy / "report.json").read_text())
    (run_copy / "report.json").write_text(json.dumps(SHAPES[shape](d)))
    for cmd in (["check"], ["report"], ["profile", "--runs", "2"]):
        res = cli("--quiet", *cmd, run_copy)
        said = one_line(res.stderr, 2, res.exit_code, str(run_copy / "report.json"))
    guard.tell(said)


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe garbage", '{"edgeship_version": "0.1", "x": NaN}'])
def test_report_json_that_is_not_json(run_copy, guard, text):
    """report.json truncated, empty, binary, or with NaN in it."""
    (run_copy / "report.json").write_bytes(text.encode("latin-1"))
    res = cli("--quiet", "check", run_copy)
    guard.tell(one_line(res.stderr, 2, res.exit_code, str(run_copy / "report.json")))


def test_nan_measurement_in_report_json_is_refused(run_copy, guard):
    """A measurement of NaN (JSON has no NaN; Python's json writes it): refused on load, never re-saved."""
    d = json.loads((run_copy / "report.json").read_text())
    d["measurements"]["onnx-fp32"]["host"]["p90_ms"] = float("nan")
    (run_copy / "report.json").write_text(json.dumps(d))
    res = cli("--quiet", "check", run_copy)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "p90_ms", "finite"))
    assert "NaN" in (run_copy / "report.json").read_text()  # left as it was, not rewritten


def test_huge_report_json_is_refused_quickly(run_copy, guard):
    """report.json of 4 GB (a sparse file): refused from its size, not read into memory."""
    with open(run_copy / "report.json", "r+b") as f:
        f.truncate(4 << 30)
    res = cli("--quiet", "check", run_copy)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "a run record is at most"))


def test_report_json_that_is_a_device_file(run_copy, guard):
    """report.json a symbolic link to /dev/zero (reading it would never end)."""
    (run_copy / "report.json").unlink()
    (run_copy / "report.json").symlink_to("/dev/zero")
    res = cli("--quiet", "check", run_copy)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "has no report.json"))


def test_export_t_keeps_no_target_that_leads_outside(recipe, guard, tmp_path):
    """`export -t A` keeps the previous run's other targets: one whose directory holds a link out is dropped, and
    nothing from outside is copied into the new run."""
    targets = [{"name": "onnx-fp32", "format": "onnx", "precision": "fp32"},
               {"name": "onnx-b", "format": "onnx", "precision": "fp32"}]
    path = recipe(targets=targets)
    out = tmp_path / "runs" / "digits_test"
    assert cli("--quiet", "export", path, "--no-measure").exit_code == 0
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the run")
    (out / "targets" / "onnx-b" / "leak").symlink_to(secret)
    res = cli("export", path, "-t", "onnx-fp32", "--no-measure")
    assert res.exit_code == 0, res.stderr
    guard.tell(res.stderr)
    assert "onnx-b of the previous run is not kept" in " ".join(res.stderr.split())
    assert not (out / "targets" / "onnx-b").exists() and complete(out)
    found = [p for p in out.rglob("*") if p.is_file() and p.read_bytes() == secret.read_bytes()]
    assert found == []


def test_output_climbing_out_of_the_working_directory_is_said(recipe, guard, tmp_path, monkeypatch):
    """`output: ../../x` relative to the working directory: the run is written, and where is said (even --quiet)."""
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    path = recipe(output="../../elsewhere/digits_test")
    res = cli("--quiet", "export", path, "--no-measure")
    assert res.exit_code == 0, res.stderr
    guard.tell(res.stderr)
    assert f"writing the run to {tmp_path / 'elsewhere' / 'digits_test'}, outside the working directory" in \
        " ".join(res.stderr.split())
    assert complete(tmp_path / "elsewhere" / "digits_test")


def test_output_that_is_a_symlink_is_refused(recipe, guard, tmp_path):
    """output: a symbolic link (to a system directory, say): export renames directories, so it refuses."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "digits_test").symlink_to(tmp_path / "victim")
    (tmp_path / "victim").mkdir()
    res = cli("--quiet", "export", recipe(), "--no-measure")
    guard.tell(one_line(res.stderr, 2, res.exit_code, "is a symbolic link"))
    assert list((tmp_path / "victim").iterdir()) == []
    assert os.path.islink(tmp_path / "runs" / "digits_test")
