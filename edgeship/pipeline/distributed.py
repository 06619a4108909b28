"""Training on several processes or machines with torch.distributed: who this process is (rank, world size),
joining the job's process group (gloo on CPU, NCCL on a GPU), the few collectives the runner and the training
loop need, and the launcher behind ``edgeship export RECIPE --nproc-per-node N`` (torch.distributed.run, the
engine of ``torchrun``, run in this process so that a failure becomes one line).

Under torchrun every process runs the same job; ``fit`` wraps the model in DistributedDataParallel and shards
each epoch with DistributedSampler, and rank 0 alone writes (the stage cache, the run directory, the report).
A process started without torchrun is a world of one and none of this changes what it does.

torch is imported inside the functions: the CLI imports this module for ``--nproc-per-node`` and must start
without torch."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeship.errors import EdgeshipError
from edgeship.progress import set_quiet

ERRORS_ENV = "EDGESHIP_DIST_ERRORS"  # the launcher's directory where a failing rank leaves its one line


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """This process's place in the job: torchrun's RANK / WORLD_SIZE / LOCAL_RANK (a world of one without them)."""
    env = os.environ
    try:
        return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
    except ValueError:
        raise EdgeshipError(f"RANK={env.get('RANK')!r} / WORLD_SIZE={env.get('WORLD_SIZE')!r} are not numbers",
                            "start the job with torchrun or edgeship export --nproc-per-node") from None


def active() -> bool:
    """A process group of more than one process is up (inside a torchrun job, between join and leave)."""
    import torch.distributed as dist  # heavy

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def resolve_device(spec: str = "auto") -> str:
    """``auto``: this rank's GPU when torch sees one (cuda:LOCAL_RANK), else the CPU; ``cpu``, ``cuda``,
    ``cuda:N`` as given (a missing GPU is bad input)."""
    import torch  # heavy

    spec = (spec or "auto").lower()
    if spec == "auto":
        return f"cuda:{world().local_rank % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EdgeshipError(f"train.device is {spec} but torch sees no GPU (torch {torch.__version__})",
                                "set train.device: auto or cpu, or install a CUDA build of torch")
        return f"cuda:{world().local_rank % torch.cuda.device_count()}" if spec == "cuda" else spec
    return "cpu"


class Stopped(BaseException):
    """torchrun stopped this rank (SIGTERM) because another one failed: unwind, so temporary output goes."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped(f"stopped by signal {signum}: another rank failed")


@contextlib.contextmanager
def process_group(device: str = "cpu") -> Iterator[World]:
    """Join the job's process group for the duration of a job (nothing in a world of one). Bar the first,
    ranks run quietly: rank 0 speaks for the job."""
    w = world()
    if w.size <= 1:
        yield w
        return
    import torch.distributed as dist  # heavy

    if dist.is_initialized():  # joined by the caller (a script of the user's): theirs to leave
        yield w
        return
    signal.signal(signal.SIGTERM, _stop)
    if not w.main:
        set_quiet(True)
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield w
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- collectives
def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; a model, a flag, a config); ``obj`` itself in a world of one."""
    if not active():
        return obj
    import torch.distributed as dist  # heavy

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a world of one)."""
    if not active():
        return [obj]
    import torch.distributed as dist  # heavy

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def gather_rows(local: Any, n: int) -> Any:
    """Each rank computed rows ``rank::size`` of an (n, ...) tensor: the whole tensor, on every rank."""
    if not active():
        return local
    import torch  # heavy

    parts = gather(local.cpu())
    out = torch.empty((n, *parts[0].shape[1:]), dtype=parts[0].dtype)
    for r, p in enumerate(parts):
        out[r::len(parts)] = p
    return out.to(local.device)


def shard(n: int) -> slice:
    """This rank's rows of ``n`` when each rank takes every size-th one (the teacher's share of a data set)."""
    w = world() if active() else World()
    return slice(w.rank, n, w.size)


# ---------------------------------------------------------------- failures and the launcher
def record_failure(message: str, exit_code: int = 1) -> None:
    """Leave this rank's one-line error where the launcher reads it (the earliest failure is the cause; the
    others were stopped because of it)."""
    d = os.environ.get(ERRORS_ENV)
    if not d or not Path(d).is_dir():
        return
    w = world()
    (Path(d) / f"rank-{w.rank}.json").write_text(json.dumps({"rank": w.rank, "time_ns": time.time_ns(),
                                                             "message": message, "exit_code": exit_code}))


