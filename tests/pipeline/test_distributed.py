"""Training passes on several processes (torch.distributed, gloo on this CPU): a real 2-process
`edgeship export --nproc-per-node 2` of a digits recipe writes only from rank 0 and gives the model a
1-process run gives; a failure on one rank stops both with one line and writes nothing.

The student has no batch norm: on the CPU each rank normalizes its own half of a global batch (SyncBatchNorm
needs GPUs), which is the one thing that keeps a batch-norm model from following the 1-process run exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgeship.errors import EdgeshipError
from edgeship.pipeline import distributed
from helpers import REPO, digits_recipe_dict, write_recipe

AUDIT = Path(__file__).parent / "write_audit"  # a sitecustomize that records each rank's writes
STUDENT = """
from torch import nn


def net():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10))
"""


def edgeship(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgeship", *args], capture_output=True, text=True, cwd=REPO,
                          env=full, timeout=600)


def recipe(root: Path, ckpt: Path, **overrides) -> Path:
    """A digits recipe: the small BN-free student above distilled from the trained small CNN."""
    root.mkdir(parents=True)
    teacher = {"zoo": "small_cnn", "args": {"width": 8}, "weights": str(ckpt)}
    r = digits_recipe_dict(root, model={"factory": "student:net"},
                           passes=[{"name": "distill", "epochs": 4, "lr": 0.01, "teacher": teacher}])
    r.update(overrides)
    return write_recipe(root, r)


def entries(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_checkpoint):
    """The same recipe exported on one process and on two (each with its own runs/ and stage cache)."""
    tmp = tmp_path_factory.mktemp("dist")
    (tmp / "student.py").write_text(STUDENT)
    path = f"{tmp}{os.pathsep}{REPO}"
    one = edgeship("export", str(recipe(tmp / "one", digits_checkpoint)), "--no-measure", env={"PYTHONPATH": path})
    assert one.returncode == 0, one.stderr[-3000:]
    (tmp / "audit").mkdir()
    two_recipe = recipe(tmp / "two", digits_checkpoint)
    two = edgeship("export", str(two_recipe), "--no-measure", "--nproc-per-node", "2",
                   env={"PYTHONPATH": f"{AUDIT}{os.pathsep}{path}", "EDGESHIP_AUDIT_ROOT": str(tmp / "two"),
                        "EDGESHIP_AUDIT_OUT": str(tmp / "audit")})
    assert two.returncode == 0, two.stderr[-3000:]
    return tmp, two


@pytest.mark.slow
def test_two_processes_write_only_from_rank_0(runs):
    tmp, proc = runs
    writes = {r: (tmp / "audit" / f"writes-rank{r}.txt").read_text().split("\n") for r in (0, 1)}
    assert writes[1] == [""], writes[1]  # rank 1 trained and wrote nothing under the run's directory
    assert any("/runs/.cache/" in w for w in writes[0]) and any("digits_test" in w for w in writes[0])
    run = tmp / "two" / "runs"
    cache = [p.name for p in (run / ".cache").iterdir()]
    assert len(cache) == 1 and not cache[0].startswith("."), cache  # one stage, no leftover temporary entry
    assert sorted(p.name for p in run.iterdir()) == [".cache", "digits_test"]
    assert "run written to" in proc.stdout and proc.stdout.count("onnx-fp32") >= 1


@pytest.mark.slow
def test_two_processes_give_the_one_process_model(runs):
    tmp, _ = runs
    from edgeship.record import RunRecord

    one, two = (RunRecord.load(tmp / k / "runs" / "digits_test") for k in ("one", "two"))
    assert [s.cached for s in two.stages] == [False]
    assert two.stages[0].metrics["processes"] == 2 and len(two.stages[0].metrics["peak_rss_mb_per_process"]) == 2
    m1, m2 = (torch.load(tmp / k / "runs" / "digits_test" / "model" / "compressed.pt", weights_only=False)
              for k in ("one", "two"))
    # the same global batches in the same order, each rank half of each, gradients averaged: the same model up
    # to the order of float sums (measured: 3e-7 relative), where a different seed or batch order is O(1)
    s1, s2 = m1.state_dict(), m2.state_dict()
    diff = sum(float((s1[k] - s2[k]).norm() ** 2) for k in s1) ** 0.5
    norm = sum(float(t.norm() ** 2) for t in s1.values()) ** 0.5
    assert diff < 1e-4 * norm, (diff, norm)
    assert abs(one.stages[0].top1_val - two.stages[0].top1_val) <= 0.01
    assert abs(one.final.top1_test - two.final.top1_test) <= 0.01


FLAKY = '''
import os

from edgeship.models.zoo import SmallCNN


class RankOneFails(SmallCNN):
    def forward(self, x):
        if self.training and os.environ.get("RANK") == "1":
            raise RuntimeError("rank 1 cannot train this model")
        return super().forward(x)


def net():
    return RankOneFails(in_channels=1, num_classes=10, input_size=(8, 8), width=8)
'''


@pytest.mark.slow
def test_a_failure_on_one_rank_stops_all_with_one_line(tmp_path, digits_checkpoint):
    (tmp_path / "flaky.py").write_text(FLAKY)
    r = recipe(tmp_path / "job", digits_checkpoint, model={"factory": "flaky:net", "weights": str(digits_checkpoint)})
    proc = edgeship("export", str(r), "--no-measure", "--nproc-per-node", "2",
                    env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and "rank 1 failed" in errors[0] and "rank 1 cannot train this model" in errors[0], lines
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr
    assert entries(tmp_path / "job" / "runs") == [], entries(tmp_path / "job")  # no run, no temporary, no stage


def test_torchrun_options():
    assert distributed.torchrun_args(2) == ["--nproc-per-node", "2", "--nnodes", "1", "--standalone"]
    assert distributed.torchrun_args(4, 2, 1, "10.0.0.1", 29600)[-6:] == [
        "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "29600"]
    with pytest.raises(EdgeshipError, match="needs the address of node 0"):
        distributed.torchrun_args(2, nnodes=2)
    with pytest.raises(EdgeshipError, match="do not describe a job"):
        distributed.torchrun_args(2, nnodes=2, node_rank=2, master_addr="h")


def test_device_auto_is_the_cpu_without_a_gpu():
    if torch.cuda.is_available():
        assert distributed.resolve_device("auto").startswith("cuda:")
    else:
        assert distributed.resolve_device("auto") == "cpu"
        with pytest.raises(EdgeshipError, match="torch sees no GPU"):
            distributed.resolve_device("cuda")
    assert distributed.resolve_device("cpu") == "cpu"
