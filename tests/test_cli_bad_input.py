"""Bad input: one line naming the problem and the fix, exit code 2, no traceback, no run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from edgeship.cli import app
from helpers import digits_recipe_dict, write_recipe

runner = CliRunner()


def run_cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_bad_input(result, *needles: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    text = result.stderr.strip()
    assert "Traceback" not in result.output + result.stderr
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 or all(line.startswith(" ") for line in lines[1:]), text  # one (soft-wrapped) line
    assert text.startswith("error:"), text
    flat = " ".join(text.split())
    for n in needles:
        assert n in flat, (n, flat)
    return flat


def export_bad(tmp_path: Path, recipe: dict, *needles: str, extra: tuple = ()) -> str:
    path = write_recipe(tmp_path, recipe)
    msg = assert_bad_input(run_cli("export", path, *extra), *needles)
    out = Path(recipe["output"])
    assert not out.exists(), "a failed run must not leave a run directory"
    leftovers = list(out.parent.glob(f".{out.name}*")) if out.parent.exists() else []
    assert leftovers == [], leftovers
    return msg


def test_missing_model_file(tmp_path):
    r = digits_recipe_dict(tmp_path)
    r["model"] = {"factory": "edgeship.models.zoo:SmallCNN", "args": {"width": 8, "input_size": [8, 8]},
                  "weights": str(tmp_path / "nope.pt")}
    export_bad(tmp_path, r, "model file not found", "nope.pt", "Fix:")


def test_corrupt_model_file(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 this is not a real torch zip" * 10)
    r = digits_recipe_dict(tmp_path)
    r["model"] = {"factory": "edgeship.models.zoo:SmallCNN", "args": {"width": 8, "input_size": [8, 8]},
                  "weights": str(bad)}
    export_bad(tmp_path, r, "corrupt or not a torch file", "Fix:")


class NotATensor:  # a pickled object torch.load(weights_only=True) refuses
    pass


def test_pickle_refused_names_trust_pickle(tmp_path, digits_checkpoint):
    from edgeship.models.zoo import SmallCNN

    model = SmallCNN(1, 10, (8, 8), width=8)
    model.load_state_dict(torch.load(digits_checkpoint, weights_only=True)["state_dict"])
    f = tmp_path / "whole_module.pt"
    torch.save(model, f)  # the whole module: needs full unpickling
    r = digits_recipe_dict(tmp_path)
    r["model"] = {"factory": "edgeship.models.zoo:SmallCNN", "args": {"width": 8, "input_size": [8, 8]},
                  "weights": str(f)}
    msg = export_bad(tmp_path, r, "weights_only=True", "--trust-pickle")
    assert "\x1b" not in msg  # torch's message carries terminal codes: not in ours
    # and the opt-in works
    path = write_recipe(tmp_path, r)
    result = run_cli("export", path, "--trust-pickle")
    assert result.exit_code == 0, result.stderr


def test_factory_that_does_not_import(tmp_path):
    r = digits_recipe_dict(tmp_path)
    r["model"] = {"factory": "no_such_pkg.models:build"}
    export_bad(tmp_path, r, "cannot import 'no_such_pkg.models'", "PYTHONPATH")


def test_input_shape_the_model_rejects(tmp_path, digits_checkpoint):
    r = digits_recipe_dict(tmp_path)
    r["model"] = {"factory": "edgeship.models.zoo:SmallCNN", "args": {"width": 8, "in_channels": 3},
                  "weights": None}
    export_bad(tmp_path, r, "the model rejects input shape (2, 1, 8, 8)", "input.shape")


def test_unknown_recipe_key(tmp_path):
    r = digits_recipe_dict(tmp_path)
    r["model"]["wieghts"] = "x.pt"
    export_bad(tmp_path, r, "unknown key 'model.wieghts'", "allowed keys:", "weights")


def test_wrong_type_in_recipe(tmp_path):
    r = digits_recipe_dict(tmp_path)
    r["data"]["val_size"] = "lots"
    export_bad(tmp_path, r, "data.val_size", "integer", "'lots'")


def test_missing_data_path(tmp_path):
    r = digits_recipe_dict(tmp_path)
    r["data"]["source"] = {"kind": "npz", "path": str(tmp_path / "missing.npz")}
    export_bad(tmp_path, r, "data file not found", "missing.npz")


def test_empty_data_set(tmp_path):
    empty = tmp_path / "empty.npz"
    np.savez(empty, x=np.zeros((0, 1, 8, 8), np.uint8), y=np.zeros(0, np.int64))
    r = digits_recipe_dict(tmp_path)
    r["data"]["source"] = {"kind": "npz", "path": str(empty)}
    export_bad(tmp_path, r, "training data set is empty")


def test_empty_image_folder(tmp_path):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    r = digits_recipe_dict(tmp_path)
    r["data"]["source"] = {"kind": "image_folder", "path": str(tmp_path / "imgs")}
    export_bad(tmp_path, r, "data set is empty")


def test_recipe_not_found(tmp_path):
    assert_bad_input(run_cli("export", tmp_path / "nope.yaml"), "recipe not found")


def test_invalid_yaml(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: [unclosed\n")
    assert_bad_input(run_cli("export", p), "not valid YAML")


def test_missing_zoo_checkpoint_says_train(tmp_path):
    r = digits_recipe_dict(tmp_path)  # weights path does not exist yet
    export_bad(tmp_path, r, "no trained weights", "edgeship train")


def test_unknown_target_name(tmp_path, digits_recipe):
    assert_bad_input(run_cli("export", digits_recipe(), "--target", "nope"), "no target named nope", "onnx-fp32")


def test_debug_shows_traceback(tmp_path):
    r = digits_recipe_dict(tmp_path)
    r["model"]["wieghts"] = "x.pt"
    result = run_cli("--debug", "export", write_recipe(tmp_path, r))
    assert result.exit_code != 0 and result.exception is not None


def test_output_that_is_not_a_run_directory_is_left_alone(tmp_path, digits_checkpoint):
    """export replaces its output whole: a directory holding anything but an earlier run, or a file, is
    refused before any work, and kept as it was."""
    r = digits_recipe_dict(tmp_path)
    r["model"]["weights"] = str(digits_checkpoint)
    mine = tmp_path / "my_project"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    r["output"] = str(mine)
    assert_bad_input(run_cli("export", write_recipe(tmp_path, r)), "is not an edgeship run directory", "Fix:")
    assert (mine / "notes.txt").read_text() == "mine" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    afile = tmp_path / "afile.txt"
    afile.write_text("mine")
    r["output"] = str(afile)
    assert_bad_input(run_cli("export", write_recipe(tmp_path, r)), "is a file, not a run directory")
    assert afile.read_text() == "mine" and not list(tmp_path.glob(".afile*"))
    r["output"] = str(afile / "run")  # its parent is a file: cannot be created
    assert_bad_input(run_cli("export", write_recipe(tmp_path, r)), f"cannot create the output {afile / 'run'}: "
                     f"{afile} is a file", "Fix: set output:")
    r["output"] = "."
    assert_bad_input(run_cli("export", write_recipe(tmp_path, r)), "names no run directory of its own")


def test_rerun_replaces_an_earlier_run(tmp_path, digits_recipe):
    """An earlier run is replaced whole: a target the recipe no longer has is gone afterwards."""
    two = [{"name": "a", "format": "onnx", "precision": "fp32"}, {"name": "b", "format": "onnx", "precision": "fp32"}]
    assert run_cli("export", digits_recipe(targets=two), "--no-measure").exit_code == 0
    run = tmp_path / "runs" / "digits_test"
    assert sorted(p.name for p in (run / "targets").iterdir()) == ["a", "b"]
    assert run_cli("export", digits_recipe(targets=two[:1]), "--no-measure").exit_code == 0
    assert sorted(p.name for p in (run / "targets").iterdir()) == ["a"] and (run / "report.json").is_file()


def test_non_utf8_recipe(tmp_path):
    bad = tmp_path / "bin.yaml"
    bad.write_bytes(b"\xff\xfe\x00name: x\n")
    assert_bad_input(run_cli("export", bad), "not UTF-8 text", "Fix:")


def test_check_report_file_that_cannot_be_written(tmp_path, digits_recipe):
    assert run_cli("export", digits_recipe(), "--no-measure").exit_code == 0
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_bad_input(run_cli("check", tmp_path / "runs" / "digits_test", "--source", "host",
                             "--junit", blocker / "report.xml"), "cannot access", "Fix: check the path")


def test_a_model_that_fails_in_training_is_one_line_not_a_traceback(tmp_path):
    """An error inside the user's own model (here: its backward) is reported in one line, exit 1."""
    (tmp_path / "brokenmod.py").write_text(
        "import torch\n"
        "class NoGrad(torch.autograd.Function):\n"
        "    @staticmethod\n"
        "    def forward(ctx, x):\n"
        "        return x.clone()\n"
        "    @staticmethod\n"
        "    def backward(ctx, g):\n"
        "        raise RuntimeError('this layer has no gradient')\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(64, 10)\n"
        "    def forward(self, x):\n"
        "        return NoGrad.apply(self.fc(x.flatten(1)))\n"
        "def make():\n"
        "    return Net()\n")
    r = digits_recipe_dict(tmp_path)
    r["model"] = {"factory": "brokenmod:make", "weights": str(tmp_path / "w.pt")}
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        res = run_cli("train", write_recipe(tmp_path, r))
    finally:
        sys.path.remove(str(tmp_path))
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output + res.stderr
    assert "this layer has no gradient" in res.stderr and "--debug" in res.stderr


