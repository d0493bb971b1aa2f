"""``python -m encnet.train`` whose every process kills itself (SIGKILL, no checkpoint, no cleanup) on reaching a
global iteration: a job killed without warning, for tests/test_multinode.py.

    torchrun ... tests/kill_at_iteration.py ITERATION CONFIG [encnet.train arguments]

Every rank dies at the same point, before that iteration's first collective, so the survivors never wait on a
dead peer: what is on disk is exactly what the run had written by then (checkpoints, logs, its LOCK).
"""

from __future__ import annotations

import os
import signal
import sys


def main(iteration: str, *args: str) -> int:
    import encnet.engine.train as train_module

    real = train_module.lr_at

    def lr_at(schedule, base, it, *rest):
        if it == int(iteration):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(schedule, base, it, *rest)

    train_module.lr_at = lr_at
    return train_module.main(list(args))


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
