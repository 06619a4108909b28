"""Imported by every Python process started with this folder on PYTHONPATH (tests/pipeline/test_distributed.py):
a rank of a torchrun job records each write it makes under EDGESHIP_AUDIT_ROOT (a file opened for writing, a
directory made, a rename or a removal: Python's audit events) into EDGESHIP_AUDIT_OUT/writes-rank<RANK>.txt when
it exits."""

from __future__ import annotations

import atexit
import os
import sys

ROOT = os.environ.get("EDGESHIP_AUDIT_ROOT")
OUT = os.environ.get("EDGESHIP_AUDIT_OUT")
EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree", "shutil.copyfile",
          "shutil.move", "os.symlink", "os.truncate", "os.chmod"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def _under(path) -> bool:
    try:
        return os.path.abspath(os.fsdecode(path)).startswith(ROOT)
    except TypeError:  # a file descriptor
        return False


if ROOT and OUT and "RANK" in os.environ:
    writes: list[str] = []

    def _hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (list(args) + [None, None])[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & WRITE_FLAGS)
            if writing and _under(path):
                writes.append(f"open {os.fsdecode(path)}")
        elif event in EVENTS and any(_under(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
            writes.append(f"{event} {os.fsdecode(args[0])}")

    def _save() -> None:
        with open(os.path.join(OUT, f"writes-rank{os.environ['RANK']}.txt"), "w") as f:
            f.write("\n".join(writes))

    sys.addaudithook(_hook)
    atexit.register(_save)
