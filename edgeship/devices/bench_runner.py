#!/usr/bin/env python3
"""Benchmark ONE edgeship artifact in this process and print one JSON line.

Self-contained on purpose: copied to devices next to an artifact, it needs only the Python standard library, numpy
and the artifact's runtime package (onnxruntime, openvino, ai-edge-litert or tflite-runtime); never edgeship.

    python3 bench_runner.py --dir DIR [--threads N] [--runs N] [--warmup N] [--seed S]
                            [--samples SAMPLES.npz --reference HOST_OUTPUTS.npz] [--profile N]
    python3 bench_runner.py --many DIR [--threads N] [--runs N] [--rounds R] [--chunk C] | --dir DIR --thread-counts 1 2

DIR holds the artifact files and their sidecar ``model.json`` (format, main file, inputs). The input
is seeded random normal data in the model's normalized input space (quantized to the input tensor's
int8/uint8 parameters where the model takes integers; the TFLite layout comes from the interpreter).
Timing covers feeding the input, running and fetching the outputs, per run, at a fixed thread count.
``--profile N``: then N runs of a separately loaded copy with the runtime's per-layer counters (layer_profile.py).

Verification (``--samples``): after timing, the artifact runs on test-split samples the host sent (every graph
input as the backends' runners take it, one sample at a time) and the runner reports, per output, how it agrees
with the same artifact's outputs on the host (``--reference``), and the classification output's top-1, under
``"verification"``.

An emulated device says so in ``/etc/edgeship/emulated.json`` (``scripts/arm64_device.sh`` writes it): the facts
carry it as ``"emulated"`` and edgeship records such a measurement as ``emulated``, never as ``device``.

``--many DIR`` times every artifact directory under DIR interleaved in this one process (bench_many.py, copied
beside this file: a latency predictor's calibration). Its JSON holds ``results``: {subdirectory: summary with
samples, or {"error": message}}; ``--thread-counts``: thread scaling in one process (ditto).

Output: one line ``EDGESHIP_BENCH {json}`` on stdout (runtimes may print their own lines). On a
missing package the JSON is ``{"ok": false, "error": "missing_package", "package": ...}`` and the
exit code is 3; any other failure exits 4 with ``"error": "failed"``.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time

MARKER = "EDGESHIP_BENCH "
MAX_RUNS = 100_000  # --min-seconds never runs more than this
EXIT_MISSING, EXIT_FAILED = 3, 4
EMULATED_MARKER = "/etc/edgeship/emulated.json"
# OpenVINO's aarch64 plugin cannot compile an INT8 strided convolution with a bias on a core without FP16 (Pi 4's A72;
# the Pi 5's A76 can): "object is not initialized". It can without LPT (and snippets, which NNCF's IRs then break)
LPT_OFF = {"LP_TRANSFORMS_MODE": False, "SNIPPETS_MODE": "DISABLE"}
LPT_NOTE = (" (INT8 layers as FakeQuantize in float: this OpenVINO cannot compile the IR's INT8 strided convolutions "
            f"on a core without FP16 arithmetic; an application needs compile_model(..., {LPT_OFF}))")
# format -> [(module to import, pip package that provides it)], first importable wins
RUNTIMES = {
    "onnx": [("onnxruntime", "onnxruntime")],
    "openvino": [("openvino", "openvino")],
    "tflite": [("ai_edge_litert.interpreter", "ai-edge-litert"), ("tflite_runtime.interpreter", "tflite-runtime")],
}
# /proc/cpuinfo flag -> the ISA feature name edgeship uses
FEATURES = {
    "neon": "neon", "asimd": "neon", "crc32": "crc32", "asimddp": "dotprod", "asimdhp": "fp16", "fphp": "fp16",
    "i8mm": "i8mm",
    "sve": "sve", "bf16": "bf16", "sse4_2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
    "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni", "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16", "amx_int8": "amx_int8", "amx_bf16": "amx_bf16",
}


def _read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return None


def cpu_features(cpuinfo: str) -> list[str]:
    """ISA features from /proc/cpuinfo (x86 ``flags``, Arm ``Features``), normalized names."""
    found = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            found.update(FEATURES[f] for f in value.split() if f in FEATURES)
    return sorted(found)


def _cpu_model(cpuinfo: str) -> str:
    keys = ("model name", "hardware", "model", "processor")
    values = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        k = key.strip().lower()
        if sep and k in keys and value.strip() and k not in values:
            values[k] = value.strip()
    for k in keys:  # "processor" on x86 is an index; only use it when it is text (old Arm kernels)
        if k in values and not values[k].isdigit():
            return values[k]
    return platform.processor() or platform.machine()


def _temperatures() -> dict:
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw, kind = _read(f"{zone}/temp"), _read(f"{zone}/type")
        try:
            temps[(kind or os.path.basename(zone)).strip()] = round(int(raw.strip()) / 1000.0, 1)
        except (AttributeError, ValueError):
            continue
    return temps


def emulated() -> dict | None:
    """What an emulated device says about itself (device, CPU model, emulator); None on real hardware."""
    raw = _read(EMULATED_MARKER)
    if raw is None:
        return None
    try:
        said = json.loads(raw)
    except ValueError:
        said = None
    return said if isinstance(said, dict) else {"marker": raw.strip()[:200]}


def device_facts() -> dict:
    """What can be read about this machine without extra packages; unreadable values are None."""
    u = os.uname()
    cpuinfo = _read("/proc/cpuinfo") or ""
    meminfo = _read("/proc/meminfo") or ""
    ram_mb = None
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            ram_mb = round(int(line.split()[1]) / 1024)
    cpufreq = "/sys/devices/system/cpu/cpu0/cpufreq"
    khz = lambda name: (int(v) // 1000) if (v := (_read(f"{cpufreq}/{name}") or "").strip()).isdigit() else None  # noqa: E731
    board = (_read("/proc/device-tree/model") or "").strip("\x00\n ") or None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "uname": " ".join((u.sysname, u.nodename, u.release, u.version, u.machine)),
        "hostname": u.nodename, "system": u.sysname, "release": u.release, "machine": u.machine,
        "cpu": _cpu_model(cpuinfo), "board": board, "cores": os.cpu_count(), "usable_cores": usable,
        "features": cpu_features(cpuinfo), "ram_mb": ram_mb,
        "governor": (_read(f"{cpufreq}/scaling_governor") or "").strip() or None,
        "freq_mhz": khz("scaling_cur_freq"), "max_freq_mhz": khz("cpuinfo_max_freq"),
        "temperature_c": _temperatures() or None,
        "python": platform.python_version(), "emulated": emulated(),
    }


def rss_mb() -> float | None:
    status = _read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 2)
    return None


def peak_rss_mb() -> float:
    """Peak resident set of this process: VmHWM where /proc has it, else ru_maxrss."""
    status = _read("/proc/self/status") or ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 2)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 2)  # bytes on macOS, KiB on Linux


class Missing(Exception):
    def __init__(self, module: str, package: str):
        super().__init__(module)
        self.module, self.package = module, package


def import_runtime(fmt: str):
    options = RUNTIMES.get(fmt)
    if not options:
        raise ValueError(f"unknown artifact format {fmt!r}")
    for module, package in options:
        try:
            return importlib.import_module(module), package
        except ImportError:
            continue
    raise Missing(options[0][0], options[0][1])


def _static(shape, fallback=None) -> list[int]:
    dims = list(shape)
    if fallback is not None and len(fallback) == len(dims):
        return [d if isinstance(d, int) and d > 0 else (f if isinstance(f, int) and f > 0 else 1)
                for d, f in zip(dims, fallback)]
    return [d if isinstance(d, int) and d > 0 else 1 for d in dims]


def _float_input(np, shape, seed: int):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _quantize(np, x, dtype, scale: float, zero_point: int):
    info = np.iinfo(dtype)
    if not scale:
        scale = 1.0
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _sample(np, shape, dtype, seed: int, quant: dict | None):
    """One input of random data: normal floats, zeros for integer inputs (token ids, indices: always valid), quantized
    floats for a quantized integer input."""
    if np.dtype(dtype).kind == "f":
        return _float_input(np, shape, seed).astype(dtype)
    if quant and quant.get("scale"):
        return _quantize(np, _float_input(np, shape, seed), np.dtype(dtype).type, quant["scale"],
                         quant.get("zero_point", 0))
    return np.zeros(shape, dtype)


ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(uint8)": "uint8"}


_ORT_GLOBAL_POOL: int | None = None  # --many at > 1 thread: the process-wide pool's size, once created


def load_onnx(ort, path: str, threads: int, meta: dict, seed: int, np, profile: bool = False):
    so = ort.SessionOptions()
    if meta.get("interleaved") and threads > 1:  # --many: one pool for all sessions (bench_many.py says why)
        global _ORT_GLOBAL_POOL
        _ORT_GLOBAL_POOL = _ORT_GLOBAL_POOL or ort.set_global_thread_pool_sizes(threads, 1) or threads
        so.use_per_session_threads = False
    else:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.enable_profiling = profile
    so.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"edgeship-ort-{os.getpid()}")
    disabled = list((meta.get("runtime_config") or {}).get("disabled_optimizers") or [])  # mixed-precision INT8
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"],
                                **({"disabled_optimizers": disabled} if disabled else {}))
    described = meta.get("inputs") or []
    feed = {}
    for k, inp in enumerate(sess.get_inputs()):
        entry = described[k] if k < len(described) else {}
        shape = _static(inp.shape, entry.get("example_shape"))  # the example's length on a dynamic axis
        feed[inp.name] = _sample(np, shape, ORT_DTYPES.get(inp.type, "float32"), seed + k, entry.get("quantization"))
    first = sess.get_inputs()[0].name

    def run():
        return sess.run(None, feed)[0]

    def infer(*inputs):  # as the host's runner: each input cast to the graph's type, every output
        return sess.run(None, {name: np.ascontiguousarray(a, x.dtype) for (name, x), a in zip(feed.items(), inputs)})

    return run, {"runtime": "onnxruntime", "runtime_version": ort.__version__, "input_shape": list(feed[first].shape),
                 "input_dtype": str(feed[first].dtype), "arena_mb": None,
                 "layers": lambda: _sibling("layer_profile").ort_layers(sess)}, infer


def _ov_precision(compiled, note: str = ""):
    """The precision OpenVINO's CPU plugin runs float layers in (f32, bf16, f16), for the report (and a note)."""
    try:
        p = compiled.get_property("INFERENCE_PRECISION_HINT")
        return (p.get_type_name() if hasattr(p, "get_type_name") else str(p)) + note
    except Exception:  # older runtimes on a device may not expose the property
        return None


