"""Passes through `edgeship export`: stages recorded in report.json, cached on a rerun, failures keep
the finished stages."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgeship.api import export
from edgeship.cli import app
from edgeship.errors import EdgeshipError
from helpers import as_json

PASSES = [
    {"name": "prune", "macs_ratio": 0.5, "round_to": 2, "steps": 2, "fine_tune": {"epochs": 2, "lr": 0.003}},
    {"name": "distill", "epochs": 2, "lr": 0.002},
    {"name": "qat", "epochs": 1, "calib_samples": 128},
]


def test_export_twice_hits_the_stage_cache(digits_recipe, tmp_path):
    recipe = digits_recipe(passes=PASSES)
    runner = CliRunner()
    first = runner.invoke(app, ["--quiet", "export", str(recipe), "--no-measure"])
    assert first.exit_code == 0, first.output
    out = tmp_path / "runs" / "digits_test"
    report = json.loads((out / "report.json").read_text())
    stages = report["stages"]
    assert [s["stage"] for s in stages] == ["1:prune", "2:distill", "3:qat"]
    assert not any(s["cached"] for s in stages)
    for s in stages:
        assert {"top1_val", "params", "macs", "size_fp32_bytes", "wall_s", "metrics"} <= set(s)
    assert stages[0]["macs"] <= 0.5 * report["baseline"]["macs"]
    assert report["quantization"]["qat"] is True
    assert report["final"]["top1_test"] >= report["baseline"]["top1_test"] - 0.05
    assert report["targets"][0]["status"] == "ok"  # the fake-quant model exports and verifies

    second = runner.invoke(app, ["--quiet", "export", str(recipe), "--no-measure"])
    assert second.exit_code == 0, second.output
    again = json.loads((out / "report.json").read_text())
    assert [s["cached"] for s in again["stages"]] == [True, True, True]
    assert [s["top1_val"] for s in again["stages"]] == [s["top1_val"] for s in stages]


def test_a_stage_cached_by_other_code_is_recomputed(digits_recipe, tmp_path, monkeypatch):
    """The cache key includes the passes' code: after an upgrade or a fix in a pass, a rerun recomputes
    instead of reusing what the old code wrote."""
    from edgeship.pipeline import runner as runner_mod

    recipe = digits_recipe(passes=[{"name": "prune", "macs_ratio": 0.5, "round_to": 2, "fine_tune": {"epochs": 0}}])
    cli = CliRunner()
    out = tmp_path / "runs" / "digits_test"
    assert cli.invoke(app, ["--quiet", "export", str(recipe), "--no-measure"]).exit_code == 0
    assert cli.invoke(app, ["--quiet", "export", str(recipe), "--no-measure"]).exit_code == 0
    assert json.loads((out / "report.json").read_text())["stages"][0]["cached"] is True
    assert len(runner_mod.code_fingerprint()) == 16
    monkeypatch.setattr(runner_mod, "code_fingerprint", lambda: "other code")
    assert cli.invoke(app, ["--quiet", "export", str(recipe), "--no-measure"]).exit_code == 0
    assert json.loads((out / "report.json").read_text())["stages"][0]["cached"] is False


def test_a_cpu_and_a_cuda_build_of_torch_share_the_cache(monkeypatch):
    """The stage cache is portable between CPU and GPU runs (models come back to the CPU, the cache loads with
    map_location="cpu"); so is its key: a GPU machine's torch (2.13.0+cu128) keys stages as this CPU build
    does, and another torch release does not."""
    from edgeship.pipeline import runner as runner_mod

    def fingerprint(version: str) -> str:
        monkeypatch.setattr(torch, "__version__", version)
        runner_mod.code_fingerprint.cache_clear()
        return runner_mod.code_fingerprint()

    try:
        assert fingerprint("2.13.0+cpu") == fingerprint("2.13.0+cu128") == fingerprint("2.13.0")
        assert fingerprint("2.13.0+cpu") != fingerprint("2.14.0+cpu")
    finally:
        monkeypatch.undo()
        runner_mod.code_fingerprint.cache_clear()


def test_a_nan_stage_stops_and_keeps_the_finished_one(digits_recipe, tmp_path):
    bad = [PASSES[0], {"name": "distill", "epochs": 2, "lr": 1e30, "optimizer": "sgd"}]
    recipe = digits_recipe(passes=bad)
    with pytest.raises(EdgeshipError, match=r"2:distill: the loss became NaN/inf in epoch 1"):
        export(recipe, quiet=True, measure=False)
    assert not (tmp_path / "runs" / "digits_test").exists()  # no half-written run
    cache = tmp_path / "runs" / ".cache"
    assert len([d for d in cache.iterdir() if (d / "done").exists()]) == 1  # the prune stage survived

    raw = yaml.safe_load(recipe.read_text())
    raw["passes"][1]["lr"] = 0.002
    recipe.write_text(yaml.safe_dump(raw))
    report, code = as_json(export(recipe, quiet=True, measure=False))
    assert code == 0 and [s["cached"] for s in report["stages"]] == [True, False]


def test_bad_pass_config_fails_before_any_work(digits_recipe, tmp_path):
    recipe = digits_recipe(passes=[{"name": "prune", "macs_ratio": 0.5, "round_too": 8}])
    with pytest.raises(EdgeshipError, match=r"passes\[0\] \(prune\): unknown key 'round_too'"):
        export(recipe, quiet=True, measure=False)
    assert not (tmp_path / "runs").exists()
