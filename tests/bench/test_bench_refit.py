"""the refit scripts on the predictor runs' committed kept data: run end to end in --quick mode on the digits set where
they measure (real exports, real runtimes, real subprocess measurements) and write well-formed results; make_report
renders them. Behaviour only: no assertion on a time. (The benchmarks' tests are split over files: `make test` gives
each file to one of two workers.)"""

from __future__ import annotations

import json
import sys

import pytest
from benchtest import SCRIPTS, run_script

from helpers import REPO

pytestmark = pytest.mark.slow


def test_refit_drops_the_processes_still_slow_as_the_calibration_does():
    """benchmarks/refit_slow_dropped.py's rule: an architecture process whose median speed over the architectures is
    over 1.25x the fastest process's is dropped from every architecture's timings and median, unless none is at
    speed."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        import refit_slow_dropped as refit
    finally:
        sys.path.remove(str(SCRIPTS))

    def arch(*speeds: float) -> dict:  # the device at 1 ms, each process's raw time its speed
        return {"p50_ms": 9.9, "p90_ms": 9.9, "speed": list(speeds), "raw_p50_ms": list(speeds),
                "raw_p90_ms": [1.1 * s for s in speeds]}

    data = {"archs": [arch(1.0, 1.6, 1.02, 1.55), arch(1.01, 1.58, 1.0, 1.6)]}
    assert refit.drop_slow(data) == 2
    assert all(a["speed"] == a["raw_p50_ms"] and len(a["speed"]) == 2 and a["p50_ms"] == 1.0 for a in data["archs"])
    assert data["archs"][0]["p90_ms"] == pytest.approx(1.1)
    slow_throughout = {"archs": [arch(1.6, 1.58), arch(1.55, 1.6)]}
    assert refit.drop_slow(slow_throughout) == 0 and slow_throughout["archs"][0]["p50_ms"] == 9.9


def test_refit_on_every_architecture_reproduces_the_run_then_fits_the_validation_ones_too(tmp_path, monkeypatch):
    """benchmarks/refit_all_archs.py on p23's committed kept data sets: the correction fitted on the fitting
    architectures alone reproduces that run's own evaluation figures (its calibration fitted it so); the other is
    fitted on the 60 fitting and the 20 validation architectures, and both state the same held-out error."""
    import runpy

    from edgeship.devices import fitting

    run = REPO / "benchmarks" / "results" / "predictor_epyc_p23.json"
    out = tmp_path / "refit.json"
    # in this process, with the fitting of p23's time: the probes beyond in-context reach joined it later
    # (fitting.beyond, refit_probes_beyond.json), and LiteRT's in-context forests take them in
    monkeypatch.setattr(fitting, "beyond", lambda ks, ms, *_: (ks, ms))
    monkeypatch.setattr(sys, "argv", ["refit_all_archs.py", "--pair",
                                      str(REPO / "benchmarks" / "data" / "predictor_epyc_p23_keep.tar.xz"), str(run),
                                      "--configs", "tflite:int8:1", "--cache-kb", "1024",  # p23's L2 per core
                                      "--out", str(out)])
    monkeypatch.syspath_prepend(str(SCRIPTS))
    runpy.run_path(str(SCRIPTS / "refit_all_archs.py"), run_name="__main__")
    row = json.loads(out.read_text())["runs"]["predictor_epyc_p23.json"]["tflite:int8:1"]
    own = json.loads(run.read_text())["summary"]["tflite:int8:1"]
    alone, both = row["fit_archs_only"], row["fit_and_validation_archs"]
    assert alone["evaluation"]["within_10pct"] == own["within_10pct"]
    assert alone["evaluation"]["mape_pct"] == pytest.approx(own["mape_pct"], abs=0.05)
    assert (alone["correction_archs"], both["correction_archs"]) == (60, 80)
    assert alone["stated"] == both["stated"] and alone["evaluation"] != both["evaluation"]


def test_refit_on_the_one_thread_prediction_scores_both_corrections_on_the_runs_architectures(tmp_path):
    """benchmarks/refit_base_threads.py on p24's committed kept data sets: a 2-thread configuration fitted on its
    kernel sums and on the 1-thread prediction, each scored with ``predict_kernels`` on the run's 30 evaluation
    architectures, each stating its own held-out error; the summary counts what the rows say."""
    out = tmp_path / "refit.json"
    run_script("refit_base_threads.py", "--pair", REPO / "benchmarks" / "data" / "predictor_epyc_p24_keep.tar.xz",
               REPO / "benchmarks" / "results" / "predictor_epyc_p24.json", "--configs", "openvino:int8:2",
               "--out", out)
    d = json.loads(out.read_text())
    row = d["runs"]["predictor_epyc_p24.json"]["openvino:int8:2"]
    sums, base = row["kernel_sums"], row["one_thread_prediction"]
    assert sums["evaluation"]["n"] == base["evaluation"]["n"] == 30
    assert sums["stated"] != base["stated"] and sums["evaluation"] != base["evaluation"]
    s = d["summary"]
    assert s["configurations"] == 1
    assert s["mape_lower"] == (base["evaluation"]["mape_pct"] < sums["evaluation"]["mape_pct"])
    assert s["at_least_90pct"] == {m: int(r["evaluation"]["within_10pct"] >= 0.9) for m, r in row.items()}


def test_refit_with_in_context_times_by_work_scores_both_matchings_on_the_runs_architectures(tmp_path):
    """benchmarks/refit_in_context_order.py on p23's committed kept data sets: ONNX Runtime INT8 at 1 thread refitted
    with each layer's time given by the file's order and by the kernels' work; the conv forest's held-out error on
    its own layer times (1x1 and larger kernels apart) and the predictor's on the run's 30 evaluation architectures,
    for both. By work, the larger kernels' forest error falls (the 3x3 convolutions no longer hold their
    shortcuts' times)."""
    out = tmp_path / "order.json"
    run_script("refit_in_context_order.py", "--pair", REPO / "benchmarks" / "data" / "predictor_epyc_p23_keep.tar.xz",
               REPO / "benchmarks" / "results" / "predictor_epyc_p23.json", "--configs", "onnx:int8:1",
               "--cache-kb", 1024, "--out", out)
    d = json.loads(out.read_text())
    row = d["runs"]["predictor_epyc_p23.json"]["onnx:int8:1"]
    old, new = row["file_order"], row["by_work"]
    assert old["evaluation"]["n"] == new["evaluation"]["n"] == 30 and old["evaluation"] != new["evaluation"]
    assert new["conv_forest_cv"]["larger"]["mape_pct"] < old["conv_forest_cv"]["larger"]["mape_pct"]
    counts = [{k: v["n"] for k, v in r["conv_forest_cv"].items()} for r in (old, new)]
    assert counts[0] == counts[1] and min(counts[0].values()) > 100
    assert d["summary"]["configurations"] == 1
    assert d["summary"]["by_work"]["mean_mape_pct"] == new["evaluation"]["mape_pct"]
