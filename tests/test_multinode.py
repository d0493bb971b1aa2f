"""Many nodes, tried on one machine: two ``torchrun`` agents (``--nnodes 2``, one process each, c10d rendezvous on
the loopback address, gloo) run the multi-node command of docs/paper_profile.md, and scripts/slurm_encnet.sbatch
runs under stand-ins for ``srun`` and ``scontrol`` (tests/slurm_stand_ins/) with a two-node allocation's
environment. Each process has LOCAL_RANK 0 on its "node", so a run folder written by "local rank 0" would get two
writers; only global rank 0 may write. The oracle is the single-node two-process run of the same config.

Judged by the files the workers write (torch's gloo may abort at interpreter exit after good work, see
tests/test_engine_distributed.py), and by what the stand-ins recorded.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import TINY_SEGMENTATION, write_config
from encnet.engine import runs
from encnet.engine.config import load_config
from encnet.engine.distributed import find_free_port
from encnet.engine.runlock import LOCK

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
STAND_INS = TESTS / "slurm_stand_ins"
TIMEOUT_S = 300
TIMING_KEYS = {"images_per_s", "epoch_time_s"}


def docs_multinode_command() -> list[str]:
    """The two-machine torchrun command quoted in docs/paper_profile.md, as words."""
    text = (REPO / "docs" / "paper_profile.md").read_text()
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if "--nnodes" in words:
                return words
    raise AssertionError("docs/paper_profile.md quotes no `torchrun --nnodes` command")


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def child_env(**extra) -> dict:
    path = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "OMP_NUM_THREADS": "1", "ENCNET_NO_PROGRESS": "1", "PYTHONPATH": path, **extra}


def run_agents(commands: list[list[str]], logs: Path, env: dict) -> list[str]:
    """Start one torchrun agent per "node", wait for all; their output, node by node."""
    logs.mkdir(parents=True, exist_ok=True)
    files = [open(logs / f"node{i}.log", "w") for i in range(len(commands))]
    agents = [subprocess.Popen(c, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO) for c, f in
              zip(commands, files)]
    try:
        for agent in agents:
            agent.wait(timeout=TIMEOUT_S)
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
        for f in files:
            f.close()
    return [(logs / f"node{i}.log").read_text() for i in range(len(commands))]


def without_timings(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in runs.read_jsonl(path)]


def same_weights(a: Path, b: Path) -> bool:
    ca, cb = runs.load_checkpoint(a / runs.CHECKPOINT), runs.load_checkpoint(b / runs.CHECKPOINT)
    return ca["model"].keys() == cb["model"].keys() and all(ca["model"][k].equal(cb["model"][k]) for k in ca["model"])


@pytest.fixture(scope="module")
def single_node_run(tmp_path_factory, data_cache) -> tuple[Path, Path]:
    """(config, run folder) of the oracle: the config on one node, two processes (3 epochs of 2 iterations)."""
    folder = tmp_path_factory.mktemp("multinode")
    data = yaml.safe_load(yaml.safe_dump(TINY_SEGMENTATION))
    config = write_config(folder / "configs", data, data_cache, "tiny_nodes")
    run_dir = folder / "single_node"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "encnet.train", str(config), "--run-dir", str(run_dir), "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, env=child_env(), cwd=REPO)
    assert runs.is_finished(run_dir), done.stdout + done.stderr
    return config, run_dir


def test_two_nodes_train_one_run_resume_it_after_a_kill_and_match_one_node(single_node_run, tmp_path):
    config, single = single_node_run
    words = docs_multinode_command()
    assert words[0] == "torchrun" and option(words, "--nnodes") == "2" and option(words, "--rdzv-backend") == "c10d"
    assert option(words, "-m") == "encnet.train", words

    def agent() -> list[str]:
        """The documented torchrun options with one process per node and this machine's loopback address."""
        port, command = find_free_port(), [sys.executable, "-m", "torch.distributed.run"]
        for i, word in enumerate(words[1:words.index("-m")], start=1):
            command.append({"--nproc_per_node": "1", "--rdzv-endpoint": f"127.0.0.1:{port}"}.get(words[i - 1], word))
        return command

    output_root = tmp_path / "shared_runs"
    args = [str(config), *(a for a in words[words.index("-m") + 3:] if not a.startswith("data.root=")),
            "--device", "cpu"]
    args[args.index("--output-root") + 1] = str(output_root)
    run_dir = runs.run_dir_for(load_config(config), output_root)

    # Killed (SIGKILL, every process) at iteration 5: epochs 1 and 2 are checkpointed, epoch 3 is not.
    killer = [*agent(), str(TESTS / "kill_at_iteration.py"), "5", *args]
    logs = run_agents([killer] * 2, tmp_path / "killed", child_env())
    assert not runs.is_finished(run_dir), logs
    assert runs.load_checkpoint(run_dir / runs.CHECKPOINT)["epoch"] == 2, logs
    assert [r["epoch"] for r in runs.read_jsonl(run_dir / "metrics.jsonl")] == [1, 2]  # one writer
    # Rank 0 died holding the lock. (Its peer may, rarely, see the connection drop in iteration 4's last collective
    # and stop with a message instead; the lock is then released as after any failure.)
    stale_lock = (run_dir / LOCK).exists()

    # The same command with --resume, on both nodes: the dead holder's lock is taken over, every rank loads the
    # checkpoint (its weights, optimizer state and its own RNG streams), and the run ends where one node ends it.
    resume = [*agent(), "-m", "encnet.train", *args, "--resume"]
    logs = run_agents([resume] * 2, tmp_path / "resumed", child_env())
    text = "\n".join(logs)
    assert runs.is_finished(run_dir), text
    assert without_timings(run_dir / "metrics.jsonl") == without_timings(single / "metrics.jsonl")
    assert same_weights(run_dir, single)
    assert json.loads((run_dir / "eval.json").read_text())["mIoU"] == json.loads((single / "eval.json").read_text())[
        "mIoU"]
    env = runs.read_json(run_dir / "env.json")
    assert env["world_size"] == 2 and [r["epoch"] for r in env["resumes"]] == [2]
    assert ("taking over a stale lock" in text) == stale_lock and "resuming" in text
    assert text.count("epoch 3/3") == 1 and text.count(f"run folder: {run_dir}") == 1, text  # global rank 0 only


