"""``python -m encnet.train CONFIG ...`` (and ``torchrun ... -m encnet.train``): the command users type.

The trainer lives in :mod:`encnet.engine.train`; this module keeps the command and the names
``from encnet.train import train`` has always given, so nothing inside ``encnet`` imports it.
"""

import sys

from encnet.engine.train import (PREEMPTED_EXIT_CODE, NonFiniteLossError, Preempted, RunExistsError, main,
                                 train)

__all__ = ["PREEMPTED_EXIT_CODE", "NonFiniteLossError", "Preempted", "RunExistsError", "main", "train"]

if __name__ == "__main__":
    sys.exit(main())
