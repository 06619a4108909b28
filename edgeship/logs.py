"""Converters print a lot (C++ and Python); keep it in the run directory, not on the console."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's CUDA probe is harmless noise here


@contextlib.contextmanager
def captured(log_path: Path):
    """Send fd 1/2, Python warnings and logging to ``log_path`` for the duration."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log_path, "a") as log:
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        handler = logging.StreamHandler(log)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                logging.captureWarnings(True)
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    yield log
        finally:
            logging.captureWarnings(False)
            root.removeHandler(handler)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def unconverted_ops(text: str) -> list[str]:
    """The operators OpenVINO's frontend reports it could not convert: those with no conversion rule are the
    cause; the ``-- x with a message`` ones (which may be their victims) only when there is none."""
    import re

    ops = []
    for group in re.findall(r"No conversion rule found for operations: (.+?)(?= --|$)", text):
        ops += re.findall(r"[\w:.]+(?:-\d+)?", group)
    return list(dict.fromkeys(ops or re.findall(r"-- (\S+) with a message", text)))


def failure(e: BaseException, log_path: Path, limit: int = 300, layer_of=None) -> str:
    """A converter's exception as one line for the console, the whole of it (with its traceback) appended to
    ``log_path``. Operators the converter lists as unconverted make the line (each with its layer where
    ``layer_of(op)`` tells it); otherwise the message, whitespace folded, cut at a word and marked."""
    import traceback

    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        log.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
    text = " ".join(str(e).split())
    ops = unconverted_ops(text)
    if ops:
        named = [f"{op} (layer '{layer}')" if layer_of and (layer := layer_of(op)) else op for op in ops]
        return f"operators the converter could not convert: {', '.join(named)}"
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ... (whole message in the log)"
