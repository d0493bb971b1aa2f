#!/usr/bin/env python
"""pixAcc and mIoU against the number of codewords K ∈ {8, 16, 32, 64} (EncNet R50, PASCAL-Context).
Writes figures/codewords[_demo].{png,pdf,csv}; the K = 32 point is the ablation's EncNet run.

Trains only the runs that are missing (finished runs are reused, unfinished ones resumed), then rebuilds the
outputs from the run logs and encnet/report/reported.csv.

    python reproduce/figure_codewords.py                                   # demo profile, CPU, minutes
    python reproduce/figure_codewords.py --profile paper --data-root DATA --gpus 8
    python reproduce/figure_codewords.py --profile paper --dry-run         # what would run, with its settings
    python reproduce/figure_codewords.py --from-logs                       # rebuild the outputs only

Options shared by every script: --profile {demo,paper} --data-root DIR --gpus N --seeds S [S ...] --dry-run
--from-logs --runs-root DIR --out-dir DIR --set KEY=VALUE [...] (see encnet/experiments/cli.py).
"""

import sys

from encnet.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main("codewords"))
