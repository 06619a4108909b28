"""Budget-driven search (recipe `search:`): candidates over what the passes offer, scored on this machine's
measured latency (a host target without a predictor), a winner per search through the whole pipeline, its own
artifacts, and the searches in report.json and report.html."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.errors import EdgeshipError
from edgeship.pipeline.base import validate_passes
from edgeship.recipe import parse_recipe
from edgeship.search import variant_passes
from helpers import digits_recipe_dict, write_recipe

PASSES = [{"name": "prune", "macs_ratio": 0.5, "round_to": 4, "steps": 1, "fine_tune": {"epochs": 1, "samples": 256}},
          {"name": "distill", "epochs": 1, "samples": 256}]


def test_variant_passes_override_what_the_search_chooses():
    passes = validate_passes([{"name": "drop_blocks", "blocks": 4}, *PASSES])
    v = variant_passes(passes, 2, 0.3)
    assert [n for n, _ in v] == ["drop_blocks", "prune", "distill"]
    assert v[0][1].blocks == 2 and v[1][1].macs_ratio == 0.3 and v[1][1].round_to == 4 and v[1][1].steps == 1
    assert [n for n, _ in variant_passes(passes, 0, 1.0)] == ["distill"]  # nothing dropped, nothing pruned
    assert [n for n, _ in variant_passes(passes, 1, 0.5, prefix_only=True)] == ["drop_blocks", "prune"]
    # a recipe without the passes: they are added with their defaults
    v = variant_passes(validate_passes([PASSES[1]]), 3, 0.5)
    assert [n for n, _ in v] == ["drop_blocks", "prune", "distill"]


def test_a_search_needs_a_latency_budget_and_known_targets(tmp_path):
    r = digits_recipe_dict(tmp_path, search=[{"name": "s", "targets": ["nope"]}])
    with pytest.raises(EdgeshipError, match="search names targets the recipe lacks: nope"):
        parse_recipe(r)
    r = digits_recipe_dict(tmp_path, search=[{"name": "main", "targets": ["onnx-fp32"]}])
    with pytest.raises(EdgeshipError, match="not 'main'"):
        parse_recipe(r)


@pytest.mark.slow
def test_two_searches_give_two_targets_their_own_models(tmp_path, digits_checkpoint):
    targets = [{"name": "main-onnx", "format": "onnx", "precision": "fp32"},
               {"name": "roomy", "format": "onnx", "precision": "fp32", "budgets": {"latency_ms_p90": 1000.0}},
               {"name": "tight", "format": "onnx", "precision": "fp32", "budgets": {"latency_ms_p90": 0.0001}}]
    space = {"blocks": [0], "macs_ratio": [0.4, 0.7, 1.0]}
    r = digits_recipe_dict(tmp_path, passes=PASSES, targets=targets, output=str(tmp_path / "runs" / "s"),
                           search=[{"name": "roomy", "targets": ["roomy"], "space": space, "trials": 3,
                                    "finalists": 2, "finalist_samples": 256},
                                   {"name": "tight", "targets": ["tight"], "space": space, "trials": 2}])
    r["model"]["weights"] = str(digits_checkpoint)
    res = CliRunner().invoke(app, ["export", str(write_recipe(tmp_path, r, "s.yaml")), "--runs", "10"])
    assert res.exit_code == 1, res.stdout + res.stderr  # the tight search finds nothing: its target fails alone
    rep = json.loads((tmp_path / "runs" / "s" / "report.json").read_text())
    by_name = {t["name"]: t for t in rep["targets"]}
    assert [t["name"] for t in rep["targets"]] == ["main-onnx", "roomy", "tight"]
    assert by_name["main-onnx"]["model"] == "main" and by_name["main-onnx"]["status"] == "ok"
    assert by_name["roomy"]["model"] == "roomy" and by_name["roomy"]["status"] == "ok"
    assert by_name["tight"]["status"] == "failed" and "none of 2 candidates met" in by_name["tight"]["error"]
    roomy, tight = rep["variants"]
    s = roomy["search"]
    assert s["trials"] == 3 and len(s["candidates"]) == 3 and s["winner"] is not None
    assert {c["latency_source"] for c in s["candidates"]} == {"measured"}  # the host, no predictor: measured
    assert sum(c["finalist"] for c in s["candidates"]) == 2 and sum(c["winner"] for c in s["candidates"]) == 1
    w = s["candidates"][s["winner"]]
    finalists = [c for c in s["candidates"] if c["finalist"]]
    assert w["finetuned_top1_val"] == max(c["finetuned_top1_val"] for c in finalists)
    assert "most accurate" in s["why"] and roomy["final"]["top1_test"] > 0.5
    assert [p["name"] for p in s["passes"]] == (["prune", "distill"] if w["macs_ratio"] < 1 else ["distill"])
    assert tight["final"] is None and tight["search"]["winner"] is None
    assert (tmp_path / "runs" / "s" / "model" / "roomy" / "compressed.pt").is_file()
    html = (tmp_path / "runs" / "s" / "report.html").read_text()
    assert "<h2>Searches</h2>" in html and "Why the winner won" in html and "No model" in html


@pytest.mark.slow
def test_a_recipe_without_targets_still_runs_its_passes(tmp_path, digits_checkpoint):
    """Only a recipe whose every target is searched skips its own pipeline; one with no targets at all (a
    compression-only export, as benchmarks/distributed.py runs) compresses the model."""
    r = digits_recipe_dict(tmp_path, passes=PASSES[:1], targets=[], output=str(tmp_path / "runs" / "p"))
    r["model"]["weights"] = str(digits_checkpoint)
    res = CliRunner().invoke(app, ["export", str(write_recipe(tmp_path, r, "p.yaml")), "--no-measure"])
    assert res.exit_code == 0, res.stdout + res.stderr
    rep = json.loads((tmp_path / "runs" / "p" / "report.json").read_text())
    assert [s["stage"].split(":")[-1] for s in rep["stages"]] == ["prune"] and rep["targets"] == []
    assert rep["final"]["params"] < rep["baseline"]["params"]


@pytest.mark.slow
def test_a_candidate_a_pass_refuses_is_out_and_the_search_goes_on(tmp_path, digits_checkpoint):
    """A point of the space the prune pass refuses (a ratio that would empty a layer) is recorded as a refused
    candidate, never feasible, and the search goes on to the others (it used to end the whole export)."""
    targets = [{"name": "roomy", "format": "onnx", "precision": "fp32", "budgets": {"latency_ms_p90": 1000.0}}]
    r = digits_recipe_dict(tmp_path, passes=PASSES, targets=targets, output=str(tmp_path / "runs" / "s"),
                           search=[{"name": "roomy", "targets": ["roomy"], "trials": 2, "finalists": 1,
                                    "finalist_samples": 256,
                                    "space": {"blocks": [0], "macs_ratio": [0.001, 0.7]}}])
    r["model"]["weights"] = str(digits_checkpoint)
    res = CliRunner().invoke(app, ["export", str(write_recipe(tmp_path, r, "s.yaml")), "--runs", "10"])
    assert res.exit_code == 0, res.stdout + res.stderr
    s = json.loads((tmp_path / "runs" / "s" / "report.json").read_text())["variants"][0]["search"]
    by_ratio = {c["macs_ratio"]: c for c in s["candidates"]}
    refused = by_ratio[0.001]
    assert refused["latency_source"] == "refused" and not refused["feasible"] and "every channel" in refused["note"]
    assert s["candidates"][s["winner"]]["macs_ratio"] == 0.7
