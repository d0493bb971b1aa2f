"""Process-group set-up for ``torchrun`` (one process per device): nccl on CUDA, gloo on CPU.

torchrun (single node or multi-node ``--nnodes/--rdzv-*``, or SLURM through ``srun torchrun``) exports
RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous address; a plain ``python -m encnet.train`` has none and
runs as a single process without a process group.

A rank that dies breaks every collective of the others (gloo: "Connection closed by peer"); the engine turns that
error into :class:`PeerFailureError`, which names the dead rank (same host: its pid is gone) so a run never hangs
silently. A rank that stops without closing its connections (a frozen node) is detected by the collective
timeout, ``ENCNET_COLLECTIVE_TIMEOUT_S`` (default 1800 s, torch's own default).
"""

from __future__ import annotations

import datetime
import os
import socket
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .devices import DeviceError, gpu_refusal, process_refusal

__all__ = [
    "DeviceError",
    "DistContext",
    "PeerFailureError",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "exit_process",
    "find_free_port",
    "peer_failure",
    "setup",
]


class PeerFailureError(RuntimeError):
    """Another process of the run died or stopped answering; this one stops instead of waiting forever."""


# (host, pid) of every rank, gathered once at set-up, to name a rank that dies later.
_PEERS: list[tuple[str, int]] = []


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None when not distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None, gpu_only: bool = False) -> DistContext:
    """Join the process group described by torchrun's environment (or none), and pick the device.

    ``device``: "cuda" or "cpu"; default CUDA when available, the CPU otherwise, unless ``gpu_only`` (the paper
    profile): then a machine without usable CUDA is a :class:`DeviceError` saying why, never a silent CPU run. More
    processes on this node than visible GPUs is one too. Safe to call again in the same process (an existing process
    group is reused, e.g. when ``train`` and then ``evaluate`` run in-process).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    asked = ("--device cuda asks for a GPU" if device is not None and device.startswith("cuda") else
             "the paper profile trains on GPUs" if device is None and gpu_only else None)
    refusal = gpu_refusal(asked) if asked else None
    if refusal:
        raise DeviceError(refusal)
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        # torchrun exports LOCAL_WORLD_SIZE: every rank of a node refuses together, not only those past the count.
        processes = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), local_rank + 1)
        refusal = process_refusal(processes, "torchrun --nproc_per_node" if world_size > 1 else "this run")
        if refusal:
            raise DeviceError(refusal)
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    backend = None
    if world_size > 1:
        backend = "nccl" if use_cuda else "gloo"
        if not dist.is_initialized():
            kwargs = {"device_id": dev} if use_cuda else {}
            timeout = datetime.timedelta(seconds=float(os.environ.get("ENCNET_COLLECTIVE_TIMEOUT_S", 1800)))
            dist.init_process_group(backend=backend, timeout=timeout, **kwargs)
        rank, world_size = dist.get_rank(), dist.get_world_size()
        if len(_PEERS) != world_size:
            _PEERS[:] = all_gather_objects((socket.gethostname(), os.getpid()))
    return DistContext(rank, world_size, local_rank, dev, backend)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # killed but not yet reaped by torchrun: a zombie
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def peer_failure(err: BaseException, wait_s: float = 3.0) -> PeerFailureError | None:
    """A :class:`PeerFailureError` naming the rank(s) whose death explains ``err``, or None when ``err`` is not a
    failed collective (then the caller re-raises it)."""
    if not _PEERS or not dist.is_initialized():
        return None
    me = dist.get_rank()
    host = socket.gethostname()
    text = str(err)
    looks_collective = isinstance(err, getattr(dist, "DistError", ())) or any(
        word in text for word in ("gloo", "Gloo", "NCCL", "nccl", "Connection closed", "Connection reset",
                                  "timed out", "Timed out", "Broken pipe"))
    deadline = time.monotonic() + (wait_s if looks_collective else 0.0)
    while True:  # the peer's connections close a moment before its process is gone
        dead = [r for r, (h, pid) in enumerate(_PEERS) if r != me and h == host and _pid_gone(pid)]
        if dead or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    first = text.strip().splitlines()[0][:300] if text.strip() else type(err).__name__
    if dead:
        names = ", ".join(f"rank {r} (pid {_PEERS[r][1]} on {_PEERS[r][0]})" for r in dead)
        return PeerFailureError(f"rank {me}: {names} died; stopping this rank instead of waiting for it "
                                f"(the collective failed with: {first})")
    if not looks_collective:
        return None
    others = [r for r, (h, _) in enumerate(_PEERS) if r != me and h != host]
    if len(_PEERS) == 2 and len(others) == 1:
        suspects = f"rank {others[0]} (on {_PEERS[others[0]][0]})"
    elif others:
        suspects = "one of ranks " + ", ".join(str(r) for r in others) + " on other hosts"
    else:
        suspects = "another rank"
    return PeerFailureError(f"rank {me}: {suspects} stopped answering (died, or its node is gone); stopping this "
                            f"rank instead of waiting for it (the collective failed with: {first})")


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _PEERS.clear()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: object) -> list:
    """Every process's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def exit_process(rc: int) -> int:
    """Leave the process group, then exit. Under torchrun the exit skips interpreter teardown: torch's gloo
    backend can abort there ("terminate called without an active exception") after a run that succeeded."""
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cleanup()
    if multi:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc
