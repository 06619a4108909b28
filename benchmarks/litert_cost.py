"""What litert-torch costs a venv: the packages only its dependency closure needs, their installed size, and the
time of `import litert_torch` after torch (docs/tflite.md cites this file).

    .venv/bin/python benchmarks/litert_cost.py            # -> benchmarks/results/litert_cost.json

"Only its closure": reachable from litert-torch's requirements (importlib.metadata, markers evaluated here) and not
from any other top-level requirement in requirements.txt. Sizes are the sums of each distribution's installed files.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from benchlib import RESULTS, ROOT, command_line, environment, loadavg, write_json
from packaging.requirements import Requirement


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requires(name: str) -> list[str]:
    try:
        reqs = metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return []
    out = []
    for r in map(Requirement, reqs):
        if r.marker is None or r.marker.evaluate({"extra": ""}):
            out.append(norm(r.name))
    return out


def closure(roots: list[str]) -> set[str]:
    seen: set[str] = set()
    todo = [norm(r) for r in roots]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += requires(n)
    return seen


def size_mb(name: str) -> float:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return 0.0
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    return total / 2**20


def main() -> None:
    tops = [norm(Requirement(line.split("#")[0].strip()).name)
            for line in (ROOT / "requirements.txt").read_text().splitlines() if line.split("#")[0].strip()]
    only = closure(["litert-torch"]) - closure([t for t in tops if t != "litert-torch"])
    rows = sorted(({"package": n, "version": metadata.version(n), "mb": round(size_mb(n), 1)} for n in only
                   if size_mb(n) > 0), key=lambda r: -r["mb"])
    before = loadavg()
    code = "import time, torch; t = time.perf_counter(); import litert_torch; print(time.perf_counter() - t)"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    write_json(RESULTS / "litert_cost.json", {
        "command": command_line(), "environment": environment(), "packages": rows, "count": len(rows),
        "total_mb": round(sum(r["mb"] for r in rows), 1),
        "import_litert_torch_after_torch_s": round(float(p.stdout.strip().splitlines()[-1]), 2),
        "process_wall_s": round(time.perf_counter() - t0, 2), "loadavg_before": before, "loadavg_after": loadavg()})
    print(f"{len(rows)} packages, {sum(r['mb'] for r in rows):.0f} MB; wrote {RESULTS / 'litert_cost.json'}")


if __name__ == "__main__":
    main()
