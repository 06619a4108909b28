"""The OpenVINO IR's reader of ``kernels.read``: the IR read as plain XML (no runtime), its layers as kernels."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeship.devices.kernels import (
    ACTS,
    CONVS,
    ELTWISE,
    FREE,
    OV_PASSES,
    Kernel,
    _activation,
    _conv_of,
    _count,
    _eltwise,
    _hw,
    _pool,
)


def _dims(port: ET.Element) -> list[int]:
    return [max(1, int(d.text or 1)) for d in port.iter("dim")]


class _OvGraph:
    """An IR's edges: which layers feed which, which are computed from constants alone (weight decompression, shape
    arithmetic: folded by the runtime), and each layer's consumers (a bias, an Add or Multiply of a constant,
    spelled ``Add+const``: a convolution folds it)."""

    def __init__(self, root: ET.Element):
        layers = list(root.iter("layer"))
        self.sources: dict[str, set[str]] = {}  # layer id -> the layers feeding it
        for e in root.iter("edge"):
            self.sources.setdefault(e.get("to-layer", ""), set()).add(e.get("from-layer", ""))
        static = {la.get("id", "") for la in layers if la.get("type") == "Const"}
        grew = True
        while grew:
            new = {la.get("id", "") for la in layers if la.get("id") not in static and la.get("type") != "Parameter"
                   and self.sources.get(la.get("id", "")) and self.sources[la.get("id", "")] <= static}
            static |= new
            grew = bool(new)
        self.static = static
        self.kinds = {la.get("id", ""): la.get("type") or "?" for la in layers}
        self.layers = {la.get("id", ""): la for la in layers}
        self.feeding = {(e.get("to-layer", ""), e.get("to-port", "")): e.get("from-layer", "")
                        for e in root.iter("edge")}  # (layer, input port) -> the layer feeding it
        self.blob: np.ndarray | None = None  # the IR's .bin, mapped when a constant is first read
        self.consumers: dict[str, list[tuple[str, str]]] = {}
        for to, froms in self.sources.items():
            kind = self.kinds.get(to, "?")
            kind = f"{kind}+const" if kind in ("Add", "Multiply") and froms & static else kind
            for f in froms - static:
                self.consumers.setdefault(f, []).append((to, kind))

    def act(self, at: str) -> int:
        return _activation(at, self.consumers, OV_PASSES, {"ReLU": ACTS["relu"], "Relu": ACTS["relu"],
                                                           "PReLU": ACTS["relu"], "Clamp": ACTS["relu6"]})

    def signed_input(self, at: str, weights: Path) -> int:
        """1 when the layer's data input comes through a FakeQuantize whose output range reaches below 0 (the
        runtime then feeds the layer signed int8), else 0."""
        ports = [p.get("id", "") for p in self.layers[at].find("input").iter("port")]  # type: ignore[union-attr]
        fq = self.feeding.get((at, ports[0]), "")
        if self.kinds.get(fq) != "FakeQuantize":
            return 0
        fq_ports = [p.get("id", "") for p in self.layers[fq].find("input").iter("port")]  # type: ignore[union-attr]
        low = self.feeding.get((fq, fq_ports[3]), "")
        while self.kinds.get(low) == "Convert":
            low = self.feeding.get((low, "0"), "")
        data = self.layers[low].find("data") if self.kinds.get(low) == "Const" else None
        dtype = {"f32": "<f4", "f16": "<f2"}.get(data.get("element_type", "") if data is not None else "")
        if data is None or dtype is None or not weights.is_file():
            return 0
        if self.blob is None:  # mapped once per IR, not opened per convolution
            self.blob = np.memmap(weights, dtype=np.uint8, mode="r")
        start = int(data.get("offset", 0))
        values = self.blob[start:start + int(data.get("size", 0))].view(dtype)
        return int(bool((values < 0).any()))

    def fused_prelu(self, at: str) -> bool:
        """Whether a PReLU follows a convolution or fully connected layer alone: OpenVINO's CPU plugin runs it as
        that layer's post-op (its compiled model holds no PReLU node; tests/devices/test_predictor.py), so it is
        that kernel's activation, not an operator of its own."""
        for _ in range(4):
            feeding = self.sources.get(at, set()) - self.static
            if len(feeding) != 1:
                return False
            at = next(iter(feeding))
            if self.kinds.get(at) in (*CONVS["openvino"], "MatMul"):
                return len(self.consumers.get(at, [])) == 1
            if self.kinds.get(at) not in ("Add", "Multiply", "FakeQuantize", "Convert"):
                return False
        return False


def read_openvino(path: Path) -> tuple[list[Kernel], dict[str, int]]:
    root = ET.parse(path).getroot()
    layers = list(root.iter("layer"))
    graph = _OvGraph(root)
    sources, static = graph.sources, graph.static
    out: list[Kernel] = []
    skipped: dict[str, int] = {}
    for layer in layers:
        kind, at = layer.get("type") or "?", layer.get("id", "")
        ins = [_dims(p) for p in layer.find("input").iter("port")] if layer.find("input") is not None else []
        outs = [_dims(p) for p in layer.find("output").iter("port")] if layer.find("output") is not None else []
        if at in static or kind in FREE["openvino"] or (kind == "PReLU" and graph.fused_prelu(at)):
            continue
        x, y = (ins or [[]])[0], (outs or [[]])[0]
        with_const = bool(sources.get(at, set()) & static)
        w = ins[1] if kind in CONVS["openvino"] else []
        if kind in CONVS["openvino"] and len(x) in (3, 4):
            # w: [cout, cin, *kernel]; grouped: [groups, cout/groups, cin/groups, *kernel]
            grouped, taps = kind == "GroupConvolution", w[len(w) - len(x) + 2:]
            out += [replace(conv, sin=graph.signed_input(at, path.with_suffix(".bin"))) for conv in _conv_of(
                skipped, kind, x[2:], y[2:], taps, x[1], w[0] * w[1] if grouped else w[0], w[0] if grouped else 1,
                graph.act(at))]
        elif kind == "Add" and len(ins) == 2 and ins[0] == ins[1] and len(x) in (3, 4) and not with_const:
            out.append(Kernel("add", *_hw(x[2:]), x[1], x[1]))
        elif kind == "ReduceMean" and len(x) in (3, 4):
            out.append(Kernel("gpool", *_hw(x[2:]), x[1], x[1]))
        elif kind in ("MaxPool", "AvgPool") and len(x) in (3, 4):
            data = layer.find("data")
            out.append(_pool(x, y, max(int(v) for v in (data.get("kernel") if data is not None else "1").split(","))))
        elif kind == "MatMul" and len(ins) == 2 and with_const:
            data = layer.find("data")
            w = ins[1]
            trans_b = data is not None and data.get("transpose_b") == "true"
            out.append(Kernel("fc", cin=w[-1] if trans_b else w[0], cout=w[0] if trans_b else w[-1]))
        elif kind in ELTWISE["openvino"] and len(x) in (2, 3, 4):
            out.append(_eltwise(y if kind == "Concat" else x, ELTWISE["openvino"][kind]))
        elif not (kind == "Add" and with_const):  # an Add of a constant: the bias the layer before fuses
            _count(skipped, kind if len(x) in (0, 4) else f"{kind} ({len(x)}-D)")
    return out, skipped
