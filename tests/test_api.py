"""The Python API (edgeship.export / load_recipe / load_run / check / profile) on the real digits pipeline, the
recipe checks it runs against every registry, the typed run record (load, validation, schema) and the README's
Python example, run as a user would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import edgeship
from edgeship import EdgeshipError, RunRecord
from edgeship.recipe import Recipe
from helpers import REPO, digits_recipe_dict, run_record


# ---------------------------------------------------------------- recipes
def _targets(*specs) -> list[dict]:
    return [{"name": f"{f}-{p}", "format": f, "precision": p} for f, p in specs]


@pytest.mark.parametrize("method,fmt,elsewhere", [("mse", "onnx", "openvino int8"),
                                                  ("entropy", "openvino", "onnx int8"),
                                                  ("entropy", "tflite", "onnx int8")])
def test_a_calibration_method_the_quantizer_lacks_is_refused_when_the_recipe_loads(tmp_path, method, fmt, elsewhere):
    r = digits_recipe_dict(tmp_path, passes=[{"name": "calibrate", "method": method}],
                           targets=_targets(("onnx", "fp32"), (fmt, "int8")))
    with pytest.raises(EdgeshipError, match=rf"<dict>: targets.1 \({fmt}-int8\): {fmt} int8 calibrates with .*not "
                                            rf"'{method}' \({method} is available on: {elsewhere}"):
        edgeship.load_recipe(r)
    # a float target calibrates nothing; a QAT model brings its own ranges
    edgeship.load_recipe(digits_recipe_dict(tmp_path, passes=[{"name": "calibrate", "method": method}],
                                            targets=_targets((fmt, "fp32"))))
    edgeship.load_recipe(digits_recipe_dict(tmp_path, passes=[{"name": "calibrate", "method": method},
                                                              {"name": "qat", "epochs": 0}],
                                            targets=_targets((fmt, "int8"))))


@pytest.mark.parametrize("target,expected", [
    ({"name": "x", "format": "coreml"}, r"targets.0 \(x\): unknown format 'coreml'. "
                                        r"Fix: use one of: onnx, openvino, tflite"),
    ({"name": "x", "format": "onnx", "precision": "fp16"}, r"targets.0 \(x\): format 'onnx' has no precision 'fp16'. "
                                                           r"Fix: use one of: dynamic_int8, fp32, int8"),
    ({"name": "x", "format": "onnx", "device": "pi"}, r"targets.0.device: unknown device 'pi'; allowed: .*rpi4")])
def test_target_names_are_checked_against_the_registries(tmp_path, target, expected):
    with pytest.raises(EdgeshipError, match=expected):
        edgeship.load_recipe(digits_recipe_dict(tmp_path, targets=[target]))


def test_a_recipe_loads_from_a_path_a_dict_or_a_recipe(tmp_path):
    r = digits_recipe_dict(tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    a, b = edgeship.load_recipe(path), edgeship.load_recipe(r)
    assert a == b and isinstance(a, Recipe) and edgeship.load_recipe(a) is a
    with pytest.raises(EdgeshipError, match=r"<dict>: unknown key 'nmae'"):
        edgeship.load_recipe({**r, "nmae": "x"})


# ---------------------------------------------------------------- the main job and finished runs
def test_export_check_profile_and_load_run(tmp_path, digits_checkpoint):
    r = digits_recipe_dict(tmp_path, targets=_targets(("onnx", "fp32"), ("onnx", "int8")),
                           budgets={"model_size_kb": 1.0})
    r["model"]["weights"] = str(digits_checkpoint)
    run = edgeship.export(r, quiet=True, runs=5)
    assert isinstance(run, RunRecord) and run.ok and run.recipe_path == "<dict>"
    assert run.run_dir == Path(r["output"]) and (run.run_dir / "report.json").is_file()
    assert [t.status for t in run.targets] == ["ok", "ok"] and run.targets[1].verify.top1 > 0.9
    assert run.measurements["onnx-int8"]["host"].p50_ms > 0
    assert run.budgets is not None and not run.budgets.passed  # 1 KiB: no model is that small

    again = edgeship.load_run(r["output"])
    assert again == run and again.run_dir == run.run_dir

    verdict = edgeship.check(again, "host")
    assert not verdict.passed and {x.budget for x in verdict.results if not x.passed} == {"model_size_kb"}
    assert edgeship.load_run(run.run_dir).budgets == verdict  # saved into the run

    res = edgeship.profile(run.run_dir, targets=["onnx-fp32"], runs=3, warmup=0)
    assert set(res.measured) == {"onnx-fp32"} and res.measured["onnx-fp32"].runs == 3
    assert edgeship.load_run(run.run_dir).measurements["onnx-fp32"]["host"].runs == 3
    assert edgeship.report_html(run.run_dir).read_text().startswith("<!DOCTYPE html>")


def test_bad_input_from_python_is_an_edgeship_error_and_writes_nothing(tmp_path):
    r = digits_recipe_dict(tmp_path, targets=_targets(("onnx", "fp32")))
    r["model"]["weights"] = str(tmp_path / "missing.pt")
    with pytest.raises(EdgeshipError, match="no trained weights"):
        edgeship.export(r, quiet=True)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- the record
def test_a_record_of_the_wrong_shape_is_one_line_naming_the_key(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    good = run_record(targets=[{"name": "t", "format": "onnx", "precision": "fp32", "status": "ok"}])
    good.save(run)
    assert RunRecord.load(run) == good
    raw = json.loads((run / "report.json").read_text())
    for broken, expected in [({**raw, "targets": {"t": {}}}, r"report.json: targets: Input should be a valid list"),
                             ({**raw, "measurements": {"t": {"host": {"source": "host", "p50_ms": "fast"}}}},
                              r"measurements.t.host.p50_ms: Input should be a valid number"),
                             ([raw], r"not an edgeship run record")]:
        (run / "report.json").write_text(json.dumps(broken))
        with pytest.raises(EdgeshipError, match=expected):
            RunRecord.load(run)
    (run / "report.json").write_text(json.dumps(raw).replace('"status": "ok"', '"status": "done"'))
    with pytest.raises(EdgeshipError, match=r"targets.0.status: Input should be 'ok' or 'failed'.*Fix: rerun"):
        edgeship.load_run(run)


def test_published_schemas_are_current():
    from edgeship.recipe import json_schema as recipe_schema
    from edgeship.record import json_schema as record_schema

    for name, schema in (("report", record_schema()), ("recipe", recipe_schema())):
        published = json.loads((REPO / "docs" / f"{name}.schema.json").read_text())
        assert published == schema, f"regenerate it: edgeship schema {name} > docs/{name}.schema.json"


# ---------------------------------------------------------------- the README's example
@pytest.mark.slow
def test_the_readme_python_example_runs(tmp_path):
    """The README's Python block, as a user would run it from a checkout (its paths are the repository's)."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert block, "README.md has no Python API example marked <!-- api-example -->"
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    script = tmp_path / "example.py"
    script.write_text(block.group(1))
    env = dict(os.environ, EDGESHIP_QUIET="1")
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "runs" / "digits" / "report.json").is_file()
    assert "onnx-fp32" in p.stdout
