"""SIGKILL of a real `edgeship export` process: at random moments, and at the precise points where a run could be
lost (between the two renames of the swap, after the exchange, while a stage is being cached). After each, the
previous run or the new one is in place, complete; the next export (or any command reading the run) puts a
stranded run back and removes what the dead process left; a rerun resumes from the stage cache."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from faultlib import EDGESHIP, child, cli, complete, leftovers

from edgeship import rundir
from helpers import digits_recipe_dict, write_recipe

pytestmark = pytest.mark.slow
PRUNE = [{"name": "prune", "macs_ratio": 0.5, "round_to": 2, "fine_tune": {"epochs": 0}}]


def created(run: Path) -> int:
    """Which run is in place: each export writes a directory of its own (its inode)."""
    return run.stat().st_ino


def settle(out: Path, recipe: Path) -> None:
    """The next export after a kill: it recovers, cleans and completes; nothing is left beside the run."""
    res = cli("--quiet", "export", recipe, "--no-measure")
    assert res.exit_code == 0, res.stderr
    assert complete(out) and leftovers(out) == [], leftovers(out)


@pytest.fixture(scope="module")
def export_seconds(tmp_path_factory, digits_checkpoint) -> float:
    """How long one export (a pass, one target) takes in a child process here, start-up included."""
    tmp = tmp_path_factory.mktemp("timing")
    r = digits_recipe_dict(tmp, passes=PRUNE)
    r["model"]["weights"] = str(digits_checkpoint)
    t0 = time.monotonic()
    p = child(["--quiet", "export", write_recipe(tmp, r), "--no-measure"])
    assert p.returncode == 0, p.stderr
    return time.monotonic() - t0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_moment_loses_no_run(recipe, guard, seed, tmp_path, export_seconds):
    """SIGKILL at a random moment of a real export (seeded): the previous run stays or the new one is in place."""
    path = recipe(passes=PRUNE)
    out = tmp_path / "runs" / "digits_test"
    assert cli("--quiet", "export", recipe(), "--no-measure").exit_code == 0  # the previous run
    guard.keep(out)
    delay = random.Random(seed).uniform(0.05, 1.0) * export_seconds
    p = subprocess.Popen([*EDGESHIP, "--quiet", "export", str(path), "--no-measure"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert complete(out) or leftovers(out), "neither the run nor a stranded copy of it"
    rundir.recover(out)  # what the next command does first
    assert complete(out)  # the previous run  or, killed after the swap, the new one
    settle(out, path)


DRIVER_BETWEEN = """
import os, signal
from edgeship import rundir
rundir.exchange = lambda a, b: False  # a file system without RENAME_EXCHANGE: the rename-aside path
real = os.rename
def rename(src, dst, *a, **k):
    real(src, dst, *a, **k)
    if ".old-" in os.path.basename(str(dst)):  # the previous run was just set aside
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename
"""

DRIVER_AFTER_EXCHANGE = """
import os, signal
from edgeship import rundir
real = rundir.exchange
def exchange(a, b):
    done = real(a, b)
    if done:  # the new run is in place; the previous one (now in the temporary directory) is not removed yet
        os.kill(os.getpid(), signal.SIGKILL)
    return done
rundir.exchange = exchange
"""

DRIVER_WHILE_CACHING = """
import os, signal, torch
real = torch.save
def save(obj, f, *a, **k):
    real(obj, f, *a, **k)
    if str(f).endswith("stage.pt"):  # a stage half-way into the cache
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
"""


def _killed(path: Path, driver: str) -> subprocess.CompletedProcess:
    p = child(["--quiet", "export", path, "--no-measure"], driver=driver)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    return p


def test_sigkill_between_the_two_renames_strands_nothing(recipe, guard, tmp_path):
    """SIGKILL between renaming the previous run aside and renaming the new one in: both are on disk, and the next
    command puts the new one in place."""
    path = recipe()
    out = tmp_path / "runs" / "digits_test"
    assert cli("--quiet", "export", path, "--no-measure").exit_code == 0
    before = created(out)
    _killed(path, DRIVER_BETWEEN)
    assert not out.exists()
    names = leftovers(out)
    assert any(".old-" in n for n in names) and any(".tmp-" in n for n in names), names
    res = cli("--quiet", "check", out)  # a read puts the stranded run back first
    assert res.exit_code in (0, 1), res.stderr
    guard.tell(res.stderr)
    assert "recovered" in res.stderr
    assert complete(out) and created(out) != before and leftovers(out) == []
    guard.keep(out)


def test_sigkill_after_the_exchange_leaves_the_new_run(recipe, guard, tmp_path):
    """SIGKILL right after the atomic exchange: the new run is in place; the previous one, left in the temporary
    directory, is removed by the next export."""
    path = recipe()
    out = tmp_path / "runs" / "digits_test"
    assert cli("--quiet", "export", path, "--no-measure").exit_code == 0
    before = created(out)
    _killed(path, DRIVER_AFTER_EXCHANGE)
    assert complete(out) and created(out) != before
    guard.keep(out)
    assert any(".tmp-" in n for n in leftovers(out))
    settle(out, path)


def test_sigkill_while_caching_a_stage(recipe, guard, tmp_path):
    """SIGKILL while a stage is written into the cache: the previous run is intact, the half-written entry is
    removed at the next run and the stage recomputed."""
    path = recipe(passes=PRUNE)
    out = tmp_path / "runs" / "digits_test"
    assert cli("--quiet", "export", recipe(), "--no-measure").exit_code == 0  # a previous run (no passes)
    guard.keep(out)
    _killed(path, DRIVER_WHILE_CACHING)
    cache = tmp_path / "runs" / ".cache"
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")], "the half-written entry"
    settle(out, path)
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".")]
    assert json.loads((out / "report.json").read_text())["stages"][0]["cached"] is False


def test_dead_exports_leftovers_go_a_live_ones_stay(recipe, guard, tmp_path):
    """Hidden temporary directories of killed exports are removed at the next export; one that a live export holds
    is not."""
    path = recipe()
    out = tmp_path / "runs" / "digits_test"
    assert cli("--quiet", "export", path, "--no-measure").exit_code == 0
    guard.keep(out)
    live = subprocess.Popen(
        [EDGESHIP[0], "-c", "import sys, time; from pathlib import Path; from edgeship import rundir; "
         f"d = rundir.temp_run_dir(Path({str(out)!r})); (d / 'logs').mkdir(); print(d, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        live_dir = Path(live.stdout.readline().strip())
        dead = subprocess.run(
            [EDGESHIP[0], "-c", "import os, signal; from pathlib import Path; from edgeship import rundir; "
             f"d = rundir.temp_run_dir(Path({str(out)!r})); (d / 'logs').mkdir(); print(d, flush=True); "
             "os.kill(os.getpid(), signal.SIGKILL)"], capture_output=True, text=True)
        dead_dir = Path(dead.stdout.strip())
        assert dead_dir.is_dir() and live_dir.is_dir()
        res = cli("export", path, "--no-measure")
        assert res.exit_code == 0, res.stderr
        assert "removed 1 temporary directory" in guard.tell(" ".join(res.stderr.split()))
        assert not dead_dir.exists() and live_dir.is_dir()
    finally:
        live.kill()
        live.wait()
    rundir.recover(out)
    assert leftovers(out) == []
