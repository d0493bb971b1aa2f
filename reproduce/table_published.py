#!/usr/bin/env python
"""Published checkpoints (the authors' model zoo, mmsegmentation's EncNet) evaluated by the suite.

For each checkpoint under --weights-root: the published number (encnet/report/reported.csv), ours under the
source's own protocol, and Δ; a missing file is a "not found" row naming the file to put there. Writes
tables/published.{md,csv,tex} once something was evaluated.

    python reproduce/table_published.py --profile paper --weights-root weights --data-root DATA
    python reproduce/table_published.py --profile paper --weights-root weights --dry-run   # what is found
"""

import sys

from encnet.report.published import main

if __name__ == "__main__":
    sys.exit(main())
