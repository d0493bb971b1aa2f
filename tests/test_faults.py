"""Faults a long run meets, one group per kind (issue 15): a second process on the same run, pre-emption,
a dead rank, unsafe checkpoints, bad config values, unreadable data, corrupt checkpoints. All on CPU (gloo).

The slowest, which start real training processes, are marked ``faults`` (``pytest -m faults`` runs only them;
plain ``pytest`` runs them too).
"""

import io
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import data_fixtures as fx
import encnet.engine.train as train_module
from conftest import TINY_SEGMENTATION, write_config
from encnet.engine import runs
from encnet.engine.config import ConfigError, load_config
from encnet.data.base import UnreadableFileError
from encnet.data.check import check_dataset
from encnet.engine.evaluate import evaluate
from encnet.engine.build import build_dataset_for, build_model_for, load_model_weights
from encnet.engine.runlock import LOCK, RunLock, RunLockedError, read_lock
from encnet.engine.train import PREEMPTED_EXIT_CODE, Preempted, train

pytestmark = pytest.mark.usefixtures("single_thread")

ROOT = Path(__file__).resolve().parents[1]


def env_for_children(**extra) -> dict:
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "ENCNET_NO_PROGRESS": "1", **extra}


def weights_equal(a: Path, b: Path) -> None:
    ca, cb = runs.load_checkpoint(a / runs.CHECKPOINT), runs.load_checkpoint(b / runs.CHECKPOINT)
    assert ca["model"].keys() == cb["model"].keys()
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


def without_timings(records):
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "epoch_time_s")} for r in records]


def same_metrics(a: Path, b: Path) -> None:
    read = runs.read_jsonl
    assert without_timings(read(a / "metrics.jsonl")) == without_timings(read(b / "metrics.jsonl"))


@pytest.fixture()
def four_iteration_epochs(tmp_path, data_cache) -> Path:
    """8 images in batches of 2: 4 iterations per epoch, 2 epochs."""
    data = yaml.safe_load(yaml.safe_dump(TINY_SEGMENTATION))
    data["train"].update(epochs=2, batch_size=2, val_every=1)
    return write_config(tmp_path / "configs", data, data_cache, "tiny4")


def signal_at(monkeypatch, iteration: int, signum=signal.SIGTERM) -> None:
    """Deliver a real signal to this process when the loop reaches global iteration ``iteration``."""
    real = train_module.lr_at

    def lr_at(schedule, base, it, *rest):
        if it == iteration:
            os.kill(os.getpid(), signum)
        return real(schedule, base, it, *rest)

    monkeypatch.setattr(train_module, "lr_at", lr_at)


# ------------------------------------------------------------------------------------ 1. one trainer per run


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_lock_of_a_dead_process_or_a_silent_host_is_taken_over_with_a_message(
        tiny_segmentation_config, tmp_path, capsys):
    config = load_config(tiny_segmentation_config, ["train.epochs=1"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "token": "x"}))
    train(config, run_dir=run_dir)
    out = capsys.readouterr().out
    assert "taking over a stale lock" in out and "no longer running on this host" in out
    assert runs.is_finished(run_dir) and not (run_dir / LOCK).exists()  # released at the end

    # Another host's lock is judged by its heartbeat: fresh, it is respected; old, it is taken over.
    other = tmp_path / "other"
    other.mkdir()
    (other / LOCK).write_text(json.dumps({"host": "node-that-died", "pid": 1, "token": "y"}))
    with pytest.raises(RunLockedError, match="node-that-died"):
        train(config, run_dir=other, if_locked="skip")
    old = time.time() - 3600
    os.utime(other / LOCK, (old, old))
    train(config, run_dir=other, if_locked="skip")
    assert "its last heartbeat is 3600 s old" in capsys.readouterr().out and runs.is_finished(other)


def test_lock_heartbeat_and_loss_are_noticed(tmp_path):
    lock = RunLock(tmp_path / "run", heartbeat_s=0.05, stale_s=60)
    assert lock.try_acquire() is None and lock.held
    before = (tmp_path / "run" / LOCK).stat().st_mtime
    time.sleep(0.3)
    assert (tmp_path / "run" / LOCK).stat().st_mtime > before  # the heartbeat touches the file
    second = RunLock(tmp_path / "run")
    holder = second.try_acquire()
    assert holder is not None and holder["pid"] == os.getpid()  # a live holder is never taken over
    (tmp_path / "run" / LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 7, "token": "z"}))
    with pytest.raises(RunLockedError, match="lost the run's lock"):
        lock.check()
    lock.release()
    assert (tmp_path / "run" / LOCK).exists()  # not ours any more: left to its holder


