"""LiteRT's per-operator times, from its C API's profiler (bench_runner.py ``--profile`` on a ``.tflite``).

Self-contained like bench_runner.py (standard library only: ``ctypes``; copied beside it to devices). LiteRT's
Python ``Interpreter`` has no per-op timer, but the ``libLiteRt.so`` that ai-edge-litert ships has one: a compiled
model created with the runtime option ``enable_profiling = true`` (the TOML payload of LiteRT's
``litert_runtime_options.cc``, identifier ``runtime_options_string``) records, per inference, an event for every
operator XNNPACK ran (``DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT``, tagged with XNNPACK's operator name such as
``Convolution (NHWC, QC8) IGEMM``) and for every operator left to LiteRT's builtin kernels
(``OPERATOR_INVOKE_EVENT``). The compiled model's CPU accelerator is XNNPACK with the same thread count as the
timed ``Interpreter``, so the operators and kernels are the ones the timed runs took; the times are its own.

XNNPACK runs a 1x1 stride-1 convolution as a fully connected GEMM (``Fully Connected (NC, QS8, QC8W) GEMM``),
and its event names carry the arithmetic: ``QC8``/``QS8``/``QU8``/``QD8`` integer, ``F32``/``F16`` float.

``timed_ops`` returns None where this library or its API is not there (tflite-runtime on a device, another
release of LiteRT): the runner then falls back to the op list without times and says why.
"""

from __future__ import annotations

import ctypes as C
import os

WARM_RUNS = 3  # uncounted inferences before each counted one (as layer_profile.ov_counted, and for its reason)
OPERATOR, DELEGATE_OPERATOR = 1 << 1, 1 << 3  # LiteRtProfilerEventType (litert_profiler_event.h)
RANKED_TYPE_BYTES = 4 + 68  # LiteRtRankedTensorType: element type + LiteRtLayout (litert_layout.h asserts 68)
LOCK_WRITE = 1


class _Mem(C.Structure):
    _fields_ = [("total", C.c_size_t), ("in_use", C.c_size_t), ("private", C.c_size_t)]


class _Event(C.Structure):  # ProfiledEventData
    _fields_ = [("tag", C.c_char_p), ("event_type", C.c_int), ("start_us", C.c_uint64), ("elapsed_us", C.c_uint64),
                ("begin_mem", _Mem), ("end_mem", _Mem), ("metadata1", C.c_uint64), ("metadata2", C.c_uint64),
                ("source", C.c_int)]


def library():
    """``libLiteRt.so`` from the installed ai-edge-litert, or None."""
    try:
        import ai_edge_litert
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(ai_edge_litert.__file__)), "libLiteRt.so")
    if not os.path.isfile(path):
        return None
    try:
        lib = C.CDLL(path)
        for name in ("LiteRtCompiledModelGetProfiler", "LiteRtGetProfilerEvents", "LiteRtCreateOpaqueOptions"):
            getattr(lib, name)
    except (OSError, AttributeError):
        return None
    return lib