def test_the_sbatch_script_on_two_nodes_under_stand_in_srun_requeues_on_a_stop_then_finishes(single_node_run,
                                                                                              tmp_path):
    """The job is signalled (SIGUSR1, SLURM's warning before the time limit) once srun has started: the script
    forwards SIGTERM through srun to both nodes' torchrun, asks to be requeued, and the requeued job (the same
    script, SLURM_RESTART_COUNT=1) continues the run to the end."""
    config, single = single_node_run
    output_root = tmp_path / "shared_runs"
    srun_record, scontrol_record = tmp_path / "srun.jsonl", tmp_path / "scontrol.jsonl"
    env = child_env(PATH=f"{STAND_INS}{os.pathsep}{os.environ['PATH']}", SRUN_RECORD=str(srun_record),
                    SCONTROL_RECORD=str(scontrol_record), SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="127.0.0.[1-2]",
                    SLURM_NNODES="2", SLURM_GPUS_ON_NODE="1", SLURM_CPUS_PER_TASK="1", SLURM_SUBMIT_DIR=str(REPO),
                    OUTPUT_ROOT=str(output_root), PYTHON=sys.executable)
    env.pop("SLURM_RESTART_COUNT", None)
    command = ["bash", "scripts/slurm_encnet.sbatch", str(config), "--device", "cpu"]
    run_dir = runs.run_dir_for(load_config(config), output_root)
    ports = [find_free_port(), find_free_port()]

    with open(tmp_path / "job.log", "w") as out:
        job = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**env, "MASTER_PORT": str(ports[0])},
                               cwd=REPO)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not srun_record.is_file() and job.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            job.send_signal(signal.SIGUSR1)
            job.wait(timeout=TIMEOUT_S)
        finally:
            if job.poll() is None:
                job.kill()
    log = (tmp_path / "job.log").read_text()
    assert job.returncode == 0 and "requeueing job 4242" in log, log
    assert [json.loads(line) for line in scontrol_record.read_text().splitlines()] == [{"requeue": "4242"}]
    assert not runs.is_finished(run_dir)

    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO,
                          env={**env, "SLURM_RESTART_COUNT": "1", "MASTER_PORT": str(ports[1])})
    log = done.stdout + done.stderr
    assert runs.is_finished(run_dir), log
    assert without_timings(run_dir / "metrics.jsonl") == without_timings(single / "metrics.jsonl")
    assert log.count("epoch 3/3") == 1, log  # global rank 0 only
    assert len(scontrol_record.read_text().splitlines()) == 1  # finished: not requeued again

    calls = [json.loads(line) for line in srun_record.read_text().splitlines()]
    for restart, (call, port) in enumerate(zip(calls, ports)):
        assert call["options"] == ["--kill-on-bad-exit=1"]
        assert call["command"] == [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
            "--rdzv-backend", "c10d", "--rdzv-id", f"encnet-4242-{restart}", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "-m", "encnet.train", str(config), "--device", "cpu", "--resume", "--output-root", str(output_root)]
        assert call["env"]["OMP_NUM_THREADS"] == "1"  # SLURM_CPUS_PER_TASK / GPUs per node
    assert len(calls) == 2