@pytest.mark.faults
def test_two_processes_on_one_run_train_it_once_and_the_second_reuses_it(tmp_path, data_cache):
    data = yaml.safe_load(yaml.safe_dump(TINY_SEGMENTATION))
    data["train"].update(epochs=5, val_every=0)
    config_path = write_config(tmp_path / "configs", data, data_cache, "shared")
    config = load_config(config_path)
    build_dataset_for(config, "train", train=True)  # generate the data once, before the race
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "encnet.train", str(config_path), "--run-dir", str(run_dir), "--resume",
           "--device", "cpu"]
    env = env_for_children(ENCNET_LOCK_POLL_S="0.2")
    # The race is made certain rather than likely: the first process is paused (SIGSTOP) as soon as it holds the
    # lock, the second is started and must report that it waits, then the first resumes and finishes. Starting
    # both at once left it to chance whether the second reached the lock before the first had finished.
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    outs = [open(logs_dir / f"{i}.log", "w") for i in range(2)]
    first = subprocess.Popen(cmd, stdout=outs[0], stderr=subprocess.STDOUT, text=True, env=env)
    procs = [first]
    try:
        deadline = time.monotonic() + 120
        while (read_lock(run_dir) or {}).get("pid") != first.pid:
            assert first.poll() is None and time.monotonic() < deadline, (logs_dir / "0.log").read_text()
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGSTOP)
        try:
            assert not runs.is_finished(run_dir)
            second = subprocess.Popen(cmd, stdout=outs[1], stderr=subprocess.STDOUT, text=True, env=env)
            procs.append(second)
            while "waiting for it to finish" not in (logs_dir / "1.log").read_text():
                assert second.poll() is None and time.monotonic() < deadline + 60, (logs_dir / "1.log").read_text()
                time.sleep(0.05)
        finally:
            os.kill(first.pid, signal.SIGCONT)
        for p in procs:
            p.wait(timeout=300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for f in outs:
            f.close()
    logs = [(logs_dir / f"{i}.log").read_text() for i in range(2)]
    assert [p.returncode for p in procs] == [0, 0], logs
    waited = [log for log in logs if "waiting for it to finish" in log]
    assert waited == [logs[1]], logs
    assert "finished by another process while this one waited; reusing its result" in waited[0]
    assert "epoch 1/5" not in waited[0]  # it trained nothing
    assert [r["epoch"] for r in runs.read_jsonl(run_dir / "metrics.jsonl")] == list(range(1, 6))
    assert "resumes" not in runs.read_json(run_dir / "env.json")

    # --if-locked skip: says so and leaves at once.
    holder = RunLock(tmp_path / "run2")
    assert holder.try_acquire() is None
    done = subprocess.run([*cmd[:5], str(tmp_path / "run2"), "--if-locked", "skip", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=120)
    holder.release()
    assert done.returncode == 0 and "skipping it" in done.stderr and f"pid {os.getpid()}" in done.stderr
    assert not (tmp_path / "run2" / "metrics.jsonl").exists()


# ----------------------------------------------------------------------------------------------- 2. pre-emption


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_at_a_random_iteration_then_resume_gives_identical_weights(four_iteration_epochs, tmp_path,
                                                                          monkeypatch, capsys, workers):
    config = load_config(four_iteration_epochs, [f"data.workers={workers}"])
    whole = train(config, run_dir=tmp_path / "whole")
    iteration = random.Random().randrange(0, 7)  # 8 iterations; the last one would finish the run
    print(f"SIGTERM at iteration {iteration}")
    signal_at(monkeypatch, iteration)
    with pytest.raises(Preempted, match=r"stopped by SIGTERM") as stopped:
        train(config, run_dir=tmp_path / "stopped")
    assert f"exit status {PREEMPTED_EXIT_CODE}" in str(stopped.value)
    # The traceback is still alive here (as pytest or a notebook keeps it): the loader workers, which ignore SIGTERM,
    # must already be gone, or the interpreter's exit handler waits for them forever.
    assert multiprocessing.active_children() == [], multiprocessing.active_children()
    checkpoint = runs.load_checkpoint(tmp_path / "stopped" / runs.CHECKPOINT)
    assert checkpoint["iteration"] == iteration + 1, iteration  # the iteration that was running completed
    assert checkpoint["batches_done"] == (iteration + 1) % 4 or (iteration + 1) % 4 == 0
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.undo()
    resumed = train(config, run_dir=tmp_path / "stopped", resume=True)
    weights_equal(whole, resumed)
    same_metrics(whole, resumed)
    assert json.loads((whole / "eval.json").read_text()) == json.loads((resumed / "eval.json").read_text())


@pytest.mark.parametrize("every", [0, 3])
def test_checkpoint_every_iters_writes_mid_epoch_checkpoints(four_iteration_epochs, tmp_path, monkeypatch, every):
    config = load_config(four_iteration_epochs, [f"train.checkpoint_every_iters={every}"])
    assert runs.run_id(config) == runs.run_id(load_config(four_iteration_epochs))  # not part of the run id
    real = train_module.lr_at

    def crash_at_iteration_6(schedule, base, it, *rest):
        if it == 6:
            raise KeyboardInterrupt
        return real(schedule, base, it, *rest)

    monkeypatch.setattr(train_module, "lr_at", crash_at_iteration_6)
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=tmp_path / "run")
    checkpoint = runs.load_checkpoint(tmp_path / "run" / runs.CHECKPOINT)
    # every=3: iterations 3 and 6 (global) are checkpoints, i.e. epoch 2 iteration 2 is the last one;
    # off: only the epoch-1 checkpoint (iteration 4).
    assert (checkpoint["iteration"], checkpoint["batches_done"]) == ((6, 2) if every else (4, 0))
    monkeypatch.undo()
    whole = train(config, run_dir=tmp_path / "whole")
    weights_equal(whole, train(config, run_dir=tmp_path / "run", resume=True))


@pytest.mark.faults
def test_cli_sigterm_exits_75_with_a_checkpoint_and_resumes_exactly(tmp_path, data_cache):
    data = yaml.safe_load(yaml.safe_dump(TINY_SEGMENTATION))
    # Long enough that the signal, sent up to 0.2 s after the first epoch, lands before the last iteration even on a
    # fast machine (an epoch here can take 0.03 s): with 8 epochs and 0.5 s the run sometimes finished first, exit 0.
    data["train"].update(epochs=30, batch_size=2, val_every=0)
    config_path = write_config(tmp_path / "configs", data, data_cache, "long")
    config = load_config(config_path)
    build_dataset_for(config, "train", train=True)
    run_dir = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "encnet.train", str(config_path), "--run-dir", str(run_dir), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_for_children())
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random().uniform(0.0, 0.2))  # somewhere inside an epoch
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == PREEMPTED_EXIT_CODE, log
    assert "received SIGTERM" in log and "resume with: python -m encnet.train" in log
    assert not runs.is_finished(run_dir) and not (run_dir / LOCK).exists()
    assert runs.load_checkpoint(run_dir / runs.CHECKPOINT)["iteration"] >= 4
    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env_for_children(), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    whole = train(config, run_dir=tmp_path / "whole")
    weights_equal(whole, run_dir)
    same_metrics(whole, run_dir)


