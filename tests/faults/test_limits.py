"""Hangs and sizes: a model whose forward() never returns (in Python, in a sleep, in native code that never comes
back to Python; at loading, in a pass, in one target's converter), recipes too big, too deep or expanding into
millions of values, and data files that are not what they claim. Each is one line naming the stage or the
limit; a hanging target fails alone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from faultlib import child, cli, complete, leftovers, one_line

from edgeship.api import load_recipe
from edgeship.errors import EdgeshipError

HANG = '''
import signal, time, torch
from torch import nn


class Net(nn.Module):
    def __init__(self, hang="never", how="loop", mark=None):
        super().__init__()
        self.hang, self.how, self.mark = hang, how, mark
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))

    def stuck(self):
        if self.mark:  # the probe checks that the deadline stopped this hang, not slow work before it
            open(self.mark, "w").close()
        if self.how == "loop":
            while True:
                pass
        if self.how == "sleep":
            time.sleep(3600)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})  # native code that never returns to Python
        time.sleep(3600)

    def forward(self, x):
        if self.hang == "always" or (self.hang == "training" and self.training) or \\
                (self.hang == "batch" and len(x) > 2) or (self.hang == "onnx" and torch.onnx.is_in_onnx_export()):
            self.stuck()
        return self.body(x)


def net(**kw):
    return Net(**kw)
'''


@pytest.fixture
def hanging(recipe, tmp_path, monkeypatch):
    """Factory: a recipe whose model (a factory in the working directory) hangs where and how it is told."""
    (tmp_path / "hangmodel.py").write_text(HANG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(hang: str, how: str = "loop", **overrides) -> Path:
        args = {"hang": hang, "how": how, "mark": str(tmp_path / "hung")}
        return recipe(model={"factory": "hangmodel:net", "args": args}, **overrides)

    return make


@pytest.mark.parametrize("how", ["loop", "sleep"])
def test_forward_that_never_returns_at_loading(hanging, guard, tmp_path, how):
    """forward() loops (or sleeps) forever the first time it runs: stopped at timeouts.stage_s, stage named."""
    t0 = time.monotonic()
    res = cli("--quiet", "export", hanging("always", how, timeouts={"stage_s": 2}), "--no-measure")
    guard.tell(one_line(res.stderr, 2, res.exit_code, "stage baseline (loading the input model) did not finish within "
                        "2 s", "timeouts.stage_s"))
    assert (tmp_path / "hung").exists()
    assert time.monotonic() - t0 < 120
    assert not (tmp_path / "runs" / "digits_test").exists()


@pytest.mark.slow
def test_forward_that_hangs_in_a_pass(hanging, guard, tmp_path):
    """forward() hangs only in training mode: the distill pass is stopped, named; the previous run stays."""
    out = tmp_path / "runs" / "digits_test"
    assert cli("--quiet", "export", hanging("never"), "--no-measure").exit_code == 0
    guard.keep(out)
    passes = [{"name": "distill", "epochs": 1}]
    res = cli("--quiet", "export", hanging("training", passes=passes, timeouts={"stage_s": 8}), "--no-measure")
    guard.tell(one_line(res.stderr, 2, res.exit_code, "stage 1:distill did not finish within 8 s"))
    assert (tmp_path / "hung").exists()
    assert leftovers(out) == []


@pytest.mark.slow
def test_converter_that_hangs_fails_only_its_target(hanging, guard, tmp_path):
    """forward() hangs only while ONNX export traces it: that target fails at timeouts.target_s, OpenVINO's is made."""
    targets = [{"name": "onnx-fp32", "format": "onnx", "precision": "fp32"},
               {"name": "ov-fp32", "format": "openvino", "precision": "fp32"}]
    res = cli("--quiet", "export", hanging("onnx", targets=targets, timeouts={"target_s": 20}), "--no-measure")
    assert res.exit_code == 1, res.stderr
    report = json.loads((tmp_path / "runs" / "digits_test" / "report.json").read_text())
    status = {t["name"]: (t["status"], t["error"]) for t in report["targets"]}
    guard.tell(status["onnx-fp32"][1])
    assert status["onnx-fp32"][0] == "failed"
    assert "target onnx-fp32 did not finish within 20 s" in status["onnx-fp32"][1]
    assert status["ov-fp32"] == ("ok", None) and (tmp_path / "hung").exists()


