"""Shared fixtures: recipes on real data (scikit-learn's digits, Debian's Fashion-MNIST) and a
small trained model, so every test runs the real code paths in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGESHIP_QUIET", "1")

from helpers import REPO, digits_recipe_dict, write_recipe  # noqa: E402,F401


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """The small CNN trained on digits once per session (a few seconds); returns the checkpoint path."""
    from edgeship.api import train

    tmp = tmp_path_factory.mktemp("digits_ckpt")
    recipe = write_recipe(tmp, digits_recipe_dict(tmp))
    metrics = train(recipe, quiet=True)
    assert metrics["test_top1"] > 0.9, metrics
    return Path(metrics["checkpoint"])


@pytest.fixture
def digits_recipe(tmp_path, digits_checkpoint):
    """Factory: ``digits_recipe(**overrides) -> recipe path`` using the trained session checkpoint."""

    def make(**overrides) -> Path:
        r = digits_recipe_dict(tmp_path)
        r["model"]["weights"] = str(digits_checkpoint)
        r.update(overrides)
        return write_recipe(tmp_path, r)

    return make
