"""`edgeship init`: the commented recipe it writes parses, and once its placeholders point at real
files (a user's factory + state_dict, TorchScript or .pt2 model; an image folder, .npz or IDX data)
it validates, loads, trains and exports."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from edgeship.api import load_recipe
from edgeship.calibration.datasets import load_digits
from edgeship.cli import app
from edgeship.run import prepare

MODEL_SRC = """
from torch import nn

def build_model(num_classes=10, width=8):
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, num_classes))
"""


def init(tmp_path: Path, *args: str) -> tuple[Path, str]:
    path = tmp_path / "my_model.yaml"
    result = CliRunner().invoke(app, ["init", str(path), *args])
    assert result.exit_code == 0, result.stderr
    assert f"wrote {path}" in result.stdout
    return path, path.read_text()


def fill(text: str, replacements: dict[str, str]) -> str:
    """Replace each placeholder, which must be in the template (so a template change shows here)."""
    for old, new in replacements.items():
        assert old in text, f"placeholder {old!r} is not in the template"
        text = text.replace(old, new)
    return text


def user_model(tmp_path: Path, monkeypatch, kind: str) -> dict[str, str]:
    """A user's model package on sys.path, saved the way the recipe's comments say."""
    pkg = tmp_path / f"userpkg_{kind}"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(MODEL_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    ns: dict = {}
    exec(MODEL_SRC, ns)
    model = ns["build_model"]().eval()
    if kind == "factory":
        torch.save(model.state_dict(), tmp_path / "weights.pt")
        return {"my_package.models:build_model": f"{pkg.name}.models:build_model",
                "path/to/weights.pt": str(tmp_path / "weights.pt")}
    if kind == "torchscript":
        torch.jit.save(torch.jit.script(model), tmp_path / "model.ts")
        return {"path/to/model.ts": str(tmp_path / "model.ts")}
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},))
    torch.export.save(program, tmp_path / "model.pt2")
    return {"path/to/model.pt2": str(tmp_path / "model.pt2")}


def user_data(tmp_path: Path, kind: str) -> dict[str, str]:
    """The digits set (8x8, values 0..16) written as the user's own files."""
    d = load_digits()
    x = (d.x[:, 0] * 15).astype(np.uint8)  # 0..240, 8-bit like a user's images
    y = d.y
    if kind == "npz":
        np.savez(tmp_path / "data.npz", x=x, y=y)
        return {"path/to/data.npz": str(tmp_path / "data.npz")}
    if kind == "image_folder":
        for i in range(200):
            folder = tmp_path / "images" / f"digit_{y[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[i]).save(folder / f"{i}.png")
        return {"path/to/images": str(tmp_path / "images")}
    images, labels = tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"
    header = lambda *dims: bytes([0, 0, 8, len(dims)]) + b"".join(n.to_bytes(4, "big") for n in dims)  # noqa: E731
    images.write_bytes(gzip.compress(header(*x.shape) + x.tobytes()))
    labels.write_bytes(gzip.compress(header(len(y)) + y.astype(np.uint8).tobytes()))
    return {"path/to/train-images-idx3-ubyte": str(images)[:-3],
            "path/to/train-labels-idx1-ubyte": str(labels)[:-3]}


SMALL = {"shape: [3, 32, 32]": "shape: [1, 8, 8]", "val_size: 500": "val_size: 100",
         "calib_size: 500": "calib_size: 100"}


def with_example_passes(text: str) -> str:
    """The template's commented example pipeline, switched on the way its comment says."""
    head, _, rest = text.partition("passes: []\n# passes:")
    block, _, tail = rest.partition("\n\n")
    lines = [line[2:] for line in block.splitlines()[1:]]
    return head + "passes:\n" + "\n".join(lines) + "\n\n" + tail


def test_init_writes_commented_yaml(tmp_path):
    path, text = init(tmp_path)
    raw = yaml.safe_load(text)
    assert raw["name"] == "my_model" and raw["output"] == "runs/my_model"
    assert raw["model"]["factory"] and raw["data"]["source"]["kind"] == "image_folder"
    assert [t["format"] for t in raw["targets"]] == ["onnx", "onnx"] and "budgets" in raw
    assert text.count("<-- EDIT") >= 5 and text.count("\n#") > 10  # commented for a reader
    for alternative in ("# torchscript:", "# exported:", "kind: npz", "kind: idx", "--trust-pickle"):
        assert alternative in text
    load_recipe(path)  # even the untouched template is a valid recipe
    path.write_text(with_example_passes(text))
    recipe = load_recipe(path)  # the example passes validate against their own schemas
    assert [p.name for p in recipe.passes] == ["prune", "distill", "calibrate"]


def test_init_refuses_to_overwrite(tmp_path):
    path, _ = init(tmp_path)
    result = CliRunner().invoke(app, ["init", str(path)])
    assert result.exit_code == 2 and "already exists" in result.stderr and "--force" in result.stderr
    assert CliRunner().invoke(app, ["init", str(path), "--force", "--data", "npz"]).exit_code == 0
    assert "kind: npz" in path.read_text().split("# source:")[0]
    result = CliRunner().invoke(app, ["init", str(tmp_path / "x.yaml"), "--data", "csv"])
    assert result.exit_code == 2 and "unknown data kind 'csv'" in result.stderr


