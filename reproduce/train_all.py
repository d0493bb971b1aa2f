#!/usr/bin/env python
"""Train every run that the reproduce scripts need, in one pool (``--jobs`` at a time), without writing outputs.

run_all.sh calls it first in the demo profile so that both cores stay busy until the last run; each
reproduce/*.py afterwards finds its runs finished and only evaluates and writes. Same options as every
reproduce script (see encnet/experiments/cli.py); --dry-run and --from-logs train nothing.

    python reproduce/train_all.py --profile demo --jobs 2
"""

import sys

from encnet.experiments.train_all import main

if __name__ == "__main__":
    sys.exit(main())