# ------------------------------------------------------------------------------------------- 3. a rank that dies


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(c) for c in text)
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


@pytest.mark.faults
def test_when_one_rank_is_killed_the_other_stops_in_bounded_time_naming_it(tmp_path, data_cache):
    data = yaml.safe_load(yaml.safe_dump(TINY_SEGMENTATION))
    data["train"].update(epochs=200, val_every=0)
    config_path = write_config(tmp_path / "configs", data, data_cache, "long2")
    build_dataset_for(load_config(config_path), "train", train=True)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "encnet.train", str(config_path), "--run-dir", str(run_dir), "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env_for_children())
    # Kill only once a first checkpoint is complete: its sidecar is written after the file is verified, so
    # waiting for it (not for metrics.jsonl, which comes first) keeps a busy machine from racing the save.
    first_checkpoint = run_dir / (runs.CHECKPOINT + runs.SUM_SUFFIX)
    deadline = time.monotonic() + 300
    while not first_checkpoint.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert first_checkpoint.is_file(), proc.communicate(timeout=60)[0]
    ranks = {_rank_of(c): c for c in _children(proc.pid)}
    victim = ranks[1]
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    log = proc.communicate(timeout=120)[0]
    elapsed = time.monotonic() - killed
    assert elapsed < 60, log
    assert f"rank 0: rank 1 (pid {victim} on {socket.gethostname()}) died" in log, log
    assert not runs.is_finished(run_dir)
    # A usable checkpoint remains (the last, or the previous one if the rank died while rotating them).
    checkpoint, _ = runs.load_resume_checkpoint(run_dir, say=print)
    assert checkpoint is not None and checkpoint["epoch"] >= 1, sorted(p.name for p in run_dir.iterdir())


