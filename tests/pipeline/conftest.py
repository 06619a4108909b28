"""Helpers for the pass tests: a PassContext built the way `edgeship export` builds it (edgeship.run.prepare)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgeship.api import load_recipe
from edgeship.pipeline.base import PassContext
from edgeship.run import prepare


def context_for(recipe_path: Path, work_dir: Path, stage: str = "1:test"):
    """(model, ctx) for a recipe: real digits splits, preprocessed tensors, the trained model as teacher."""
    recipe = load_recipe(recipe_path)
    prep = prepare(recipe)
    model = prep.model
    torch.set_num_threads(1)
    ctx = PassContext(splits=prep.splits, data=prep.data, preprocessing=prep.preprocessing,
                      input_shape=tuple(recipe.input.shape), teacher=model, work_dir=work_dir, seed=recipe.seed,
                      threads=1, quiet=True, stage=stage)
    import copy

    return copy.deepcopy(model), ctx


@pytest.fixture
def digits_ctx(digits_recipe, tmp_path):
    """(trained small CNN, PassContext) on the digits set."""
    return context_for(digits_recipe(), tmp_path / "work")
