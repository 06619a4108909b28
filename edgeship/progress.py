"""Rich progress bars and console; quiet mode (CI, --json) prints nothing."""

from __future__ import annotations

import contextlib
import os

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
_QUIET = {"on": bool(os.environ.get("EDGESHIP_QUIET"))}


def set_quiet(quiet: bool) -> None:
    _QUIET["on"] = quiet


def is_quiet() -> bool:
    return _QUIET["on"]


def progress_bar(quiet: bool = False):
    """Bars on a terminal only: written to a file or a pipe (CI logs, `make demo > log`) a bar is redrawn as
    nothing but a blank line; the info lines say what happened there."""
    if quiet or _QUIET["on"] or not console.is_terminal:
        return _NullProgress()
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)


class _NullProgress(contextlib.AbstractContextManager):
    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


def info(msg: str) -> None:
    if not _QUIET["on"]:
        console.print(msg, soft_wrap=True)  # one line per message in a log (a terminal wraps it itself)


def warn(msg: str) -> None:
    """A warning on stderr, shown even in quiet mode (quiet hides progress, not problems)."""
    console.print(msg, soft_wrap=True, highlight=False)


def step_line(msg: str, quiet: bool = False) -> None:
    """A line where a bar would have shown progress: written to a file or a pipe, a long step (a training
    epoch) still says what it did and how long it took."""
    if not (quiet or _QUIET["on"] or console.is_terminal):
        console.print(msg, soft_wrap=True, highlight=False)
