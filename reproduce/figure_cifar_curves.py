#!/usr/bin/env python
"""CIFAR-10 (paper §3.5, PAPER.md §7): train and test error per epoch of ResNet-64d, SE-ResNet-64d,
EncNet-16k64d and EncNet-32k128d, mean ± std over seeds, from the runs' metrics.jsonl. Writes
figures/cifar_curves[_demo].{png,pdf,csv}.

The runs are reproduce/table_cifar10.py's (the same configs, seeds and run folders): whichever script runs
first trains them, the other only reads the logs.

    python reproduce/figure_cifar_curves.py                             # demo profile, CPU, ~2 minutes
    python reproduce/figure_cifar_curves.py --profile paper --data-root DATA --gpus 8
    python reproduce/figure_cifar_curves.py --profile paper --dry-run   # what would run, with its recipe
    python reproduce/figure_cifar_curves.py --from-logs                 # rebuild the figure only

Options shared by every script: --profile {demo,paper} --data-root DIR --gpus N --seeds S [S ...] --dry-run
--from-logs --jobs N --runs-root DIR --out-dir DIR --set KEY=VALUE [...] (see encnet/experiments/cli.py).
"""

import sys

from encnet.experiments.cifar import main

if __name__ == "__main__":
    sys.exit(main("curves"))
