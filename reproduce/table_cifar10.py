#!/usr/bin/env python
"""CIFAR-10 (paper §3.5, Table 6): top-1 test error and parameters of ResNet-64d, SE-ResNet-64d, EncNet-16k64d
and EncNet-32k128d, reported vs reproduced (last epoch; the best logged epoch, as the release reports, beside it).
Writes tables/cifar10[_demo].{md,csv,tex}; reproduce/figure_cifar_curves.py
draws the same runs' train/test error per epoch.

Trains only the runs that are missing (finished runs are reused, unfinished ones resumed), then rebuilds the
outputs from the run logs and encnet/report/reported.csv.

    python reproduce/table_cifar10.py                                   # demo profile, CPU, ~2 minutes
    python reproduce/table_cifar10.py --profile paper --data-root DATA --gpus 8
    python reproduce/table_cifar10.py --profile paper --dry-run         # what would run, with its recipe
    python reproduce/table_cifar10.py --from-logs                       # rebuild the outputs only

Options shared by every script: --profile {demo,paper} --data-root DIR --gpus N --seeds S [S ...] --dry-run
--from-logs --jobs N --runs-root DIR --out-dir DIR --set KEY=VALUE [...] (see encnet/experiments/cli.py).
"""

import sys

from encnet.experiments.cifar import main

if __name__ == "__main__":
    sys.exit(main("table"))
