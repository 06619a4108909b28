"""Budget-driven search (recipe `search:`): candidates over what the passes offer, scored on this machine's
measured latency (a host target without a predictor), a winner per search through the whole pipeline, its own
artifacts, and the searches in report.json and report.html."""

from __future__ import annotations

import json
import statistics

import pytest
from typer.testing import CliRunner

from edgeship.cli import app
from edgeship.devices import catalog
from edgeship.devices.measure import measure_interleaved
from edgeship.errors import EdgeshipError
from edgeship.pipeline.base import validate_passes
from edgeship.recipe import parse_recipe
from edgeship.search import near_budget, preflight, recipe_point, rounds_timing, variant_passes
from helpers import digits_recipe_dict, write_recipe

TIMING = {"rounds": 3, "runs": 10, "warmup": 2, "min_round_s": 0}  # exactly 10 runs a round
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


def test_the_recipe_point_is_what_variant_passes_rebuilds():
    """The hand-written model's (blocks, MACs ratio), which a search tries first when its space holds it."""
    passes = validate_passes([{"name": "drop_blocks", "blocks": 4}, *PASSES])
    assert recipe_point(passes) == (4, 0.5)
    assert variant_passes(passes, *recipe_point(passes)) == passes  # the same pipeline, pass for pass
    assert recipe_point(validate_passes([PASSES[1]])) == (0, 1.0)  # nothing dropped, nothing pruned
    by_channels = validate_passes([{"name": "prune", "channel_ratio": 0.5}])
    assert recipe_point(by_channels) == (0, 1.0)  # no MACs ratio: not a point of any space


def test_the_budget_is_near_when_it_lies_within_the_rounds_spread_of_their_median():
    """The last quick search judged one 30-run timing: 0.12 ms as a candidate, 0.24 ms as a finalist, budget
    0.196 ms. Rounds spread like that cannot tell the budget apart (re-measure); rounds that agree can."""
    assert near_budget([0.12, 0.2436, 0.13], 0.196)  # median 0.13, spread 0.1236: the budget is inside
    assert not near_budget([0.12, 0.121, 0.125], 0.196)  # well under, and the rounds agree
    assert not near_budget([0.24, 0.25, 0.26], 0.196)  # well over, and the rounds agree
    assert near_budget([0.19, 0.19, 0.19], 0.19)  # exactly on it


def check_rounds(t: dict, rounds: int, runs: int, budget: float) -> None:
    """A measured latency's record: the first ``rounds`` rounds decide whether it was re-measured (as many
    again), the judged number is the median of all the rounds' p90s, the spread their lowest and highest."""
    first = t["p90_rounds_ms"][:rounds]
    assert t["remeasured"] == near_budget(first, budget)
    assert len(t["p90_rounds_ms"]) == len(t["p50_rounds_ms"]) == rounds * (2 if t["remeasured"] else 1)
    assert t["median_p90_ms"] == round(statistics.median(t["p90_rounds_ms"]), 4)
    assert t["spread_ms"] == [min(t["p90_rounds_ms"]), max(t["p90_rounds_ms"])] and t["runs"] == runs
    assert t["how"].startswith(f"median of {len(t['p90_rounds_ms'])} rounds of p90 ({runs} runs each")


