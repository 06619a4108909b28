"""How the CLI talks while it runs, checked on the real process (file descriptors, not a test
runner's captured streams): progress bars on a terminal, nothing on stderr with --quiet, and only
JSON on stdout with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import digits_recipe_dict, write_recipe

EDGESHIP = [sys.executable, "-m", "edgeship.cli"]


def run(*args: str, terminal: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGESHIP_QUIET", "FORCE_COLOR", "NO_COLOR")}
    if terminal:  # rich draws live progress only on an interactive terminal: make it believe it is one
        env.update(FORCE_COLOR="1", TTY_INTERACTIVE="1", COLUMNS="120")
    return subprocess.run([*EDGESHIP, *args], capture_output=True, text=True, env=env, timeout=300)


def plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_train_progress_bar_and_quiet(tmp_path):
    r = digits_recipe_dict(tmp_path, train={"epochs": 2, "batch_size": 64, "lr": 0.01, "threads": 1})
    recipe = write_recipe(tmp_path, r)
    shown = run("train", str(recipe), terminal=True)
    assert shown.returncode == 0, shown.stderr
    err = plain(shown.stderr)
    assert "train epoch 2/2" in err and "eta" in err and "42/42" in err  # 21 steps per epoch, 2 epochs
    assert "training small_cnn on" in err and "saved" in err
    assert shown.stdout == ""

    quiet = run("--quiet", "train", str(recipe), terminal=True)
    assert quiet.returncode == 0
    assert quiet.stderr == "" and quiet.stdout == ""
    assert Path(r["model"]["weights"]).is_file()


def test_export_progress_quiet_and_json(digits_recipe, tmp_path):
    recipe = str(digits_recipe())
    shown = run("export", recipe, "--runs", "5", terminal=True)
    assert shown.returncode == 0, shown.stderr
    err = plain(shown.stderr)
    assert "verify onnx-fp32" in err and "359/359" in err and "baseline: test top-1" in err
    assert "host onnx-fp32: p50" in err  # the host measurement reports too
    assert "onnx-fp32" in plain(shown.stdout) and "report.html" in shown.stdout

    quiet = run("--quiet", "export", recipe, "--runs", "5", terminal=True)
    assert quiet.returncode == 0
    assert quiet.stderr == ""  # no bars, no info lines, no converter chatter
    assert "onnx-fp32" in plain(quiet.stdout)  # the result tables still print

    as_json = run("--json", "export", recipe, "--runs", "5")
    assert as_json.returncode == 0
    assert as_json.stderr == ""
    report = json.loads(as_json.stdout)  # the whole of stdout is one JSON document
    assert report["targets"][0]["name"] == "onnx-fp32"
    assert report == json.loads((tmp_path / "runs" / "digits_test" / "report.json").read_text())
    rebuilt = run("--json", "report", str(tmp_path / "runs" / "digits_test"))
    assert rebuilt.returncode == 0 and {k: v for k, v in json.loads(rebuilt.stdout).items()
                                        if k != "report_html"} == report  # `report --json` prints it too

    bad = run("--quiet", "export", str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: recipe not found") and bad.stdout == ""


def test_openmp_waits_passively_only_on_a_busy_machine(monkeypatch):
    """A spinning OpenMP thread on a machine busier than its cores made a fine-tuning step 4.5x slower
    (benchmarks/results/omp_wait.json): the CLI then asks for passive waiting, never over the user's choice."""
    from edgeship.cli import passive_openmp_when_busy

    cores = os.cpu_count() or 1
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (cores * 0.5, 0.0, 0.0))
    passive_openmp_when_busy()
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 1.0, 0.0, 0.0))
    passive_openmp_when_busy()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    passive_openmp_when_busy()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
