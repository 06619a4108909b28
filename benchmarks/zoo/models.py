"""Real pretrained models that public Python packages ship with their weights (nothing is downloaded at run time),
as ``model.factory`` functions for edgeship recipes: ``factory: benchmarks.zoo.models:<name>``.

Several of these packages import torchvision or torchaudio in their ``__init__``, and neither imports beside the CPU
torch 2.13 edgeship pins. ``load_sub`` imports only the module that defines the model (its package's ``__init__`` is
not run), with the helper modules it would pull in replaced by stand-ins where the model does not use them; each
factory says which.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
from torch import nn


def package_dir(name: str) -> Path:
    """Where an installed package lies, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{name} is not installed (see benchmarks/zoo/requirements.txt)")
    return Path(spec.submodule_search_locations[0])


def load_sub(package: str, module: str, stubs: dict[str, dict] | None = None) -> types.ModuleType:
    """``package.module`` imported without running ``package``'s ``__init__`` (nor its parents'); ``stubs`` maps
    module names to the attributes of stand-in modules put in their place."""
    parts = package.split(".")
    path = None
    for i, part in enumerate(parts):
        name = ".".join(parts[: i + 1])
        if name in sys.modules:  # imported already (or stood in for by an earlier call)
            path = Path(list(sys.modules[name].__path__)[0])
            continue
        path = package_dir(part) if i == 0 else path / part  # find_spec on a dotted name would run the parent
        stand_in = types.ModuleType(name)
        stand_in.__path__ = [str(path)]
        sys.modules[name] = stand_in
    for name, attrs in (stubs or {}).items():
        stub = types.ModuleType(name)
        stub.__dict__.update(attrs)
        stub.__path__ = []
        sys.modules.setdefault(name, stub)
    return importlib.import_module(f"{package}.{module}")


# ---------------------------------------------------------------------------------------------- face detection
def _mtcnn() -> types.ModuleType:
    """facenet-pytorch's ``models/mtcnn.py``; its detection helpers (which import torchvision's NMS) are not used by
    the networks themselves and are stood in for."""
    return load_sub("facenet_pytorch.models", "mtcnn", stubs={
        "facenet_pytorch.models.utils": {},
        "facenet_pytorch.models.utils.detect_face": {"detect_face": None, "extract_face": None}})


def mtcnn_onet() -> nn.Module:
    """MTCNN's output network (facenet-pytorch 2.6.0, weights ``facenet_pytorch/data/onet.pt`` in the wheel): a
    48x48 RGB face candidate, normalized as (x - 127.5) / 128, in; three heads out: box regression (N, 4), five
    landmarks (N, 10) and the face probability softmax (N, 2)."""
    return _mtcnn().ONet(pretrained=True).eval()


def mtcnn_rnet() -> nn.Module:
    """MTCNN's refinement network (24x24 in; box regression (N, 4) and face probability (N, 2) out)."""
    return _mtcnn().RNet(pretrained=True).eval()


def mtcnn_pnet() -> nn.Module:
    """MTCNN's proposal network: fully convolutional (any image size; 12x12 cells), box regression (N, 4, h, w)
    and face probability (N, 2, h, w) per cell."""
    return _mtcnn().PNet(pretrained=True).eval()


__all__ = ["load_sub", "mtcnn_onet", "mtcnn_pnet", "mtcnn_rnet", "package_dir"]


if __name__ == "__main__":  # quick look: every factory's parameter count
    for name in ("mtcnn_onet", "mtcnn_rnet", "mtcnn_pnet"):
        m = globals()[name]()
        print(name, sum(p.numel() for p in m.parameters()))
        with torch.no_grad():
            size = {"mtcnn_onet": 48, "mtcnn_rnet": 24, "mtcnn_pnet": 48}[name]
            print([tuple(t.shape) for t in m(torch.zeros(1, 3, size, size))])