def test_rounds_time_each_artifact_in_fresh_processes_and_judge_the_median(tmp_path):
    """Two real ONNX artifacts timed together in rounds: one measurement per round each, from its own process,
    and the record of the rounds (median, spread, what the number is)."""
    import torch

    from edgeship.devices.calibrate import lower
    from edgeship.devices.measure import RunArtifact, measure_rounds

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(144, 10)).eval()
    arts = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        d = lower(model, (1, 8, 8), "onnx", "fp32", tmp_path / name / "art", name, tmp_path / name)
        arts.append(RunArtifact(name, "host", "onnx", "fp32", d, [], "model.onnx"))
    got = measure_rounds(arts, 1, rounds=3, runs=5, warmup=1, seed=0)
    assert sorted(got) == ["a", "b"]
    for ms in got.values():
        assert len(ms) == 3 and all(m.runs == 5 and len(m.samples_ms) == 5 and m.p90_ms > 0 for m in ms)
        assert all(m.profile is None for m in ms)  # rounds time only: no layer profile
        r = rounds_timing([round(m.p90_ms, 4) for m in ms], [m.p50_ms for m in ms], [m.runs for m in ms], 5, False)
        p90s = [round(m.p90_ms, 4) for m in ms]
        assert r.p90_rounds_ms == p90s and r.median_p90_ms == round(statistics.median(p90s), 4)
        assert r.spread_ms == [min(p90s), max(p90s)] and not r.remeasured
        assert r.how == (f"median of 3 rounds of p90 (5 runs each, a fresh process per round), spread "
                         f"{min(p90s):.4g}-{max(p90s):.4g} ms")
    with pytest.raises(ValueError, match="must differ"):
        measure_rounds([arts[0], arts[0]], 1, rounds=1, runs=5)
    # side by side in one process: blocks of each in turn, a summary per process; a negative seed (a search's
    # second timing) is fine
    got = measure_interleaved({"a": arts[0].dir, "b": arts[1].dir}, 1, processes=2, runs=3, rounds=4, warmup=1,
                              seed=-2, min_s=0.02)
    for rs in got.values():
        assert len(rs) == 2 and all(r["runs"] == len(r["samples_ms"]) >= 12 and r["p90_ms"] > 0 for r in rs)
        assert all(sum(r["samples_ms"]) >= 20 * 0.999 for r in rs)  # on until 0.02 s of each
    # min_s: a fast model runs on until its timed runs add up to that long (a p90 of thousands of runs)
    for m in measure_rounds(arts[:1], 1, rounds=2, runs=5, warmup=1, min_s=0.05)["a"]:
        assert m.runs == len(m.samples_ms) > 5 and sum(m.samples_ms) >= 50 * 0.999


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
    space = {"blocks": [0], "macs_ratio": [0.4, 0.5, 1.0]}  # 0.5: the recipe's own prune, tried first
    r = digits_recipe_dict(tmp_path, passes=PASSES, targets=targets, output=str(tmp_path / "runs" / "s"),
                           search=[{"name": "roomy", "targets": ["roomy"], "space": space, "trials": 3,
                                    "finalists": 2, "finalist_samples": 256, "timing": TIMING},
                                   {"name": "tight", "targets": ["tight"], "space": space, "trials": 2,
                                    "timing": TIMING}])
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
    for search in (s, tight["search"]):  # the hand-written point first, whatever the sampler would propose
        assert (search["candidates"][0]["blocks"], search["candidates"][0]["macs_ratio"]) == (0, 0.5)
    assert {c["latency_source"] for c in s["candidates"]} == {"measured"}  # the host, no predictor: measured
    assert "median of the rounds' p90s" in s["timing"] and "3 rounds of 10 runs" in s["timing"]
    for search in (s, tight["search"]):  # every candidate judged on the median of its rounds, never one timing
        for c in search["candidates"]:
            check_rounds(c["timing"], 3, 10, search["budget_ms"])
            assert c["latency_ms"] == c["timing"]["median_p90_ms"] and c["note"].endswith(c["timing"]["how"])
            assert c["feasible"] == (c["latency_ms"] <= search["budget_ms"] and c["top1_val"] >= search["min_top1"])
    assert sum(c["finalist"] for c in s["candidates"]) == 2 and sum(c["winner"] for c in s["candidates"]) == 1
    w = s["candidates"][s["winner"]]
    finalists = [c for c in s["candidates"] if c["finalist"]]
    for c in finalists:  # lowered to the target's format, timed in rounds of their own (interleaved)
        check_rounds(c["final_timing"], 3, 10, s["budget_ms"])
        assert c["final_latency_ms"] == c["final_timing"]["median_p90_ms"]
    assert w["final_timing"]["how"] in s["why"]
    assert w["finetuned_top1_val"] == max(c["finetuned_top1_val"] for c in finalists)
    assert "most accurate" in s["why"] and roomy["final"]["top1_test"] > 0.5
    assert [p["name"] for p in s["passes"]] == (["prune", "distill"] if w["macs_ratio"] < 1 else ["distill"])
    assert tight["final"] is None and tight["search"]["winner"] is None
    assert (tmp_path / "runs" / "s" / "model" / "roomy" / "compressed.pt").is_file()
    html = (tmp_path / "runs" / "s" / "report.html").read_text()
    assert "<h2>Searches</h2>" in html and "Why the winner won" in html and "No model" in html


