"""The stage cache under attack and decay: overwritten, truncated and garbled entries are misses said once and
recomputed (the model is the one a clean run gives); planted pickles never run, signed or not; a cache directory
someone else owns or can write, and a key others can read, are refused; and nothing in edgeship can reach
``weights_only=False`` without --trust-pickle."""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from faultlib import cli, one_line, planted_pickle

from helpers import REPO, digits_recipe_dict, write_recipe

PRUNE = [{"name": "prune", "macs_ratio": 0.5, "round_to": 2, "fine_tune": {"epochs": 0}}]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, digits_checkpoint) -> Path:
    """runs/ (a run and its stage cache, one entry) and keys/cache.key, made once by an export with one pass."""
    root = tmp_path_factory.mktemp("pristine")
    r = digits_recipe_dict(root, passes=PRUNE)
    r["model"]["weights"] = str(digits_checkpoint)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGESHIP_CACHE_KEY", str(root / "keys" / "cache.key"))
        res = cli("--quiet", "export", write_recipe(root, r), "--no-measure")
    assert res.exit_code == 0, res.stderr
    return root


@pytest.fixture
def cached(pristine, recipe, tmp_path, monkeypatch):
    """(recipe, run dir, the one cache entry, the clean run's report): a private copy of the pristine run, its
    stage cache and its key, which the recipe's export hits."""
    shutil.copytree(pristine / "runs", tmp_path / "runs")
    shutil.copytree(pristine / "keys", tmp_path / "keys")
    monkeypatch.setenv("EDGESHIP_CACHE_KEY", str(tmp_path / "keys" / "cache.key"))
    out = tmp_path / "runs" / "digits_test"
    entries = [p for p in (tmp_path / "runs" / ".cache").iterdir() if (p / "done").exists()]
    assert len(entries) == 1
    return recipe(passes=PRUNE), out, entries[0], json.loads((out / "report.json").read_text())


def rerun(path: Path, out: Path) -> tuple[dict, str]:
    res = cli("export", path, "--no-measure")
    assert res.exit_code == 0, res.stderr
    return json.loads((out / "report.json").read_text()), " ".join(res.stderr.split())


def assert_recomputed(report: dict, clean: dict, said: str, why: str, guard=None) -> None:
    if guard is not None:
        guard.tell(said[said.index("stage cache entry"):] if "stage cache entry" in said else said)
    assert said.count("stage cache entry") == 1 and why in said, said  # said once
    assert report["stages"][0]["cached"] is False
    assert report["final"]["top1_test"] == clean["final"]["top1_test"]  # the model a clean run gives
    assert report["final"]["model_hash"] == clean["final"]["model_hash"]


def test_overwritten_entry_is_recomputed_not_used(cached, guard):
    """16 KB of a cached stage.pt overwritten (the issue's probe: top-1 fell from 0.87 to 0.11 with exit 0)."""
    path, out, entry, clean = cached
    with open(entry / "stage.pt", "r+b") as f:
        f.seek(2048)
        f.write(os.urandom(16 * 1024))
    report, said = rerun(path, out)
    assert_recomputed(report, clean, said, "does not match its checksum", guard)


