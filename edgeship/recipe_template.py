"""`edgeship init`: a commented recipe for a user's own model and data. Every value to change is
marked ``<-- EDIT``; once the paths point at real files the recipe validates and runs as is."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from edgeship.errors import EdgeshipError

DATA_KINDS = ("image_folder", "npz", "idx")
MODEL_KINDS = ("factory", "torchscript", "exported", "onnx")

MODEL_BLOCKS = {
    "factory": """\
  factory: my_package.models:build_model   # <-- EDIT: 'package.module:function' returning an nn.Module
  args: {}                                 # keyword arguments passed to the factory
  weights: path/to/weights.pt              # <-- EDIT: torch.save(model.state_dict(), path)""",
    "torchscript": """\
  torchscript: path/to/model.ts            # <-- EDIT: torch.jit.save(torch.jit.script(model), path)""",
    "exported": """\
  exported: path/to/model.pt2              # <-- EDIT: torch.export.save(program, path), the batch axis dynamic:
  #   program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", max=4096)},))""",
    "onnx": """\
  onnx: path/to/model.onnx                 # <-- EDIT: a model held only as ONNX (ONNX-INT8 and OpenVINO quantize
  #   it as it is; the passes and TFLite get it through onnx2torch)""",
}

INPUT_BLOCK = """\
input:
  shape: [3, 32, 32]               # <-- EDIT: (channels, height, width) of one sample
  preprocessing:                   # x = (raw * scale - mean) / std per channel; stored in every artifact
    scale: 0.00392156862745098     # 1/255 for 8-bit images
    mean: [0.0]                    # <-- EDIT: one value, or one per channel (what the model was trained with)
    std: [1.0]                     # <-- EDIT"""

IO_BLOCK = """\
io:                                # the model's signature, for anything but one image in, class logits out
  inputs:                          # in forward()'s order; each fed from the npz array of its name (or data:)
    - {name: x, shape: [1, 16000], layout: NCL}          # <-- EDIT: name and one sample's shape (no batch axis)
    # - {name: state, shape: [2, 1, 128], fill: 0.0}      # not from data: a constant, e.g. a recurrent state
    # - {name: frames, shape: [1, 512], dynamic: {1: samples}}   # an axis whose length varies
  # call_kwargs: {sr: 16000}       # constant non-tensor arguments passed to forward() and baked into artifacts
  outputs:                         # in the order forward() returns them; each verified with its task's metric
    - {name: out, task: classification}                  # <-- EDIT: classification | score | regression |
    # - {name: boxes, task: regression, tolerance: {int8: 0.2}}   # embedding | any; tolerance per precision"""

DATA_BLOCKS = {
    "image_folder": """\
  source:                          # one subfolder per class: path/<class name>/<image>
    kind: image_folder             # images are converted to input.shape's channels and resized to its H, W
    path: path/to/images           # <-- EDIT""",
    "npz": """\
  source:                          # np.savez(path, x=images, y=labels); x is (N,H,W), (N,C,H,W) or (N,H,W,C)
    kind: npz
    path: path/to/data.npz         # <-- EDIT""",
    "idx": """\
  source:                          # MNIST-format files, gzipped or not
    kind: idx
    path: path/to/train-images-idx3-ubyte          # <-- EDIT
    labels_path: path/to/train-labels-idx1-ubyte   # <-- EDIT""",
}

