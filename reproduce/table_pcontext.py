#!/usr/bin/env python
"""PASCAL-Context with 60 classes (background counted), EncNet R101, multi-scale + flip (paper Table 2).
Writes tables/pcontext[_demo].{md,csv,tex}.

Trains only the runs that are missing (finished runs are reused, unfinished ones resumed), then rebuilds the
outputs from the run logs and encnet/report/reported.csv.

    python reproduce/table_pcontext.py                                   # demo profile, CPU, minutes
    python reproduce/table_pcontext.py --profile paper --data-root DATA --gpus 8
    python reproduce/table_pcontext.py --profile paper --dry-run         # what would run, with its settings
    python reproduce/table_pcontext.py --from-logs                       # rebuild the outputs only

Options shared by every script: --profile {demo,paper} --data-root DIR --gpus N --seeds S [S ...] --dry-run
--from-logs --runs-root DIR --out-dir DIR --set KEY=VALUE [...] (see encnet/experiments/cli.py).
"""

import sys

from encnet.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main("pcontext"))
