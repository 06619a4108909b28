"""The one test every pass runs (as tests/targets/template.py is for backends): parametrized over the pass registry,
so a new pass module is tested the moment it exists.

For each registered pass, on a real (untrained, tiny) ResNet with the digits splits:
1. its ``example`` config validates, and the config schema refuses an unknown key with a one-line error;
2. running it leaves the input model unchanged (architecture and every tensor) and returns an nn.Module that
   still maps the input shape to the same logits shape, with JSON-serializable metrics;
3. the result is cacheable: a stage-cache round trip gives a model with the same outputs and the same hash;
4. the quantization settings it plans from its config (``planned_quant``) are the ones it returns.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from test_prune import TINY

from edgeship.errors import EdgeshipError
from edgeship.models.zoo import ZOO
from edgeship.pipeline.base import Pass, registry, validate_pass
from edgeship.pipeline.runner import StageCache, model_hash, stage_record

PASSES = sorted(registry())


def test_every_pass_module_registered_and_documented():
    from pathlib import Path

    assert set(PASSES) >= {"prune", "drop_blocks", "distill", "qat", "calibrate", "sparsify"}
    docs = (Path(__file__).resolve().parents[2] / "docs" / "passes.md").read_text()
    for name in PASSES:
        assert f"`{name}`" in docs, f"docs/passes.md does not describe the {name} pass"
        assert registry()[name].example or name == "calibrate", f"{name} has no example config"


@pytest.mark.parametrize("name", PASSES)
def test_config_refuses_unknown_keys(name):
    cls: type[Pass] = registry()[name]
    validate_pass(0, {"name": name, **cls.example})
    with pytest.raises(EdgeshipError, match=rf"passes\[0\] \({name}\): unknown key 'no_such_option'; allowed keys: "):
        validate_pass(0, {"name": name, **cls.example, "no_such_option": 1})


@pytest.mark.parametrize("name", PASSES)
def test_pass_contract(name, digits_ctx, tmp_path):
    _, ctx = digits_ctx
    torch.manual_seed(0)
    model = ZOO["resnet"](input_size=ctx.input_shape[1:], num_classes=10, **TINY["resnet"]).eval()
    before_repr, before = repr(model), copy.deepcopy(model.state_dict())
    _, config = validate_pass(0, {"name": name, **registry()[name].example})
    ctx.stage = f"1:{name}"

    out = registry()[name]().run(model, config, ctx)

    # 2. the input model is left as it was; the output is a working module
    assert repr(model) == before_repr
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.state_dict().keys() == before.keys()
    x = ctx.data["val"].x[:8]
    with torch.no_grad():
        y = out.model.eval()(x)
    assert y.shape == (8, 10)
    json.dumps(out.metrics)  # goes into report.json as it is

    # 3. cacheable, and what comes back computes the same
    record = stage_record(ctx.stage, out.model, ctx, 0.0, out.metrics, config)
    cache = StageCache(tmp_path / "cache")
    assert cache.put("k", out.model, record, out.quant)
    model2, record2, quant2 = cache.get("k")
    with torch.no_grad():
        torch.testing.assert_close(model2.eval()(x), y)
    assert model_hash(model2) == model_hash(out.model) and record2 == record and quant2 == out.quant

    # 4. what it said it would decide is what it decided
    planned = registry()[name].planned_quant(config, ctx.seed)
    if out.quant is None:
        assert planned is None
    else:
        # the sample count is capped at the split, the float layers (mixed_precision) are chosen from data
        chosen = {"samples": out.quant.samples, "float_layers": out.quant.float_layers}
        assert planned is not None and planned.model_copy(update=chosen) == out.quant
