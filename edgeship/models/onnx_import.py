"""A model the user holds only as ``.onnx``: converted to a torch ``fx.GraphModule`` with onnx2torch (a well-kept
converter) for the passes and the TFLite targets; the ONNX and OpenVINO targets take the file as it is
(``LowerContext.source_onnx``) when no pass changed the model.

onnx2torch imports torchvision for its NMS and RoIAlign converters, and torchvision does not import beside the CPU
torch 2.13 this project pins (``operator torchvision::nms does not exist``). When torchvision cannot be imported,
a stand-in module whose ``ops`` refuse to run takes its place in ``sys.modules``: every other operator converts, and
a model that uses NMS or RoIAlign fails naming them.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

from torch import nn

from edgeship.errors import EdgeshipError


def _torchvision_stand_in() -> None:
    try:
        import torchvision  # noqa: F401
        return
    except Exception:  # not installed, or installed for another torch (RuntimeError on import)
        pass

    def refuse(*_a, **_k):
        raise EdgeshipError("this ONNX model uses NonMaxSuppression or RoiAlign, which onnx2torch runs with "
                            "torchvision, and torchvision does not import beside this torch",
                            "use the onnx and openvino targets only (they take the file as it is)")

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.box_convert = ops.roi_align = refuse  # type: ignore[attr-defined]
    tv.ops = ops  # type: ignore[attr-defined]
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.ops", ops)


def torch_from_onnx(path: Path) -> nn.Module:
    """The ONNX file as a torch module (an fx GraphModule), or one line naming what could not be converted."""
    import onnx  # heavy: only ONNX models need it here

    path = Path(path)
    if not path.is_file():
        raise EdgeshipError(f"model file not found: {path}", "check model.onnx")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:
        raise EdgeshipError(f"{path} is not a valid ONNX model ({' '.join(str(e).split())[:160]})",
                            "export it again (torch.onnx.export, tf2onnx, ...); onnx.checker must accept it") from None
    _torchvision_stand_in()
    try:
        from onnx2torch import convert
    except ImportError:
        raise EdgeshipError("onnx2torch is not installed (it converts an ONNX model for the passes and tflite "
                            "targets)", "pip install --no-deps onnx2torch (scripts/bootstrap.sh does)") from None
    try:
        return convert(model)
    except NotImplementedError as e:
        raise EdgeshipError(f"{path}: onnx2torch cannot convert it: {' '.join(str(e).split())[:200]}",
                            "use only the onnx and openvino targets for this model (no passes)") from None
