"""Verification's statistics: the intervals every top-1 and drop carries, and a test split too small for its gate."""

from __future__ import annotations

import numpy as np
import pytest

from edgeship.errors import TargetError
from edgeship.targets.verify import compare, compare_outputs, gate, paired_drop95_pt, wilson95


def logits_for(pred: np.ndarray, k: int = 10) -> np.ndarray:
    return np.eye(k, dtype=np.float32)[pred]


def test_wilson_interval_matches_the_textbook_values():
    # 8 of 10 right: the Wilson 95% interval is 0.490..0.943 (Newcombe 1998, Table I style)
    assert wilson95(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-3)
    lo, hi = wilson95(0, 20)
    assert lo == 0.0 and 0.1 < hi < 0.2  # not empty at the edge
    lo, hi = wilson95(9000, 10000)
    assert hi - lo < 0.013  # a large split pins top-1 down


def test_paired_drop_interval_is_narrow_when_the_two_agree_and_wide_on_few_samples():
    rng = np.random.default_rng(0)
    right = rng.random(10000) < 0.9
    art = right.copy()
    art[:20] = ~art[:20]  # 20 samples of 10,000 differ
    lo, hi = paired_drop95_pt(right, art)
    assert lo < 0.2 and hi - lo < 0.2
    small = paired_drop95_pt(right[:20], art[:20])
    assert small[1] - small[0] > 10  # 20 samples: the drop is known to tens of points


def test_every_top1_carries_its_interval_and_a_small_split_says_it_cannot_resolve_the_gate():
    y = np.arange(20) % 10
    torch_pred = y.copy()
    art_pred = y.copy()
    art_pred[0] = (y[0] + 1) % 10  # one sample of 20 moves top-1 by 5 pt
    m = compare(logits_for(art_pred), logits_for(torch_pred), y)
    assert m["top1"] == 0.95 and m["top1_ci95"][0] < 0.95 < m["top1_ci95"][1]
    with pytest.raises(TargetError, match=r"5\.00 pt below .*95% interval of the drop .* on 20 test samples.*"
                                          r"Fix: give a larger test split"):
        gate("t", "int8", m, 1.0, 0.999)
    assert "one sample is 5 pt of top-1, more than the 1 pt the gate allows" in m["gate_note"]
    assert "at least 100 test samples" in m["gate_note"]
    same = compare(logits_for(torch_pred), logits_for(torch_pred), y)
    gate("t", "int8", same, 1.0, 0.999)  # passes, and still says the split cannot resolve the gate
    assert "gate_note" in same
    big_y = np.arange(1000) % 10
    big = compare(logits_for(big_y), logits_for(big_y), big_y)
    gate("t", "int8", big, 1.0, 0.999)
    assert "gate_note" not in big


def test_the_failure_line_names_every_output_outside_its_tolerance():
    """Two outputs of a multi-output model drift (a score and a recurrent state): the one line names both, with each
    metric and limit, so a user fixes both in one run; one output within tolerance is not named."""
    from edgeship.recipe import IOSpec

    io = IOSpec(inputs=[{"name": "x", "shape": [4]}],
                outputs=[{"name": "speech", "task": "score", "tolerance": {"int8": 0.95}},
                         {"name": "state", "task": "regression", "metric": "relative_error", "tolerance": 0.1},
                         {"name": "emb", "task": "regression", "metric": "relative_error", "tolerance": 0.1}])
    rng = np.random.default_rng(0)
    speech = rng.random((100, 1)).astype(np.float32)
    state = rng.normal(size=(100, 8)).astype(np.float32)
    emb = rng.normal(size=(100, 8)).astype(np.float32)
    drifted = [1.0 - speech, state * 1.5, emb * 1.001]  # every decision flipped; state 50% off; emb 0.1% off
    m = compare_outputs(drifted, [speech, state, emb], io, {}, "int8")
    with pytest.raises(TargetError) as e:
        gate("onnx-int8", "int8", m, 2.0, 0.99)
    text = str(e.value)
    assert "output 'speech': agreement" in text and "output 'state': relative_error 0.5" in text
    assert "are outside their tolerance for int8" in text and "'emb'" not in text
    assert "io.outputs[speech].tolerance, io.outputs[state].tolerance" in e.value.fix
    assert [m["outputs"][n]["passed"] for n in ("speech", "state", "emb")] == [False, False, True]
