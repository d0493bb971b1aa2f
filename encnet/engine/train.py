"""Train one experiment: ``python -m encnet.train CONFIG [key=value ...] [--resume] [--run-dir DIR]``.

The same command runs on one process or under ``torchrun --nproc_per_node N`` (and torchrun's multi-node
flags): one process per device, nccl on CUDA, gloo on CPU, a DistributedSampler, SyncBN when more than
one process trains (``train.syncbn``). The recipe is the paper's (PAPER.md §5): SGD with momentum and weight
decay, lr = base_lr / 16 · batch_size, poly schedule stepped every iteration, heads at 10× the lr.

Reproducibility: seeds are set for python, numpy and torch; every rank's RNG states, the loader's generator
and the sampler position are checkpointed at the end of each epoch (and every ``train.checkpoint_every_iters``
iterations, and when SIGTERM / SIGUSR1 asks the run to stop), so a stopped run resumed with ``--resume``
produces the same weights and metrics as an uninterrupted one (bit for bit on CPU).

Failures (docs/reliability.md): a ``LOCK`` file keeps a second process out of the run folder;
SIGTERM / SIGUSR1 write a checkpoint at the next iteration boundary and exit with status 75 (requeue);
a dead rank stops the others with a message naming it; an unreadable image stops the run with its path.

``train(config, run_dir=None, resume=False) -> Path`` is the same thing as a function for reproduce scripts.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from . import distributed, runs
from .runlock import RunLock, RunLockedError, describe_holder
from .config import Config, ConfigError, effective_lr, load_config, to_dict, to_yaml
from .eval_loop import evaluate_model, write_eval
from encnet.metrics import best_validation
from .build import (build_criterion, build_dataset_for, build_metric, build_model_for, build_optimizer,
                         dataset_num_classes, load_model_weights)
from .build import build_monitor_dataset
from .schedules import lr_at

__all__ = ["NonFiniteLossError", "PREEMPTED_EXIT_CODE", "Preempted", "RunExistsError", "main", "train",
           "user_errors"]

# EX_TEMPFAIL (sysexits.h): "try again later". scripts/slurm_encnet.sbatch requeues on it.
PREEMPTED_EXIT_CODE = 75
STOP_SIGNALS = ("SIGTERM", "SIGUSR1")


class Preempted(RuntimeError):
    """SIGTERM / SIGUSR1 arrived: a checkpoint was written at an iteration boundary and the run stopped."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is the last good state."""


class RunExistsError(RuntimeError):
    """An unfinished run is already in the folder and ``resume`` was not asked for."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input a person can fix (config, data on disk, a stopped run): commands print their
    message in one block and exit 2 instead of showing a traceback."""
    from encnet.data.base import LabelSizeError, LabelValueError, UnreadableFileError

    return (ConfigError, RunExistsError, NonFiniteLossError, FileNotFoundError, LabelValueError, LabelSizeError,
            UnreadableFileError, runs.CheckpointError, RunLockedError)


