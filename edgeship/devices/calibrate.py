"""`edgeship profile RUN --calibrate`: build a device's kernel data set and fit its latency predictor.

For each runtime and precision asked for (those of the run's targets) and each thread count:

1. **Probes.** Kernel configurations are drawn from the kernels of random architectures (``archs.random_arch``,
   a seed range of their own), stratified by work per kernel type, and each becomes a one-kernel model lowered by
   the format's own backend, as an artifact is (OpenVINO INT8 probes are the ONNX INT8 probe read by OpenVINO, the
   route QAT artifacts take: NNCF per probe would cost seconds each).
   Random 1-D architectures (``archs.random_arch_1d``: audio and sensor models) give the 1-D convolutions' probes
   (on ``ONE_D_FORMATS``).
2. **Architectures.** Random architectures (other seeds) lowered the same way: ``fit`` of them fit the linear
   correction from the kernel sum to a model's latency, ``validate`` others measure the predictor's error; a fifth
   as many 1-D ones join each set (``ONE_D_SHARE``, on ``ONE_D_FORMATS``).
3. **Measurement** on the device: on this machine, over SSH, or (TFLite only) over adb with ``benchmark_model``.
   Over SSH and here, one process per thread count times every probe interleaved (``bench_runner.py --many``),
   ahead of other users' work where it may (``--priority``): the predictor predicts what the device does when
   the model has it, not what a busy shared machine lets it do. The architectures are timed in ``arch_repeats``
   processes of their own. **Anchors**: three fixed architectures (``anchor_archs``) are timed in every chunk of
   every process; each chunk is scaled by how fast its anchors ran against their median over the whole
   calibration (``anchors.normalize``). A machine whose speed drifts (this VM: +-10 % between processes a minute
   apart, while models timed side by side keep their ratios within about 1 %) then gives probes and architectures
   in one currency: the predictor predicts the device at its median speed. An architecture process or a chunk of
   probes whose anchors ran over 1.25x the device's fast state is measured again (``anchors.steady``): a device in
   another state, not a slower copy of the same one (this VM's 2-thread processes: 1.41-1.69x, their
   2-thread/1-thread ratios moved); a configuration whose anchors run 1.25x faster once all are measured, again.
   Where the runtime's per-layer counters can be matched to kernels (OpenVINO, ONNX Runtime, LiteRT through its C
   API's profiler, over adb through benchmark_model's op profiling: ``in_context``),
   the fitting architectures are also run once with them, in a process of their own: each kernel's time inside a
   model.
4. **Fit** (``fitting``): a forest per kernel type on log latency (a random forest on the in-context times where a
   type has enough of them, else extremely randomized trees on the probes), the correction (at more threads on the
   same runtime's one-thread prediction, measured first), the error on the validation set
   against each process's own unscaled timing (so the stated error holds the device's drift as a user meets it);
   written to ``predictors/<device>.json`` (``edgeship.devices.predictor``) with the anchors' median latencies.

Everything is built in a temporary directory and removed; only the predictor file is written (atomically).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from edgeship.calibration.preprocess import Preprocessing
from edgeship.calibration.quant import QuantSettings
from edgeship.devices import android, in_context, remote
from edgeship.devices import predictor as pred
from edgeship.devices.anchors import chunk_speed, faster_later, normalize, process_speed, steady
from edgeship.devices.bench_runner import device_facts
from edgeship.devices.fitting import fit
from edgeship.devices.kernels import ACTS, KERNEL_TYPES, ONE_D, Kernel, read
from edgeship.devices.measure import RUNNER, parse_runner_output
from edgeship.errors import EdgeshipError
from edgeship.progress import info
from edgeship.recipe import IOInput, IOOutput, IOSpec, TargetSpec
from edgeship.targets.base import Artifact, LowerContext, get_backend
from edgeship.targets.openvino import RUNTIME_CONFIG

# probes per kernel type, as fractions of the total asked for (the 1-D convolutions on top of the 2-D ones' share)
SHARE = {"conv": 0.45, "dwconv": 0.22, "add": 0.08, "gpool": 0.07, "pool": 0.06, "fc": 0.12, "conv1d": 0.08,
         "dwconv1d": 0.05, "eltwise": 0.12}
SEEDS = {"pool": 100_000, "pool1d": 150_000, "fit": 200_000, "fit1d": 250_000, "validate": 300_000,
         "validate1d": 350_000, "anchor": 500_000}  # disjoint seed ranges
ONE_D_SHARE = 0.2  # 1-D architectures (``archs.random_arch_1d``) beside the fitting and validation ones, per 2-D one
# but never fewer 1-D validation architectures than a 1-D model's stated error needs (``predictor.MIN_FAMILY_ARCHS``,
# with room for a few a converter refuses)
VALIDATE_1D = pred.MIN_FAMILY_ARCHS + 4
# formats whose calibration holds 1-D convolutions: all three (TFLite's since its torch.fx lowering takes Conv1d
# models: a median 1.3 s FP32 / 2.2 s INT8 per model against litert-torch's 7.8 / 11.7 s, tflite_1d.json)
ONE_D_FORMATS = ("onnx", "openvino", "tflite")
# formats whose calibration holds ``eltwise`` kernels: probes of them, and fitting and validation architectures with
# their extras (``archs.EXTRAS``). LiteRT's alone: calibrated so, 30 unseen architectures (22 with extras) landed 90 %
# within +-10 % (MAPE 4.3 %) at one thread; ONNX Runtime's went to 57 % (INT8; 13.9 %) and 67 % (FP32; 9.9 %),
# OpenVINO's to 73 % (9.9 %), where those without extras stayed 75-100 % within (predictor_eltwise_zen5.json): their
# PReLU models were under-predicted by 50-60 % (a probe times a PReLU alone; inside an ONNX Runtime INT8 model it
# runs between a dequantize and a quantize), transposes and softmax heads off by 20-30 %. ONNX Runtime's PRelu
# kernel branches per element: its time follows the signs of its input, 0.28-3.8 ns per element, which no shape
# tells (prelu_ort.json; the fitting architectures' counters spread so); large ones are now rewritten
# (targets.onnx_prelu). Calibrated again with them and the Zen 4 EPYC's p40 architectures (predictor_ort_eltwise_
# zen4_p41.json), ONNX Runtime at one thread still did worse than left out: INT8 60 % within (13.3 %) against 87 %,
# FP32 73 % (8.2 %) against 93 %. Their element-wise operators stay left out, named by class
ELTWISE_FORMATS = ("tflite",)
ANCHORS = 3
ANCHOR_MACS = (2e6, 3e7)  # anchors busy enough to feel the arithmetic units' speed, short enough to time often
EXT = {"onnx": "onnx", "openvino": "xml", "tflite": "tflite"}
PROFILE_RUNS = 100  # runs with per-layer counters of each fitting architecture (in_context)


@dataclass
class Plan:
    device: str
    configs: list[tuple[str, str]]  # (format, precision)
    threads: list[int]
    probes: int = 400
    fit: int = 20
    validate: int = 20
    runs: int = 20
    rounds: int = 3
    arch_repeats: int = 3  # processes timing the architectures (each its own moment of the device's speed)
    seed: int = 0
    ssh: remote.SshTarget | None = None
    adb: android.AdbTarget | None = None
    directory: Path | None = None  # where predictors/<device>.json goes
    keep: Path | None = None  # also write each configuration's kernel data set here (JSON)
    log: Callable[[str], None] = info
    timings: dict = field(default_factory=dict)


# ---------------------------------------------------------------- what to measure
def probe_kernels(n: int, seed: int = 0) -> list[Kernel]:
    """``n`` kernel configurations drawn from the kernels of random architectures and of deployment-size ones
    (``archs.deployment_archs``), spread over each type's work; each convolution with an activation drawn from
    ``ACTS`` (a runtime may not fuse them all alike)."""
    from edgeship.devices.archs import deployment_archs, random_arch  # torch: only calibration builds models

    pool: dict[str, set[Kernel]] = {t: set() for t in KERNEL_TYPES}
    # the convolutions' shapes, as architectures without their extras hold them (``eltwise`` probes drawn below)
    models = [(a.model, a.input_shape) for a in (random_arch(SEEDS["pool"] + seed * 1000 + i, extras=False)
                                                 for i in range(120))]
    models += [(a.model, a.input_shape) for a in (random_arch(SEEDS["pool1d"] + seed * 1000 + i, one_d=True,
                                                              extras=False) for i in range(60))]
    for model, shape in models + deployment_archs():
        for k in _torch_kernels(model, shape):
            pool[k.type].add(k)
    rng, classes = random.Random(seed), random.Random(f"eltwise {seed}")  # (the others' draws as before them)
    for k in sorted({*pool["conv"], *pool["dwconv"], *pool["conv1d"]}, key=lambda k: tuple(k.to_dict().values())):
        pool["eltwise"].add(Kernel("eltwise", k.hout, k.wout, k.cout, k.cout, classes.randint(1, 4)))  # over the maps
        # convolutions give, of each class
    for c in (8, 16, 32, 64, 128, 256):  # the poolings the architectures seldom hold, at assorted sizes
        h = rng.choice((4, 8, 14, 28, 56, 112))
        pool["pool"].add(Kernel("pool", h, h, c, c, 2, 2))
    chosen: list[Kernel] = []
    for t in KERNEL_TYPES:
        items = sorted(pool[t], key=lambda k: (k.macs, k.hin * k.win * k.cin))
        want = max(4, round(n * SHARE[t]))
        if len(items) <= want:
            chosen += items
            continue
        step = len(items) / want  # stratified by work: one per equal slice of the sorted list
        chosen += [items[min(len(items) - 1, int(i * step + rng.random() * step))] for i in range(want)]
    # and each class over a classifier's (batch, features) output, which the maps' stratification would not draw
    sizes = classes.sample((2, 10, 64, 360, 1000), 4)
    chosen += [Kernel("eltwise", 1, 1, c, c, cls) for cls, c in zip((1, 2, 3, 4), sizes)]
    acts = sorted(ACTS.values())
    return [replace(k, act=rng.choice(acts)) if k.type in ("conv", "dwconv", *ONE_D) else k for k in chosen]


def _torch_kernels(model, input_shape: tuple[int, ...]) -> list[Kernel]:
    """The kernels of a torch model, read with forward hooks (sampling only: an artifact's kernels are read from
    its file)."""
    import torch  # heavy: calibration only
    from torch import nn

    from edgeship.devices.archs import residual_blocks

    found: list[Kernel] = []

    def hook(m, inputs, out):
        x = inputs[0].shape
        if isinstance(m, nn.Conv2d):
            found.append(Kernel("dwconv" if m.groups > 1 else "conv", x[2], x[3], x[1], m.out_channels,
                                m.kernel_size[0], m.stride[0]))
        elif isinstance(m, nn.Conv1d):
            found.append(Kernel("dwconv1d" if m.groups > 1 else "conv1d", x[2], 1, x[1], m.out_channels,
                                m.kernel_size[0], m.stride[0]))
        elif isinstance(m, nn.AdaptiveAvgPool1d):
            found.append(Kernel("gpool", x[2], 1, x[1], x[1]))
        elif isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):  # a 1-D one along the length, as the readers give it
            found.append(Kernel("pool", x[2], x[3] if len(x) == 4 else 1, x[1], x[1], int(m.kernel_size),
                                int(m.stride)))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            found.append(Kernel("gpool", x[2], x[3], x[1], x[1]))
        elif isinstance(m, nn.Linear):
            found.append(Kernel("fc", cin=m.in_features, cout=m.out_features))
        elif isinstance(m, residual_blocks()) and getattr(m, "use_res", True):
            y = out.shape
            found.append(Kernel("add", y[2], y[3] if len(y) == 4 else 1, y[1], y[1]))

    kinds = (nn.Conv1d, nn.Conv2d, nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Linear,
             *residual_blocks())
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        model(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return found


def anchor_archs(n: int = ANCHORS) -> list:
    """The calibration's anchors: the first ``n`` random architectures of their seed range whose MACs lie in
    ``ANCHOR_MACS`` (deterministic: a benchmark lowers the same ones to read a later run against the predictor)."""
    from edgeship.devices.archs import macs, random_arch  # torch: only calibration builds models

    found, seed = [], SEEDS["anchor"]
    while len(found) < n:
        a = random_arch(seed, extras=False)  # the anchors of files calibrated before ``archs.EXTRAS``
        if ANCHOR_MACS[0] <= macs(a.model, a.input_shape) <= ANCHOR_MACS[1]:
            found.append(a)
        seed += 1
    return found


# ---------------------------------------------------------------- lowering
def lower_anchors(configs: list[tuple[str, str]], directory: Path, work: Path) -> None:
    """The anchors lowered as calibration lowers them, into ``directory/_anchor<i>-<format>-<precision>``: a
    later measurement times them beside its models to read them against the predictor's speed."""
    for i, a in enumerate(anchor_archs()):
        for fmt, precision in configs:
            lower(a.model, a.input_shape, fmt, precision, directory / f"_anchor{i}-{fmt}-{precision}", f"anchor{i}",
                  work)


def _context(name: str, fmt: str, precision: str, input_shape: tuple[int, ...], work: Path, seed: int):
    """A lowering context of random calibration samples; a (channels, length) input declares its layout, as a 1-D
    model's recipe does in ``io:``."""
    calib = np.random.default_rng(seed).standard_normal((64, *input_shape)).astype(np.float32)
    io = None if len(input_shape) == 3 else IOSpec(inputs=[IOInput(name="x", shape=list(input_shape), layout="NCL")],
                                                   outputs=[IOOutput(name="logits")])
    return LowerContext(target=TargetSpec(name=name, format=fmt, precision=precision), input_shape=input_shape,
                        calib=calib, preprocessing=Preprocessing(), labels=tuple(str(i) for i in range(10)),
                        quant=QuantSettings(), log_path=work / f"{name}.log", work_dir=work, threads=1, io=io)


def lower(model, input_shape: tuple[int, ...], fmt: str, precision: str, out_dir: Path, name: str,
          work: Path, seed: int = 0, via_onnx: Path | None = None) -> Path:
    """Lower ``model`` with the format's backend into ``out_dir`` (an artifact directory with model.json)."""
    out_dir.mkdir(parents=True)
    if via_onnx is not None:  # OpenVINO INT8 probe: the QDQ ONNX probe read by OpenVINO
        import openvino as ov  # heavy: calibration only

        ov.save_model(ov.convert_model(str(via_onnx)), str(out_dir / "model.xml"), compress_to_fp16=False)
        Artifact(name, fmt, precision, out_dir, "model.xml", ["model.xml", "model.bin"],
                 {"runtime_config": RUNTIME_CONFIG}).write_sidecar()
        return out_dir
    from edgeship.models.polyphase import prepare  # imports torch: lowering only

    ctx = _context(name, fmt, precision, input_shape, work, seed)
    backend = get_backend(fmt, precision)
    backend.lower(prepare(model, ctx, backend.polyphase_taps.get(precision)), ctx, out_dir)
    return out_dir


def validate_1d(validate: int) -> int:
    """The 1-D validation architectures beside ``validate`` 2-D ones: as many, up to ``VALIDATE_1D``, and never
    fewer than ``ONE_D_SHARE`` of them (a quick calibration of 3 and 3 architectures validates 3 1-D ones)."""
    return max(round(validate * ONE_D_SHARE), min(validate, VALIDATE_1D))


def build(plan: Plan, work: Path) -> dict[tuple[str, str], dict[str, Path]]:
    """Lower every probe and architecture for every configuration: {config: {"probes": dir, "archs": dir}}."""
    import shutil

    from edgeship.devices.archs import probe, random_arch  # torch: only calibration builds models

    t0 = time.time()
    anchors = anchor_archs()
    ks = probe_kernels(plan.probes, plan.seed)
    arch_seeds = [("fit", SEEDS["fit"] + i) for i in range(plan.fit)] + \
                 [("val", SEEDS["validate"] + i) for i in range(plan.validate)] + \
                 [("fit1d", SEEDS["fit1d"] + i) for i in range(round(plan.fit * ONE_D_SHARE))] + \
                 [("val1d", SEEDS["validate1d"] + i) for i in range(validate_1d(plan.validate))]
    need = list(plan.configs)
    if ("openvino", "int8") in need and ("onnx", "int8") not in need:
        need.insert(0, ("onnx", "int8"))  # the OpenVINO INT8 probes are read from these
    # with and without extras, each only where a format lowered takes it (ELTWISE_FORMATS)
    archs = {extras: {f"{kind}{seed}": random_arch(seed, one_d=kind.endswith("1d"), extras=extras)
                      for kind, seed in arch_seeds} for extras in {fmt in ELTWISE_FORMATS for fmt, _ in need}}
    plan.timings["sample_s"] = round(time.time() - t0, 1)
    dirs: dict[tuple[str, str], dict[str, Path]] = {}
    for fmt, precision in sorted(need, key=lambda c: c != ("onnx", "int8")):
        t0 = time.time()
        root = work / f"{fmt}-{precision}"
        dirs[(fmt, precision)] = {"probes": root / "probes", "archs": root / "archs"}
        n_probes = sum(_probed(k, fmt) for k in ks)
        n_archs = sum(len(a.input_shape) == 3 or fmt in ONE_D_FORMATS for a in archs[fmt in ELTWISE_FORMATS].values())
        plan.log(f"calibration: lowering {n_probes} probes and {n_archs} architectures to {fmt} {precision}")
        for i, k in enumerate(ks):
            name = f"p{i:04d}"
            if not _probed(k, fmt):
                continue
            onnx_probe = work / "onnx-int8" / "probes" / name / "model.onnx"
            via = onnx_probe if (fmt, precision) == ("openvino", "int8") and onnx_probe.is_file() else None
            m, shape = probe(k)
            if _lower_or_skip(plan, m, shape, fmt, precision, root / "probes" / name, name, work, via):
                (root / "probes" / name / "kernel.json").write_text(json.dumps(k.to_dict()))
        for name, a in archs[fmt in ELTWISE_FORMATS].items():
            if len(a.input_shape) == 3 or fmt in ONE_D_FORMATS:
                _lower_or_skip(plan, a.model, a.input_shape, fmt, precision, root / "archs" / name, name, work, None)
        for i, a in enumerate(anchors):  # timed beside everything: a converter refusing one is an error
            name = f"_anchor{i}"
            lower(a.model, a.input_shape, fmt, precision, root / "anchors" / name, f"anchor{i}", work)
            for kind in ("probes", "archs"):
                shutil.copytree(root / "anchors" / name, root / kind / name)
        plan.timings[f"lower_{fmt}_{precision}_s"] = round(time.time() - t0, 1)
    return {c: d for c, d in dirs.items() if c in plan.configs}


def _probed(k: Kernel, fmt: str) -> bool:
    """Whether a calibration of ``fmt`` probes kernels of ``k``'s type (``ONE_D_FORMATS``, ``ELTWISE_FORMATS``)."""
    return (k.type not in ONE_D or fmt in ONE_D_FORMATS) and (k.type != "eltwise" or fmt in ELTWISE_FORMATS)


def _lower_or_skip(plan: Plan, model, shape, fmt, precision, out: Path, name: str, work: Path, via) -> bool:
    try:
        lower(model, shape, fmt, precision, out, name, work, via_onnx=via)
        return True
    except Exception as e:  # a converter refusing one sampled configuration leaves it out, said in the log
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        plan.log(f"[yellow]calibration: {fmt} {precision} {name} not lowered ({type(e).__name__}: "
                 f"{' '.join(str(e).split())[:160]}); left out[/yellow]")
        return False


# ---------------------------------------------------------------- measuring
def measure_many(plan: Plan, directory: Path, threads: int, seed: int = 0) -> dict:
    """The runner's output for every artifact under ``directory`` timed on the device: ``results`` {artifact
    directory name: runner summary} (those the runtime refused left out), ``anchors`` (per chunk)."""
    if plan.adb is not None:
        return {"results": android.time_many(directory, plan.device, plan.adb, threads, plan.runs * plan.rounds),
                "anchors": []}
    raw = _many(plan, directory, threads, ["--runs", str(plan.runs), "--rounds", str(plan.rounds), "--warmup", "3",
                                            "--seed", str(plan.seed + seed)])
    plan.timings["priority"] = raw.get("priority")
    refused = {k: str(v["error"])[:300] for k, v in raw["results"].items() if "error" in v}
    for k, e in refused.items():
        plan.log(f"[yellow]calibration: the runtime refused {k} ({' '.join(e.split())[:160]}); left out[/yellow]")
    return {"results": {k: v for k, v in raw["results"].items() if "error" not in v},
            "anchors": raw.get("anchors") or [], "refused": refused}


def _many(plan: Plan, directory: Path, threads: int, args: list[str]) -> dict:
    """``bench_runner.py --many directory`` on the device (here or over SSH), its parsed output."""
    args = ["--threads", str(threads), *args, "--priority"]
    if plan.ssh is not None:
        return remote.bench_many_ssh(directory, plan.ssh, args, timeout=7200)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="3")
    p = subprocess.run([sys.executable, str(RUNNER), "--many", str(directory), *args], capture_output=True,
                       text=True, env=env, timeout=7200)
    raw = parse_runner_output(p.stdout)
    if p.returncode != 0 or not raw or not raw.get("ok"):
        msg = (raw or {}).get("message") or (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeshipError(f"calibration: the probe benchmark failed on this machine: {msg}",
                            "check that the runtimes import (edgeship devices)")
    return raw


# ---------------------------------------------------------------- the kernel data set, and fitting it
def dataset(plan: Plan, fmt: str, threads: int, dirs: dict[str, Path]) -> dict:
    """Measure one configuration's probes and architectures on the device: the kernel data set
    {"anchors": {name: reference p50 ms}, "probes": [{kernel, kernels (as the runtime's graph holds them), p50_ms,
    p90_ms, speed}], "archs": [{name, role, kernels, p50_ms, p90_ms (medians over the processes, scaled to the
    reference speed), raw_p50_ms, raw_p90_ms, speed (one per process)}], "processes_set_aside": [{process,
    attempt, speed}]}: an architecture process that ran in a slower state of the device is measured again
    (``anchors.steady``)."""
    raws = [measure_many(plan, dirs["probes"], threads)]
    raws += [measure_many(plan, dirs["archs"], threads, seed=1 + r) for r in range(max(1, plan.arch_repeats))]
    raws, aside = steady(raws, lambda i, attempt: measure_many(plan, dirs["archs"], threads,
                                                               seed=i + 1000 * (1 + attempt)),
                         again_probes=lambda names, attempt: measure_many(
                             plan, _subset(dirs["probes"], names, f"again-{attempt}"), threads, seed=2000 + attempt))
    (probes, *archs), reference = normalize(raws)
    data: dict = {"anchors": reference, "probes": [], "archs": [], "processes_set_aside": aside,
                  "refused": {k: e for raw in raws for k, e in (raw.get("refused") or {}).items()}}

    def graph(kind: str, name: str) -> tuple[list[dict], dict[str, int]]:
        d = dirs[kind] / name
        ks, unmodelled = read(d / json.loads((d / "model.json").read_text())["main"], fmt)
        return [k.to_dict() for k in ks], unmodelled

    for name, r in sorted(probes.items()):
        data["probes"].append({"name": name, "kernels": graph("probes", name)[0], "p50_ms": r["p50_ms"],
                               "p90_ms": r["p90_ms"], "mean_ms": r.get("mean_ms") or r["p50_ms"],
                               "speed": r["speed"],
                               "kernel": json.loads((dirs["probes"] / name / "kernel.json").read_text())})
    layers = measure_layers(plan, fmt, dirs["archs"], threads)
    for name in sorted(set().union(*archs)):
        reps = [a[name] for a in archs if name in a]
        ks, unmodelled = graph("archs", name)
        data["archs"].append({"name": name, "role": "fit" if name.startswith("fit") else "validate",
                              "kernels": ks, "unmodelled": unmodelled, **({"layers": layers[name]} if name in layers
                                                                          else {}),
                              "p50_ms": float(np.median([r["p50_ms"] for r in reps])),
                              "p90_ms": float(np.median([r["p90_ms"] for r in reps])),
                              "raw_p50_ms": [r["raw_p50_ms"] for r in reps],
                              "raw_p90_ms": [r["raw_p90_ms"] for r in reps],
                              "speed": [r["speed"] for r in reps]})
    return data


def _subset(directory: Path, names: list[str], tag: str) -> Path:
    """A copy beside ``directory`` (replaced if there) of its anchors and ``names``, in the temporary directory."""
    shutil.rmtree(sub := directory.parent / f"{directory.name}-{tag}", ignore_errors=True)
    for name in [*(d.name for d in directory.iterdir() if d.name.startswith("_anchor")), *names]:
        shutil.copytree(directory / name, sub / name)
    sub.mkdir(exist_ok=True)
    return sub


def measure_layers(plan: Plan, fmt: str, archs: Path, threads: int) -> dict[str, list[dict]]:
    """The per-layer counters of the fitting architectures on the device ({name: layer rows}), for the formats whose
    counters are matched to kernels (``in_context.FORMATS``; over adb, benchmark_model's op profiling). A copy of
    them is profiled in a process of its own: counters slow every run, so the timed processes never hold them."""
    if fmt not in in_context.FORMATS:
        return {}
    if plan.adb is not None:
        return android.time_layers(archs, plan.device, plan.adb, threads, PROFILE_RUNS)
    todo = archs.parent / f"{archs.name}-layers-{threads}"
    for d in archs.iterdir():
        if d.name.startswith("fit") and (d / "model.json").is_file():
            shutil.copytree(d, todo / d.name)
    if not todo.is_dir():
        return {}
    try:
        raw = _many(plan, todo, threads, ["--profile", str(PROFILE_RUNS), "--warmup", "20"])
    except EdgeshipError as e:  # the kernels then keep the probes' forests: said, not fatal
        plan.log(f"[yellow]calibration: per-layer counters of {fmt} at {threads} thread(s) failed ({e.problem}); "
                 "the probes' forests are used[/yellow]")
        return {}
    finally:
        shutil.rmtree(todo, ignore_errors=True)
    return {k: v["layers"] for k, v in raw["results"].items() if "layers" in v}


def l2_cache_kb(cpu: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> int | None:
    """One core's L2 cache in KiB, from this machine's sysfs (None where the kernel does not say)."""
    for index in sorted(cpu.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2" and (index / "type").read_text().strip() != "Instruction":
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * (1024 if size[-1] == "M" else 1) if size[-1] in "KM" else int(size) // 1024
        except (OSError, ValueError):
            continue
    return None


def calibrate(plan: Plan) -> tuple[pred.PredictorFile, Path]:
    """Build, measure and fit every configuration of ``plan``; write and return the device's predictor file
    (configurations calibrated before and not redone here are kept)."""
    if plan.adb is not None and any(f != "tflite" for f, _ in plan.configs):
        raise EdgeshipError("calibration over adb measures TFLite only (benchmark_model)",
                            "calibrate the TFLite targets (-t) or measure the others over --ssh")
    facts = remote.ssh_facts(plan.ssh) if plan.ssh is not None else {} if plan.adb is not None else device_facts()
    local = plan.ssh is None and plan.adb is None
    pf = pred.load(plan.device, plan.directory, stale_ok=True) or pred.new_file(plan.device, facts)
    pf.facts = facts or pf.facts
    with tempfile.TemporaryDirectory(prefix="edgeship-calibrate-") as tmp:
        dirs = build(plan, Path(tmp))
        measured: dict[tuple[str, str, int], tuple[dict, float]] = {}  # the data set in use, and its seconds
        for (fmt, precision), d in dirs.items():
            for threads in sorted(plan.threads):  # one thread first: the others' correction scales its prediction
                measured[fmt, precision, threads] = _configuration(plan, pf, fmt, precision, threads, d, local,
                                                                   measured)
        speeds, rebased = [], set()
        for (fmt, precision, threads), (data, seconds) in measured.items():
            if plan.adb is not None:  # no anchors over adb
                break
            later = measure_many(plan, _subset(dirs[fmt, precision]["archs"], [], "later"), threads)
            speeds.append(f"{fmt} {precision} {threads}t {process_speed(later, data['anchors']):.2f}x")
            if (speed := faster_later(data["anchors"], later)) is not None:
                plan.log(f"calibration: {fmt} {precision} {threads}t: its anchors ran at {speed:.2f}x their "
                         "calibration time when timed again after every configuration: it was measured in a slower "
                         "state of the device throughout; measuring it again")
                key = pred.key(fmt, precision, threads)
                first = pf.configs[key]
                again, after = _configuration(plan, pf, fmt, precision, threads, dirs[fmt, precision], local,
                                              measured, seconds, speed)
                if chunk_speed({n: {"p50_ms": v} for n, v in again["anchors"].items()}, data["anchors"]) < 1:
                    measured[fmt, precision, threads] = again, after
                    rebased |= {(fmt, precision)} if threads == 1 else set()
                else:
                    first.calibration_s, pf.configs[key] = pf.configs[key].calibration_s, first
                    _keep(plan, fmt, precision, threads, {**data, "measured_again": {**again["measured_again"],
                                                                                     "kept": "first"}})
                    plan.log(f"calibration: {fmt} {precision} {threads}t: measured again no faster: the first "
                             "measurement kept")
        for (fmt, precision, threads), (data, _) in measured.items():  # their one-thread prediction changed
            if (fmt, precision) in rebased and threads > 1:
                seconds = pf.configs[pred.key(fmt, precision, threads)].calibration_s
                pf.configs[pred.key(fmt, precision, threads)] = _fit(plan, data, fmt, precision, threads, local,
                                                                     pf, measured)
                pf.configs[pred.key(fmt, precision, threads)].calibration_s = seconds
        if speeds:
            plan.log("calibration: the anchors timed again once every configuration was measured, against their "
                     f"time in its calibration: {', '.join(speeds)}")
    path = pf.save(pred.path_for(plan.device, plan.directory))
    return pf, path


def _keep(plan: Plan, fmt: str, precision: str, threads: int, data: dict) -> None:
    if plan.keep is not None:
        plan.keep.mkdir(parents=True, exist_ok=True)
        (plan.keep / f"{fmt}-{precision}-{threads}.json").write_text(json.dumps(data))


def _fit(plan: Plan, data: dict, fmt: str, precision: str, threads: int, local: bool, pf: pred.PredictorFile,
         measured: dict) -> pred.ConfigPredictor:
    """One configuration fitted; at more threads on the one-thread configuration's prediction where it was measured
    in this calibration (``fitting.fit``'s ``base``). The cache size is read here only (over SSH or adb the term
    is left out)."""
    one = measured.get((fmt, precision, 1)) if threads > 1 else None
    return fit(data, fmt, precision, threads, plan.seed, l2_cache_kb() if local else None,
               base=(pf.configs[pred.key(fmt, precision, 1)], one[0]) if one else None)


def _configuration(plan: Plan, pf: pred.PredictorFile, fmt: str, precision: str, threads: int, d: dict[str, Path],
                   local: bool, measured: dict, before_s: float = 0.0,
                   later: float | None = None) -> tuple[dict, float]:
    """Measure and fit one configuration into ``pf``; its kernel data set and the seconds it took (``before_s``: a
    first measurement's, ``later``: the speed that had it measured again, both kept). ``measured``: the
    configurations measured so far (their data sets)."""
    plan.log(f"calibration: measuring {fmt} {precision} at {threads} thread(s) on {plan.device}")
    t0 = time.time()
    data = dataset(plan, fmt, threads, d)
    if later is not None:
        data["measured_again"] = {"anchors_later_speed": round(later, 4), "first_s": round(before_s, 1),
                                  "kept": "again"}
    _keep(plan, fmt, precision, threads, data)
    cfg = _fit(plan, data, fmt, precision, threads, local, pf, measured)
    seconds = before_s + time.time() - t0
    cfg.calibration_s = round(seconds + plan.timings.get(f"lower_{fmt}_{precision}_s", 0), 1)
    pf.configs[pred.key(fmt, precision, threads)] = cfg
    e = cfg.error_p50
    aside = data["processes_set_aside"]
    chunks = [a for a in aside if "chunk" in a]
    plan.log(f"calibration: {fmt} {precision} {threads}t: p50 MAPE {e.mape_pct:.1f}%, "
             f"{e.within_10pct:.0%} within +-10% on {e.n_archs} unseen architectures ({e.n} timings); "
             + (f"{', '.join(cfg.in_context)} fitted in context (on the probes alone: p50 MAPE "
                f"{cfg.probes_mape_pct:.1f}%)" if cfg.in_context else "kernels fitted on the probes")
             + (f"; its correction scales the {cfg.base_threads}-thread prediction" if cfg.base_threads else "")
             + (f"; set aside, run in a slower state of the device and measured again: {len(aside) - len(chunks)} "
                f"process(es) of the architectures ({sum(bool(a.get('dropped')) for a in aside)} dropped, still slow "
                f"after the retries), {len(chunks)} chunk(s) of the probes (anchors at "
                f"{', '.join(str(a['speed']) for a in aside)}x its fast state)" if aside else ""))
    return data, seconds


