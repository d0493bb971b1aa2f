"""Asking a run to stop: SIGTERM / SIGUSR1 are recorded, the training loop writes a checkpoint at the next iteration
boundary and the command exits with status 75 (``PREEMPTED_EXIT_CODE``), which ``scripts/slurm_encnet.sbatch``
requeues on."""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["PREEMPTED_EXIT_CODE", "Preempted", "STOP_SIGNALS", "StopRequests"]

# EX_TEMPFAIL (sysexits.h): "try again later". scripts/slurm_encnet.sbatch requeues on it.
PREEMPTED_EXIT_CODE = 75
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class Preempted(RuntimeError):
    """SIGTERM / SIGUSR1 arrived: a checkpoint was written at an iteration boundary and the run stopped."""


class StopRequests:
    """SIGTERM / SIGUSR1 handlers that only record the request: the training loop acts on it at the next
    iteration boundary, where the state is consistent and a checkpoint resumes exactly."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            # os.write, not print: the handler can run in the middle of a print to stderr, and re-entering the
            # buffered stream raises RuntimeError wherever the main thread happens to be (even mid-checkpoint).
            try:
                os.write(2, f"received {self.signal_name}: writing a checkpoint at the end of this iteration, then "
                            f"stopping\n".encode())
            except OSError:
                pass

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
