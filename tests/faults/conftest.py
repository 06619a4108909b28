"""Fault injection against real exports of the digits model: SIGKILL, full disks (a small tmpfs), file size limits
(RLIMIT_FSIZE in a child), read-only mounts, damaged and planted cache entries, hostile run directories, hostile
device output through the real loopback sshd, hanging models. Every test is a probe.

The autouse ``guard`` checks after every probe that each run registered with ``guard.keep`` is still a complete,
loadable run and that no planted code ran (planted payloads create ``guard.marker``), and appends the probe's
outcome to ``$EDGESHIP_FAULTS_LOG`` when it is set (``benchmarks/faults.py`` turns that log into
benchmarks/results/faults.json). Mounting needs root (CI runs as root); without it the mount probes fail, they
do not skip."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# the device tests' conftest imports its neighbour emulated.py: importable however these probes are selected
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "devices"))
from devices.conftest import loopback_sshd  # noqa: E402, F401  (the real sshd fixture, shared with the device tests)
from faultlib import cli, complete  # noqa: E402

from helpers import digits_recipe_dict, write_recipe  # noqa: E402


# ---------------------------------------------------------------- the guard
@dataclass
class Guard:
    marker: Path  # a planted payload creates this file when it runs
    kept: list[Path] = field(default_factory=list)
    at_risk: int = 0
    lost: list[str] = field(default_factory=list)
    said: str = ""  # what edgeship told the user (for the results file)

    def keep(self, run: Path) -> Path:
        """``run`` (complete now) must still be a complete run when the probe ends (or at ``check``)."""
        assert complete(run), f"{run} is not a complete run to begin with"
        self.kept.append(Path(run))
        self.at_risk += 1
        return Path(run)

    def settle(self) -> None:
        """Count the kept runs now, lost or not (before a mount they live on goes away, even if the probe failed)."""
        self.lost += [str(r) for r in self.kept if not complete(r)]
        self.kept.clear()

    def check(self) -> None:
        """Check the kept runs now."""
        self.settle()
        assert not self.lost, f"runs lost: {self.lost}"

    def tell(self, text: str) -> str:
        self.said = " ".join(text.split())[:600]
        return text


@pytest.fixture(autouse=True)
def guard(request, tmp_path):
    g = Guard(marker=tmp_path / "PLANTED-CODE-RAN")
    yield g
    g.lost += [str(r) for r in g.kept if not complete(r)]
    ran = g.marker.exists()
    log = os.environ.get("EDGESHIP_FAULTS_LOG")
    if log:
        call = getattr(request.node, "rep_call", None)
        doc = (request.node.function.__doc__ or request.node.name).strip().split("\n\n")[0]
        with open(log, "a") as f:
            f.write(json.dumps({"probe": request.node.nodeid, "doc": " ".join(doc.split()), "said": g.said,
                                "passed": bool(call and call.passed) and not g.lost and not ran,
                                "runs_at_risk": g.at_risk, "runs_lost": len(g.lost), "code_ran": ran}) + "\n")
    assert not g.lost, f"runs lost: {g.lost}"
    assert not ran, "planted code ran"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


# ---------------------------------------------------------------- runs, recipes, mounts
@pytest.fixture
def recipe(tmp_path, digits_checkpoint):
    """Factory: ``recipe(root=tmp_path, **overrides) -> recipe path`` whose output is ``root/runs/digits_test``."""
    made = []

    def make(root: Path | None = None, **overrides) -> Path:
        root = Path(root or tmp_path)
        r = digits_recipe_dict(root)
        r["model"]["weights"] = str(digits_checkpoint)
        r["output"] = str(root / "runs" / "digits_test")
        r.update(overrides)
        made.append(r)
        return write_recipe(tmp_path, r, f"recipe-{len(made)}.yaml")

    return make


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, digits_checkpoint) -> Path:
    """One complete run (the digits CNN as ONNX FP32, host-measured), exported once; probes copy it."""
    tmp = tmp_path_factory.mktemp("finished")
    r = digits_recipe_dict(tmp)
    r["model"]["weights"] = str(digits_checkpoint)
    res = cli("--quiet", "export", write_recipe(tmp, r), "--runs", 3)
    assert res.exit_code == 0, res.stderr
    return tmp / "runs" / "digits_test"


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A private copy of the finished run (a probe may damage it)."""
    dst = tmp_path / "copy" / "digits_test"
    shutil.copytree(finished_run, dst, symlinks=True)
    return dst


