"""What stops a job that cannot finish, and what says so in one line: a deadline around a stage or a target
(a model whose ``forward()`` never returns), and a full disk or file size limit however deep in a converter
the failed write was (``disk_full_error``).

A deadline first interrupts the work the way Ctrl-C would: ``SIGALRM`` in the main thread (an asynchronous
exception in any other) raises the error where the code is, which unwinds Python code, ``time.sleep`` and
blocking calls, so the temporary run directory is removed and the error names the stage. Code stuck in native
code that never returns to Python cannot be interrupted in-process: a watchdog thread then prints the same line
and ends the process (exit 2) after a grace period. The run in place is untouched either way; the next export
removes what was left.
"""

from __future__ import annotations

import ctypes
import errno
import math
import os
import resource
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from edgeship.errors import EdgeshipError

GRACE_S = (5.0, 120.0)  # the watchdog's grace after a deadline: at least, at most (a quarter of the deadline between)


class Expired(BaseException):
    """Raised into code past its deadline. Not an Exception: a converter's or a model's ``except Exception`` must not
    swallow or re-word it. ``Deadline`` turns it into its error where its block ends; code that handles a failure
    sooner (a target's, which stays that target's) catches it by name."""

    def __init__(self, problem: str = "a step did not finish in time", fix: str = ""):
        super().__init__(problem, fix)
        self.problem, self.fix = problem, fix

    def __str__(self) -> str:
        return f"{self.problem}. Fix: {self.fix}" if self.fix else self.problem


class Deadline:
    """``with Deadline(seconds, "stage 1:prune", fix): ...``: when the block runs longer than ``seconds`` (None or 0:
    no limit), ``Expired`` is raised inside it, where the code is, and leaves the block as ``error(problem, fix)``."""

    def __init__(self, seconds: float | None, what: str, fix: str, error: type[EdgeshipError] = EdgeshipError):
        self.seconds, self.what, self.fix, self.error = seconds, what, fix, error
        self._done = threading.Event()
        self._old: tuple | None = None

    @property
    def problem(self) -> str:
        return f"{self.what} did not finish within {self.seconds:g} s"

    def expired(self) -> Expired:
        return Expired(self.problem, self.fix)

    def __enter__(self) -> Deadline:
        if not self.seconds:
            return self
        self._thread = threading.current_thread()
        self._t0 = time.monotonic()
        if self._thread is threading.main_thread():
            def on_alarm(signum: int, frame: object) -> None:
                raise self.expired()

            handler = signal.signal(signal.SIGALRM, on_alarm)
            self._old = (handler, signal.setitimer(signal.ITIMER_REAL, self.seconds))
        grace = min(max(GRACE_S[0], self.seconds / 4), GRACE_S[1])
        threading.Thread(target=self._watch, args=(grace,), daemon=True, name="edgeship-deadline").start()
        return self

    def _watch(self, grace: float) -> None:
        assert self.seconds
        if self._old is None and not self._done.wait(self.seconds):  # not the main thread: no SIGALRM there
            me = self

            class Late(Expired):  # raised without arguments
                def __init__(self) -> None:
                    super().__init__(me.problem, me.fix)

            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread.ident or 0),
                                                       ctypes.py_object(Late))
        if self._done.wait(self.seconds + grace if self._old is not None else grace):
            return
        sys.stderr.write(f"error: {self.problem} and could not be interrupted (stuck in native code): exiting. "
                         f"Fix: {self.fix}\n")
        sys.stderr.flush()
        os._exit(2)

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if not self.seconds:
            return False
        self._done.set()
        if self._old is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            handler, (remaining, interval) = self._old
            signal.signal(signal.SIGALRM, handler)
            if remaining:  # an outer timer was running: give it back what is left of it
                spent = time.monotonic() - self._t0
                signal.setitimer(signal.ITIMER_REAL, max(remaining - spent, 0.001), interval)
        if isinstance(exc, Expired):
            raise self.error(exc.problem, exc.fix) from None
        return False


# ---------------------------------------------------------------- full disks
DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
# what converters and torch's zip writer make of a failed write once they have wrapped the OSError
SAID = ("no space left on device", "file too large", "disk quota exceeded", "errno 28", "errno 27")
SHORT_WRITE = ("unexpected pos", "file write failed", "pytorchstreamwriter failed", "write failed", "iostream error")
MB = 1 << 20


class DiskFull(EdgeshipError):
    """A write failed on a full disk or a file size limit (exit 2: nothing is wrong with the input)."""


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        stack += [e.__cause__, e.__context__]


def _existing(path: Path) -> Path:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return -1


def file_size_limit() -> int | None:
    """RLIMIT_FSIZE in bytes (``ulimit -f``), None when unlimited."""
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def disk_full(exc: BaseException, where: Path) -> bool:
    """Whether ``exc`` (or what it wraps) is a write that failed for lack of space or a file size limit. A
    short write reported only as such (torch's zip writer) counts when the disk under ``where`` is nearly
    full or a file size limit is set."""
    texts = []
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            return True
        texts.append(str(e).lower())
    if any(s in t for t in texts for s in SAID):
        return True
    if any(s in t for t in texts for s in SHORT_WRITE):
        free = free_bytes(where)
        return file_size_limit() is not None or 0 <= free < 64 * MB
    return False


def _size(n: int) -> str:
    return f"{n / MB:,.1f} MB" if n >= MB else f"{n / 1024:.0f} KB"


def disk_full_error(exc: BaseException, writing: str | Path, where: Path, written: int | None = None,
                    fix: str = "free space there (or raise the file size limit, `ulimit -f`) and run it again"
                    ) -> DiskFull | None:
    """The one line for a write that failed on a full disk or a file size limit (None when ``exc`` is not
    that): what was being written, how much to free (``written``: what the job had written when it failed),
    what is free on that file system and the limit if one is set."""
    if not disk_full(exc, where):
        return None
    free = free_bytes(where)
    limit = file_size_limit()
    facts = [f"{_size(max(free, 0))} free on {_existing(where)}"] if free >= 0 else []
    if limit is not None:
        facts.append(f"file size limit {_size(limit)} (ulimit -f)")
    need = f"; free {max(1, math.ceil((written or 0) / MB))} MB" if written is not None else ""
    return DiskFull(f"disk full (or file size limit) while writing {writing}{need} ({', '.join(facts)})", fix)


def write_text(path: Path, text: str) -> None:
    """``path.write_text(text)``; a full disk or a file size limit names ``path`` (the OSError does not)."""
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise disk_full_error(e, path, Path(path).parent, len(text.encode())) or e from None


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symbolic links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            total += st.st_size
    return total
