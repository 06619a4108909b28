"""Full disks (a real tmpfs filled to a few KB), file size limits (RLIMIT_FSIZE set in a child export) and
read-only mounts: wherever the write fails (the stage cache, torch's zip writer, a converter, report.json,
report.html), the user reads one line, 'disk full (or file size limit) while writing X; free N MB', exit 2, and
the run in place is the previous one, complete."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from faultlib import child, cli, complete, fill, leftovers, one_line, read_only, tmpfs

from helpers import digits_recipe_dict, write_recipe

pytestmark = pytest.mark.slow
PRUNE = [{"name": "prune", "macs_ratio": 0.5, "round_to": 2, "fine_tune": {"epochs": 0}}]
FULL = "disk full (or file size limit) while writing"


@pytest.fixture(scope="module")
def previous(tmp_path_factory, digits_checkpoint) -> Path:
    """A finished run of the recipe below (one pass, one ONNX target), made once; each probe copies it."""
    root = tmp_path_factory.mktemp("previous")
    r = digits_recipe_dict(root, passes=PRUNE)
    r["model"]["weights"] = str(digits_checkpoint)
    assert cli("--quiet", "export", write_recipe(root, r), "--no-measure").exit_code == 0
    return root / "runs" / "digits_test"


@pytest.mark.parametrize("leave_kb", [0, 12, 28, 44, 60])
def test_disk_full_during_an_export(recipe, guard, previous, tmp_path, leave_kb):
    """An export (one pass, one ONNX target) onto a tmpfs with this many KB left: the write that fails first says so."""
    fs = tmp_path / "fs"
    with tmpfs(fs, "16m", guard.settle):
        path = recipe(root=fs, passes=PRUNE)
        out = fs / "runs" / "digits_test"
        shutil.copytree(previous, out)  # the previous run; no stage cache, so the stage is computed and cached again
        guard.keep(out)
        fill(fs, leave_kb)
        res = cli("--quiet", "export", path, "--no-measure")
        guard.tell(one_line(res.stderr, 2, res.exit_code, FULL, "free on", "is as it was"))
        assert leftovers(out) == [], leftovers(out)
        guard.check()


def test_disk_full_while_profile_saves_the_record(run_copy, guard, tmp_path):
    """`profile` measures, then cannot save report.json: the record in place is the one before."""
    fs = tmp_path / "fs"
    with tmpfs(fs, "4m", guard.settle):
        run = fs / "digits_test"
        shutil.copytree(run_copy, run)
        guard.keep(run)
        before = (run / "report.json").read_text()
        fill(fs, 0)
        res = cli("--quiet", "profile", run, "--runs", 2)
        guard.tell(one_line(res.stderr, 2, res.exit_code, f"{FULL} {run / 'report.json'}; free 1 MB"))
        assert (run / "report.json").read_text() == before
        guard.check()


def test_disk_full_writing_a_junit_file(run_copy, guard, tmp_path):
    """`check --junit` onto a full disk."""
    fs = tmp_path / "fs"
    with tmpfs(fs, "1m"):
        fill(fs, 0)
        res = cli("--quiet", "check", run_copy, "--junit", fs / "junit.xml")
        guard.tell(one_line(res.stderr, 2, res.exit_code, f"{FULL} {fs / 'junit.xml'}"))


@pytest.mark.parametrize(("limit_kb", "passes"), [(2, PRUNE), (16, [])], ids=["2kb-caching", "16kb-model"])
def test_file_size_limit_in_a_child_export(recipe, guard, previous, tmp_path, limit_kb, passes):
    """`ulimit -f` (RLIMIT_FSIZE) below what the export writes (a stage cache entry; torch's zip writer saving the
    model): EFBIG, not 'cannot access: File too large' or 'unexpected pos'."""
    path = recipe(passes=passes)
    out = tmp_path / "runs" / "digits_test"
    shutil.copytree(previous, out)
    guard.keep(out)
    p = child(["--quiet", "export", path, "--no-measure"], fsize=limit_kb * 1024)
    guard.tell(one_line(p.stderr, 2, p.returncode, FULL, "ulimit -f"))
    assert leftovers(out) == []


def test_read_only_output(run_copy, guard, recipe):
    """The previous run and its parent on a read-only mount: export is refused before any work."""
    guard.keep(run_copy)
    path = recipe(output=str(run_copy))
    with read_only(run_copy.parent):
        res = cli("--quiet", "export", path, "--no-measure")
        guard.tell(one_line(res.stderr, 2, res.exit_code, "is not writable"))
        assert complete(run_copy)


def test_read_only_run_directory_for_profile_and_report(run_copy, guard):
    """`profile` and `report` of a run on a read-only mount: one line each, the run unchanged."""
    guard.keep(run_copy)
    before = (run_copy / "report.json").read_text()
    with read_only(run_copy.parent):
        res = cli("--quiet", "profile", run_copy, "--runs", 2)
        guard.tell(one_line(res.stderr, 2, res.exit_code, "Read-only file system"))
        res = cli("--quiet", "report", run_copy)
        one_line(res.stderr, 2, res.exit_code, "Read-only file system")
    assert (run_copy / "report.json").read_text() == before


def test_read_only_stage_cache_runs_uncached(recipe, guard, tmp_path):
    """The stage cache on a read-only mount: the export completes, says the stages are not cached."""
    path = recipe(passes=PRUNE)
    cache = tmp_path / "runs" / ".cache"
    cache.mkdir(parents=True, mode=0o700)
    with read_only(cache):
        res = cli("export", path, "--no-measure")
        assert res.exit_code == 0, res.stderr
        guard.tell(res.stderr)
        assert "is not writable" in " ".join(res.stderr.split())
    assert complete(tmp_path / "runs" / "digits_test")