def test_weights_file_that_is_no_checkpoint_at_all(tmp_path):
    """Plain text is not 'Python objects to trust': no --trust-pickle advice for it."""
    bad = tmp_path / "notes.pt"
    bad.write_text("these are my notes, not weights\n")
    r = digits_recipe_dict(tmp_path)
    r["model"] = {"factory": "edgeship.models.zoo:SmallCNN", "args": {"width": 8, "input_size": [8, 8]},
                  "weights": str(bad)}
    msg = export_bad(tmp_path, r, "is not a torch checkpoint", "torch.save(model.state_dict(), path)")
    assert "trust-pickle" not in msg


def test_recipe_labels_fewer_than_the_data_classes(tmp_path, digits_checkpoint):
    r = digits_recipe_dict(tmp_path)
    r["model"]["weights"] = str(digits_checkpoint)
    r["labels"] = ["zero", "one", "two"]  # digits has ids 0..9
    export_bad(tmp_path, r, "labels: names 3 classes but the data has class id 9", "Fix: give labels:")


def test_output_symlink_and_foreign_files_in_an_earlier_run(tmp_path, digits_recipe):
    recipe = digits_recipe()
    assert run_cli("export", recipe, "--no-measure").exit_code == 0
    import yaml

    run = tmp_path / "runs" / "digits_test"
    r = yaml.safe_load(recipe.read_text())
    (tmp_path / "link").symlink_to(run)
    r["output"] = str(tmp_path / "link")
    assert_bad_input(run_cli("export", write_recipe(tmp_path, r, "l.yaml")), "is a symbolic link",
                     f"set output: to the directory itself ({run})")
    assert (tmp_path / "link").is_symlink() and not list(tmp_path.glob(".link*"))
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    r["output"] = str(tmp_path / "dangling")
    assert_bad_input(run_cli("export", write_recipe(tmp_path, r, "d.yaml")), "is a symbolic link")
    (run / "my_weights.pt").write_text("mine")  # the user's file inside an earlier run: not replaced away
    assert_bad_input(run_cli("export", recipe), "also holds my_weights.pt, which export did not write")
    assert (run / "my_weights.pt").read_text() == "mine" and (run / "report.json").is_file()



def test_bad_data_leaves_no_new_output_parents(tmp_path, digits_checkpoint):
    """Nothing is created before the input is known to be good, not even the output's parent directories."""
    r = digits_recipe_dict(tmp_path)
    r["model"]["weights"] = str(digits_checkpoint)
    r["labels"] = ["only", "three", "names"]
    r["output"] = str(tmp_path / "new" / "deeper" / "run")
    export_bad(tmp_path, r, "labels: names 3 classes")
    assert not (tmp_path / "new").exists()
