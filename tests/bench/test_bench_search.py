"""benchmarks/search.py: run end to end in --quick mode on the digits set where they measure (real exports, real
runtimes, real subprocess measurements) and write well-formed results; make_report renders them. Behaviour only: no
assertion on a time. (The benchmarks' tests are split over files: `make test` gives each file to one of two workers.)"""

from __future__ import annotations

import json
import statistics

import pytest
from benchtest import PASSES, bench_results, run_script

from helpers import digits_recipe_dict, write_recipe

pytestmark = pytest.mark.slow


def test_search_benchmark_budgets_from_the_hand_written_artifact(tmp_path, digits_checkpoint):
    """benchmarks/search.py on the digits model: the hand-written artifact exported and timed first, the roomy
    budget its judged p90 and the tight one a fraction of it, two searches, the winners timed interleaved with the
    reference, the bar computed from those numbers, a Pareto plot per search and make_report's section."""
    targets = [{"name": "main-onnx", "format": "onnx", "precision": "int8"},
               {"name": "roomy", "format": "onnx", "precision": "int8", "budgets": {"latency_ms_p90": 1000.0}},
               {"name": "tight", "format": "onnx", "precision": "int8", "budgets": {"latency_ms_p90": 1000.0}}]
    space = {"blocks": [0], "macs_ratio": [0.3, 0.5, 1.0]}
    timing = {"rounds": 2, "runs": 10, "warmup": 1, "min_round_s": 0}
    r = digits_recipe_dict(tmp_path, passes=PASSES, targets=targets, output=str(tmp_path / "runs" / "s"),
                           search=[{"name": "roomy", "targets": ["roomy"], "space": space, "trials": 2,
                                    "finalists": 1, "finalist_samples": 256, "timing": timing},
                                   {"name": "tight", "targets": ["tight"], "space": space, "trials": 2,
                                    "finalists": 1, "finalist_samples": 256, "timing": timing}])
    r["model"]["weights"] = str(digits_checkpoint)
    out = tmp_path / "results" / "search_quick.json"
    out.parent.mkdir()
    run_script("search.py", "--recipe", write_recipe(tmp_path, r, "s.yaml"), "--reference", "main-onnx",
               "--roomy", "roomy", "--tight", "tight", "--roomy-fraction", 100, "--tight-fraction", 50,
               "--budgets", "reference", "--budget-repeats", 2,
               "--runs", 5, "--rounds", 1, "--repeats", 2, "--out", out)
    d = json.loads(out.read_text())
    judged = d["budgets"]["judged_reference_p90"]
    assert len(judged["p90_repeats"]) == 2 and judged["p90_ms"] == round(statistics.median(judged["p90_repeats"]), 4)
    # timed as the search times a candidate: rounds of the search's timing, each a fresh process
    assert judged["how"].startswith("median of 2 rounds of p90 (10 runs each, a fresh process per round)")
    assert judged["spread_ms"] == [min(judged["p90_repeats"]), max(judged["p90_repeats"])]
    # budgets far above the reference (so that both searches give a winner to compare on any load)
    assert d["budgets"]["per_target_ms"] == {"roomy": round(judged["p90_ms"] * 100, 4),
                                             "tight": round(judged["p90_ms"] * 50, 4)}
    assert (tmp_path / "runs" / "s_reference" / "targets" / "main-onnx").is_dir()
    shares = d["cpu_of_other_jobs"]  # how much of the machine other work took while the search timed candidates
    assert set(shares) == {"search", "measuring"} and all(0 <= v["others_mean_cores"] <= v["cores"]
                                                          for v in shares.values())
    ref = d["reference"]
    assert len(ref["measured"]["p50_repeats"]) == 2 and 0 < ref["test_top1"] <= 1
    assert d["fine_tuning"]["finalists"]["roomy"] == {"distill_epochs": 1, "distill_samples": 256}
    for name, s in d["searches"].items():
        assert s["budget_ms"] == d["budgets"]["per_target_ms"][name] and s["candidates"] == 2
        assert len(s["candidate_table"]) == 2 and (out.parent / s["pareto_png"]).stat().st_size > 1000
        assert all(len(c["timing"]["p90_rounds_ms"]) in (2, 4) for c in s["candidate_table"])
        assert s["timing"].startswith("each candidate, and the finalists interleaved,")
        w = s["winner"]
        assert w is not None, s["why"]
        # the winner against the reference in the same passes: per-pass ratios, their median
        vs, ref_m = w["vs_reference"], ref["measured"]
        assert vs["p50_ratio_repeats"] == [round(a / b, 4) for a, b in zip(w["measured"]["p50_repeats"],
                                                                            ref_m["p50_repeats"], strict=True)]
        assert vs["p90_ratio"] == round(statistics.median(
            a / b for a, b in zip(w["measured"]["p90_repeats"], ref_m["p90_repeats"], strict=True)), 4)
        assert w["budget_vs_reference"] == round(s["budget_ms"] / judged["p90_ms"], 4)
        assert w["within_budget"] == ((w["is_the_hand_written_model"] and w["budget_vs_reference"] >= 1)
                                      or vs["p90_ratio"] <= w["budget_vs_reference"])
        assert w["within_budget_absolute"] == (w["measured"]["p90_ms"] <= s["budget_ms"])
    roomy = d["searches"]["roomy"]["winner"]
    assert d["bar"]["at_least_as_accurate"] == (roomy["test_top1"] >= ref["test_top1"])
    # the hand-written model itself (the search chose its own point) is equal by identity, not by a timing
    same = d["winner_is_the_hand_written_model"]
    assert d["bar"]["equal_or_lower_latency"] == (same or roomy["vs_reference"]["p50_ratio"] <= 1.0)
    assert ("equal latency and accuracy by identity" in d["verdict_note"]) == same
    assert "against the hand-written" in d["verdict_note"]
    assert "passes of the ratio within each pass" in d["verdict_note"]
    (out.parent / "pipeline_cost_quick.json").write_text((bench_results() / "pipeline_cost.json").read_text())
    run_script("make_report.py", "--results", out.parent, "--out", tmp_path / "B.md")
    text = (tmp_path / "B.md").read_text()
    assert "## Budget-driven search per device" in text and "### Search `tight`" in text
    assert "![search roomy" in text and d["verdict_note"] in text
    vs = roomy["vs_reference"]
    assert f"| {vs['p50_ratio']:.3g} / {vs['p90_ratio']:.3g} (budget: 100) |" in text