# ----------------------------------------------------------------------------------------- 4. unsafe checkpoints


class RunsCode:
    """A pickle that creates a folder when it is unpickled: what a malicious checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_pickle_carrying_code_is_refused_everywhere_a_checkpoint_is_loaded(tiny_segmentation_config, tmp_path,
                                                                             capsys):
    config = load_config(tiny_segmentation_config, ["train.epochs=1"])
    run_dir = train(config, run_dir=tmp_path / "run")
    ours = torch.load(run_dir / runs.CHECKPOINT, weights_only=True)  # our own checkpoints: plain data only
    assert ours["epoch"] == 1 and isinstance(ours["rng"][0]["python"]["state"], torch.Tensor)

    marker = tmp_path / "code_ran"
    evil = tmp_path / "downloaded.pt"
    torch.save({"model": RunsCode(marker)}, evil)
    model = build_model_for(config, 11)
    with pytest.raises(runs.UnsafeCheckpointError, match="could run code"):
        load_model_weights(model, evil)  # model.init_from
    torch.save({"model": RunsCode(marker), "epoch": 1}, run_dir / runs.CHECKPOINT)
    (run_dir / (runs.CHECKPOINT + runs.SUM_SUFFIX)).unlink()
    with pytest.raises(runs.UnsafeCheckpointError):
        evaluate(run_dir)
    from encnet.engine.evaluate import main as evaluate_main

    assert evaluate_main([str(run_dir), "--device", "cpu"]) == 2
    assert "refusing to load it" in capsys.readouterr().err
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- 5. config values


def test_every_python_float_notation_is_a_number_in_files_and_overrides(tiny_segmentation_config):
    text = tiny_segmentation_config.read_text().replace("base_lr: 0.02", "base_lr: 2e-2")
    assert "base_lr: 2e-2" in text
    tiny_segmentation_config.write_text(text + "\n")
    config = load_config(tiny_segmentation_config, ["train.weight_decay=1e-4", "train.poly_power=9E-1",
                                                   "data.scale_max=1.0e0", "eval.scales=[5e-1, 1.25]"])
    assert config.train.base_lr == 0.02 and config.train.weight_decay == 1e-4
    assert config.train.poly_power == 0.9 and config.data.scale_max == 1.0 and config.eval.scales == [0.5, 1.25]
    assert load_config(tiny_segmentation_config, ["train.epochs=3"]).train.epochs == 3  # ints stay ints
    # A quoted value is a string, and a string is not a number.
    with pytest.raises(ConfigError, match="train.base_lr.*expects"):
        load_config(tiny_segmentation_config, ["train.base_lr='1e-3'"])


@pytest.mark.parametrize("override, key", [
    ("train.epochs=0", "train.epochs"), ("train.base_lr=0", "train.base_lr"), ("train.base_lr=-1e-3", "train.base_lr"),
    ("train.se_weight=-0.1", "train.se_weight"), ("train.aux_weight=-1", "train.aux_weight"),
    ("train.momentum=1.0", "train.momentum"), ("train.batch_size=0", "train.batch_size"),
    ("data.crop_size=0", "data.crop_size"), ("data.scale_min=3.0", "data.scale_min"),
    ("eval.scales=[]", "eval.scales"), ("eval.crop_size=100", "eval.crop_size"),
    ("train.checkpoint_every_iters=-1", "train.checkpoint_every_iters"), ("train.base_lr=nan", "train.base_lr"),
])
def test_out_of_range_values_stop_with_one_line_naming_the_key(tiny_segmentation_config, capsys, override, key):
    assert train_module.main([str(tiny_segmentation_config), override, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and "Traceback" not in err, err


# ----------------------------------------------------------------------------------------- 6. unreadable inputs


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_data_check_names_a_truncated_jpeg(tmp_path):
    fx.ade20k(tmp_path)
    jpeg = tmp_path / "ADEChallengeData2016" / "images" / "training" / "ADE_train_00000002.jpg"
    truncate(jpeg)
    out = io.StringIO()
    assert not check_dataset("ade20k", tmp_path, expected={"train": 2, "val": 1}, out=out)
    assert str(jpeg) in out.getvalue(), out.getvalue()


@pytest.mark.parametrize("workers, which", [(2, "images"), (0, "masks")])
def test_an_unreadable_file_stops_training_with_its_path_and_keeps_the_checkpoint(tmp_path, monkeypatch, workers,
                                                                                 which):
    data = yaml.safe_load(yaml.safe_dump(TINY_SEGMENTATION))
    data["data"]["workers"] = workers
    config_path = write_config(tmp_path / "configs", data, tmp_path / "private_data", "corrupt")
    config = load_config(config_path)
    build_dataset_for(config, "train", train=True)
    folder = next((tmp_path / "private_data").rglob(which))
    real = train_module.lr_at

    def corrupt_after_epoch_1(schedule, base, it, *rest):
        if it == 1:  # last iteration of epoch 1: its batches are loaded; epoch 2 reads the damaged files
            for path in sorted(folder.glob("train_*")):
                truncate(path)
        return real(schedule, base, it, *rest)

    monkeypatch.setattr(train_module, "lr_at", corrupt_after_epoch_1)
    with pytest.raises(UnreadableFileError) as stopped:
        train(config, run_dir=tmp_path / "run")
    message = str(stopped.value)
    assert str(folder) in message and "Original Traceback" not in message and "last good checkpoint: epoch 1" in message
    assert runs.load_checkpoint(tmp_path / "run" / runs.CHECKPOINT)["epoch"] == 1  # intact and verified
    assert not runs.is_finished(tmp_path / "run")


# --------------------------------------------------------------------------------------- 7. checkpoint rotation


def test_a_corrupt_last_checkpoint_falls_back_to_the_previous_one_and_resumes_exactly(four_iteration_epochs,
                                                                                      tmp_path, monkeypatch, capsys):
    config = load_config(four_iteration_epochs, ["train.epochs=3"])
    real = train_module.lr_at

    def crash_in_epoch_3(schedule, base, it, *rest):
        if it == 9:
            raise KeyboardInterrupt
        return real(schedule, base, it, *rest)

    monkeypatch.setattr(train_module, "lr_at", crash_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=tmp_path / "run")
    monkeypatch.undo()
    run_dir = tmp_path / "run"
    assert runs.load_checkpoint(run_dir / runs.CHECKPOINT)["epoch"] == 2
    assert runs.load_checkpoint(run_dir / runs.PREVIOUS_CHECKPOINT)["epoch"] == 1
    # Bit rot: same size, one byte changed in the middle.
    data = bytearray((run_dir / runs.CHECKPOINT).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run_dir / runs.CHECKPOINT).write_bytes(bytes(data))
    with pytest.raises(runs.CorruptCheckpointError, match="sha256"):
        runs.load_checkpoint(run_dir / runs.CHECKPOINT)
    resumed = train(config, run_dir=run_dir, resume=True)
    out = capsys.readouterr().out
    assert "falling back to" in out and runs.PREVIOUS_CHECKPOINT in out and "resuming" in out
    assert (run_dir / (runs.CHECKPOINT + ".corrupt")).exists()  # kept to inspect, out of the rotation
    weights_equal(train(config, run_dir=tmp_path / "whole"), resumed)


def test_a_failed_write_leaves_the_previous_checkpoint_in_place(tmp_path, monkeypatch):
    runs.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, tmp_path)
    runs.save_checkpoint({"epoch": 2, "w": torch.ones(3)}, tmp_path)
    real_save = torch.save

    def disk_full(obj, fh):
        real_save(obj, fh)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        runs.save_checkpoint({"epoch": 3, "w": torch.ones(3)}, tmp_path)
    monkeypatch.undo()
    assert runs.load_checkpoint(tmp_path / runs.CHECKPOINT)["epoch"] == 2
    assert runs.load_checkpoint(tmp_path / runs.PREVIOUS_CHECKPOINT)["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp"))
    # Truncated on disk: the size in the sidecar catches it.
    truncate(tmp_path / runs.CHECKPOINT)
    checkpoint, source = runs.load_resume_checkpoint(tmp_path, say=lambda m: None)
    assert checkpoint["epoch"] == 1 and source.name == runs.PREVIOUS_CHECKPOINT


def test_checkpoints_from_before_the_tensor_rng_states_still_load(tmp_path):
    legacy = {"epoch": 1, "rng": [{"python": random.getstate(), "numpy": __import__("numpy").random.get_state(),
                                   "torch": torch.get_rng_state()}]}
    torch.save(legacy, tmp_path / "old.pt")
    loaded = runs.load_checkpoint(tmp_path / "old.pt")  # plain numpy arrays are data, so they are allowed
    assert loaded["rng"][0]["numpy"][0] == "MT19937" and loaded["rng"][0]["python"] == random.getstate()
    with pytest.raises(Exception, match="numpy"):
        torch.load(tmp_path / "old.pt", weights_only=True)  # without the allowance it is refused


# ---------------------------------------------------------------------- 8. a run that fails before its first checkpoint


def test_a_run_whose_dataset_is_missing_leaves_no_run_folder(tiny_segmentation_config, tmp_path, capsys):
    missing = tmp_path / "no_data_here"
    args = [str(tiny_segmentation_config), "data.dataset=pascal_context", f"data.root={missing}", "data.options={}",
            "--output-root", str(tmp_path / "runs"), "--device", "cpu"]
    assert train_module.main(args) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err
    # Neither the run folder nor the <profile>/<experiment> folders the attempt made are left.
    assert not (tmp_path / "runs").exists(), sorted(p.name for p in (tmp_path / "runs").rglob("*"))


def test_a_run_that_fails_in_its_first_iteration_removes_what_it_wrote_and_only_that(tmp_path):
    """Images that do not decode fail the first batch, after config.yaml and env.json were written. A folder that
    existed before (the experiment runner opens train.log there first) keeps what it held."""
    data = yaml.safe_load(yaml.safe_dump(TINY_SEGMENTATION))
    config = load_config(write_config(tmp_path / "configs", data, tmp_path / "private_data", "broken"))
    build_dataset_for(config, "train", train=True)
    for path in sorted(next((tmp_path / "private_data").rglob("images")).glob("train_*")):
        truncate(path)

    fresh = tmp_path / "runs" / "fresh"
    with pytest.raises(UnreadableFileError, match="run the same command again"):
        train(config, run_dir=fresh, device="cpu")
    assert not fresh.exists() and not (tmp_path / "runs").exists()

    opened = tmp_path / "opened"
    opened.mkdir()
    (opened / "train.log").write_text("the runner's log\n")
    with pytest.raises(UnreadableFileError):
        train(config, run_dir=opened, resume=True, device="cpu")
    assert sorted(p.name for p in opened.iterdir()) == ["train.log"]


def test_a_failure_before_the_first_checkpoint_removes_the_run_and_one_after_it_keeps_it(four_iteration_epochs,
                                                                                         tmp_path, monkeypatch, capsys):
    config = load_config(four_iteration_epochs)  # 4 iterations per epoch, a checkpoint after each epoch
    real = train_module.lr_at
    interrupt_at = {1}

    def interrupt(schedule, base, it, *rest):
        if it in interrupt_at:
            raise KeyboardInterrupt
        return real(schedule, base, it, *rest)

    monkeypatch.setattr(train_module, "lr_at", interrupt)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=run_dir, device="cpu")
    assert "run the same command again to start afresh" in capsys.readouterr().err
    assert not run_dir.exists()
    # Once a checkpoint exists, a failure leaves everything for --resume.
    interrupt_at.clear()
    interrupt_at.add(5)
    with pytest.raises(KeyboardInterrupt):
        train(config, run_dir=run_dir, device="cpu")
    assert "resume with: python -m encnet.train" in capsys.readouterr().err
    assert {"config.yaml", "env.json", "metrics.jsonl", runs.CHECKPOINT} <= {p.name for p in run_dir.iterdir()}
    assert runs.load_checkpoint(run_dir / runs.CHECKPOINT)["epoch"] == 1
