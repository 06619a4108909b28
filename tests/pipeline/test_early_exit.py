"""`early_exit`: heads after the chosen blocks, trained jointly; the per-exit modules compute exactly what the exits
compute and lower like any model; the confidence table follows its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeship.errors import EdgeshipError
from edgeship.models.zoo import ZOO
from edgeship.pipeline.early_exit import (
    EarlyExit,
    EarlyExitConfig,
    confidence_table,
    default_exits,
    exit_models,
)


@pytest.mark.parametrize("zoo,kw,expected", [("resnet", {"depth": 20}, ["layers.2", "layers.5"]),
                                             ("mobilenetv2", {}, ["features.2", "features.5"])])
def test_default_exits(zoo, kw, expected):
    assert default_exits(ZOO[zoo](input_size=(28, 28), **kw)) == expected


def test_early_exit_trains_heads_and_cuts_the_network(digits_ctx, tmp_path):
    model, ctx = digits_ctx
    out = EarlyExit().run(model, EarlyExitConfig(epochs=8, lr=3e-3, batch_size=32), ctx)
    m, ee = out.metrics, out.model
    assert m["exits"] == ["features.0", "features.2"] and len(m["exit_val_top1"]) == 3
    assert m["exit_val_top1"][1] > 0.5 and m["exit_macs"][0] < m["exit_macs"][1] < m["exit_macs"][2]
    x = ctx.data["val"].x[:16]
    with torch.no_grad():
        every = ee.all_logits(x)
        torch.testing.assert_close(ee(x), every[-1])
        for (name, sub), z in zip(exit_models(ee), every, strict=True):
            torch.testing.assert_close(sub(x), z, msg=name)  # the cut network computes that exit alone
    # a threshold of 1.0 sends everything to the final head; lower thresholds leave earlier and cost fewer MACs
    table = m["confidence"]
    last = table[-1]
    assert last["threshold"] == 1.0 and last["exit_rates"][-1] == 1.0 and last["mean_macs"] == m["exit_macs"][-1]
    assert last["top1"] == pytest.approx(m["exit_val_top1"][-1])
    assert table[0]["mean_macs"] < last["mean_macs"] and all(abs(sum(r["exit_rates"]) - 1) < 1e-3 for r in table)
    assert [r["mean_macs"] for r in table] == sorted(r["mean_macs"] for r in table)
    # every exit lowers on its own (one artifact per exit) and agrees with torch
    from edgeship.targets.onnx import export_onnx, ort_runner

    for name, sub in exit_models(ee):
        path = export_onnx(sub, x[:1], tmp_path / f"{name}.onnx", tmp_path / "log")
        with torch.no_grad():
            np.testing.assert_allclose(ort_runner(path)(x.numpy())[0], sub(x).numpy(), atol=1e-4)


def test_confidence_table_by_hand():
    y = torch.tensor([0, 1])
    early = torch.tensor([[5.0, 0.0], [0.0, 0.1]])  # sure of sample 0 (right), unsure of sample 1
    final = torch.tensor([[0.0, 1.0], [0.0, 3.0]])  # wrong on sample 0, right on sample 1
    rows = {r["threshold"]: r for r in confidence_table([early, final], y, [10, 30])}
    assert rows[0.9]["exit_rates"] == [0.5, 0.5] and rows[0.9]["top1"] == 1.0 and rows[0.9]["mean_macs"] == 20
    assert rows[1.0]["exit_rates"] == [0.0, 1.0] and rows[1.0]["top1"] == 0.5


def test_early_exit_bad_exits(digits_ctx):
    model, ctx = digits_ctx
    with pytest.raises(EdgeshipError, match="exits names no module nope"):
        EarlyExit().run(model, EarlyExitConfig(exits=["nope"], epochs=0), ctx)
