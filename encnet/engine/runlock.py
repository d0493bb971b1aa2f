"""One trainer per run folder: a ``LOCK`` file created exclusively, with the holder's host, pid and a heartbeat.

Runs shared between experiments are one folder, so two reproduce scripts (or two cluster jobs) can reach the
same run at once. The first to create ``<run_dir>/LOCK`` (``O_CREAT | O_EXCL``, atomic on local disks and NFSv3+)
trains; the holder touches the file every ``ENCNET_LOCK_HEARTBEAT_S`` seconds (default 30). Another process
either waits for the holder (then reuses the finished run, or resumes it) or skips the run.

A lock is stale, and is taken over with a message, when its holder is on this host and its pid is gone (kill -9),
when the pid is this process's own (a restarted container), or when the heartbeat is older than
``ENCNET_LOCK_STALE_S`` seconds (default 300: a dead node).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

__all__ = ["LOCK", "RunLock", "RunLockedError", "describe_holder", "live_holder", "lock_run", "read_lock"]

LOCK = "LOCK"
_HELD_HERE: set[str] = set()  # tokens of the locks this process holds (any RunLock object)


class RunLockedError(RuntimeError):
    """Another live process holds the run's lock and the caller asked to skip locked runs."""


def _env_seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def read_lock(run_dir: str | Path) -> dict | None:
    """The holder's record plus ``age_s`` (seconds since its last heartbeat), or None when unlocked."""
    path = Path(run_dir) / LOCK
    try:
        info = json.loads(path.read_text())
        info["age_s"] = max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        # Half-written by a holder that died between create and write: judge it by its age alone.
        try:
            info = {"host": "?", "pid": -1, "token": None, "age_s": max(0.0, time.time() - path.stat().st_mtime)}
        except FileNotFoundError:
            return None
    return info


def describe_holder(info: dict) -> str:
    return f"pid {info.get('pid')} on {info.get('host')} (heartbeat {info.get('age_s', 0):.0f} s ago)"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child that its parent has not reaped yet is a zombie: gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunLock:
    """The lock of one run folder. ``try_acquire`` returns None once held, else the live holder's record."""

    def __init__(self, run_dir: str | Path, heartbeat_s: float | None = None, stale_s: float | None = None,
                 say=print):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else _env_seconds("ENCNET_LOCK_HEARTBEAT_S", 30)
        self.stale_s = stale_s if stale_s is not None else _env_seconds("ENCNET_LOCK_STALE_S", 300)
        self.say = say
        self.token: str | None = None
        self.lost: str | None = None  # why the lock is no longer ours (taken over while we were suspended)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self.token is not None

    def stale_reason(self, info: dict) -> str | None:
        same_host = info.get("host") == socket.gethostname()
        pid = int(info.get("pid") or -1)
        if same_host and pid == os.getpid() and info.get("token") not in _HELD_HERE:
            return f"its pid {pid} is this process's own, so its holder is gone (a restarted process or container)"
        if same_host and pid > 0 and not _pid_alive(pid):
            return f"pid {pid} is no longer running on this host"
        if info.get("age_s", 0.0) > self.stale_s:
            return f"its last heartbeat is {info['age_s']:.0f} s old (limit {self.stale_s:g} s: ENCNET_LOCK_STALE_S)"
        return None

    def try_acquire(self) -> dict | None:
        for _ in range(5):
            token = uuid.uuid4().hex
            record = {"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            self.run_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileNotFoundError:
                continue  # a holder whose run failed before its first checkpoint removed the folder meanwhile
            except FileExistsError:
                info = read_lock(self.run_dir)
                if info is None:
                    continue  # released between our attempt and the read
                reason = self.stale_reason(info)
                if reason is None:
                    return info
                if self._take_over(info):
                    self.say(f"{self.run_dir}: taking over a stale lock of pid {info.get('pid')} on "
                             f"{info.get('host')}: {reason}")
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self.token = token
            _HELD_HERE.add(token)
            self.lost = None
            self._start_heartbeat()
            return None
        info = read_lock(self.run_dir)
        return info or {"host": "?", "pid": -1, "age_s": 0.0}

    def _take_over(self, info: dict) -> bool:
        """Move the stale file aside; if another process replaced it meanwhile, put that one back."""
        aside = self.path.with_name(f"{LOCK}.stale.{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        try:
            moved = json.loads(aside.read_text())
        except (ValueError, OSError):
            moved = {}
        if moved.get("token") != info.get("token"):
            try:
                os.link(aside, self.path)  # fails if yet another process locked meanwhile: theirs stands
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def _owned(self) -> bool:
        info = read_lock(self.run_dir)
        return info is not None and info.get("token") == self.token

    def _start_heartbeat(self) -> None:
        self._stop.clear()

        def beat():
            while not self._stop.wait(self.heartbeat_s):
                if not self._owned():
                    holder = read_lock(self.run_dir)
                    self.lost = ("the lock file is gone" if holder is None
                                 else f"it was taken over by {describe_holder(holder)}")
                    return
                try:
                    os.utime(self.path)
                except OSError:
                    pass

        self._thread = threading.Thread(target=beat, name="encnet-run-lock", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise when the lock was lost: writing now would overwrite the new holder's checkpoints."""
        if self.held and (self.lost or not self._owned()):
            holder = read_lock(self.run_dir)
            why = self.lost or ("the lock file is gone" if holder is None else
                                f"it was taken over by {describe_holder(holder)}")
            raise RunLockedError(f"{self.run_dir}: this process lost the run's lock ({why}); stopping without "
                                 "writing so the two processes do not overwrite each other")

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._owned():
            self.path.unlink(missing_ok=True)
        _HELD_HERE.discard(self.token)
        self.token = None


def live_holder(run_dir: str | Path) -> dict | None:
    """The record of a live process holding ``run_dir``'s lock; None when unlocked or the lock is stale."""
    info = read_lock(run_dir)
    if info is None or RunLock(run_dir).stale_reason(info) is not None:
        return None
    return info


def lock_run(run_dir: Path, ctx, if_locked: str, say=print) -> RunLock | None:
    """Hold ``run_dir``'s lock for a training run (rank 0 holds it for all ranks of ``ctx``, a
    ``encnet.engine.distributed.DistContext``). ``if_locked`` "wait": poll until the holder releases it (or dies);
    "skip": raise :class:`RunLockedError`. Every rank polls together, so nobody sits in a barrier for the hours
    another run may take."""
    import torch

    from . import distributed

    lock = RunLock(run_dir, say=say) if ctx.is_main else None
    poll = _env_seconds("ENCNET_LOCK_POLL_S", 10)
    announced = False
    while True:
        holder = lock.try_acquire() if lock is not None else None
        flag = torch.tensor([0.0 if holder is None or not ctx.is_main else 1.0], device=ctx.device)  # nccl: on GPU
        distributed.all_reduce_sum(flag)
        if flag.item() == 0:
            return lock
        if if_locked == "skip":
            by = describe_holder(holder) if holder else "another process"
            raise RunLockedError(f"{run_dir} is being trained by {by}; "
                                 f"skipping it (its result is reused once it finishes)")
        if not announced and holder is not None:
            say(f"{run_dir} is being trained by {describe_holder(holder)}; waiting for it to finish, then "
                f"reusing its result (--if-locked skip skips it instead)")
            announced = True
        time.sleep(poll)
