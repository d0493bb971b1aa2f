"""``python -m encnet.evaluate RUN_DIR ...`` / ``--weights FILE --config CFG``: the command users type.

Evaluation lives in :mod:`encnet.engine.evaluate`; this module keeps the command and the names
``from encnet.evaluate import evaluate`` has always given, so nothing inside ``encnet`` imports it.
"""

import sys

from encnet.engine.evaluate import eval_tag, evaluate, evaluate_model, main, write_eval

__all__ = ["eval_tag", "evaluate", "evaluate_model", "main", "write_eval"]

if __name__ == "__main__":
    sys.exit(main())
