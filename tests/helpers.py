"""Plain helpers shared by tests (import them with `from helpers import ...`; conftest modules
are not importable by name once a subfolder has its own conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

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


def factory_model(tmp: Path, monkeypatch, module: str, source: str) -> dict:
    """A user's model file: ``source`` (Python defining ``net()``) saved as ``<tmp>/<module>.py``, importable
    for this test; returns the recipe's ``model:`` entry that names it."""
    (tmp / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp))
    return {"factory": f"{module}:net"}


def run_record(recipe: dict | None = None, **fields):
    """A RunRecord holding the sections a test cares about (``recipe`` keys are merged into a minimal valid
    recipe; ``fields`` replace top-level sections); everything else gets plausible values."""
    from edgeship.record import RunRecord

    r = {"name": "r", "model": {"zoo": "small_cnn"}, "input": {"shape": [1, 8, 8]},
         "data": {"source": {"kind": "digits"}}, "output": "runs/r"}
    r.update(recipe or {})
    facts = {"params": 1, "macs": 1, "size_fp32_bytes": 4, "top1_test": 0.9}
    raw = {"edgeship_version": "0.1.0", "created": "2026-12-01T00:00:00+00:00", "recipe_path": "r.yaml",
           "recipe_hash": "0", "recipe": r, "data": {"sizes": {"test": 10}, "labels": ["a"], "source": "digits"},
           "baseline": facts, "final": facts}
    raw.update(fields)
    return RunRecord.model_validate(raw)


def as_json(record) -> tuple[dict, int]:
    """A run record as report.json holds it, and the exit code `edgeship export` gives for it."""
    return record.model_dump(mode="json"), (0 if record.ok else 1)


def x86_has_vnni() -> bool:
    """Whether this CPU has VNNI: without it ONNX Runtime's and OpenVINO's x86 INT8 kernels sum pairs of u8 x s8
    products in a saturating int16 (VPMADDUBSW), which a test's saturating layer must then show."""
    with open("/proc/cpuinfo") as f:
        return any(flag in f.read().split() for flag in ("avx512_vnni", "avx_vnni"))


def photo_crops(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` random size x size RGB crops (N, 3, size, size) of scikit-learn's two sample photos, uint8
    (``benchmarks.zoo.make_data.crops``)."""
    from benchmarks.zoo.make_data import crops

    return crops(n, size, seed, photos=["china", "flower"])
