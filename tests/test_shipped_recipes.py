"""The recipes the repository ships (the demo, the digits example, the benchmarks' recipes) load and
validate, and the demo's depth pruning fits the architecture it names: a recipe that no longer matches
the code would only fail minutes into `make demo` or a benchmark."""

from pathlib import Path

import pytest
import torch

from edgeship.api import load_recipe
from edgeship.models.zoo import ZOO
from edgeship.pipeline.base import validate_passes
from edgeship.pipeline.depth import removable_blocks

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*ROOT.glob("recipes/*.yaml"), *ROOT.glob("benchmarks/recipes/**/*.yaml")])


def test_the_repository_ships_recipes():
    names = {p.relative_to(ROOT).as_posix() for p in SHIPPED}
    assert {"recipes/fashion_mnist.yaml", "recipes/digits.yaml",
            "benchmarks/recipes/fashion_mnist_resnet.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shipped_recipe_loads_and_its_passes_validate(path):
    recipe = load_recipe(path)
    configs = validate_passes(recipe.passes)
    assert [name for name, _ in configs] == [p.name for p in recipe.passes]
    for name, cfg in configs:
        if name == "drop_blocks" and recipe.model.zoo:
            model = ZOO[recipe.model.zoo](**recipe.model.args).eval()
            found = removable_blocks(model, torch.zeros(1, *recipe.input.shape))
            assert cfg.blocks <= len(found), f"{path.name}: drop_blocks asks for {cfg.blocks} of {found}"


def test_the_demo_checkpoint_is_shipped_with_its_metrics():
    """`make demo` trains only when the checkpoint is missing, so the repository carries it: it must be the
    recipe's model, trained (not an initialization), with the metrics `edgeship train` wrote beside it."""
    import json

    from edgeship.calibration.datasets import load_fashion_mnist
    from edgeship.models.load import build_model
    from edgeship.pipeline.training import predict, top1

    recipe = load_recipe(ROOT / "recipes/fashion_mnist.yaml")
    ckpt = ROOT / recipe.model.weights
    metrics = json.loads(ckpt.with_suffix(".json").read_text())
    embedded = torch.load(ckpt, map_location="cpu", weights_only=True)["metrics"]
    assert {k: v for k, v in embedded.items() if k != "wall_s"} == {k: v for k, v in metrics.items() if k != "wall_s"}
    assert metrics["recipe"] == "recipes/fashion_mnist.yaml" and metrics["model"]["args"] == recipe.model.args
    assert metrics["test_top1"] >= 0.90
    model = build_model(recipe.model.model_copy(update={"weights": str(ckpt)}), recipe.input, 10)
    _, test = load_fashion_mnist(None)
    pre = recipe.input.preprocessing_obj()
    x = torch.from_numpy(pre.apply(test.x[:1000]))
    assert top1(predict(model, x), test.y[:1000]) >= 0.88
