"""What the fault probes share: running edgeship in this process or in a child (with a file size limit, or with a
fault placed by a driver), reading its one-line errors, telling a complete run, and real mounts (a small tmpfs,
a read-only bind mount)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeship.cli import app

EDGESHIP = [sys.executable, "-c", "import sys; from edgeship.cli import app; sys.argv[0] = 'edgeship'; app()"]


# ---------------------------------------------------------------- running edgeship
def cli(*args, env: dict | None = None):
    """`edgeship ARGS` in this process (typer's runner): exit_code, stdout, stderr."""
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def child(args: list, *, cwd: Path | None = None, env: dict | None = None, fsize: int | None = None,
          timeout: float = 600, driver: str | None = None) -> subprocess.CompletedProcess:
    """`edgeship ARGS` in a child process (``fsize``: its RLIMIT_FSIZE in bytes; ``driver``: Python run before the
    CLI in that process, to place a fault at a precise point)."""
    def limit():
        if fsize is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    cmd = EDGESHIP if driver is None else [sys.executable, "-c", driver + "\n" + EDGESHIP[2]]
    return subprocess.run([*cmd, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, preexec_fn=limit)


def one_line(text: str, code: int, got: int, *needles: str) -> str:
    """The error printed as one (soft-wrapped) line starting with 'error:' and nothing after it, no traceback, the
    expected exit code (progress lines may come before it); returns it flattened."""
    text = text.strip()
    assert got == code, (got, text)
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    first = next((i for i, ln in enumerate(lines) if ln.startswith("error:")), None)
    assert first is not None, text
    assert all(ln.startswith(" ") for ln in lines[first + 1:]), text
    flat = " ".join(" ".join(lines[first:]).split())
    for n in needles:
        assert n in flat, (n, flat)
    return flat


def complete(run: Path) -> bool:
    """A whole run: its record loads and validates, its page is there and every OK target's files are there."""
    from edgeship.record import RunRecord

    try:
        rec = RunRecord.load(run)
    except Exception:
        return False
    return (Path(run) / "report.html").is_file() and all(
        (Path(run) / f).is_file() for t in rec.targets if t.ok for f in t.files)


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("mount probes need root (CI runs as root): run the fault tests as root")


@contextlib.contextmanager
def tmpfs(where: Path, size: str, before_unmount=None):
    """A real tmpfs of ``size`` (mount's syntax: 16m, 512k) at ``where``, unmounted afterwards (``before_unmount()``
    called first, whether the probe passed or not: the guard counts the runs on it while they are there)."""
    _root()
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        if before_unmount is not None:
            before_unmount()
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(fs: Path, leave_kb: int) -> None:
    """Fill the file system at ``fs`` until ``leave_kb`` KiB are free."""
    free = shutil.disk_usage(fs).free
    with open(fs / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave_kb * 1024, 0))


@contextlib.contextmanager
def read_only(where: Path):
    """``where`` bind-mounted read-only onto itself (root bypasses permission bits; a read-only mount it cannot)."""
    _root()
    subprocess.run(["mount", "--bind", str(where), str(where)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def planted_pickle(path: Path, marker: Path) -> None:
    """A torch file whose unpickling runs code (it creates ``marker``)."""
    import torch

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    torch.save({"model": Payload()}, path)