def load_openvino(ov, path: str, threads: int, meta: dict, seed: int, np, profile: bool = False):
    core = ov.Core()
    model = core.read_model(path)
    described = meta.get("inputs") or []
    shapes = {}
    for k, port in enumerate(model.inputs):
        ps = port.get_partial_shape()
        if ps.is_dynamic:  # the example's length on a dynamic axis (1 for the batch)
            example = (described[k] if k < len(described) else {}).get("example_shape")
            shapes[port.get_any_name()] = _static([d.get_length() if d.is_static else -1 for d in ps], example)
    if shapes:
        model.reshape(shapes)
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    # the settings the artifact was verified with (an FP32/FP16 IR: INFERENCE_PRECISION_HINT f32, which
    # keeps OpenVINO from running it in bf16 on AMX/avx512_bf16 CPUs): timing must run the same numerics
    config.update(meta.get("runtime_config") or {})
    config.update({"PERF_COUNT": True} if profile else {})
    try:
        compiled, note = core.compile_model(model, "CPU", config), ""
    except RuntimeError as e:  # an INT8 IR on an aarch64 core without FP16 arithmetic: see LPT_OFF
        if "object is not initialized" not in str(e) or not platform.machine().startswith(("aarch64", "arm")):
            raise
        compiled, note = core.compile_model(model, "CPU", {**config, **LPT_OFF}), LPT_NOTE
    request = compiled.create_infer_request()
    # Each input tensor is bound once and shares the buffer the caller writes each frame into, as OpenVINO's
    # benchmark_app and a C++ application do: request.infer({0: x}) would instead convert and copy through the
    # Python data dispatcher on every call, 25-46 us that dwarfs a small INT8 model's (runner_overhead.json).
    frames, buffers = [], []
    for k, port in enumerate(compiled.inputs):
        shape, dtype = list(port.get_shape()), port.get_element_type().to_dtype()
        frames.append(_sample(np, shape, dtype, seed + k, None))
        buffers.append(np.empty(shape, dtype))
        request.set_input_tensor(k, ov.Tensor(buffers[-1], shared_memory=True))
    counted: dict = {}  # node -> per-run counters (PERF_COUNT holds the last inference only)
    lp = _sibling("layer_profile") if profile else None  # loaded once: not between two counted inferences

    def run():
        for buffer, frame in zip(buffers, frames):
            buffer[...] = frame  # the new frame
        if lp is not None:  # uncounted runs first (layer_profile.ov_counted says why)
            lp.ov_counted(request, counted)
        else:
            request.infer()
        return request.get_output_tensor(0).data

    def infer(*inputs):
        for buffer, x in zip(buffers, inputs):
            buffer[...] = x
        request.infer()
        return [request.get_output_tensor(k).data.copy() for k in range(len(compiled.outputs))]

    return run, {"runtime": "openvino", "runtime_version": ov.__version__, "input_shape": list(frames[0].shape),
                 "input_dtype": str(frames[0].dtype), "arena_mb": None,
                 "inference_precision": _ov_precision(compiled, note),
                 "layers": lambda: (lp or _sibling("layer_profile")).ov_layers(counted, compiled)}, infer