@pytest.mark.parametrize("data,model", [("image_folder", "factory"), ("npz", "torchscript"), ("idx", "exported")])
def test_filled_template_loads_model_and_data(tmp_path, monkeypatch, data, model):
    path, text = init(tmp_path, "--data", data, "--model", model)
    replacements = {**SMALL, **user_model(tmp_path, monkeypatch, model), **user_data(tmp_path, data)}
    path.write_text(fill(text, replacements))
    recipe = load_recipe(path)
    prep = prepare(recipe)
    assert sum(prep.splits.sizes().values()) > 0 and len(prep.data["test"]) > 0
    assert prep.model(prep.data["test"].x[:4]).shape == (4, 10)
    if data == "image_folder":
        assert prep.labels[:3] == ("digit_0", "digit_1", "digit_2")  # class names from the folder names


def test_filled_template_trains_and_exports(tmp_path, monkeypatch):
    """The user's path end to end: init, fill in, switch on the example passes, `edgeship train` the
    factory model, `edgeship export` to both targets."""
    monkeypatch.chdir(tmp_path)
    path, text = init(tmp_path, "--data", "npz")
    replacements = {**SMALL, **user_model(tmp_path, monkeypatch, "factory"), **user_data(tmp_path, "npz"),
                    "scale: 0.00392156862745098": "scale: 0.0041666", "threads: null": "threads: 1",
                    "epochs: 3": "epochs: 8", "lr: 0.001": "lr: 0.01",
                    "args: {}": "args: {width: 32}"}  # wide enough to prune to half the MACs
    path.write_text(with_example_passes(fill(text, replacements)))
    trained = CliRunner().invoke(app, ["--json", "train", str(path)])
    assert trained.exit_code == 0, trained.stderr
    assert json.loads(trained.stdout)["test_top1"] > 0.5
    result = CliRunner().invoke(app, ["--json", "export", str(path), "--runs", "10"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [s["stage"] for s in report["stages"]] == ["1:prune", "2:distill", "3:calibrate"]
    assert report["final"]["macs"] <= 0.5 * report["baseline"]["macs"]
    fp32, int8 = report["targets"]
    assert fp32["status"] == int8["status"] == "ok", (fp32["error"], int8["error"])
    assert fp32["verify"]["agreement"] >= 0.999 and int8["verify"]["top1"] > 0.5
    assert set(report["measurements"]) == {"onnx-fp32", "onnx-int8"}
    run = tmp_path / "runs" / "my_model"
    assert (run / "report.json").is_file() and (run / "report.html").is_file()
    assert report["recipe"]["model"]["factory"] == "userpkg_factory.models:build_model"


def test_io_template_for_an_onnx_model_exports(tmp_path, monkeypatch):
    """`init --io --data npz --model onnx`: a user holding a 1-D model as an .onnx file and an npz fills in the
    template and exports it to ONNX-INT8 and OpenVINO, every output verified."""
    from torch import nn

    monkeypatch.chdir(tmp_path)
    path, text = init(tmp_path, "--io", "--data", "npz", "--model", "onnx")
    raw = yaml.safe_load(text)
    assert "io" in raw and "input" not in raw and "kind: idx" not in text  # no image-only alternatives
    load_recipe(path)  # the untouched template validates
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 8, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    torch.onnx.export(model, (torch.zeros(1, 1, 64),), str(tmp_path / "model.onnx"), dynamo=False,
                      input_names=["x"], output_names=["out"], dynamic_axes={"x": {0: "batch"}, "out": {0: "batch"}})
    d = load_digits()
    x = np.repeat(d.x.reshape(len(d.x), 1, 64), 1, axis=1).astype(np.float32)  # digits as 64-sample signals
    np.savez(tmp_path / "data.npz", x=x, y=d.y % 4)
    filled = fill(text, {"path/to/model.onnx": str(tmp_path / "model.onnx"), "path/to/data.npz": "data.npz",
                         "shape: [1, 16000]": "shape: [1, 64]", "val_size: 500": "val_size: 100",
                         "calib_size: 500": "calib_size: 100", "threads: null": "threads: 1",
                         "max_accuracy_drop: 1.0           #": "max_accuracy_drop: 100.0         #"})
    path.write_text(filled.replace(
        "  # - {name: openvino-int8, device: host, format: openvino, precision: int8}",
        "  - {name: openvino-int8, device: host, format: openvino, precision: int8}"))
    result = CliRunner().invoke(app, ["--json", "export", str(path), "--no-measure"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [t["status"] for t in report["targets"]] == ["ok"] * 3, [t["error"] for t in report["targets"]]
    assert all(t["verify"]["outputs"]["out"]["passed"] is not False for t in report["targets"])
