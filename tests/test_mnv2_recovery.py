"""benchmarks/mnv2_recovery.py (issue 20, item 5): its experiments change only the recovery passes of the demo
recipe, with settings the passes accept, and the recorded runs all compressed to the demo's architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from helpers import REPO

SCRIPTS = REPO / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    import mnv2_recovery

    return mnv2_recovery


def test_experiments_change_only_distill_and_qat(bench, tmp_path):
    from edgeship.pipeline.distill import DistillConfig
    from edgeship.pipeline.qat import QATConfig

    base = yaml.safe_load(bench.RECIPE.read_text())
    demo = {p["name"]: p for p in base["passes"]}
    for name, (_, distill, qat) in bench.EXPERIMENTS.items():
        r = bench.experiment_recipe(base, name, distill, qat, tmp_path)
        passes = {p["name"]: p for p in r["passes"]}
        assert [p["name"] for p in r["passes"]] == [p["name"] for p in base["passes"]], name
        assert passes["drop_blocks"] == demo["drop_blocks"] and passes["prune"] == demo["prune"], name
        assert passes["distill"] == {"name": "distill", **bench.DEMO_DISTILL_BEFORE, **distill}
        assert passes["qat"] == {**demo["qat"], **qat}
        DistillConfig(**{k: v for k, v in passes["distill"].items() if k != "name"})  # a typo'd key is an error
        QATConfig(**{k: v for k, v in passes["qat"].items() if k != "name"})
        assert sorted(t["name"] for t in r["targets"]) == sorted(bench.TARGETS)
        assert Path(r["output"]) == tmp_path / "runs" / name and Path(r["model"]["weights"]).is_file()


def test_recorded_runs_have_the_demo_architecture(bench):
    """Every recorded experiment reused the cached drop_blocks/prune stages and ends at the baseline's MACs and
    params (latency unchanged by construction), with an INT8 top-1 for each format."""
    rows = {r["name"]: r for r in json.loads((bench.RESULTS / "mnv2_recovery.json").read_text())["experiments"]}
    base = rows["baseline"]["stages"]
    for name, row in rows.items():
        assert row["export"]["exit_code"] == 0, name
        stages = {s["stage"]: s for s in row["stages"]}
        assert stages["1:drop_blocks"]["cached"] and stages["2:prune"]["cached"], name
        assert [(s["stage"], s["macs"], s["params"]) for s in row["stages"]] == \
            [(s["stage"], s["macs"], s["params"]) for s in base], name
        assert set(row["int8_top1_test"]) == {"onnx", "openvino", "tflite"}
        assert all(0.5 < v < 1 for v in row["int8_top1_test"].values()), name