def load_tflite(interp_mod, path: str, threads: int, meta: dict, seed: int, np, profile: bool = False):
    interpreter = interp_mod.Interpreter(model_path=path, num_threads=threads)
    for detail in interpreter.get_input_details():
        signature = [int(d) for d in detail.get("shape_signature", detail["shape"])]
        if any(d < 1 for d in signature):
            interpreter.resize_tensor_input(detail["index"], _static(signature, [int(d) for d in detail["shape"]]))
    interpreter.allocate_tensors()
    feeds = []
    for k, detail in enumerate(interpreter.get_input_details()):
        shape = [int(d) for d in detail["shape"]]  # the interpreter's shape is authoritative (NHWC after conversion)
        scale, zero_point = detail.get("quantization", (0.0, 0))
        quant = {"scale": float(scale), "zero_point": int(zero_point)} if scale else None
        feeds.append((detail["index"], _sample(np, shape, np.dtype(detail["dtype"]), seed + k, quant)))
    idx_out = interpreter.get_output_details()[0]["index"]

    def run():
        for index, x in feeds:
            interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(idx_out)

    name = "ai-edge-litert" if interp_mod.__name__.startswith("ai_edge_litert") else "tflite-runtime"
    version = getattr(sys.modules.get(interp_mod.__name__.split(".")[0]), "__version__", None)
    first, calls = feeds[0][1], []  # profile mode: this copy lists the operators, litert_timer times them
    return (lambda: calls.append(1)) if profile else run, {
        "runtime": name, "runtime_version": version, "input_shape": list(first.shape), "input_dtype": str(first.dtype),
        "arena_mb": None, "layers": lambda: _sibling("layer_profile").tflite_profiled(
            interpreter, _sibling("litert_timer"), path, threads, len(calls), [x.tobytes() for _, x in feeds])}, \
        tflite_infer(interpreter, meta, np)


