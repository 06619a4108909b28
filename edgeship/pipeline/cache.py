"""The stage cache: each finished pass's model under ``<runs>/.cache/<key>/``, so a rerun skips it.

A cache is a directory of pickles, and unpickling can run code, so an entry is only ever read back when
this user's edgeship wrote it:

* the directory is created private (0700) and refused when it belongs to someone else or others can write it;
* every entry carries an HMAC-SHA256 over its index (the stage's record, the bytes and SHA-256 of each file,
  the Python globals the pickle names) with a secret key kept outside the cache, 0600, in
  ``~/.config/edgeship/cache.key`` (``$EDGESHIP_CACHE_KEY`` to put it elsewhere). It is checked, and every
  file's hash with it, before anything is unpickled: a planted, corrupted or truncated entry is a miss,
  said once, and recomputed;
* the model is then read with ``torch.load(weights_only=True)``, allowing only the globals the entry's index
  names, each an ``nn.Module`` class of a module already imported or one of the few torch functions that
  rebuild a ``torch.fx`` graph (``ALLOWED``). ``weights_only=False`` is never used here.

Temporary entries of a killed process are removed on the next use (``rundir.clean_dead``).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import io
import json
import os
import secrets
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgeship import rundir
from edgeship.calibration.quant import QuantSettings
from edgeship.errors import EdgeshipError
from edgeship.limits import disk_full_error, tree_bytes
from edgeship.progress import warn
from edgeship.record import Stage

FORMAT = 1
# globals a cached stage may name besides nn.Module classes: how torch.fx pickles a GraphModule (its code
# is regenerated from the pickled graph: only ever read from an entry signed with the user's key)
ALLOWED = {"torch.fx.graph_module.reduce_graph_module", "torch.fx._symbolic_trace.Tracer",
           "torch.fx.graph_module._CodeOnlyModule"}
IMPORTABLE = ("torch", "torch_pruning", "edgeship")  # a global from elsewhere must be imported already
MAX_INDEX = 16 << 20


def key_path() -> Path:
    if os.environ.get("EDGESHIP_CACHE_KEY"):
        return Path(os.environ["EDGESHIP_CACHE_KEY"])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "edgeship" / "cache.key"


def secret_key() -> bytes | None:
    """The user's cache key (made on first use); None when it cannot be made (the cache is then not used)."""
    path = key_path()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            if not _make_key(path):
                return None
            continue
        except OSError as e:
            raise EdgeshipError(f"the stage cache key {path} cannot be read ({e.strerror})",
                                f"remove {path} (a new one is made on the next run)") from None
        try:
            st = os.fstat(fd)
            key = os.read(fd, 64)
        finally:
            os.close(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise EdgeshipError(f"the stage cache key {path} is not a private file of yours (owner uid {st.st_uid}, "
                                f"mode {stat.S_IMODE(st.st_mode):o}): whoever can read it can plant code in the cache",
                                f"remove {path} (a new one is made on the next run)")
        if len(key) >= 32:
            return key
        path.unlink(missing_ok=True)  # cut short when it was written: make another (old entries become misses)
    return None


def _make_key(path: Path) -> bool:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and never over a key another process just made
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        return True
    except OSError as e:
        warn(f"[yellow]stage cache off: cannot create its key {path} ({e.strerror}); set EDGESHIP_CACHE_KEY to a "
             "writable private path to cache stages[/yellow]")
        return False


def check_dir(root: Path) -> None:
    """Refuse a cache directory that someone else owns or can write (they could plant entries)."""
    st = os.stat(root)
    link = os.lstat(root)
    fix = f"remove {root} (edgeship recreates it, private to you), or set output: elsewhere"
    if link.st_uid != os.geteuid() or st.st_uid != os.geteuid():
        raise EdgeshipError(f"the stage cache {root} belongs to another user (uid {st.st_uid}); edgeship does not "
                            "read pickles others can write", fix)
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o022:
        raise EdgeshipError(f"the stage cache {root} is writable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                            "edgeship does not read pickles others can write", f"chmod 700 {root}, or {fix}")


def _resolve(name: str) -> Any:
    """The object a pickle global names, if a stage may hold it (see ``ALLOWED``); else None."""
    module, _, attr = name.rpartition(".")
    if module not in sys.modules and module.split(".")[0] not in IMPORTABLE:
        return None
    try:
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    if name in ALLOWED or (isinstance(obj, type) and issubclass(obj, nn.Module)):
        return obj
    return None


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StageCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._secret: bytes | None = None
        self._ready: bool | None = None
        self._said: set[str] = set()

    def key(self, in_hash: str, name: str, config: Any, data_spec: dict, code: str) -> str:
        """The entry of a pass run on a model (its hash) with a config, a data spec and the pipeline's code."""
        blob = json.dumps({"in": in_hash, "pass": name, "config": config.model_dump(mode="json"),
                           "data": data_spec, "code": code}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def ready(self, create: bool = False) -> bool:
        """The directory is safe (made private if ``create``) and the key is at hand; checked once."""
        if self._ready is None:
            if not self.root.exists() and not self.root.is_symlink():
                if not create:
                    return False
                self.root.mkdir(mode=0o700, exist_ok=True)
            check_dir(self.root)
            self._secret = secret_key()
            self._ready = self._secret is not None
            if self._ready:
                rundir.clean_dead(self.root, (".",))  # entries a killed process was writing
        return self._ready

    def _mac(self, key: str, index: dict) -> str:
        assert self._secret is not None
        body = json.dumps({**{k: v for k, v in index.items() if k != "mac"}, "key": key}, sort_keys=True)
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()

    def _miss(self, key: str, why: str) -> tuple[nn.Module, Stage, Any] | None:
        """Say once that entry ``key`` is not used and why, remove it; a miss (None) for ``get`` to return."""
        if key not in self._said:
            self._said.add(key)
            warn(f"[yellow]stage cache entry {key} {why}: not used, recomputing the stage[/yellow]")
        rundir.clean_dead(self.root, (key,))
        return None

    def get(self, key: str) -> tuple[nn.Module, Stage, Any] | None:
        d = self.root / key
        if not (d / "done").exists() or not self.ready():
            return None
        try:
            if (d / "done").stat().st_size > MAX_INDEX:
                return self._miss(key, "has an index too large to be one")
            index = json.loads((d / "done").read_text())
            if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("mac"), str):
                return self._miss(key, "was written by another edgeship version or by hand")
            if not hmac.compare_digest(index["mac"], self._mac(key, index)):
                return self._miss(key, "is not signed with your cache key (written by someone else, by hand, or "
                                       "changed since)")
            files = {}
            for name, want in index["files"].items():
                data = rundir.inside(d, name, f"stage cache entry {key}").read_bytes()
                if len(data) != want["bytes"]:
                    return self._miss(key, f"is damaged: {name} has {len(data)} of its {want['bytes']} bytes")
                if _sha(data) != want["sha256"]:
                    return self._miss(key, f"is damaged: {name} does not match its checksum")
                files[name] = data
            model = self._load(files, index["globals"])
            quant = None if index["quant"] is None else QuantSettings.model_validate(index["quant"])
            return model, Stage.model_validate(index["record"]), quant
        except Exception as e:  # unreadable in any other way: recompute, say so once
            return self._miss(key, f"cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:160]})")

    @staticmethod
    def _load(files: dict[str, bytes], names: list[str]) -> nn.Module:
        if "stage.ts" in files:  # TorchScript: its own archive format, no pickled Python objects
            module: nn.Module = torch.jit.load(io.BytesIO(files["stage.ts"]), map_location="cpu")
            return module
        allowed = [_resolve(n) for n in names]
        if any(a is None for a in allowed):
            bad = [n for n, a in zip(names, allowed) if a is None]
            raise ValueError(f"it names {', '.join(bad[:3])}, which a cached stage may not hold")
        with torch.serialization.safe_globals(allowed):
            model: nn.Module = torch.load(io.BytesIO(files["stage.pt"]), map_location="cpu", weights_only=True)
        return model

    def put(self, key: str, model: nn.Module, record: Stage, quant: Any) -> bool:
        """Store a finished stage; False (nothing stored) for a model the cache cannot hold: one that cannot be
        pickled (a torch.export program) or that names objects the safe loader does not restore. Its stage
        then reruns next time. A full disk is an error."""
        if not self.ready(create=True):
            return False
        try:
            tmp = rundir.locked_tempdir(self.root, f".{key}-")
        except OSError as e:
            full = disk_full_error(e, f"the stage cache entry {self.root / key}", self.root, 0)
            if full is not None:
                raise full from None
            if "put" not in self._said:  # a read-only cache: the run goes on, uncached
                self._said.add("put")
                warn(f"[yellow]stage cache {self.root} is not writable ({e.strerror}): stages are not cached[/yellow]")
            return False
        try:
            try:
                if isinstance(model, torch.jit.ScriptModule):  # TorchScript pickles only through its own format
                    torch.jit.save(model, str(tmp / "stage.ts"))
                    names: list[str] = []
                else:
                    torch.save(model, tmp / "stage.pt")
                    names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(tmp / "stage.pt"))
                files = {p.name: p.read_bytes() for p in tmp.iterdir()}
                self._load(files, names)  # what a rerun will do: a stage it cannot restore is not stored
            except Exception as e:
                err = disk_full_error(e, f"the stage cache entry {self.root / key}", self.root, tree_bytes(tmp))
                if err is not None:
                    raise err from None
                return False
            index = {"format": FORMAT, "record": record.model_dump(mode="json"),
                     "quant": None if quant is None else QuantSettings.model_validate(quant).model_dump(mode="json"),
                     "files": {n: {"bytes": len(b), "sha256": _sha(b)} for n, b in files.items()}, "globals": names}
            index["mac"] = self._mac(key, index)
            try:
                (tmp / "done").write_text(json.dumps(index))
            except OSError as e:
                raise (disk_full_error(e, f"the stage cache entry {self.root / key}", self.root) or e) from None
            final = self.root / key
            rundir.clean_dead(self.root, (key,))  # a damaged entry of the same key (nobody holds it)
            try:
                os.rename(tmp, final)
            except OSError:  # another process stored the same stage meanwhile: theirs serves
                return True
            return True
        finally:
            rundir.release(tmp)
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
