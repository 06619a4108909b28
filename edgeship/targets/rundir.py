"""A finished run directory as the measurement and budget commands see it: report.json, the OK
artifacts under targets/<name>/ and the recipe's target specs. report.json is rewritten atomically
(temporary file in the same directory, then os.replace) so a reader never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edgeship.errors import EdgeshipError

SOURCES = ("host", "device", "estimate")


@dataclass
class RunArtifact:
    name: str
    device: str
    format: str
    precision: str
    dir: Path
    files: list[str]  # relative to dir, model.json included
    main: str


def resolve(run: Path | str) -> Path:
    """A run directory, or a run name under ./runs/."""
    p = Path(run)
    if not p.is_dir() and not p.is_absolute() and (Path("runs") / p).is_dir():
        p = Path("runs") / p
    if not p.is_dir():
        raise EdgeshipError(f"run directory not found: {run}", "give the directory `edgeship export` wrote (recipe `output:`)")
    if not (p / "report.json").is_file():
        raise EdgeshipError(f"{p} has no report.json", "run `edgeship export RECIPE` first; it writes the run directory")
    return p


def load_report(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "report.json").read_text())
    except json.JSONDecodeError as e:
        raise EdgeshipError(f"{run_dir}/report.json is not valid JSON ({e.msg} at line {e.lineno})",
                            "rerun `edgeship export` to rewrite it") from None


def write_report(run_dir: Path, report: dict) -> None:
    run_dir = Path(run_dir)
    fd, tmp = tempfile.mkstemp(prefix=".report.", suffix=".json.tmp", dir=run_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=2, default=str)
        os.chmod(tmp, 0o644)
        os.replace(tmp, run_dir / "report.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def artifacts(run_dir: Path, report: dict, only: Optional[list[str]] = None) -> list[RunArtifact]:
    """The run's OK artifacts (optionally only the named targets); none at all is bad input."""
    targets = report.get("targets") or []
    if only:
        unknown = sorted(set(only) - {t["name"] for t in targets})
        if unknown:
            raise EdgeshipError(f"no target named {', '.join(unknown)} in {run_dir}",
                                f"use one of: {', '.join(t['name'] for t in targets) or '(the run has none)'}")
        targets = [t for t in targets if t["name"] in only]
    found = []
    for t in targets:
        d = Path(run_dir) / "targets" / t["name"]
        if t.get("status") != "ok" or not (d / "model.json").is_file():
            continue
        meta = json.loads((d / "model.json").read_text())
        found.append(RunArtifact(t["name"], t.get("device", "host"), t["format"], t["precision"], d,
                                 list(meta.get("files") or [meta["main"], "model.json"]), meta["main"]))
    if not found:
        raise EdgeshipError(f"{run_dir} has no artifacts to measure"
                            + (f" among {', '.join(only)}" if only else ""),
                            "run `edgeship export RECIPE` and check that at least one target succeeded")
    return found


def store(report: dict, target: str, measurement: dict) -> None:
    """Keep ``measurement`` under measurements[target][source]; a stale error for the same pair goes."""
    source = measurement["source"]
    report.setdefault("measurements", {}).setdefault(target, {})[source] = measurement
    errors = report.get("measurement_errors") or {}
    if source in (errors.get(target) or {}):
        del errors[target][source]
        if not errors[target]:
            del errors[target]
