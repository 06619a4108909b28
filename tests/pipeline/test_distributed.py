"""Training passes on several processes (torch.distributed, gloo on this CPU): a real 2-process
`edgeship export --nproc-per-node 2` of a digits recipe writes only from rank 0 and gives the model a
1-process run gives; a failure on one rank stops both with one line and writes nothing.

The student has no batch norm: on the CPU each rank normalizes its own half of a global batch (SyncBatchNorm
needs GPUs), which is the one thing that keeps a batch-norm model from following the 1-process run exactly."""

from __future__ import annotations

import os
import socket
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
def one_process(tmp_path_factory, digits_checkpoint) -> Path:
    """The recipe exported on one process: <tmp>/one/runs/digits_test (the student's module in <tmp>)."""
    tmp = tmp_path_factory.mktemp("dist")
    (tmp / "student.py").write_text(STUDENT)
    one = edgeship("export", str(recipe(tmp / "one", digits_checkpoint)), "--no-measure",
                   env={"PYTHONPATH": f"{tmp}{os.pathsep}{REPO}"})
    assert one.returncode == 0, one.stderr[-3000:]
    return tmp


@pytest.fixture(scope="module")
def runs(one_process, digits_checkpoint):
    """The same recipe exported on one process and on two (each with its own runs/ and stage cache)."""
    tmp = one_process
    path = f"{tmp}{os.pathsep}{REPO}"
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
    assert_same_model(tmp / "one", tmp / "two")


def assert_same_model(one_dir: Path, two_dir: Path) -> None:
    """The run under ``two_dir`` (2 processes) trained the model the 1-process run under ``one_dir`` did."""
    from edgeship.record import RunRecord

    one, two = (RunRecord.load(d / "runs" / "digits_test") for d in (one_dir, two_dir))
    assert [s.cached for s in two.stages] == [False]
    assert two.stages[0].metrics["processes"] == 2 and len(two.stages[0].metrics["peak_rss_mb_per_process"]) == 2
    m1, m2 = (torch.load(d / "runs" / "digits_test" / "model" / "compressed.pt", weights_only=False)
              for d in (one_dir, two_dir))
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(tmp: Path, node1_recipe: Path, node0_recipe: Path) -> tuple[subprocess.CompletedProcess, ...]:
    """Two machines on loopback: ``edgeship export --nnodes 2`` started twice, once per node rank, each its own
    launcher with one process, meeting at node 0's port; each node's writes under <tmp>/nodes are audited."""
    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{AUDIT}{os.pathsep}{tmp}{os.pathsep}{REPO}",
           "EDGESHIP_AUDIT_ROOT": str(tmp / "nodes"), "EDGESHIP_AUDIT_OUT": str(tmp / "audit")}
    (tmp / "audit").mkdir(exist_ok=True)
    procs = [subprocess.Popen([sys.executable, "-m", "edgeship", "export", str(r), "--no-measure",
                               "--nproc-per-node", "1", "--nnodes", "2", "--node-rank", str(rank),
                               "--master-addr", "127.0.0.1", "--master-port", port, "--join-timeout", "120"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
             for rank, r in enumerate((node0_recipe, node1_recipe))]
    outs = [p.communicate(timeout=600) for p in procs]
    return tuple(subprocess.CompletedProcess(p.args, p.returncode, o, e) for p, (o, e) in zip(procs, outs))


@pytest.mark.slow
def test_two_nodes_on_loopback(one_process, digits_checkpoint):
    """Two launchers as two machines would run them: node 0 alone writes the run and the cache, node 1 trains
    its half of every batch, says so and writes nothing, and the model is the 1-process one."""
    tmp = one_process
    node0, node1 = (recipe(tmp / "nodes" / n, digits_checkpoint) for n in ("node0", "node1"))
    p0, p1 = two_nodes(tmp, node1, node0)
    assert p0.returncode == 0, p0.stderr[-3000:]
    assert p1.returncode == 0 and "node 1: done; node 0 wrote the run" in p1.stdout, (p1.stdout, p1.stderr[-3000:])
    assert "run written to" in p0.stdout and "error" not in p1.stderr
    assert (tmp / "audit" / "writes-rank1.txt").read_text() == ""  # rank 1 (node 1) wrote nothing, anywhere
    assert entries(node1.parent) == ["recipe.yaml"]
    run = node0.parent / "runs"
    assert sorted(p.name for p in run.iterdir()) == [".cache", "digits_test"]
    assert len(list((run / ".cache").iterdir())) == 1  # the stage, no leftover temporary entry
    assert_same_model(tmp / "one", node0.parent)


@pytest.mark.slow
def test_a_failure_on_node_1_stops_node_0_with_one_line(tmp_path, digits_checkpoint):
    """Node 1's copy of the data is missing: its rank fails after joining; node 0's rank loses its peer in the
    next collective and stops; each node prints one line, and nothing is written on either."""
    (tmp_path / "student.py").write_text(STUDENT)
    node0 = recipe(tmp_path / "nodes" / "node0", digits_checkpoint)
    node1 = recipe(tmp_path / "nodes" / "node1", digits_checkpoint,
                   data={"source": {"kind": "npz", "path": str(tmp_path / "nodes" / "node1" / "digits.npz")},
                         "val_size": 150, "calib_size": 150, "seed": 0})
    p0, p1 = two_nodes(tmp_path, node1, node0)
    errors = {n: [line for line in p.stderr.splitlines() if "error:" in line] for n, p in ((0, p0), (1, p1))}
    assert p1.returncode == 2 and len(errors[1]) == 1 and "digits.npz" in errors[1][0], p1.stderr[-3000:]
    assert p0.returncode == 1 and len(errors[0]) == 1, p0.stderr[-3000:]
    assert "lost the connection to another process of the job" in errors[0][0], errors[0]
    assert "Traceback" not in p0.stderr + p1.stderr
    assert (tmp_path / "audit" / "writes-rank1.txt").read_text() == ""
    files = sorted(str(p.relative_to(tmp_path / "nodes")) for p in (tmp_path / "nodes").rglob("*") if p.is_file())
    assert files == ["node0/recipe.yaml", "node1/recipe.yaml"] and entries(node0.parent / "runs") == [], files


def test_a_node_that_never_comes_stops_node_0_with_one_line():
    """Node 1 never starts (it stopped at its own check, or cannot reach node 0): node 0 gives up after
    --join-timeout with one error naming where it waited (the launcher in this process: no rank starts)."""
    port = free_port()
    with pytest.raises(EdgeshipError, match=f"node 0: the 2 nodes did not all meet at 127.0.0.1:{port}.*1/2 clients"):
        distributed.launch(["export", "never-read.yaml"], 1, nnodes=2, node_rank=0, master_addr="127.0.0.1",
                           master_port=port, join_timeout_s=1)


def test_torchrun_options():
    assert distributed.torchrun_args(2) == ["--nproc-per-node", "2", "--nnodes", "1", "--standalone"]
    assert distributed.torchrun_args(4, 2, 1, "10.0.0.1", 29600)[-6:] == [
        "--node-rank", "1", "--master-addr", "10.0.0.1", "--master-port", "29600"]
    assert distributed.torchrun_args(4, 2, 1, "10.0.0.1", 29600, 60)[-2:] == ["--rdzv-conf", "timeout=60"]
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