@pytest.mark.slow
def test_forward_stuck_in_native_code(hanging, guard, tmp_path):
    """forward() blocks SIGALRM and sleeps in C while the input model is evaluated: the watchdog ends the process
    with the same line (exit 2); the previous run stays, and the next export removes the temporary run it left."""
    out = tmp_path / "runs" / "digits_test"
    assert cli("--quiet", "export", hanging("never"), "--no-measure").exit_code == 0
    guard.keep(out)
    stuck = hanging("batch", "native", timeouts={"stage_s": 3})  # loads (a batch of 2), hangs evaluating
    p = child(["--quiet", "export", stuck, "--no-measure"], cwd=tmp_path, env={"PYTHONPATH": str(tmp_path)},
              timeout=300)
    guard.tell(one_line(p.stderr, 2, p.returncode, "stage baseline (evaluating the input model) did not finish within "
                        "3 s", "could not be interrupted (stuck in native code)"))
    assert (tmp_path / "hung").exists()
    assert complete(out) and leftovers(out)
    assert cli("--quiet", "export", hanging("never"), "--no-measure").exit_code == 0
    assert leftovers(out) == []


def test_recipe_of_50_mb_is_refused_unread(guard, tmp_path):
    """A 50 MB recipe (it was still parsing after 120 s at 0.8 GB)."""
    big = tmp_path / "big.yaml"
    with open(big, "w") as f:
        f.write("name: x\n")
        f.write(("# " + "x" * 1022 + "\n") * 50 * 1024)
    t0 = time.monotonic()
    res = cli("--quiet", "export", big)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "a recipe may be at most 1024 KB"))
    assert time.monotonic() - t0 < 30


def test_recipe_nested_100k_deep_is_one_line(guard, tmp_path):
    """A recipe nested 100000 deep (it was a RecursionError, exit 1)."""
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 100000 + "]" * 100000 + "\n")
    res = cli("--quiet", "export", deep)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "nested more than 32 levels deep"))


def test_yaml_bomb_in_model_args_is_refused(recipe, guard, tmp_path):
    """Billion laughs in model.args (aliases that expand into 10^9 values, where nothing else looks)."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    base = yaml.safe_load(recipe().read_text())
    body = yaml.safe_dump({k: v for k, v in base.items() if k != "model"}, sort_keys=False)
    bomb.write_text("x_anchors:\n" + "\n".join("  " + ln for ln in lines) + "\n" + body +
                    "model: {zoo: small_cnn, args: {width: 8, payload: *a9}}\n")
    t0 = time.monotonic()
    res = cli("--quiet", "export", bomb)
    guard.tell(one_line(res.stderr, 2, res.exit_code, "holds more than 100,000 values"))
    assert time.monotonic() - t0 < 60


def test_deep_dict_through_the_api_is_refused(guard, tmp_path):
    """The same depth through the Python API (a dict built in code)."""
    deep: dict = {}
    node = deep
    for _ in range(100000):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(EdgeshipError, match="nested more than 32 levels deep") as e:
        load_recipe({"name": "x", "model": {"zoo": "small_cnn", "args": deep}})
    guard.tell(str(e.value))


@pytest.mark.parametrize("threads", [0, 100000])
def test_recipe_thread_count_out_of_range(recipe, guard, threads):
    """train.threads 0 or 100000 in a recipe."""
    res = cli("--quiet", "export", recipe(train={"threads": threads}))
    guard.tell(one_line(res.stderr, 2, res.exit_code, "train.threads"))


def test_sparse_5gb_npz_says_what_it_is(recipe, guard, tmp_path):
    """A 5 GB sparse file named .npz: refused as not an .npz, not as 'pickled (object) data'."""
    f = tmp_path / "data.npz"
    with open(f, "wb") as fh:
        fh.truncate(5 << 30)
    res = cli("--quiet", "export", recipe(data={"source": {"kind": "npz", "path": str(f)}}))
    said = guard.tell(one_line(res.stderr, 2, res.exit_code, "is not a .npz archive", "np.savez"))
    assert "pickled" not in said


def test_npz_larger_than_memory_says_the_limit(recipe, guard, tmp_path):
    """An .npz whose x would take 560 GB once loaded (its header says so; the file is tiny): the limit is said."""
    import io
    import zipfile

    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, {"descr": "<f4", "fortran_order": False,
                                                "shape": (10**6, 3, 224, 224)})
    f = tmp_path / "data.npz"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("x.npy", head.getvalue())
        z.writestr("y.npy", head.getvalue())
    res = cli("--quiet", "export", recipe(data={"source": {"kind": "npz", "path": str(f)}}))
    guard.tell(one_line(res.stderr, 2, res.exit_code, "GB once loaded; the limit is", "half of this machine's memory"))