def test_truncated_entry_is_recomputed(cached, guard):
    """A cached stage.pt cut short (a full disk or a kill mid-write): a miss, not 'cannot access' forever."""
    path, out, entry, clean = cached
    data = (entry / "stage.pt").read_bytes()
    (entry / "stage.pt").write_bytes(data[: len(data) // 3])
    report, said = rerun(path, out)
    assert_recomputed(report, clean, said, f"has {len(data) // 3} of its {len(data)} bytes", guard)
    _, again = rerun(path, out)
    assert "stage cache entry" not in again  # rewritten: said once, not on every run


@pytest.mark.parametrize("index", ["", "{not json", "[]", '{"format": 1}'])
def test_garbled_index_is_a_miss(cached, guard, index):
    """The entry's index (done) emptied, not JSON, a list, or missing its fields."""
    path, out, entry, clean = cached
    (entry / "done").write_text(index)
    report, said = rerun(path, out)
    assert_recomputed(report, clean, said, "stage cache entry", guard)


def test_planted_pickle_without_the_key_never_runs(cached, guard):
    """A pickle with a __reduce__ payload in place of stage.pt, its hashes updated in the index (an attacker who can
    write the cache but has not the user's key)."""
    path, out, entry, clean = cached
    planted_pickle(entry / "stage.pt", guard.marker)
    index = json.loads((entry / "done").read_text())
    data = (entry / "stage.pt").read_bytes()
    index["files"]["stage.pt"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (entry / "done").write_text(json.dumps(index))
    report, said = rerun(path, out)
    assert_recomputed(report, clean, said, "not signed with your cache key", guard)
    assert not guard.marker.exists()


def test_planted_pickle_signed_with_the_users_key_still_never_runs(cached, guard, tmp_path):
    """Even an entry signed with the user's own key (a leaked key) is read with weights_only=True: a payload that
    calls exec is refused before it is unpickled."""
    path, out, entry, clean = cached
    planted_pickle(entry / "stage.pt", guard.marker)
    index = json.loads((entry / "done").read_text())
    data = (entry / "stage.pt").read_bytes()
    index["files"]["stage.pt"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    index["globals"] = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(entry / "stage.pt"))
    key = (tmp_path / "keys" / "cache.key").read_bytes()
    body = json.dumps({**{k: v for k, v in index.items() if k != "mac"}, "key": entry.name}, sort_keys=True)
    index["mac"] = hmac.new(key, body.encode(), hashlib.sha256).hexdigest()
    (entry / "done").write_text(json.dumps(index))
    report, said = rerun(path, out)
    assert_recomputed(report, clean, said, "which a cached stage may not hold", guard)
    assert not guard.marker.exists()


def test_entry_copied_under_another_key_is_a_miss(cached, guard, recipe, tmp_path):
    """A genuine signed entry moved to the key of another stage (swapping models between stages)."""
    path, out, entry, clean = cached
    other = recipe(passes=[{**PRUNE[0], "macs_ratio": 0.6}])
    res = cli("--quiet", "export", other, "--no-measure")
    assert res.exit_code == 0
    second = next(p for p in entry.parent.iterdir() if p != entry and (p / "done").exists())
    shutil.rmtree(second)
    shutil.copytree(entry, second)
    res = cli("export", other, "--no-measure")
    assert res.exit_code == 0, res.stderr
    said = guard.tell(" ".join(res.stderr.split()))
    assert "not signed with your cache key" in said


def test_cache_owned_by_another_user_is_refused(cached, guard):
    """A cache directory another user owns (output: /tmp/x puts it in /tmp/.cache, where anyone can make it)."""
    path, out, entry, _ = cached
    guard.keep(out)
    os.chown(entry.parent, 65534, 65534)
    res = cli("export", path, "--no-measure")
    guard.tell(one_line(res.stderr, 2, res.exit_code, "belongs to another user",
                        "edgeship does not read pickles others can write"))


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_cache_writable_by_others_is_refused(cached, guard, mode):
    """A cache directory group- or world-writable (sticky or not)."""
    path, out, entry, _ = cached
    guard.keep(out)
    os.chmod(entry.parent, mode)
    res = cli("export", path, "--no-measure")
    guard.tell(one_line(res.stderr, 2, res.exit_code, "is writable by others", f"chmod 700 {entry.parent}"))


def test_cache_created_private(pristine):
    """The cache directory an export creates is 0700, its key 0600."""
    assert (pristine / "runs" / ".cache").stat().st_mode & 0o777 == 0o700
    assert (pristine / "keys" / "cache.key").stat().st_mode & 0o777 == 0o600


def test_key_readable_by_others_is_refused(cached, guard):
    """A cache key others can read (they could sign entries): refused, not used."""
    path, out, _, _ = cached
    os.chmod(os.environ["EDGESHIP_CACHE_KEY"], 0o644)
    res = cli("export", path, "--no-measure")
    guard.tell(one_line(res.stderr, 2, res.exit_code, "is not a private file of yours", "remove"))


def test_key_cut_short_is_replaced_and_entries_recomputed(cached, guard):
    """A key file emptied (the disk filled as it was written): a new key, the old entries misses said once."""
    path, out, entry, clean = cached
    Path(os.environ["EDGESHIP_CACHE_KEY"]).write_bytes(b"")
    report, said = rerun(path, out)
    assert_recomputed(report, clean, said, "not signed with your cache key", guard)
    assert len(Path(os.environ["EDGESHIP_CACHE_KEY"]).read_bytes()) == 32


def test_no_writable_place_for_a_key_runs_without_the_cache(recipe, guard, tmp_path, monkeypatch):
    """The key cannot be created (a read-only home): the export runs, uncached, and says so."""
    monkeypatch.setenv("EDGESHIP_CACHE_KEY", "/proc/edgeship/cache.key")
    res = cli("export", recipe(passes=PRUNE), "--no-measure")
    assert res.exit_code == 0, res.stderr
    assert "stage cache off" in guard.tell(" ".join(res.stderr.split()))


def test_the_run_directory_is_never_unpickled(run_copy, guard):
    """A planted pickle as the run's model/compressed.pt: profile, check and report read the record and the
    runtimes' files only."""
    guard.keep(run_copy)
    for f in (run_copy / "model").iterdir():
        planted_pickle(f, guard.marker)
    assert cli("--quiet", "profile", run_copy, "--runs", 2).exit_code == 0
    assert cli("--quiet", "check", run_copy).exit_code in (0, 1)
    assert cli("--quiet", "report", run_copy).exit_code == 0
    assert not guard.marker.exists()


def test_no_weights_only_false_without_trust_pickle():
    """Every torch.load in edgeship passes weights_only=True, or a value computed from the user's --trust-pickle; no
    pickle.load(s) and no np.load(allow_pickle=True) anywhere."""
    bad = []
    for path in sorted((REPO / "edgeship").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path.relative_to(REPO)}:{node.lineno} {name}"
            if name in ("torch.load", "load") and "weights_only" in kw:
                v = kw["weights_only"]
                if not ((isinstance(v, ast.Constant) and v.value is True) or "trust_pickle" in ast.unparse(v)):
                    bad.append(f"{where} weights_only={ast.unparse(v)}")
            elif name == "torch.load":
                bad.append(f"{where} without weights_only")
            if name in ("pickle.load", "pickle.loads", "torch.serialization.load"):
                bad.append(where)
            if name.endswith("load") and "allow_pickle" in kw and ast.unparse(kw["allow_pickle"]) != "False":
                bad.append(f"{where} allow_pickle={ast.unparse(kw['allow_pickle'])}")
    assert not bad, bad


def test_every_torch_load_of_an_export_is_weights_only(cached, monkeypatch):
    """At run time too: a rerun that reads every stage from the cache calls torch.load only with weights_only=True."""
    path, out, _, _ = cached
    calls = []
    real = torch.load

    def spy(*a, **k):
        calls.append(k.get("weights_only"))
        return real(*a, **k)

    monkeypatch.setattr(torch, "load", spy)
    report, _ = rerun(path, out)
    assert report["stages"][0]["cached"] is True
    assert calls and all(c is True for c in calls), calls