def log(ctx, message: str) -> None:
    if ctx.is_main:
        print(message, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _global_rng_state() -> dict:
    """Every RNG as tensors and numbers, so checkpoints load with ``torch.load(weights_only=True)``."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_global_rng_state(state: dict) -> None:
    py, npy = state["python"], state["numpy"]
    if isinstance(py, tuple):  # a checkpoint from before the states became tensors
        random.setstate(py)
        np.random.set_state(npy)
    else:
        random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
        np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                             npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_worker(worker_id: int) -> None:
    # torch seeds python's and its own RNG per worker from the loader generator; numpy needs the same.
    np.random.seed(torch.initial_seed() % 2**32)
    # A scheduler may signal the whole process group; the main process decides when to stop, and shuts the
    # workers down itself.
    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def _shut_down_workers(batches) -> None:
    """Stop a loader iterator's worker processes now, not when the iterator is collected.

    An exception's traceback (kept by pytest, a notebook, pdb) keeps the epoch's frame and the iterator alive, and
    the workers ignore SIGTERM (``_seed_worker``): multiprocessing's exit handler, which stops leftover children
    with SIGTERM and then joins them, would wait for them forever. torch has no public call for this; the
    iterator's own shutdown method is what its ``__del__`` runs.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


class _StopRequests:
    """SIGTERM / SIGUSR1 handlers that only record the request: the training loop acts on it at the next
    iteration boundary, where the state is consistent and a checkpoint resumes exactly."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
            # os.write, not print: the handler can run in the middle of a print to stderr, and re-entering the
            # buffered stream raises RuntimeError wherever the main thread happens to be (even mid-checkpoint).
            try:
                os.write(2, f"received {self.signal_name}: writing a checkpoint at the end of this iteration, then "
                            f"stopping\n".encode())
            except OSError:
                pass

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def _next_batch(batches):
    """The next batch; an error raised inside a loader worker comes back with torch's whole traceback in its
    message, so a fixable error is re-raised with just its own message (the file's path)."""
    try:
        return next(batches)
    except user_errors() as err:
        text = str(err)
        if "Original Traceback" not in text:
            raise
        lines = text.rstrip().splitlines()
        prefix = f"{type(err).__name__}: "
        starts = [i for i, line in enumerate(lines) if prefix in line and not line.startswith(" ")]
        if not starts:
            raise
        first = lines[starts[-1]]
        message = "\n".join([first[first.index(prefix) + len(prefix):], *lines[starts[-1] + 1:]])
        raise type(err)(message) from None


def _progress_enabled() -> bool:
    return sys.stderr.isatty() and os.environ.get("ENCNET_NO_PROGRESS", "0") != "1"


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _loss_parts(config: Config, criterion, output, target):
    """Total loss and the named components (zeros for heads that are switched off)."""
    if config.task == "classification":
        loss = criterion(output, target)
        errors = (output.argmax(1) != target).sum().float()
        return loss, {"loss": loss.detach().float(), "train_errors": errors}
    loss, parts = criterion(output, target)
    zero = loss.new_zeros(())
    named = {"loss": loss.detach().float()}
    for key in ("main", "aux", "se", "aux_se"):
        value = parts.get(key)
        named[f"loss_{key}"] = (value.detach().float() if value is not None else zero).reshape(())
    return loss, named


def _resume_command(run_dir: Path) -> str:
    return f"python -m encnet.train {run_dir} --resume"


def _lock_run(run_dir: Path, ctx, if_locked: str) -> RunLock | None:
    """Hold the run's lock (rank 0 holds it for all ranks). ``if_locked`` "wait": poll until the holder releases
    it (or dies); "skip": raise :class:`RunLockedError`. Every rank polls together, so nobody sits in a barrier
    for the hours another run may take."""
    lock = RunLock(run_dir, say=lambda m: log(ctx, m)) if ctx.is_main else None
    poll = float(os.environ.get("ENCNET_LOCK_POLL_S", 10))
    announced = False
    while True:
        holder = lock.try_acquire() if lock is not None else None
        flag = torch.tensor([0.0 if holder is None or not ctx.is_main else 1.0], device=ctx.device)  # nccl: on GPU
        distributed.all_reduce_sum(flag)
        if flag.item() == 0:
            return lock
        if if_locked == "skip":
            by = describe_holder(holder) if holder else "another process"
            raise RunLockedError(f"{run_dir} is being trained by {by}; "
                                 f"skipping it (its result is reused once it finishes)")
        if not announced and holder is not None:
            log(ctx, f"{run_dir} is being trained by {describe_holder(holder)}; waiting for it to finish, then "
                     f"reusing its result (--if-locked skip skips it instead)")
            announced = True
        time.sleep(poll)


def train(config: Config, run_dir: str | Path | None = None, resume: bool = False,
          output_root: str | Path = "runs", device: str | None = None, if_locked: str = "wait") -> Path:
    """Train ``config`` into ``run_dir`` (default ``<output_root>/<profile>/<experiment>/<run-id>``).

    A finished run (``DONE`` present) is not rerun. With ``resume`` an unfinished run continues from its last
    checkpoint (or starts if it has none); without it an unfinished run is an error. A run that another process
    is training is waited for and reused (``if_locked="wait"``) or skipped (``"skip"``: :class:`RunLockedError`).
    Returns the run folder.
    """
    if if_locked not in ("wait", "skip"):
        raise ValueError(f"if_locked must be 'wait' or 'skip', not {if_locked!r}")
    ctx = distributed.setup(device)
    run_dir = Path(run_dir) if run_dir is not None else runs.run_dir_for(config, output_root)
    if runs.is_finished(run_dir):
        log(ctx, f"{run_dir} already finished; not rerunning (delete its DONE file to train again)")
        return run_dir
    if config.train.batch_size % ctx.world_size:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} (global) does not split over {ctx.world_size} processes; "
            f"use a multiple of {ctx.world_size}"
        )
    lock = _lock_run(run_dir, ctx, if_locked)
    try:
        if runs.is_finished(run_dir):
            log(ctx, f"{run_dir} was finished by another process while this one waited; reusing its result")
            return run_dir
        return _train_locked(config, ctx, run_dir, resume, lock)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(config: Config, ctx, run_dir: Path, resume: bool, lock: RunLock | None) -> Path:
    ckpt_path = run_dir / runs.CHECKPOINT
    checkpoint = None
    if ckpt_path.is_file() or (run_dir / runs.PREVIOUS_CHECKPOINT).is_file():
        if not resume:
            raise RunExistsError(
                f"{run_dir} holds an unfinished run with a checkpoint. Continue it with:\n  "
                f"{_resume_command(run_dir)}\nor delete the folder to start over."
            )
        saved = load_config(run_dir / "config.yaml")
        if runs.config_hash(saved) != runs.config_hash(config):
            changed = ", ".join(f"{key}: {was!r} in the run, {now!r} now"
                                for key, was, now in runs.hash_differences(saved, config))
            raise ConfigError(
                f"--resume: {run_dir} was trained with a different config ({changed or 'see its config.yaml'}); "
                f"resume with `{_resume_command(run_dir)}` or choose another --run-dir"
            )
        today = runs.run_id(saved)
        if runs.looks_like_run_id(run_dir.name) and run_dir.name != today:
            # The same config, another id: the code that started it trained differently (runs.SEGMENTATION_DATA_PATH)
            raise ConfigError(
                f"--resume: {run_dir} was started by an earlier version of the suite that trains this config "
                f"differently (today its run id is {today}; docs/reliability.md), and continuing it would mix two "
                f"trajectories in one run. Train it anew: python -m encnet.train {run_dir / 'config.yaml'}")
        checkpoint, source = runs.load_resume_checkpoint(run_dir, say=lambda m: log(ctx, m))
        distributed.barrier()
        if ctx.is_main and source is not None and source.name == runs.PREVIOUS_CHECKPOINT:
            runs.set_aside_corrupt(run_dir)

    t = config.train
    use_amp = t.amp
    if use_amp and ctx.device.type != "cuda":
        warnings.warn("train.amp=true needs CUDA; this run is on CPU and trains in float32 (set train.amp=false "
                      "to silence this)", stacklevel=2)
        use_amp = False

    # Same initial weights on every rank, then per-rank streams for augmentation and dropout.
    seed_everything(config.seed)
    train_set = build_dataset_for(config, config.data.train_split, train=True)
    val_set = build_monitor_dataset(config)
    num_classes = dataset_num_classes(config, train_set)
    model = build_model_for(config, num_classes)
    if config.model.init_from and checkpoint is None:
        load_model_weights(model, config.model.init_from)
    if ctx.distributed and t.syncbn:
        from encnet.nn import convert_sync_batchnorm

        model = convert_sync_batchnorm(model)
    model.to(ctx.device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, config)
    if ctx.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None)
    criterion = build_criterion(config, num_classes).to(ctx.device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    seed_everything(config.seed + ctx.rank)

    per_process = t.batch_size // ctx.world_size
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=config.seed, drop_last=True)
    generator = torch.Generator()
    generator.manual_seed(config.seed + ctx.rank)
    loader = DataLoader(train_set, batch_size=per_process, sampler=sampler, num_workers=config.data.workers,
                        pin_memory=ctx.device.type == "cuda", drop_last=True, worker_init_fn=_seed_worker,
                        generator=generator)
    iters_per_epoch = len(loader)
    if iters_per_epoch == 0:
        raise ConfigError(
            f"{len(train_set)} training images cannot fill one batch of {t.batch_size}; lower train.batch_size"
        )
    total_iters = t.epochs * iters_per_epoch
    lr = effective_lr(t)

    start_epoch, start_batch, carried, resume_rng = 0, 0, None, None
    if checkpoint is not None:
        _unwrap(model).load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        start_epoch = checkpoint["epoch"]
        start_batch = checkpoint.get("batches_done", 0)
        carried = checkpoint.get("epoch_progress")
        states = checkpoint["rng"]
        if len(states) != ctx.world_size:
            log(ctx, f"note: checkpoint written by {len(states)} processes, resuming on {ctx.world_size}; the "
                     "run continues but is no longer bitwise reproducible")
        resume_rng = states[ctx.rank % len(states)]
        _set_global_rng_state(resume_rng)
        generator.set_state(resume_rng["loader"])
        where = f"epoch {start_epoch}"
        if start_batch:
            where += f", iteration {start_batch} of epoch {start_epoch + 1}"
        log(ctx, f"resuming {run_dir} after {where}")

    metrics_path = run_dir / "metrics.jsonl"
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_text(run_dir / "config.yaml", to_yaml(config))
        env = runs.capture_env(ctx.world_size, str(ctx.device))
        env.update(effective_lr=lr, per_process_batch=per_process, iters_per_epoch=iters_per_epoch,
                   num_classes=num_classes, train_images=len(train_set), val_images=len(val_set))
        if checkpoint is None:
            runs.write_json(run_dir / "env.json", env)
            metrics_path.unlink(missing_ok=True)
        else:
            first = runs.read_json(run_dir / "env.json") if (run_dir / "env.json").is_file() else {}
            before = (first.get("resumes") or [first])[-1]
            # Another thread count or kernel set sums in another order: the run goes on, on another trajectory.
            changed = [f"{key} {before[key]} → {env[key]}" for key in ("cpu_threads", "cpu_capability", "cpu_model")
                       if key in before and before[key] != env[key]]
            if changed:
                log(ctx, f"note: resuming with {', '.join(changed)}; the run continues but is no longer bitwise "
                         "reproducible")
            first.setdefault("resumes", []).append({"epoch": start_epoch, "batches_done": start_batch, **env})
            runs.write_json(run_dir / "env.json", first)
            # Epochs logged after the checkpoint will be trained again.
            runs.truncate_jsonl(metrics_path, [r for r in runs.read_jsonl(metrics_path) if r["epoch"] <= start_epoch])
    distributed.barrier()
    log(ctx, f"{config.profile}/{config.experiment} → {run_dir}\n  {ctx.world_size} process(es) on "
             f"{ctx.device.type}, batch {t.batch_size} ({per_process}/process), effective lr {lr:g} "
             f"(base_lr {t.base_lr:g} / {t.lr_ref_batch} · {t.batch_size}), {t.epochs} epochs × "
             f"{iters_per_epoch} iterations")

    saved_at = {"epoch": start_epoch, "batches": start_batch} if checkpoint is not None else None

    def save(epoch_done: int, batches_done: int, loader_state: torch.Tensor, progress: dict | None) -> None:
        """Checkpoint after ``epoch_done`` whole epochs and ``batches_done`` iterations of the next one.
        ``loader_state``: the loader generator at the start of that epoch (resume replays the epoch's batches)."""
        nonlocal saved_at
        state = {**_global_rng_state(), "loader": loader_state}
        states = distributed.all_gather_objects(state)
        if ctx.is_main:
            if lock is not None:
                lock.check()
            payload = {
                "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch_done, "batches_done": batches_done,
                "iteration": epoch_done * iters_per_epoch + batches_done, "rng": states,
                "config": to_dict(config), "num_classes": num_classes,
            }
            if progress is not None:
                payload["epoch_progress"] = progress
            runs.save_checkpoint(payload, run_dir)
        saved_at = {"epoch": epoch_done, "batches": batches_done}
        distributed.barrier()

    def last_good() -> str:
        if saved_at is None:
            return "none yet (the run restarts from scratch)"
        extra = f", iteration {saved_at['batches']} of epoch {saved_at['epoch'] + 1}" if saved_at["batches"] else ""
        return f"epoch {saved_at['epoch']}{extra} in {ckpt_path}"

    # Validation records so far: the release's best-checkpoint choice is logged beside the last epoch's numbers.
    val_history = [r for r in runs.read_jsonl(metrics_path) if "val_mIoU" in r] if ctx.is_main else []
    val_result = None
    epoch = start_epoch
    with _StopRequests() as stop:
        try:
            for epoch in range(start_epoch, t.epochs):
                resuming = epoch == start_epoch and checkpoint is not None and start_batch > 0
                record = _train_epoch(config, ctx, model, criterion, optimizer, scaler, loader, sampler, generator,
                                      epoch, iters_per_epoch, total_iters, lr, use_amp, stop, save,
                                      skip=start_batch if resuming else 0, carried=carried if resuming else None,
                                      resume_rng=resume_rng if resuming else None)
                last = epoch + 1 == t.epochs
                if last or (t.val_every and (epoch + 1) % t.val_every == 0):
                    metric = build_metric(config, num_classes)
                    val_result = evaluate_model(_unwrap(model), val_set, metric, config, ctx, amp=use_amp)
                    record.update(_val_summary(config, val_result))
                else:
                    val_result = None
                if ctx.is_main:
                    if "val_mIoU" in record:
                        val_history.append(record)
                        record.update(best_validation(val_history))
                    runs.append_jsonl(metrics_path, record)
                if last or (epoch + 1) % max(t.checkpoint_every, 1) == 0:
                    save(epoch + 1, 0, generator.get_state(), None)
                log(ctx, _epoch_line(config, record))
        except KeyboardInterrupt:
            if ctx.is_main:
                print(f"\ninterrupted during epoch {epoch + 1}; last complete checkpoint: {last_good()}\n"
                      f"resume with: {_resume_command(run_dir)}", file=sys.stderr, flush=True)
            raise
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"{err}; last good checkpoint: {last_good()}. Lower train.base_lr (or switch "
                                     f"train.amp off) and train again.") from None
        except Preempted as err:
            raise Preempted(f"{err}: checkpoint written ({last_good()}); resume with: "
                            f"{_resume_command(run_dir)} (exit status {PREEMPTED_EXIT_CODE})") from None
        except user_errors() as err:
            if isinstance(err, (ConfigError, RunLockedError, runs.CheckpointError)):
                raise
            raise type(err)(f"{err}\nthe run stopped; last good checkpoint: {last_good()} (intact). Fix the "
                            f"file, then resume with: {_resume_command(run_dir)}") from None
        except RuntimeError as err:
            failure = distributed.peer_failure(err) if ctx.distributed else None
            if failure is None:
                raise
            # Said here, while the stop handlers are still installed: torchrun sends SIGTERM to the surviving
            # ranks as soon as it sees one die, and the default action would end this process mid-sentence.
            print(f"error: {failure}", file=sys.stderr, flush=True)
            failure.reported = True
            raise failure from None

    if ctx.is_main:
        final = {**val_result, "epoch": t.epochs}
        write_eval(run_dir, "", final, config, split=config.data.val_split, scales=None, flip=False,
                   class_names=getattr(val_set, "class_names", None))
        runs.atomic_write_text(run_dir / runs.DONE, time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    distributed.barrier()
    return run_dir


def _train_epoch(config, ctx, model, criterion, optimizer, scaler, loader, sampler, generator, epoch,
                 iters_per_epoch, total_iters, lr, use_amp, stop, save, skip=0, carried=None,
                 resume_rng=None) -> dict:
    """One epoch from iteration ``skip`` (a mid-epoch resume: ``carried`` holds the partial sums and
    ``resume_rng`` the RNG states saved after iteration ``skip``)."""
    t = config.train
    model.train()
    sampler.set_epoch(epoch)
    loader_state = generator.get_state()  # before iter(): the workers' seeds are drawn from it
    batches = iter(loader)
    try:
        if skip:
            # Fetch (and drop) the batches already trained: the sampler position and every loader worker's RNG end up
            # exactly where they were, whatever the number of workers. Then the main process's RNGs are restored.
            for _ in range(skip):
                _next_batch(batches)
            _set_global_rng_state(resume_rng)
        carried = carried or {}
        totals: dict[str, float] = dict(carried.get("totals", {}))
        seen = int(carried.get("seen", 0))
        current = carried.get("lr", 0.0)
        progress = None
        if ctx.is_main and _progress_enabled():
            from tqdm import tqdm

            progress = tqdm(total=iters_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{t.epochs}", leave=False,
                            dynamic_ncols=True)
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        start = time.perf_counter()
        seen_now = 0
        every = t.checkpoint_every_iters
        for i in range(skip, iters_per_epoch):
            images, targets = _next_batch(batches)
            it = epoch * iters_per_epoch + i
            current = lr_at(t.lr_schedule, lr, it, total_iters, t.poly_power, t.warmup_epochs * iters_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = current * group["lr_mult"]
            images = images.to(ctx.device, non_blocking=True)
            if t.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = targets.to(ctx.device, non_blocking=True)
            with torch.autocast(ctx.device.type, enabled=use_amp):
                output = model(images)
                loss, parts = _loss_parts(config, criterion, output, targets)
            # One small all-reduce per iteration: logged losses are over all processes, a non-finite loss on any rank
            # stops every rank at the same iteration, and so does a stop signal that reached only some ranks.
            names = sorted(parts)
            requested = loss.new_tensor(1.0 if stop.signal_name else 0.0).float()
            stats = torch.stack([parts[k] for k in names] + [requested]).to(torch.float64)
            distributed.all_reduce_sum(stats)
            if not torch.isfinite(stats).all():
                raise NonFiniteLossError(f"non-finite loss at epoch {epoch + 1}, iteration {i + 1} (lr {current:.3g})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            for key, value in zip(names, stats[:-1].cpu()):
                totals[key] = totals.get(key, 0.0) + float(value)
            seen += images.shape[0] * ctx.world_size
            seen_now += images.shape[0] * ctx.world_size
            stopping = float(stats[-1]) > 0
            if stopping or (every and (it + 1) % every == 0 and i + 1 < iters_per_epoch):
                save(epoch, i + 1, loader_state, {"totals": dict(totals), "seen": seen, "lr": current})
                if stopping:
                    raise Preempted(f"stopped by {stop.signal_name or 'a stop signal on another rank'} after epoch "
                                    f"{epoch + 1}, iteration {i + 1}")
            if progress is not None:
                elapsed = time.perf_counter() - start
                progress.set_postfix(loss=f"{float(stats[names.index('loss')]) / ctx.world_size:.3f}",
                                     lr=f"{current:.2e}", img_s=f"{seen_now / max(elapsed, 1e-9):.1f}")
                progress.update()
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if progress is not None:
            progress.close()
        record = {"epoch": epoch + 1, "iter": (epoch + 1) * iters_per_epoch, "lr": current,
                  "images_per_s": seen_now / max(seconds, 1e-9), "epoch_time_s": seconds}
        if ctx.device.type == "cuda":  # what sizes a run: this process's peak, weights and optimizer state included
            record["peak_memory_MiB"] = torch.cuda.max_memory_allocated(ctx.device) / 2**20
        for key, value in totals.items():
            if key == "train_errors":
                record["train_top1_error"] = 100.0 * value / seen
            else:
                record[key] = value / (iters_per_epoch * ctx.world_size)
        return record
    finally:
        _shut_down_workers(batches)


def _val_summary(config: Config, result: dict) -> dict:
    if config.task == "classification":
        return {"val_top1_error": result["top1_error"]}
    return {"val_pixAcc": result["pixAcc"], "val_mIoU": result["mIoU"]}


def _epoch_line(config: Config, record: dict) -> str:
    line = (f"epoch {record['epoch']}/{config.train.epochs}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
            f"{record['images_per_s']:.1f} img/s  {record['epoch_time_s']:.1f}s")
    if "val_mIoU" in record:
        line += f"  val pixAcc {record['val_pixAcc']:.2f}  mIoU {record['val_mIoU']:.2f}"
    if "val_top1_error" in record:
        line += f"  val error {record['val_top1_error']:.2f}%"
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m encnet.train",
        description="Train one experiment (same command under torchrun --nproc_per_node N).",
    )
    parser.add_argument("config", help="configs/<profile>/<experiment>.yaml, or a run folder to resume")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.se_weight=0.4")
    parser.add_argument("--resume", action="store_true", help="continue an unfinished run from its checkpoint")
    parser.add_argument("--run-dir", help="run folder (default: <output-root>/<profile>/<experiment>/<run-id>)")
    parser.add_argument("--output-root", default="runs", help="root of the run folders (default: runs)")
    parser.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    parser.add_argument("--if-locked", choices=["wait", "skip"], default="wait",
                        help="another process is training this run: wait for it and reuse its result (default), "
                             "or skip it")
    args = parser.parse_args(argv)

    source = Path(args.config)
    rc = 0
    try:
        if source.is_dir():  # a run folder: its resolved config, in place
            config = load_config(source / "config.yaml", args.overrides)
            run_dir = args.run_dir or source
        else:
            config = load_config(source, args.overrides)
            run_dir = args.run_dir
        out = train(config, run_dir=run_dir, resume=args.resume, output_root=args.output_root, device=args.device,
                    if_locked=args.if_locked)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"run folder: {out}", flush=True)
    except RunLockedError as err:
        if int(os.environ.get("RANK", "0")) == 0:
            print(str(err), file=sys.stderr, flush=True)
        rc = 0 if args.if_locked == "skip" and "skipping" in str(err) else 2
    except Preempted as err:
        print(str(err), file=sys.stderr, flush=True)
        rc = PREEMPTED_EXIT_CODE
    except distributed.PeerFailureError as err:
        if not getattr(err, "reported", False):
            print(f"error: {err}", file=sys.stderr, flush=True)
        rc = 1
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        rc = 2
    except KeyboardInterrupt:
        rc = 130
    return distributed.exit_process(rc)


if __name__ == "__main__":
    sys.exit(main())
