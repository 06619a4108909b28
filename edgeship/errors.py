"""User-facing errors: one line naming the problem and the fix, exit code 2 (bad input)."""

from __future__ import annotations


class EdgeshipError(Exception):
    """Bad input or an unmet precondition. ``str(e)`` is the one line the CLI prints."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem.rstrip().rstrip('.')}. Fix: {fix}" if fix else problem)


class TargetError(EdgeshipError):
    """One target failed (conversion, verification, accuracy gate); the other targets go on."""

    exit_code = 1