def _tflite_order(interpreter, meta: dict) -> tuple[list, list]:
    """The interpreter's input and output details in the torch model's order, as edgeship's TFLite backend takes them:
    litert-torch names them args_<k> / output_<k> in its signature, which the interpreter may list in another order."""
    ins, outs = interpreter.get_input_details(), interpreter.get_output_details()
    if not str(meta.get("route", "")).startswith("litert"):
        return ins, outs
    sig = interpreter._get_full_signature_list()  # tensor indices per signature name; no public API returns them
    names = sig[next(iter(sig))]

    def position(name: str) -> int:
        tail = name.rsplit("_", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    def ordered(details, by_name):
        at = {d["index"]: d for d in details}
        return [at[i] for _, i in sorted(by_name.items(), key=lambda kv: position(kv[0]))]

    return ordered(ins, names["inputs"]), ordered(outs, names["outputs"])


def tflite_infer(interpreter, meta: dict, np):
    """Graph inputs as every backend's runner takes them (the torch layout and dtypes: an image NCHW, normalized)
    -> every output as float32: what edgeship's TFLite backend does on the host (targets/tflite.py make_runner)."""
    ins, outs = _tflite_order(interpreter, meta)
    # the torch.fx lowering's input is channels last (image NHWC, 1-D signal NLC); litert-torch keeps the torch one
    layout = (meta.get("inputs") or [{}])[0].get("layout") or "NHWC"
    last = not str(meta.get("route", "")).startswith("litert") and layout in ("NHWC", "NLC")

    def infer(*inputs):
        arrays = [np.asarray(a) for a in inputs]
        if last and arrays[0].ndim == len(layout):
            arrays[0] = np.moveaxis(arrays[0], 1, -1)
        for d, a in zip(ins, arrays):
            dtype = np.dtype(d["dtype"])
            scale, zero_point = d.get("quantization", (0.0, 0))
            if dtype.kind in "iu" and scale and a.dtype.kind == "f":
                a = _quantize(np, a, dtype.type, float(scale), int(zero_point))
            interpreter.set_tensor(d["index"], np.ascontiguousarray(a, dtype))
        interpreter.invoke()
        result = []
        for d in outs:
            y = interpreter.get_tensor(d["index"])
            scale, zero_point = d.get("quantization", (0.0, 0))
            if np.dtype(d["dtype"]).kind in "iu" and scale:
                result.append((y.astype(np.float32) - zero_point) * np.float32(scale))
            else:
                result.append(np.array(y))
        return result

    return infer


LOADERS = {"onnx": load_onnx, "openvino": load_openvino, "tflite": load_tflite}


def _sibling(name: str):
    """``name``.py beside this file (device_verify.py, layer_profile.py, litert_timer.py, bench_many.py: copied;
    loaded by path, since this directory is off sys.path)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"edgeship_{name}", path)
    if spec is None or spec.loader is None or not os.path.isfile(path):
        raise RuntimeError(f"{name}.py must be beside this runner ({path})")
    spec.loader.exec_module(module := importlib.util.module_from_spec(spec))
    return module


def summarize(np, samples_ms: list[float]) -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    pct = lambda q: round(float(np.percentile(a, q)), 4)  # noqa: E731
    return {"p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "mean_ms": round(float(a.mean()), 4),
            "std_ms": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 4),
            "min_ms": round(float(a.min()), 4), "max_ms": round(float(a.max()), 4)}


def emit(obj: dict) -> None:
    sys.stdout.flush()
    sys.stdout.write(MARKER + json.dumps(obj) + "\n")
    sys.stdout.flush()


def bench(args) -> dict:
    with open(os.path.join(args.dir, "model.json")) as f:
        art = json.load(f)
    fmt, main = art["format"], art["main"]
    path = os.path.join(args.dir, main)
    files = art.get("files") or [main]
    size = sum(os.path.getsize(os.path.join(args.dir, p)) for p in files  # what the runtime loads: no sidecar
               if p != "model.json" and os.path.exists(os.path.join(args.dir, p)))

    try:
        import numpy as np
    except ImportError:
        raise Missing("numpy", "numpy") from None
    t0 = time.perf_counter()
    runtime, _package = import_runtime(fmt)
    import_ms = (time.perf_counter() - t0) * 1e3
    baseline = rss_mb()

    t0 = time.perf_counter()
    run, info, infer = LOADERS[fmt](runtime, path, args.threads, art.get("meta") or {}, args.seed, np)
    load_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    y = run()
    first_ms = (time.perf_counter() - t0) * 1e3
    for _ in range(args.warmup):
        run()
    samples: list[float] = []
    clock = time.perf_counter_ns
    # --runs runs, then (--min-seconds) on until the timed runs add up to that long: a p90 of 30 runs of a 0.1 ms
    # model is two or three samples' worth (it varied 0.105-0.160 ms between rounds on a quiet machine)
    timed_ms, min_ms = 0.0, args.min_seconds * 1e3
    while len(samples) < args.runs or (timed_ms < min_ms and len(samples) < MAX_RUNS):
        t = clock()
        run()
        samples.append((clock() - t) / 1e6)
        timed_ms += samples[-1]
    peak = peak_rss_mb()  # before the verification: its sample arrays are not the artifact's memory
    checked = None
    if args.samples:
        checked = _sibling("device_verify").verify(np, infer, args.samples, args.reference, art.get("meta") or {})
    info.pop("layers")
    profile = None
    if args.profile:  # a second copy: the profilers never run during the timed runs
        prun, pinfo, _ = LOADERS[fmt](runtime, path, args.threads, art.get("meta") or {}, args.seed, np, profile=True)
        for _ in range(args.profile):
            prun()
        int8 = str(art.get("precision")).startswith("int8")
        profile = _sibling("layer_profile").layer_profile(*pinfo["layers"](), int8)
    return {
        "ok": True, "target": art.get("target"), "format": fmt, "precision": art.get("precision"),
        **summarize(np, samples), "samples_ms": [round(s, 4) for s in samples],
        "load_ms": round(load_ms, 3), "import_ms": round(import_ms, 3), "first_run_ms": round(first_ms, 3),
        "peak_rss_mb": peak, "rss_before_load_mb": baseline, "size_bytes": int(size),
        "threads": args.threads, "runs": len(samples), "warmup": args.warmup,
        "output_shape": [int(d) for d in getattr(y, "shape", ())], "numpy_version": np.__version__,
        **info, "verification": checked, "profile": profile, "facts": device_facts(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", help="directory holding model.json and the artifact files (required but with --facts "
                   "or --many)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--min-seconds", type=float, default=0.0,
                   help=f"after --runs, run on until the timed runs add up to this long (at most {MAX_RUNS} runs; "
                   "--many: rounds until every model's do)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", help="verification: .npz of test samples (x0, x1, ...: the graph inputs; y: labels)")
    p.add_argument("--reference", help="verification: .npz of the same artifact's outputs on the host (out0, ...)")
    p.add_argument("--profile", type=int, default=0, help="then this many runs with per-layer counters (0: none)")
    p.add_argument("--facts", action="store_true", help="print only the device facts")
    p.add_argument("--many", help="time every artifact directory under this one, interleaved (calibration)")
    p.add_argument("--rounds", type=int, default=3, help="--many, --thread-counts: rounds")
    p.add_argument("--chunk", type=int, default=40, help="--many: artifacts loaded at a time")
    p.add_argument("--priority", action="store_true", help="--many: time ahead of other users' work (root)")
    p.add_argument("--thread-counts", type=int, nargs="+", help="--dir: these thread counts in alternating rounds")
    args = p.parse_args(argv)
    if bool(args.samples) != bool(args.reference):
        p.error("--samples and --reference go together")
    if not args.dir and not args.facts and not args.many:
        p.error("--dir (or --many) is required")
    if args.facts:
        emit({"ok": True, "facts": device_facts()})
        return 0
    if (args.runs < 1 or args.threads < 1 or args.warmup < 0 or args.rounds < 1 or args.chunk < 1
            or args.min_seconds < 0):
        emit({"ok": False, "error": "failed", "message": "--runs and --threads must be >= 1, --warmup >= 0"})
        return EXIT_FAILED
    try:
        emit(_sibling("bench_many").run(args, sys.modules[__name__]) if args.many or args.thread_counts
             else bench(args))
        return 0
    except Missing as e:
        emit({"ok": False, "error": "missing_package", "module": e.module, "package": e.package,
              "python": sys.executable, "facts": device_facts()})
        return EXIT_MISSING
    except Exception as e:  # one line for the caller; the caller adds context
        emit({"ok": False, "error": "failed", "message": f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"})
        return EXIT_FAILED


if __name__ == "__main__":
    # run as a script, Python puts this file's directory first on sys.path; in the package that
    # directory holds edgeship's own openvino.py/onnx.py, which would shadow the runtimes
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    sys.exit(main())
