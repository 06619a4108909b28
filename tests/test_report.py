"""report.html: written by export from report.json, rebuilt by `edgeship report`, self-contained,
and rendered for real in headless Chromium (Debian's chromium package)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgeship.api import export
from edgeship.cli import app
from edgeship.devices import budgets
from edgeship.record import RunRecord
from edgeship.report.html import ms, render_html
from edgeship.report.plots import pareto_front
from helpers import as_json


@pytest.fixture
def run_dir(digits_recipe) -> Path:
    """A real tiny run: the small CNN on digits, exported to FP32 ONNX, verified, measured on the
    host, and checked against a size budget it cannot meet (so the page shows a missed budget)."""
    report, code = as_json(export(digits_recipe(budgets={"model_size_kb": 1.0}), quiet=True, runs=20))
    assert code == 0
    return Path(report["recipe"]["output"])


def embedded_pngs(text: str) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(b)))
            for b in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


# ---------------------------------------------------------------- the page itself
def test_export_writes_self_contained_report(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    text = (run_dir / "report.html").read_text()
    assert "://" not in text  # no external URL of any kind (the PNGs are inline base64)
    assert "<script" not in text and "<link" not in text
    (t,) = report["targets"]
    v = t["verify"]
    m = report["measurements"]["onnx-fp32"]["host"]
    # figures are report.json's numbers, formatted
    assert f"{v['top1'] * 100:.2f}%" in text and f"{v['agreement'] * 100:.2f}%" in text
    assert f"{v['max_abs_logit_diff']:.2e}" in text
    assert f"{t['size_bytes'] / 1024:,.1f} KiB" in text
    assert f"{report['baseline']['params']:,}" in text and f"{report['baseline']['macs']:,}" in text
    assert f"{ms(m['p50_ms'])} / {ms(m['p90_ms'])} ms" in text and "(host)" in text
    assert f"{m['peak_rss_mb']:,.1f} MB" in text and m["runtime_version"] in text
    assert ">onnx-fp32<" in text and "onnx fp32" in text
    # the missed size budget, with its value and limit
    (size,) = [r for r in report["budgets"]["results"] if r["budget"] == "model_size_kb"]
    assert not size["passed"] and "budgets missed" in text
    assert f"model_size_kb {size['value']:.4g} KiB, limit &le; 1 KiB" in text
    pngs = embedded_pngs(text)
    assert len(pngs) == 4  # accuracy-latency, time by operator type (layers), size across stages, latency distribution
    # where the time goes: the measured artifact's layers, from ONNX Runtime's profiler
    prof = m["profile"]
    assert "<h2>Layers</h2>" in text and prof["source"] in text and prof["layers"][0]["op"] in text
    assert all(p.size[0] > 300 and p.size[1] > 100 for p in pngs)


def test_unmeasured_run_says_not_measured(digits_recipe):
    report, _ = as_json(export(digits_recipe(), quiet=True, measure=False))
    text = (Path(report["recipe"]["output"]) / "report.html").read_text()
    assert "Latency and memory: <span class=\"na\">not measured</span>" in text
    assert " ms <span class=note>(" not in text  # no latency shown anywhere
    assert len(embedded_pngs(text)) == 1  # size only: nothing to draw latency from


def test_report_command_rebuilds_identical_page(run_dir, monkeypatch):
    written = (run_dir / "report.html").read_text()
    (run_dir / "report.html").unlink()
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.stderr
    assert "report written to" in result.stdout and "onnx-fp32" in result.stdout
    assert (run_dir / "report.html").read_text() == written  # everything on it comes from report.json

    result = CliRunner().invoke(app, ["--json", "report", str(run_dir / "report.json")])
    assert result.exit_code == 0
    printed = json.loads(result.stdout)  # the report, and where the page was written
    assert printed.pop("report_html") == str(run_dir / "report.html")
    assert printed == json.loads((run_dir / "report.json").read_text())

    monkeypatch.chdir(run_dir.parent.parent)  # a run's name resolves under ./runs/, as profile and check do
    result = CliRunner().invoke(app, ["--json", "report", run_dir.name])
    assert result.exit_code == 0 and json.loads(result.stdout)["report_html"] == "runs/digits_test/report.html"


def test_report_command_bad_input_keeps_old_page(run_dir, tmp_path):
    before = (run_dir / "report.html").read_text()
    (run_dir / "report.json").write_text("{not json")
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 2
    assert "not valid JSON" in result.stderr and "Traceback" not in result.stderr
    assert (run_dir / "report.html").read_text() == before
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".report")) == []

    result = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "run directory not found" in result.stderr


def test_failed_target_is_rendered_with_its_error(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    failed = dict(report["targets"][0], name="tflite-int8", format="tflite", precision="int8", status="failed",
                  error="tflite-int8: top-1 0.1000 is 89.00 pt below the torch model's. Fix: <calibrate>")
    for k in ("verify", "size_bytes", "artifact", "files"):
        failed.pop(k)
    report["targets"].append(failed)
    record = RunRecord.model_validate(report)
    record.budgets = budgets.evaluate(record, "host")
    page = render_html(record)
    assert "tflite-int8: top-1 0.1000 is 89.00 pt below" in page
    assert "&lt;calibrate&gt;" in page and "<calibrate>" not in page  # text from report.json is escaped
    assert "Not in the accuracy/latency plot (failed or not measured): tflite-int8" in page
    assert "1/2" in page  # targets verified


def test_pareto_front():
    # (latency, accuracy): the slow inaccurate point and the dominated one are off the front
    pts = [(1.0, 0.90), (2.0, 0.95), (3.0, 0.93), (0.5, 0.80), (4.0, 0.96), (2.0, 0.94)]
    assert pareto_front(pts) == [3, 0, 1, 4]


# ---------------------------------------------------------------- in a real browser
def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: `apt-get install chromium` (scripts/bootstrap.sh test does)"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={user_data}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    page = run_dir / "report.html"

    # 1. the DOM after load: tables present, every image decoded by the browser with a real size
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", """<script>
      window.addEventListener('load', () => {
        const imgs = [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]);
        const rows = [...document.querySelectorAll('table')].map(t => t.rows.length);
        document.body.setAttribute('data-probe', JSON.stringify({imgs, rows}));
      });</script></body>"""))
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri(), user_data=tmp_path / "ud1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r"data-probe=\"([^\"]+)\"", dom.stdout)
    assert found, dom.stdout[:2000]
    probe_data = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(probe_data["imgs"]) == 4
    assert all(done and w > 300 and h > 100 for done, w, h in probe_data["imgs"]), probe_data
    # stages (header + baseline), targets (header + 1), measurements, budgets: all rendered as tables
    assert len(probe_data["rows"]) >= 4 and all(n >= 2 for n in probe_data["rows"])
    for heading in ("Stages", "Targets", "Measurements", "Budgets", "Plots"):
        assert f"<h2>{heading}</h2>" in dom.stdout

    # 2. a screenshot of the page as it is: the right size and not blank
    shot = tmp_path / "report.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri(), user_data=tmp_path / "ud2")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    im = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert im.shape == (2400, 1200, 3)
    ink = (im.sum(axis=2) < 600)  # darker than light grey: text, lines, bars
    assert ink.mean() > 0.01, "the screenshot is (nearly) blank"
    colour = (im.max(axis=2) - im.min(axis=2)) > 60  # saturated pixels: badges, plot markers, bars
    assert colour.sum() > 2000
    # ink all over the page's height, not only at the top
    rows_with_ink = ink.any(axis=1)
    assert rows_with_ink[:800].mean() > 0.2 and rows_with_ink[800:1600].mean() > 0.2


def test_the_speed_cell_marks_a_quantized_target_slower_than_its_fp32_only():
    """report.html puts the speed ratios under the size ratios; red (class slow) for an INT8 file slower than its own
    model's FP32, not for an FP16 one at the same ratio (a size format on most CPUs), and a failed timing named."""
    from edgeship.record import SpeedVsFP32
    from edgeship.report.html import speed_cell
    from helpers import run_record

    t = run_record(targets=[{"name": "a", "format": "openvino", "precision": "int8", "status": "ok"}]).targets[0]
    assert speed_cell(t) == ""  # never timed: nothing under the size
    t.speed_vs_fp32 = SpeedVsFP32(threads=1, processes=3, input_model=2.5, compressed_model=0.99)
    assert speed_cell(t) == '<br><span class="slow">speed 2.50x / 0.99x (3 processes, 1 thread)</span>'
    t.precision = "fp16"
    assert 'class="note">speed 2.50x / 0.99x' in speed_cell(t)
    t.speed_vs_fp32 = SpeedVsFP32(threads=2, processes=3, error="the runtime refused it")
    assert "speed: not timed (the runtime refused it)" in speed_cell(t)