def launched() -> bool:
    """Started by ``edgeship export --nproc-per-node``, which prints the failing rank's line itself."""
    return bool(os.environ.get(ERRORS_ENV)) and world().size > 1


def torchrun_args(nproc: int, nnodes: int = 1, node_rank: int = 0, master_addr: str | None = None,
                  master_port: int | None = None, join_timeout_s: int | None = None) -> list[str]:
    """torchrun's options: one machine picks a free port itself (--standalone); several meet at the master,
    each waiting at most ``join_timeout_s`` for the others (torchrun's default: 900 s)."""
    if nproc < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise EdgeshipError(f"--nproc-per-node {nproc} --nnodes {nnodes} --node-rank {node_rank} do not describe a "
                            "job", "give at least one process and one node, and a node rank from 0 to nnodes - 1")
    args = ["--nproc-per-node", str(nproc), "--nnodes", str(nnodes)]
    if nnodes == 1 and master_addr is None:
        return [*args, "--standalone"]
    if master_addr is None:
        raise EdgeshipError(f"a job on {nnodes} machines needs the address of node 0",
                            "pass --master-addr HOST (and the same --master-port) on every node")
    return [*args, "--node-rank", str(node_rank), "--master-addr", master_addr, "--master-port",
            str(master_port or 29500), *(["--rdzv-conf", f"timeout={join_timeout_s}"] if join_timeout_s else [])]


def launch(command: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0, master_addr: str | None = None,
           master_port: int | None = None, join_timeout_s: int | None = None) -> None:
    """Run ``edgeship <command>`` on ``nproc`` processes of this machine (torch.distributed.run: what the
    ``torchrun`` command runs). A failure on any rank stops them all and raises one EdgeshipError carrying the
    first failing rank's message; nodes that do not all meet in time: one EdgeshipError saying so."""
    args = torchrun_args(nproc, nnodes, node_rank, master_addr, master_port, join_timeout_s)
    from torch.distributed import DistNetworkError, DistStoreError  # heavy
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    errors = tempfile.mkdtemp(prefix="edgeship-dist-")
    saved = {k: os.environ.get(k) for k in (ERRORS_ENV, "OMP_NUM_THREADS", "TORCHELASTIC_SIGNALS_TO_HANDLE")}
    os.environ[ERRORS_ENV] = errors
    # torchrun sets 1 thread per process (with a warning) unless told; share this machine's cores instead
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    for name in list(logging.root.manager.loggerDict):  # torchrun's own failure report: ours is one line
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args([*args, "-m", "edgeship", *command]))
    except ChildFailedError as e:
        message, code = first_failure(Path(errors), e.failures)
        err = EdgeshipError(message)
        err.exit_code = code
        raise err from None
    except (DistStoreError, DistNetworkError) as e:  # the rendezvous: a node that never came, or an unreachable master
        where = f"{master_addr}:{master_port or 29500}"
        raise EdgeshipError(f"node {node_rank}: the {nnodes} nodes did not all meet at {where} "
                            f"({' '.join(str(e).split())[:200]}); nothing was written",
                            f"start the same command on every machine, --node-rank 0 to {nnodes - 1}, within "
                            "--join-timeout of each other; check each reaches that address; a node that stopped "
                            "printed why") from None
    finally:
        shutil.rmtree(errors, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def peer_lost(e: BaseException) -> bool:
    """A collective of this rank failed because another process of the job went away: how a failure on another
    machine reaches this one (on this machine torchrun stops the other ranks itself)."""
    import torch.distributed as dist  # heavy (loaded already in a rank)

    text = str(e)
    return isinstance(e, dist.DistNetworkError) or any(s in text for s in (
        "Connection closed by peer", "Connection reset by peer"))  # gloo's words for it


PEER_LOST = ("lost the connection to another process of the job, which stopped (on another node: that node "
             "printed why). Fix: read the other nodes' error, fix it there, and start the job again on every node")


def first_failure(errors: Path, failures: dict[int, Any]) -> tuple[str, int]:
    """(the earliest failing rank's own line, its exit code); a rank killed before it could say anything: its
    exit code."""
    lines = sorted((json.loads(p.read_text()) for p in errors.glob("rank-*.json")), key=lambda d: d["time_ns"])
    how = "every rank stopped and nothing was written"
    if lines:
        return f"rank {lines[0]['rank']} failed, {how}: {lines[0]['message']}", int(lines[0]["exit_code"])
    rank, f = min(failures.items(), key=lambda kv: kv[1].timestamp)
    return (f"rank {rank} exited with code {f.exitcode}, {how}. Fix: rerun with --debug, or on one process to see "
            "its error"), 1
