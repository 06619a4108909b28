"""Shared fixtures: recipes on real data (scikit-learn's digits, Debian's Fashion-MNIST) and a
small trained model, so every test runs the real code paths in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGESHIP_QUIET", "1")

REPO = Path(__file__).resolve().parents[1]


def digits_recipe_dict(tmp: Path, **overrides) -> dict:
    """A recipe for the small CNN on the 8x8 digits set; ``overrides`` replace top-level keys."""
    r = {
        "name": "digits_test",
        "seed": 0,
        "model": {"zoo": "small_cnn", "args": {"width": 8}, "weights": str(tmp / "ckpt" / "digits.pt")},
        "input": {"shape": [1, 8, 8], "preprocessing": {"scale": 0.0625, "mean": [0.5], "std": [0.5]}},
        "data": {"source": {"kind": "digits"}, "val_size": 150, "calib_size": 150, "seed": 0},
        "train": {"epochs": 12, "batch_size": 64, "lr": 0.01, "threads": 1},
        "passes": [],
        "targets": [{"name": "onnx-fp32", "format": "onnx", "precision": "fp32"}],
        "output": str(tmp / "runs" / "digits_test"),
    }
    r.update(overrides)
    return r


def write_recipe(tmp: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    p = Path(tmp) / name
    p.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return p


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """The small CNN trained on digits once per session (a few seconds); returns the checkpoint path."""
    from edgeship.train import train

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
