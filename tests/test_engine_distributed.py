"""The engine under ``torchrun --nproc_per_node 2`` with gloo on CPU, judged by the files the workers wrote.

torch's gloo backend sometimes aborts at interpreter exit after a successful run; the workers leave with
``os._exit`` to avoid it, and these tests judge success by the run folder, not by the exit status alone.
"""

import json
import os
import subprocess
import sys

import pytest

from encnet.engine import runs
from encnet.engine.config import load_config
from encnet.engine.evaluate import evaluate

pytestmark = pytest.mark.usefixtures("single_thread")


def torchrun(*args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ENCNET_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_process_run_trains_logs_once_and_evaluates_like_one_process(tiny_segmentation_config, tmp_path):
    config = load_config(tiny_segmentation_config)
    run_dir = tmp_path / "run"
    proc = torchrun("-m", "encnet.train", str(tiny_segmentation_config), "--run-dir", str(run_dir),
                    "--device", "cpu")
    log = proc.stdout + proc.stderr
    assert runs.is_finished(run_dir), log

    env = json.loads((run_dir / "env.json").read_text())
    assert env["world_size"] == 2 and env["per_process_batch"] == 2
    records = runs.read_jsonl(run_dir / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2, 3]  # one line per epoch: only rank 0 wrote
    assert log.count("epoch 3/3") == 1  # only rank 0 printed
    assert load_config(run_dir / "config.yaml") == config

    distributed_eval = json.loads((run_dir / "eval.json").read_text())
    single = evaluate(run_dir, device="cpu")  # one process, same checkpoint
    for key in ("pixAcc", "mIoU", "IoU"):
        assert single[key] == distributed_eval[key], key

    # Multi-scale + flip over two processes (confusion matrices all-reduced) equals one process.
    proc = torchrun("-m", "encnet.evaluate", str(run_dir), "--ms", "--device", "cpu")
    path = run_dir / "eval_ms_flip.json"
    assert path.is_file(), proc.stdout + proc.stderr
    two = json.loads(path.read_text())
    one = evaluate(run_dir, scales=config.eval.scales, flip=True, device="cpu")
    for key in ("pixAcc", "mIoU", "IoU"):
        assert one[key] == two[key], key