TEMPLATE = """\
# edgeship recipe for your own model and data, written by `edgeship init`.
# 1. Change every value marked  <-- EDIT  (paths resolve against the directory you run edgeship from).
# 2. edgeship export {path}
#    compresses the model with `passes`, lowers it to every target, runs each artifact on the test
#    split and writes {output}/report.json and report.html.
# Every key is described in README.md, "Recipe reference".
# The run's name (letters, digits, '.', '_', '-') and its directory, replaced atomically by each export.
name: {name}
output: runs/{name}
seed: 0

model:
  # Exactly one of factory (+ weights) / torchscript / exported / onnx:
{model_block}
{model_alternatives}
  # A checkpoint that holds pickled Python objects (not a plain state_dict) needs
  # `edgeship export --trust-pickle`, which runs the code inside it: only for files you trust.

{input_block}

# labels: [cat, dog, ship]         # class names; default: the image folder's subfolder names, else 0..N-1

data:
{data_block}
{data_alternatives}
  # test_source: {{kind: npz, path: path/to/test.npz}}   # an explicit test set; default: test_fraction of source
  test_fraction: 0.2               # held out of source as the test split when there is no test_source
  val_size: 500                    # held out of the rest for stage-by-stage accuracy
  calib_size: 500                  # calibration samples for INT8, drawn from the training partition
  seed: 0

train:                             # `edgeship train` (trains a factory model from scratch); the passes
  # have their own fine-tuning settings. threads also applies to the passes and the targets.
  epochs: 3
  batch_size: 128
  lr: 0.001
  threads: null                    # torch threads; null: all cores

# Compression passes run in order; each stage is cached, so a rerun skips finished ones.
# With no passes the model is exported as it is. README.md, "Passes", lists every option.{passes_note}
passes: []
# passes:                          # an example pipeline: replace the line `passes: []` with these lines
#   # - {{name: drop_blocks, blocks: 2}}  # depth first, for residual nets: whole blocks become identities
#                                  # (fewer kernels: what speeds up a small model at batch 1)
#   - name: prune                  # structured: whole channels removed, so fewer MACs and a smaller file
#     macs_ratio: 0.5              # keep at most half the MACs (or channel_ratio: the share of channels kept)
#     steps: 2                     # prune a little, fine-tune with distillation, repeat
#     fine_tune: {{epochs: 1, lr: 0.001}}
#   - name: distill                # recover accuracy: distillation from the model as it was before the passes
#     epochs: 2
#   - name: calibrate              # INT8 post-training quantization settings the int8 targets follow
#     samples: 512
#     method: minmax               # minmax | percentile | entropy | mse
#   # - {{name: qat, epochs: 1}}     # instead of calibrate: quantization-aware training (fake-quant, then INT8)

# One artifact per target. format: onnx | openvino | tflite;
# precision: fp32 | fp16 | int8 | dynamic_int8 | int8_float_io | weights_int8 | weights_int4 (not every pair exists;
#   README.md lists them).
# device: a name from `edgeship devices` (default: host, this machine).
targets:
  - {{name: onnx-fp32, device: host, format: onnx, precision: fp32}}
  - {{name: onnx-int8, device: host, format: onnx, precision: int8, max_accuracy_drop: 1.0}}
  # - {{name: openvino-int8, device: host, format: openvino, precision: int8}}
  # - {{name: pi-tflite-int8, device: rpi4, format: tflite, precision: int8,
  #     budgets: {{latency_ms_p90: 30, peak_ram_mb: 128}}}}          # per-target budgets override the ones below

# Limits every target is checked against (export and `edgeship check`). A target's own `budgets:`
# win over these; keys set in neither come from the target's device (`edgeship devices`).
budgets:
  max_accuracy_drop: 1.0           # <-- EDIT: top-1 points an artifact may lose against the torch model
  # latency_ms_p90: 20             # 90th-percentile latency of one inference
  # peak_ram_mb: 256               # peak resident memory while running
  # model_size_kb: 4096            # artifact files on disk
  # min_top1: 0.90                 # top-1 on the test split
  # max_drop_vs_input: 2.0         # top-1 points below the model as given, before any pass
"""

PASSES_NOTE = {  # which of the example passes a model kind admits (pipeline/base.py: needs_module, torchscript_ok)
    "factory": "",
    "torchscript": "\n# A TorchScript model admits distill and calibrate only (prune, drop_blocks, qat and "
                   "sparsify need the\n# Python module: use factory + weights for those).",
    "exported": "\n# An exported (.pt2) program admits calibrate only (the other passes change or train a "
                "Python module:\n# use factory + weights for those).",
    "onnx": "\n# An ONNX model admits calibrate only (the other passes change or train a Python module: use "
            "factory + weights\n# for those).",
}


def _commented(block: str) -> str:
    return "\n".join(line if line.lstrip().startswith("#") else "  # " + line[2:] for line in block.splitlines())


def render(path: Path, name: str, data: str = "image_folder", model: str = "factory", io: bool = False) -> str:
    if data not in DATA_KINDS:
        raise EdgeshipError(f"unknown data kind {data!r}", f"use one of: {', '.join(DATA_KINDS)}")
    if model not in MODEL_KINDS:
        raise EdgeshipError(f"unknown model kind {model!r}", f"use one of: {', '.join(MODEL_KINDS)}")
    if io and data != "npz":
        raise EdgeshipError(f"--io reads its inputs from npz arrays, not {data}", "use --io with --data npz")
    others = lambda blocks, chosen: "\n".join(_commented(b) for k, b in blocks.items() if k != chosen)  # noqa: E731
    data_blocks = {**DATA_BLOCKS, "npz": DATA_BLOCKS["npz"].replace(
        "np.savez(path, x=images, y=labels); x is (N,H,W), (N,C,H,W) or (N,H,W,C)",
        "np.savez(path, x=..., y=labels): one array per input, named after it")} if io else DATA_BLOCKS
    return TEMPLATE.format(path=path, name=name, output=f"runs/{name}", passes_note=PASSES_NOTE[model],
                           input_block=IO_BLOCK if io else INPUT_BLOCK,
                           model_block=MODEL_BLOCKS[model], model_alternatives=others(MODEL_BLOCKS, model),
                           data_block=data_blocks[data], data_alternatives="" if io else others(data_blocks, data))


def write_template(path: Path, data: str = "image_folder", model: str = "factory", force: bool = False,
                   io: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise EdgeshipError(f"{path} already exists", "choose another path or pass --force to overwrite it")
    if path.suffix not in (".yaml", ".yml"):
        raise EdgeshipError(f"{path} is not a .yaml file", "give a path ending in .yaml")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem).lstrip("._-") or "my_model"
    text = render(path, name, data, model, io)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