def test_search_benchmark_relative_budgets(tmp_path, digits_checkpoint):
    """benchmarks/search.py's default: each search's budget relative to the hand-written model
    (latency_vs_recipe, candidates timed side by side with it), no absolute budget timed first; a winner is within
    its budget when its p90 over the reference's in the same passes is; make_report names the relative budgets."""
    targets = [{"name": "main-onnx", "format": "onnx", "precision": "int8"},
               {"name": "roomy", "format": "onnx", "precision": "int8"},
               {"name": "tight", "format": "onnx", "precision": "int8"}]
    space = {"blocks": [0], "macs_ratio": [0.5, 1.0]}
    timing = {"rounds": 2, "runs": 10, "warmup": 1, "min_round_s": 0}
    r = digits_recipe_dict(tmp_path, passes=PASSES, targets=targets, output=str(tmp_path / "runs" / "s"),
                           search=[{"name": n, "targets": [n], "space": space, "trials": 2, "finalists": 1,
                                    "finalist_samples": 256, "timing": timing} for n in ("roomy", "tight")])
    r["model"]["weights"] = str(digits_checkpoint)
    out = tmp_path / "results" / "search_quick.json"
    out.parent.mkdir()
    run_script("search.py", "--recipe", write_recipe(tmp_path, r, "s.yaml"), "--reference", "main-onnx",
               "--roomy", "roomy", "--tight", "tight", "--roomy-fraction", 10, "--tight-fraction", 0.001,
               "--runs", 5, "--rounds", 20, "--repeats", 2, "--out", out)
    d = json.loads(out.read_text())
    assert d["budgets_from"] == "relative" and d["budgets"]["judged_reference_p90"] is None
    assert d["budgets"]["per_target_vs_reference"] == {"roomy": 10, "tight": 0.001}
    roomy, tight = d["searches"]["roomy"], d["searches"]["tight"]
    assert roomy["latency_vs_recipe"] == 10 and tight["latency_vs_recipe"] == 0.001
    assert "side by side with the recipe's own model" in roomy["timing"]
    assert all(c["vs_recipe"] is not None for c in roomy["candidate_table"] + tight["candidate_table"])
    w = roomy["winner"]
    assert w is not None and w["budget_vs_reference"] == 10
    # within when its p90 over the reference's in the same passes is (the hand-written model itself: 1, by identity)
    assert w["within_budget"] == (w["is_the_hand_written_model"] or w["vs_reference"]["p90_ratio"] <= 10)
    assert tight["winner"] is None and "0.001x the recipe's own model's p90" in tight["why"]
    (out.parent / "pipeline_cost_quick.json").write_text((bench_results() / "pipeline_cost.json").read_text())
    (out.parent / "search_96_quick.json").write_text(out.read_text())  # the 96x96 recipe's search: its own section
    run_script("make_report.py", "--results", out.parent, "--out", tmp_path / "B.md")
    text = (tmp_path / "B.md").read_text()
    assert "- Budgets: relative (latency_vs_recipe)" in text and "`roomy` 10x, `tight` 0.001x" in text
    assert text.count("`roomy` 10x, `tight` 0.001x") == 2 and "benchmarks/results/search_96_quick.json" in text
    assert "## Budget-driven search per device, MobileNetV2 0.35 at 96x96" in text
    assert "### Search `roomy`: roomy (budget 10x the hand-written model's p90 (its median here" in text
    assert "x the hand-written |" in text  # each candidate's ratio beside its latency
