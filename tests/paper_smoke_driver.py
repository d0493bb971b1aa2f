"""Train and evaluate several paper-config smoke jobs in one torchrun process group.

    torchrun --standalone --nproc_per_node 2 tests/paper_smoke_driver.py JOBS.json RESULTS_DIR

Used by the small-size part of ``tests/test_paper_smoke.py``: each job is a config file with its overrides, a run
folder and whether to evaluate with the config's multi-scale protocol. The jobs run in order through the engine's
``train`` and ``evaluate`` (the functions ``python -m encnet.train`` / ``encnet.evaluate`` call), so the chained VOC
stages can name the previous job's run folder. One process group for all of them spares each job the two
interpreter starts, the torch import and the gloo rendezvous that cost more than a 64-px training step; the
commands themselves run under torchrun in the full-size part.

Results are files, never exit codes (gloo may abort at interpreter exit after good work): rank 0 writes
``RESULTS_DIR/<stem>.json`` with the job's times once both ranks finished it; a rank that fails writes
``RESULTS_DIR/<stem>.error`` with the traceback and leaves, and the jobs after it are not run.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path


def main(jobs_file: str, results: str) -> int:
    from encnet.engine import distributed
    from encnet.engine.config import load_config
    from encnet.engine.evaluate import evaluate
    from encnet.engine.train import train

    out = Path(results)
    ctx = distributed.setup("cpu")
    for job in json.loads(Path(jobs_file).read_text()):
        stem = job["stem"]
        try:
            start = time.perf_counter()
            config = load_config(job["config"], job["overrides"])
            train(config, run_dir=job["run_dir"], device="cpu")
            trained = time.perf_counter()
            if ctx.is_main:  # training wrote eval.json: the evaluation must write its own
                (Path(job["run_dir"]) / "eval.json").unlink(missing_ok=True)
            distributed.barrier()
            if job["multi_scale"]:
                evaluate(job["run_dir"], scales=config.eval.scales, flip=config.eval.flip, device="cpu")
            else:
                evaluate(job["run_dir"], device="cpu")
            distributed.barrier()
        except BaseException:  # noqa: BLE001 - any failure is the job's result
            (out / f"{stem}.error").write_text(f"rank {ctx.rank}\n{traceback.format_exc()}")
            return distributed.exit_process(1)
        if ctx.is_main:
            times = {"train_s": trained - start, "evaluate_s": time.perf_counter() - trained}
            (out / f"{stem}.json").write_text(json.dumps(times))
    return distributed.exit_process(0)


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
