"""Kernel times inside a model, from the runtime's per-layer counters (a calibration's fitting architectures).

A one-kernel probe is timed alone: its input comes from the model's input, its output goes to the model's output,
and the runtime picks layouts and precisions for that alone. Inside a network the same convolution runs between
other layers: OpenVINO INT8 keeps blocked layouts from layer to layer, feeds signed or unsigned int8 as the layer
before decides, and fuses a residual add into the convolution before it. On the AMX host the probes' forest was off
by 2-5x per convolution in both directions (ov_signed_input.json), errors a correction over whole models cancels
only on average. The runtime's counters of the fitting architectures give each kernel its time in context; the
forests of the kernel types that have ``MIN_SAMPLES`` such times are fitted on them instead of on the probes
(``calibrate.fit``; ``ConfigPredictor.in_context`` names them).

``kernel_times(kernels, layers)`` matches each layer the runtime executed to a kernel read from the artifact's file
(``kernels.read``), by operator and by its input and output shapes, in execution order; a kernel the runtime fused
into another (OpenVINO: a residual add into the convolution before it) has no time of its own (None), and its cost
is in the kernel that took it. Only formats whose counters carry shapes are read (``FORMATS``): OpenVINO's runtime
model gives them; ONNX Runtime's profiler and LiteRT's op list are not matched yet.
"""

from __future__ import annotations

from edgeship.devices.kernels import Kernel

FORMATS = ("openvino",)
MIN_SAMPLES = 30  # in-context times of a kernel type for its forest to be fitted on them

# OpenVINO's node types in its per-layer counters (the names vary between releases and quantized variants: by
# prefix), by the kernel types they can be
OV_TYPES = (("Convolution", ("conv", "dwconv")), ("GroupConvolution", ("dwconv",)), ("Reduce", ("gpool",)),
            ("Pooling", ("pool", "gpool")), ("MaxPool", ("pool",)), ("AvgPool", ("pool", "gpool")),
            ("FullyConnected", ("fc",)), ("MatMul", ("fc",)), ("Eltwise", ("add",)), ("Add", ("add",)))


def _kinds(op: str) -> tuple[str, ...]:
    return next((kinds for prefix, kinds in OV_TYPES if op.startswith(prefix)), ())


def _fits(k: Kernel, layer: dict) -> bool:
    i, o = layer.get("in"), layer.get("out")
    if not i or not o:
        return False
    if k.type in ("conv", "dwconv"):
        depthwise = "_dw_" in str(layer.get("kernel", "")) or str(layer["op"]).startswith("GroupConvolution")
        return len(i) == 4 and len(o) == 4 and depthwise == (k.type == "dwconv") and \
            (k.cin, k.hin, k.win, k.cout, k.hout, k.wout) == (i[1], i[2], i[3], o[1], o[2], o[3])
    if k.type == "fc":
        return o[-1] == k.cout and i[-1] == k.cin
    if k.type in ("gpool", "pool", "add"):
        return len(i) == 4 and (k.cin, k.hin, k.win) == (i[1], i[2], i[3])
    return False


def kernel_times(ks: list[Kernel], layers: list[dict], fmt: str = "openvino") -> list[float | None]:
    """Each kernel's time inside the model (ms; None: the runtime ran no layer of its own for it). ``layers``:
    the runner's per-layer rows in execution order (``layer_profile.ov_layers``: op, kernel, us, in, out)."""
    if fmt not in FORMATS:
        raise ValueError(f"per-layer counters of {fmt} are not matched to kernels (only {', '.join(FORMATS)})")
    times: list[float | None] = [None] * len(ks)
    for layer in layers:
        kinds = _kinds(str(layer.get("op", "")))
        for i, k in enumerate(ks):
            if times[i] is None and k.type in kinds and _fits(k, layer):
                times[i] = float(layer["us"]) / 1e3
                break
    return times


def samples(archs: list[dict], kind: str) -> tuple[list[Kernel], list[float]]:
    """The in-context times of one kernel type over a calibration's architectures (those with ``layers``)."""
    ks, ms = [], []
    for a in archs:
        if not a.get("layers"):
            continue
        arch_ks = [Kernel(**x) for x in a["kernels"]]
        for k, t in zip(arch_ks, kernel_times(arch_ks, a["layers"])):
            if k.type == kind and t is not None and t > 0:
                ks.append(k)
                ms.append(t)
    return ks, ms
