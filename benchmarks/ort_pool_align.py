"""ONNX Runtime INT8: a depthwise convolution read through a pool from a convolution, aligned to 16 channels with it
(``edgeship.targets.onnx_align.POOLS``), against the same file without that rule (pools stopping the alignment, as
before it).

The architectures are the predictor's random ones (``archs.random_arch``, without extras) whose stem's width is not a
multiple of 16 and feeds a max pool and then a depthwise-separable block: the first ``--archs`` from seed
``--seed`` on. In the 30 architectures of predictor_zen4_p40.json, seed 400705 (224 x 224 x 3, a stem of 8, max
pool, depthwise 8) was predicted 33 % under its ONNX Runtime INT8 time: its 3-channel stem ran unpadded (8 outputs,
under ``pad_stem_input``'s 16) and its 8-channel depthwise convolution in MLAS's generic kernel, neither of which the
calibration's architectures held much of. Each file is lowered by the ONNX INT8 backend twice (``pools``: as shipped;
``plain``: ``POOLS`` out of ``PASS_THROUGH``) and once FP32; the outputs of ``pools`` and ``plain`` on 8 random
inputs must be equal bit for bit (the widened channels are zeros).

Latency as export times INT8 against FP32 (``benchlib.time_rows``: side by side in fresh processes, 1 and 2
threads); a ratio is a contender's p50 over ``pools``'s in the same process, the median over processes and
``--repeats``.

    .venv/bin/python benchmarks/ort_pool_align.py [--archs 6] [--seed 400000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from benchlib import RESULTS, command_line, environment, loadavg, time_rows, write_json  # noqa: E402

PATTERN = re.compile(r"stem(\d+)/s\d maxpool dwsep")


def chosen(n: int, seed: int) -> list:
    """The first ``n`` random architectures from ``seed`` on whose stem (a width not a multiple of 16) feeds a max pool
    and a depthwise-separable block."""
    from edgeship.devices.archs import random_arch

    out = []
    while len(out) < n:
        a = random_arch(seed, extras=False)
        m = PATTERN.search(a.description)
        if m and int(m.group(1)) % 16:
            out.append(a)
        seed += 1
    return out


def lowered(a, work: Path) -> dict[str, Path]:
    from edgeship.devices.calibrate import lower
    from edgeship.targets import onnx_align

    dirs = {}
    shipped = onnx_align.PASS_THROUGH
    try:
        for name, fmt, precision, through in (("pools", "onnx", "int8", shipped), ("fp32", "onnx", "fp32", shipped),
                                              ("plain", "onnx", "int8", tuple(
                                                  p for p in shipped if p not in onnx_align.POOLS))):
            onnx_align.PASS_THROUGH = through
            dirs[name] = lower(a.model, a.input_shape, fmt, precision, work / f"{a.seed}-{name}", name, work, seed=0)
    finally:
        onnx_align.PASS_THROUGH = shipped
    return dirs


def outputs(d: Path, x: np.ndarray) -> np.ndarray:
    import json

    import onnxruntime as ort

    s = ort.InferenceSession(str(d / json.loads((d / "model.json").read_text())["main"]),
                             providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=400000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "ort_pool_align.json")
    args = ap.parse_args()
    from edgeship.devices.kernels import read

    t0 = time.time()
    work = Path(tempfile.mkdtemp(prefix="edgeship-pool-align-"))
    rows = []
    try:
        for a in chosen(args.archs, args.seed):
            dirs = lowered(a, work)
            x = np.random.default_rng(a.seed).standard_normal((8, *a.input_shape)).astype(np.float32)
            same = bool(np.array_equal(*(np.concatenate([outputs(dirs[k], x[i:i + 1]) for i in range(8)])
                                         for k in ("pools", "plain"))))
            convs = {k: [(k_.cin, k_.cout) for k_ in read(dirs[k] / "model.onnx", "onnx")[0]
                         if k_.type in ("conv", "dwconv")][:2] for k in ("pools", "plain")}
            timed = time_rows(dirs, "pools", args.repeats)
            rows.append({"seed": a.seed, "description": a.description, "input": list(a.input_shape),
                         "outputs_equal": same, "first_kernels_cin_cout": convs, "timing": timed})
            print(a.seed, a.description, same, convs, {t: v["p50_over_pools"] for t, v in timed.items()}, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    speed = {t: [r["timing"][t]["p50_over_pools"]["plain"]["median"] for r in rows] for t in ("1", "2")}
    write_json(args.out, {"benchmark": "ort_pool_align", "command": command_line(), "environment": environment(),
                          "loadavg_after": loadavg(), "method": {"repeats": args.repeats, "archs": args.archs,
                                                                 "seed": args.seed, "pattern": PATTERN.pattern},
                          "rows": rows,
                          "plain_over_pools_median": {t: round(statistics.median(v), 3) for t, v in speed.items()},
                          "wall_s": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
