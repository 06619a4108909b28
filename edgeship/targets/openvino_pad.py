"""An OpenVINO INT8 model's input quantizer moved past a zero Pad, so the convolution that reads the padded tensor
runs int8.

NNCF puts an activation's FakeQuantize as early as it can: on a model input that the model pads itself before its
first convolution (``F.pad`` in the forward, as torchcrepe's CREPE does, or a TF-style "same" padding), it quantizes
the input and the Pad reads the quantized tensor. With asymmetric activations (NNCF's MIXED preset, this backend's
accuracy fallback) OpenVINO's low-precision transformations then carry the dequantization's zero point through the
Pad as a per-position constant (zero over the padded positions), which no reshape, transpose or convolution takes.
A Pad right before a convolution OpenVINO fuses into it; but where the polyphase rewrite (``models.polyphase``) puts
its reshape and transpose between them, the convolution ran float: CREPE tiny's first layer (its INT8 file 1.77x
slower at one thread than with the quantizer moved: results/polyphase.json's ``crepe_pad``).

``FakeQuantize(Pad(x, 0)) == Pad(FakeQuantize(x), 0)`` wherever the quantizer maps 0 to exactly 0, as NNCF's ranges
do (0 lies on the grid): the same function, the same integers. So after quantization, each constant zero Pad reached
from a per-tensor FakeQuantize through operations that only move or select values (Unsqueeze, Squeeze, Reshape,
Transpose, Gather, Slice, StridedSlice, each with one reader) gets a copy of that quantizer on its output, and the
chain reads the quantizer's input; the quantizer stays only if something else reads it. OpenVINO then decomposes the
moved quantizer after the Pad with a scalar zero point, which its transformations carry to the convolution
(measured in benchmarks/polyphase.py, results/polyphase.json).
"""

from __future__ import annotations

import numpy as np

# operations that move or select values (input 0) without changing them: a per-tensor FakeQuantize commutes with each
MOVES = {"Unsqueeze", "Squeeze", "Reshape", "Transpose", "Gather", "Slice", "StridedSlice"}
ENABLED = True  # benchmarks/polyphase.py turns it off to time the quantizer left before the Pad


def _data(node, i: int) -> np.ndarray | None:
    src = node.input_value(i).get_node()
    return np.asarray(src.get_data(), np.float64) if src.get_type_name() == "Constant" else None


def zero_exact(fq) -> bool:
    """Whether the per-tensor FakeQuantize ``fq`` maps 0 to exactly 0 (OpenVINO's FakeQuantize formula)."""
    lims = [_data(fq, i) for i in range(1, 5)]
    if any(v is None or v.size != 1 for v in lims):
        return False
    il, ih, ol, oh = (float(v.reshape(-1)[0]) for v in lims)  # type: ignore[union-attr]
    levels = int(fq.get_attributes()["levels"])
    if not (il < 0 < ih and ol <= 0 <= oh):
        return False
    q = round((0 - il) / (ih - il) * (levels - 1))
    return abs(q / (levels - 1) * (oh - ol) + ol) <= 1e-6 * (oh - ol)


def _zero_pad(op) -> bool:
    if op.get_type_name() != "Pad" or op.get_attributes().get("pad_mode") != "constant":
        return False
    value = _data(op, 3) if op.get_input_size() > 3 else np.zeros(1)
    return value is not None and not np.any(value)


def source(node):
    """The node whose values ``node`` reads through zero Pads and operations that move values (``MOVES``)."""
    while node.get_type_name() in MOVES or _zero_pad(node):
        node = node.input_value(0).get_node()
    return node


def quantize_after_pads(om) -> int:
    """Move the quantizer of every zero Pad's input past the Pad (see the module docstring); returns how many."""
    if not ENABLED:
        return 0
    import openvino.opset13 as ops

    moved = 0
    for pad in [op for op in om.get_ordered_ops() if _zero_pad(op)]:
        head, node = pad, pad.input_value(0).get_node()
        while node.get_type_name() in MOVES and len(node.output(0).get_target_inputs()) == 1:
            head, node = node, node.input_value(0).get_node()
        if node.get_type_name() != "FakeQuantize" or not zero_exact(node) or _data(node, 0) is not None:
            continue
        readers = list(pad.output(0).get_target_inputs())
        fq = ops.fake_quantize(pad.output(0), *(node.input_value(i) for i in range(1, 5)),
                               int(node.get_attributes()["levels"]))
        fq.set_friendly_name(f"{pad.get_friendly_name()}/fq_output_0")
        for r in readers:
            r.replace_source_output(fq.output(0))
        head.input(0).replace_source_output(node.input_value(0))
        moved += 1
    if moved:
        om.validate_nodes_and_infer_types()
    return moved
