"""Directories on disk that a killed process must not leave broken or unsafe: an export's private temporary
directory (locked while its process lives), the atomic swap that puts a finished run in place, recovery of a
run that an interrupted swap stranded, cleaning what dead processes left, and the check that every path read
from a run directory stays inside it.

Liveness is a lock, not a process id: each temporary directory is ``flock``ed by the process that made it, and
the kernel releases the lock when that process dies however it dies (SIGKILL included), so a directory whose
lock can be taken belongs to nobody alive. Process ids are reused; locks are not inherited by other programs.

The swap: ``renameat2(RENAME_EXCHANGE)`` trades the finished run and the previous one in one step (Linux 3.15+,
on local file systems), so ``runs/<name>`` is at every instant either the previous run or the new one. Where
the exchange is unsupported, the previous run is renamed aside (``.<name>.old-*``, locked) and the new one
renamed in; a kill between the two renames leaves both complete on disk, and the next export (or any command
that calls ``recover``) puts the newer complete one back at ``runs/<name>``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

from edgeship.errors import EdgeshipError
from edgeship.progress import warn
from edgeship.record import REPORT, is_run_dir

TMP, OLD = ".tmp-", ".old-"
FRESH_S = 30  # an empty directory younger than this may be one another process is about to lock
_LOCKS: dict[str, int] = {}  # path -> fd holding its flock (released when closed or when the process dies)
_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


# ---------------------------------------------------------------- locked temporary directories
UNLOCKABLE = -1  # _lock: the file system has no flock (some network file systems)


def _lock(path: Path, blocking: bool = False) -> int | None:
    """An fd holding an exclusive flock on the directory ``path``; None when another process holds it (or the
    directory is gone); UNLOCKABLE where the file system cannot lock."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except OSError as e:
        os.close(fd)
        return None if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR) else UNLOCKABLE
    return fd


def locked_tempdir(parent: Path, prefix: str) -> Path:
    """``mkdtemp`` in ``parent``, locked by this process until ``release`` (or its death). Without flock the
    directory is not locked, and no cleaner takes it (nor any other) for a dead process's."""
    for _ in range(100):
        d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        fd = _lock(d)
        if fd is not None:
            if fd != UNLOCKABLE:
                _LOCKS[str(d)] = fd
            return d
        shutil.rmtree(d, ignore_errors=True)  # a cleaner took it in the instant before the lock: take another
    raise EdgeshipError(f"cannot lock a temporary directory in {parent}", "check the file system")


def release(path: Path) -> None:
    fd = _LOCKS.pop(str(path), None)
    if fd is not None:
        os.close(fd)


def _dead(parent: Path, prefixes: tuple[str, ...]) -> list[tuple[Path, int]]:
    """(directory, fd holding its lock) for each ``prefix*`` directory of ``parent`` that no live process holds."""
    try:
        names = sorted(n for n in os.listdir(parent) if n.startswith(prefixes))
    except OSError:
        return []
    found = []
    for name in names:
        d = parent / name
        if not d.is_dir() or d.is_symlink() or str(d) in _LOCKS:
            continue
        try:
            if not any(d.iterdir()) and time.time() - d.stat().st_mtime < FRESH_S:
                continue  # just made: its owner may not have locked it yet
        except OSError:
            continue
        fd = _lock(d)
        if fd is not None and fd != UNLOCKABLE:
            found.append((d, fd))
    return found


def clean_dead(parent: Path, prefixes: tuple[str, ...]) -> int:
    """Remove the ``prefix*`` directories of ``parent`` whose processes died; returns how many."""
    n = 0
    for d, fd in _dead(parent, prefixes):
        try:
            shutil.rmtree(d, ignore_errors=True)
            n += not d.exists()
        finally:
            os.close(fd)
    return n


# ---------------------------------------------------------------- run directories
def temp_run_dir(out: Path) -> Path:
    """The private directory an export writes into (beside ``out``, so the final rename stays on one file system)."""
    return locked_tempdir(out.parent, f".{out.name}{TMP}")


def _complete(d: Path) -> bool:
    """A finished run: the record and the page are written last, just before the swap."""
    return (d / "report.html").is_file() and is_run_dir(d)


def recover(out: Path) -> None:
    """Before an export (or a read) of ``out``: put back a finished run that an interrupted swap stranded, and
    remove what dead exports left beside it (their temporary directories, a previous run set aside)."""
    out = Path(out)
    dead = _dead(out.parent, (f".{out.name}{TMP}", f".{out.name}{OLD}"))
    try:
        if not out.exists() and not out.is_symlink():
            done = [(d, fd) for d, fd in dead if _complete(d)]
            # the new run (a .tmp- that was about to be swapped in) before the one it replaces (.old-), newest first
            done.sort(key=lambda x: (TMP in x[0].name, (x[0] / REPORT).stat().st_mtime), reverse=True)
            if done:
                best = done[0][0]
                os.rename(best, out)
                os.chmod(out, 0o755)  # mkdtemp made it private
                warn(f"[yellow]recovered {out} from an interrupted export ({best.name})[/yellow]")
                dead = [x for x in dead if x[0] != best]
        removed = 0
        for d, _ in dead:
            shutil.rmtree(d, ignore_errors=True)
            removed += not d.exists()
        if removed:
            warn(f"[dim]removed {removed} temporary director{'y' if removed == 1 else 'ies'} that interrupted "
                 f"exports left beside {out}[/dim]")
    finally:
        for _, fd in dead:
            os.close(fd)


def exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system or the file system cannot (a fault test replaces
    this function to take the rename-aside path)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(e, os.strerror(e), str(b))


def swap_in(tmp: Path, out: Path) -> None:
    """Put the finished run ``tmp`` at ``out``; the previous run (if any) goes only once the new one is in place."""
    os.chmod(tmp, 0o755)  # mkdtemp makes it private
    try:
        if not out.exists():
            try:
                os.rename(tmp, out)
                return
            except OSError as e:  # another export put a run there in the meantime: swap with it
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        if exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous run
            return
        fd = _lock(out, blocking=True)  # set aside, but locked: nobody takes it for a dead export's leftovers
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}{OLD}", dir=out.parent))
        try:
            os.rename(out, old)
            os.rename(tmp, out)
        finally:
            if fd is not None and fd != UNLOCKABLE:
                os.close(fd)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        release(tmp)



# ---------------------------------------------------------------- paths read from a run directory
def inside(base: Path, rel: str, what: str) -> Path:
    """``base / rel`` for a path read from a file under ``base``; refused unless it is relative, has no ``..``
    and resolves (symbolic links followed) inside ``base``."""
    p = Path(str(rel))
    if not str(rel) or p.is_absolute() or ".." in p.parts or str(rel).startswith("~"):
        raise EdgeshipError(f"{what} names {str(rel)!r}, a path outside its directory {base}",
                            "export the run again (a run directory must not point outside itself)")
    full = Path(base) / p
    root = Path(base).resolve()
    real = full.resolve()
    if real != root and root not in real.parents:
        raise EdgeshipError(f"{what}: {rel} leads outside {base} (to {real}, through a symbolic link)",
                            "export the run again (a run directory must not point outside itself)")
    return full


def escapes(base: Path, sub: Path) -> Path | None:
    """The first entry under ``sub`` (a directory inside ``base``) that resolves outside ``base``, else None."""
    root = Path(base).resolve()
    if root not in Path(sub).resolve().parents:
        return Path(sub)
    for dirpath, dirs, files in os.walk(sub):
        for name in dirs + files:
            real = (Path(dirpath) / name).resolve()
            if root not in real.parents:
                return Path(dirpath) / name
    return None