def test_a_relative_budget_needs_this_machine(tmp_path):
    """latency_vs_recipe is judged by timing beside the recipe's model here: a remote device's target is refused
    before any work."""
    targets = [{"name": "main-onnx", "format": "onnx", "precision": "fp32"},
               {"name": "pi", "device": "rpi4", "format": "onnx", "precision": "fp32"}]
    r, _ = parse_recipe(digits_recipe_dict(tmp_path, passes=PASSES, targets=targets,
                                           search=[{"name": "s", "targets": ["pi"], "latency_vs_recipe": 1.0}]))
    with pytest.raises(EdgeshipError, match="latency_vs_recipe is judged by timing candidates beside"):
        preflight(r.search[0], r)


@pytest.mark.slow
def test_relative_budgets_time_every_candidate_beside_the_recipe_model(tmp_path, digits_checkpoint):
    """latency_vs_recipe: each candidate's p90 over the recipe's own model's, both timed side by side in the same
    processes; the recipe's own point is that model (1 by identity); a budget no model meets gives no winner."""
    targets = [{"name": "main-onnx", "format": "onnx", "precision": "fp32"},
               {"name": "roomy", "format": "onnx", "precision": "fp32"},
               {"name": "tight", "format": "onnx", "precision": "fp32"}]
    space = {"blocks": [0], "macs_ratio": [0.3, 0.5, 1.0]}  # 0.5: the recipe's own prune, tried first
    r = digits_recipe_dict(tmp_path, passes=PASSES, targets=targets, output=str(tmp_path / "runs" / "s"),
                           search=[{"name": "roomy", "targets": ["roomy"], "space": space, "trials": 3,
                                    "finalists": 2, "finalist_samples": 256, "timing": TIMING,
                                    "latency_vs_recipe": 10.0},
                                   {"name": "tight", "targets": ["tight"], "space": space, "trials": 2,
                                    "timing": TIMING, "latency_vs_recipe": 0.001}])
    r["model"]["weights"] = str(digits_checkpoint)
    res = CliRunner().invoke(app, ["export", str(write_recipe(tmp_path, r, "s.yaml")), "--runs", "10"])
    assert res.exit_code == 1, res.stdout + res.stderr  # the tight search finds nothing: its target fails alone
    rep = json.loads((tmp_path / "runs" / "s" / "report.json").read_text())
    roomy, tight = rep["variants"]
    s = roomy["search"]
    assert s["latency_vs_recipe"] == 10.0 and s["recipe_model_p90_ms"] > 0
    # judged beside the absolute budget the host device carries (100 ms): both apply; the record's budget in ms is
    # the tighter of the two (the plot's line)
    assert catalog.get("host").budgets.latency_ms_p90 == 100.0
    assert s["budget_ms"] == min(100.0, round(10.0 * s["recipe_model_p90_ms"], 4))
    assert "side by side with the recipe's own model in 3 fresh processes" in s["timing"]
    own, *others = s["candidates"]
    assert (own["blocks"], own["macs_ratio"]) == (0, 0.5) and own["vs_recipe"] == 1.0
    assert own["timing"]["vs_recipe_rounds"] == [1.0] * len(own["timing"]["p90_rounds_ms"])
    assert "(it is that model)" in own["timing"]["how"]
    for c in others:  # timed beside it: the median of the per-process ratios judges
        t = c["timing"]
        assert len(t["vs_recipe_rounds"]) == len(t["p90_rounds_ms"]) in (3, 6) and all(x > 0 for x in
                                                                                        t["vs_recipe_rounds"])
        assert c["vs_recipe"] == t["vs_recipe"] == round(statistics.median(t["vs_recipe_rounds"]), 4)
        assert f"{c['vs_recipe']:.3f}x the recipe's own model's (median over" in t["how"]
    for c in s["candidates"]:
        assert c["feasible"] == (c["vs_recipe"] <= 10.0 and c["top1_val"] >= s["min_top1"])
    assert s["winner"] is not None and roomy["final"]["top1_test"] > 0.5
    for c in (c for c in s["candidates"] if c["finalist"]):  # finalists timed beside it too
        assert c["final_timing"]["vs_recipe"] is not None
    t = tight["search"]
    assert t["winner"] is None and tight["final"] is None
    assert "0.001x the recipe's own model's p90" in t["why"] and "x the recipe's model at top-1" in t["why"]
    assert not any(c["feasible"] for c in t["candidates"])


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
