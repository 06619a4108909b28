"""`edgeship train RECIPE`: train the recipe's model from scratch and save a checkpoint with its metrics.
Under torchrun every rank trains its shard (``edgeship.pipeline.training.fit``); rank 0 alone saves."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from edgeship.calibration.datasets import load_splits
from edgeship.errors import EdgeshipError
from edgeship.models.load import build_model, model_stats
from edgeship.pipeline.distributed import broadcast, process_group, resolve_device
from edgeship.pipeline.training import FitConfig, TensorData, evaluate, fit, set_determinism
from edgeship.progress import info
from edgeship.recipe import Recipe


def train(recipe: Recipe, recipe_path: str, if_missing: bool = False, quiet: bool = False) -> dict:
    """Train a checked recipe's model from scratch (``edgeship.api.train`` loads and checks the recipe). On
    ranks other than 0 of a torchrun job: the training only, nothing saved, an empty dict."""
    device = resolve_device(recipe.train.device)
    with process_group(device) as w:
        return _train(recipe, recipe_path, if_missing, quiet, device, w.main)


def _train(recipe: Recipe, recipe_path: str, if_missing: bool, quiet: bool, device: str, main: bool) -> dict:
    spec = recipe.model
    if spec.zoo is None and spec.factory is None:
        raise EdgeshipError("`edgeship train` needs a zoo or factory model (this recipe loads a fixed file)",
                            "train it yourself, or use model.zoo / model.factory")
    if spec.weights is None:
        raise EdgeshipError("model.weights is not set, so there is nowhere to save the checkpoint",
                            "set model.weights to a path such as checkpoints/<name>.pt")
    ckpt = Path(spec.weights)
    if if_missing and broadcast(ckpt.is_file()):  # rank 0's file decides for every rank
        meta = ckpt.with_suffix(".json")
        info(f"checkpoint exists: {ckpt} (delete it to retrain)")
        return json.loads(meta.read_text()) if meta.is_file() else {"checkpoint": str(ckpt)}
    set_determinism(recipe.train.seed, recipe.train.threads)
    splits = load_splits(recipe.data, recipe.input, len(recipe.labels) if recipe.labels else None)
    labels = tuple(recipe.labels) if recipe.labels else splits.labels
    model = build_model(spec.model_copy(update={"weights": None}), recipe.input, len(labels), require_weights=False)
    pre = recipe.input.preprocessing_obj()
    train_d = TensorData.from_array(splits.train, pre)
    val_d = TensorData.from_array(splits.val, pre)
    test_d = TensorData.from_array(splits.test, pre)
    cfg = FitConfig(**recipe.train.model_dump(exclude={"device"}), device=device)
    info(f"training {spec.zoo or spec.factory} on {len(train_d):,} samples for {cfg.epochs} epochs "
         f"({torch.get_num_threads()} threads)")
    hist = fit(model, train_d, val_d, cfg, stage="train", quiet=quiet)
    if not main:
        return {}
    metrics = {"checkpoint": str(ckpt), "test_top1": evaluate(model, test_d), **hist,
               **model_stats(model, tuple(recipe.input.shape)), "threads": torch.get_num_threads(),
               "train_samples": len(train_d), "recipe": recipe_path, "model": spec.model_dump(mode="json")}
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{ckpt.name}.", dir=ckpt.parent)
    os.close(fd)
    torch.save({"state_dict": model.state_dict(), "metrics": json.loads(json.dumps(metrics, default=str))}, tmp)
    os.replace(tmp, ckpt)
    ckpt.with_suffix(".json").write_text(json.dumps(metrics, indent=2, default=str))
    info(f"saved {ckpt}: test top-1 {metrics['test_top1']:.4f} in {hist['wall_s']:.0f} s")
    return metrics