class _Session:
    """One compiled model with profiling on, its input and output buffers (freed in ``close``). Every size_t
    argument (``LiteRtParamIndex``, counts) is passed as ``c_size_t``: ctypes passes a bare int as a 32-bit int."""

    def __init__(self, lib, path: str, threads: int, inputs: list[bytes]):
        self.lib, self.keep = lib, []
        self._destructor = C.CFUNCTYPE(None, C.c_void_p)(lambda _p: None)  # payloads are ours (kept in self.keep)
        self.env, self.model, self.opts, self.compiled = (C.c_void_p() for _ in range(4))
        self.buffers: list = []
        self.profiler = C.c_void_p()
        try:
            self._open(path, threads, inputs)
        except RuntimeError:
            self.close()  # what was created before the refusal
            raise

    def _open(self, path: str, threads: int, inputs: list[bytes]) -> None:
        lib = self.lib
        self._ok(lib.LiteRtCreateEnvironment(0, None, C.byref(self.env)), "environment")
        self._ok(lib.LiteRtCreateModelFromFile(self.env, path.encode(), C.byref(self.model)), "model")
        self._ok(lib.LiteRtCreateOptions(C.byref(self.opts)), "options")
        self._ok(lib.LiteRtSetOptionsHardwareAccelerators(self.opts, 1), "CPU accelerator")  # kLiteRtHwAcceleratorCpu
        self._opaque("runtime_options_string", "enable_profiling = true\n")
        self._opaque("xnnpack", f"num_threads = {int(threads)}\n")
        self._ok(lib.LiteRtCreateCompiledModel(self.env, self.model, self.opts, C.byref(self.compiled)), "compile")
        signature = C.c_void_p()
        self._ok(lib.LiteRtGetModelSignature(self.model, C.c_size_t(0), C.byref(signature)), "signature")
        self.ins = self._buffers(signature, "Input", inputs)
        self.outs = self._buffers(signature, "Output", [])
        self._ok(lib.LiteRtCompiledModelGetProfiler(self.compiled, C.byref(self.profiler)), "profiler")
        if not self.profiler:
            raise RuntimeError("the compiled model has no profiler")

    def _ok(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"LiteRT C API: {what} returned status {status}")

    def _opaque(self, identifier: str, toml: str) -> None:
        payload = C.create_string_buffer(toml.encode())
        opaque = C.c_void_p()
        self.keep.append(payload)
        self._ok(self.lib.LiteRtCreateOpaqueOptions(identifier.encode(), C.cast(payload, C.c_void_p),
                                                    self._destructor, C.byref(opaque)), f"{identifier} options")
        self._ok(self.lib.LiteRtAddOpaqueOptions(self.opts, opaque), f"add {identifier} options")

    def _buffers(self, signature, side: str, data: list[bytes]):
        lib, n = self.lib, C.c_size_t()
        self._ok(getattr(lib, f"LiteRtGetNumSignature{side}s")(signature, C.byref(n)), f"{side.lower()} count")
        array = (C.c_void_p * n.value)()
        for i in range(n.value):
            tensor, req, buf = C.c_void_p(), C.c_void_p(), C.c_void_p()
            ranked = C.create_string_buffer(RANKED_TYPE_BYTES)
            self._ok(getattr(lib, f"LiteRtGetSignature{side}TensorByIndex")(signature, C.c_size_t(i), C.byref(tensor)),
                     "tensor")
            self._ok(lib.LiteRtGetRankedTensorType(tensor, ranked), "tensor type")
            dims = C.cast(ranked, C.POINTER(C.c_int32))  # [element type, rank bits, dimensions...]
            for d in range(2, 2 + (dims[1] & 0x7F)):
                dims[d] = max(dims[d], 1)  # a dynamic batch runs as 1, as the runner's interpreter does
            self.keep.append(ranked)
            self._ok(getattr(lib, f"LiteRtGetCompiledModel{side}BufferRequirements")(
                self.compiled, C.c_size_t(0), C.c_size_t(i), C.byref(req)), "requirements")
            self._ok(lib.LiteRtCreateManagedTensorBufferFromRequirements(self.env, ranked, req, C.byref(buf)),
                     "buffer")
            self.buffers.append(buf)
            array[i] = buf
            if i < len(data):
                self._write(buf, data[i])
        return array

    def _write(self, buf, data: bytes) -> None:
        size, host = C.c_size_t(), C.c_void_p()
        self._ok(self.lib.LiteRtGetTensorBufferPackedSize(buf, C.byref(size)), "buffer size")
        self._ok(self.lib.LiteRtLockTensorBuffer(buf, C.byref(host), LOCK_WRITE), "lock")
        C.memset(host, 0, size.value)
        C.memmove(host, data, min(len(data), size.value))
        self._ok(self.lib.LiteRtUnlockTensorBuffer(buf), "unlock")

    def run(self) -> None:
        self._ok(self.lib.LiteRtRunCompiledModel(self.compiled, C.c_size_t(0), C.c_size_t(len(self.ins)), self.ins,
                                                 C.c_size_t(len(self.outs)), self.outs), "run")

    def counted(self) -> list[tuple[str, bool, float]]:
        """One profiled inference: (operator, run by XNNPACK, microseconds) per operator event, in order."""
        lib, p = self.lib, self.profiler
        self._ok(lib.LiteRtResetProfiler(p), "reset profiler")
        self._ok(lib.LiteRtStartProfiler(p), "start profiler")
        self.run()
        self._ok(lib.LiteRtStopProfiler(p), "stop profiler")
        n = C.c_int()
        self._ok(lib.LiteRtGetNumProfilerEvents(p, C.byref(n)), "event count")
        events = (_Event * n.value)()
        self._ok(lib.LiteRtGetProfilerEvents(p, n, events), "events")
        return [(e.tag.decode(errors="replace"), e.event_type == DELEGATE_OPERATOR, float(e.elapsed_us))
                for e in events if e.event_type in (OPERATOR, DELEGATE_OPERATOR) and e.tag
                and b"delegate" not in e.tag.lower()]

    def close(self) -> None:
        lib = self.lib
        for buf in self.buffers:
            lib.LiteRtDestroyTensorBuffer(buf)
        for handle, destroy in ((self.compiled, "LiteRtDestroyCompiledModel"), (self.opts, "LiteRtDestroyOptions"),
                                (self.model, "LiteRtDestroyModel"), (self.env, "LiteRtDestroyEnvironment")):
            if handle:
                getattr(lib, destroy)(handle)


def timed_ops(path: str, threads: int, runs: int, inputs: list[bytes]) -> tuple[list[dict] | None, str]:
    """Each operator's microseconds over ``runs`` profiled inferences (each after ``WARM_RUNS`` uncounted ones,
    whose events are reset away): ``[{"op", "delegated", "us": [per run]}]`` in execution order, and a note. None
    (with the reason) where the library or its profiler is not there or refuses this model."""
    lib = library()
    if lib is None:
        return None, "no libLiteRt.so with a profiler (ai-edge-litert not installed, or another release)"
    try:
        session = _Session(lib, path, threads, inputs)
    except RuntimeError as e:
        return None, str(e)
    try:
        rows: list[dict] = []
        for _ in range(max(1, runs)):
            for _ in range(WARM_RUNS):
                session.run()
            events = session.counted()
            if not rows:
                rows = [{"op": op, "delegated": xnn, "us": []} for op, xnn, _ in events]
            if [(r["op"], r["delegated"]) for r in rows] != [(op, xnn) for op, xnn, _ in events]:
                return None, "LiteRT's profiler listed different operators from one inference to the next"
            for r, (_, _, us) in zip(rows, events):
                r["us"].append(us)
    except RuntimeError as e:
        return None, str(e)
    finally:
        session.close()
    return rows, "litert CompiledModel profiler (XNNPACK operators, whole microseconds truncated, +0.5 us each)"
