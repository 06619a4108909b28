"""edgeship: compress a trained PyTorch model and ship it to edge devices."""

__version__ = "0.1.0"
