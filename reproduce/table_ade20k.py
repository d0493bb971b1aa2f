#!/usr/bin/env python
"""ADE20K validation (paper Table 4) and the test-set final score (Table 5, test server only).
Writes tables/ade20k[_demo].{md,csv,tex}.

Trains only the runs that are missing (finished runs are reused, unfinished ones resumed), then rebuilds the
outputs from the run logs and encnet/report/reported.csv.

    python reproduce/table_ade20k.py                                   # demo profile, CPU, minutes
    python reproduce/table_ade20k.py --profile paper --data-root DATA --gpus 8
    python reproduce/table_ade20k.py --profile paper --dry-run         # what would run, with its settings
    python reproduce/table_ade20k.py --from-logs                       # rebuild the outputs only

Options shared by every script: --profile {demo,paper} --data-root DIR --gpus N --seeds S [S ...] --dry-run
--from-logs --runs-root DIR --out-dir DIR --set KEY=VALUE [...] (see encnet/experiments/cli.py).
"""

import sys

from encnet.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main("ade20k"))
