#!/usr/bin/env python
"""Paper vs released code: every ledger entry run both ways, its effect on pixAcc/mIoU against the seed spread.

For each entry of ``configs/discrepancies.yaml`` that has a switch, trains the profile's base config with the
paper's value and with the release's value of the switch, for the same seeds, then writes
``tables/discrepancies[_demo].{md,csv}``: each side's mean ± std over seeds, Δ = release − paper, and whether |Δ|
exceeds the seed-to-seed spread, followed by the ledger itself. Sides whose configs coincide are one run folder
(the side the suite's defaults follow is the plain base config), trained once and shared with the other tables.

    python reproduce/table_discrepancies.py                                   # demo profile, CPU, minutes
    python reproduce/table_discrepancies.py --profile paper --dry-run         # the runs a GPU user would launch
    python reproduce/table_discrepancies.py --profile paper --data-root DATA --gpus 8
    python reproduce/table_discrepancies.py --from-logs                       # rebuild the table only

Options shared by every script: --profile {demo,paper} --data-root DIR --gpus N --seeds S [S ...] --dry-run
--from-logs --jobs N --runs-root DIR --out-dir DIR --set KEY=VALUE [...] (see encnet/experiments/cli.py).
"""

import sys

from encnet.experiments.discrepancies_table import main

if __name__ == "__main__":
    sys.exit(main())
