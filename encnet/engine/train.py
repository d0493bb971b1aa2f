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
a dead rank stops the others with a message naming it; an unreadable image stops the run with its path; a run that
fails before its first checkpoint leaves no run folder behind. Only global rank 0 writes the run folder, on one node
or many; every rank reads the checkpoint when resuming.

Watching a run (``encnet.engine.progress``): a line every ``train.log_every`` iterations, ``progress.jsonl``, and
TensorBoard event files with ``train.tensorboard: true``.

``train(config, run_dir=None, resume=False) -> Path`` is the same thing as a function for reproduce scripts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from . import distributed, runs
from .build import (build_criterion, build_dataset_for, build_metric, build_model_for, build_monitor_dataset,
                    build_optimizer, dataset_num_classes, load_model_weights)
from .config import Config, ConfigError, effective_lr, load_config, to_dict, to_yaml
from .eval_loop import evaluate_model, write_eval
from .loader import next_batch, shut_down_workers, training_loader
from .preemption import PREEMPTED_EXIT_CODE, Preempted, StopRequests
from .progress import TrainingProgress, check_tensorboard, truncate_progress
from .rng import global_rng_state, seed_everything, set_global_rng_state
from .runlock import RunLock, RunLockedError, lock_run
from .schedules import lr_at
from encnet.metrics import best_validation

__all__ = ["NonFiniteLossError", "PREEMPTED_EXIT_CODE", "Preempted", "RunExistsError", "main", "train",
           "user_errors"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is the last good state."""


class RunExistsError(RuntimeError):
    """An unfinished run is already in the folder and ``resume`` was not asked for."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input a person can fix (config, data on disk, a stopped run): commands print their
    message in one block and exit 2 instead of showing a traceback."""
    from encnet.data.base import LabelSizeError, LabelValueError, UnreadableFileError

    return (ConfigError, RunExistsError, NonFiniteLossError, FileNotFoundError, LabelValueError, LabelSizeError,
            UnreadableFileError, runs.CheckpointError, RunLockedError, distributed.DeviceError)


def log(ctx, message: str) -> None:
    if ctx.is_main:
        print(message, flush=True)


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


def train(config: Config, run_dir: str | Path | None = None, resume: bool = False,
          output_root: str | Path = "runs", device: str | None = None, if_locked: str = "wait") -> Path:
    """Train ``config`` into ``run_dir`` (default ``<output_root>/<profile>/<experiment>/<run-id>``).

    A finished run (``DONE`` present) is not rerun. With ``resume`` an unfinished run continues from its last
    checkpoint (or starts if it has none); without it an unfinished run is an error. A run that another process
    is training is waited for and reused (``if_locked="wait"``) or skipped (``"skip"``: :class:`RunLockedError`).
    A session that fails before the run's first checkpoint removes what it wrote (and the folder, if it made it).
    Returns the run folder.
    """
    if if_locked not in ("wait", "skip"):
        raise ValueError(f"if_locked must be 'wait' or 'skip', not {if_locked!r}")
    ctx = distributed.setup(device, gpu_only=config.profile == "paper")
    run_dir = Path(run_dir) if run_dir is not None else runs.run_dir_for(config, output_root)
    if runs.is_finished(run_dir):
        log(ctx, f"{run_dir} already finished; not rerunning (delete its DONE file to train again)")
        return run_dir
    if config.train.batch_size % ctx.world_size:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} (global) does not split over {ctx.world_size} processes; "
            f"use a multiple of {ctx.world_size}"
        )
    check_tensorboard(config)
    made = runs.first_missing_folder(run_dir) if ctx.is_main else None
    lock = lock_run(run_dir, ctx, if_locked, say=lambda m: log(ctx, m))
    kept = {p.name for p in run_dir.iterdir()} if ctx.is_main else set()
    discarded = False
    try:
        if runs.is_finished(run_dir):
            log(ctx, f"{run_dir} was finished by another process while this one waited; reusing its result")
            return run_dir
        return _train_locked(config, ctx, run_dir, resume, lock)
    except BaseException:
        discarded = _discard_failed_start(run_dir, lock, kept)
        raise
    finally:
        if lock is not None:
            lock.release()
        if discarded and made is not None:
            runs.remove_empty_folders(run_dir, made)


def _discard_failed_start(run_dir: Path, lock: RunLock | None, kept: set[str]) -> bool:
    """Rank 0, while it still holds the lock: a failed session leaves no run folder without a checkpoint. True when
    the folder held none (what the session wrote is gone)."""
    try:
        if lock is None or not lock.held:
            return False
        lock.check()  # taken over meanwhile: the folder is another process's now
    except RunLockedError:
        return False
    removed = runs.discard_failed_start(run_dir, kept)
    if removed:
        print(f"{run_dir}: the run stopped before its first checkpoint; removed what it had written "
              f"({', '.join(removed)})", file=sys.stderr, flush=True)
    return removed is not None


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
    loader, sampler, generator = training_loader(train_set, config, ctx)
    iters_per_epoch = len(loader)
    if iters_per_epoch == 0:
        raise ConfigError(
            f"{len(train_set)} training images cannot fill one batch of {t.batch_size}; lower train.batch_size"
        )
    total_iters = t.epochs * iters_per_epoch
    lr = effective_lr(t)

    start_epoch, start_batch, carried, resume_rng = 0, 0, None, None
    if checkpoint is not None:  # every rank reads the checkpoint: weights, optimizer, its own RNG streams
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
        set_global_rng_state(resume_rng)
        generator.set_state(resume_rng["loader"])
        where = f"epoch {start_epoch}"
        if start_batch:
            where += f", iteration {start_batch} of epoch {start_epoch + 1}"
        log(ctx, f"resuming {run_dir} after {where}")

    metrics_path = run_dir / "metrics.jsonl"
    start_iter = start_epoch * iters_per_epoch + start_batch
    if ctx.is_main:
        env = runs.capture_env(ctx.world_size, str(ctx.device))
        env.update(effective_lr=lr, per_process_batch=per_process, iters_per_epoch=iters_per_epoch,
                   num_classes=num_classes, train_images=len(train_set), val_images=len(val_set))
        resumed_at = (start_epoch, start_batch) if checkpoint is not None else None
        for note in runs.record_session(run_dir, to_yaml(config), env, resumed_at):
            log(ctx, note)
        truncate_progress(run_dir, start_iter if checkpoint is not None else None)
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
        state = {**global_rng_state(), "loader": loader_state}
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

    def again() -> str:
        return f"resume with: {_resume_command(run_dir)}" if saved_at else "run the same command again to start afresh"

    # Validation records so far: the release's best-checkpoint choice is logged beside the last epoch's numbers.
    val_history = [r for r in runs.read_jsonl(metrics_path) if "val_mIoU" in r] if ctx.is_main else []
    val_result = None
    epoch = start_epoch
    watch = TrainingProgress(config, ctx, run_dir, iters_per_epoch, total_iters, start_iter,
                             say=lambda m: log(ctx, m))
    with StopRequests() as stop:
        try:
            for epoch in range(start_epoch, t.epochs):
                resuming = epoch == start_epoch and checkpoint is not None and start_batch > 0
                record = _train_epoch(config, ctx, model, criterion, optimizer, scaler, loader, sampler, generator,
                                      epoch, iters_per_epoch, total_iters, lr, use_amp, stop, save, watch,
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
                watch.end_epoch(record)
        except KeyboardInterrupt:
            if ctx.is_main:
                print(f"\ninterrupted during epoch {epoch + 1}; last complete checkpoint: {last_good()}\n"
                      f"{again()}", file=sys.stderr, flush=True)
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
            kept = f"last good checkpoint: {last_good()} (intact)" if saved_at else "it had no checkpoint yet"
            raise type(err)(f"{err}\nthe run stopped; {kept}. Fix the file, then {again()}") from None
        except RuntimeError as err:
            failure = distributed.peer_failure(err) if ctx.distributed else None
            if failure is None:
                raise
            # Said here, while the stop handlers are still installed: torchrun sends SIGTERM to the surviving
            # ranks as soon as it sees one die, and the default action would end this process mid-sentence.
            print(f"error: {failure}", file=sys.stderr, flush=True)
            failure.reported = True
            raise failure from None
        finally:
            watch.close()

    if ctx.is_main:
        final = {**val_result, "epoch": t.epochs}
        write_eval(run_dir, "", final, config, split=config.data.val_split, scales=None, flip=False,
                   class_names=getattr(val_set, "class_names", None))
        runs.atomic_write_text(run_dir / runs.DONE, time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    distributed.barrier()
    return run_dir


def _train_epoch(config, ctx, model, criterion, optimizer, scaler, loader, sampler, generator, epoch,
                 iters_per_epoch, total_iters, lr, use_amp, stop, save, watch, skip=0, carried=None,
                 resume_rng=None) -> dict:
    """One epoch from iteration ``skip`` (a mid-epoch resume: ``carried`` holds the partial sums and
    ``resume_rng`` the RNG states saved after iteration ``skip``)."""
    t = config.train
    model.train()
    sampler.set_epoch(epoch)
    loader_state = generator.get_state()  # before iter(): the workers' seeds are drawn from it
    batches = iter(loader)
    fixable = user_errors()
    try:
        if skip:
            # Fetch (and drop) the batches already trained: the sampler position and every loader worker's RNG end up
            # exactly where they were, whatever the number of workers. Then the main process's RNGs are restored.
            for _ in range(skip):
                next_batch(batches, fixable)
            set_global_rng_state(resume_rng)
        carried = carried or {}
        totals: dict[str, float] = dict(carried.get("totals", {}))
        seen = int(carried.get("seen", 0))
        current = carried.get("lr", 0.0)
        watch.start_epoch(epoch, skip)
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        start = time.perf_counter()
        seen_now = 0
        every = t.checkpoint_every_iters
        for i in range(skip, iters_per_epoch):
            images, targets = next_batch(batches, fixable)
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
            sums = {key: float(value) for key, value in zip(names, stats[:-1].cpu())}
            for key, value in sums.items():
                totals[key] = totals.get(key, 0.0) + value
            seen += images.shape[0] * ctx.world_size
            seen_now += images.shape[0] * ctx.world_size
            stopping = float(stats[-1]) > 0
            if stopping or (every and (it + 1) % every == 0 and i + 1 < iters_per_epoch):
                save(epoch, i + 1, loader_state, {"totals": dict(totals), "seen": seen, "lr": current})
                if stopping:
                    raise Preempted(f"stopped by {stop.signal_name or 'a stop signal on another rank'} after epoch "
                                    f"{epoch + 1}, iteration {i + 1}")
            watch.step(i, sums, current, images.shape[0] * ctx.world_size)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
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
        shut_down_workers(batches)


def _val_summary(config: Config, result: dict) -> dict:
    if config.task == "classification":
        return {"val_top1_error": result["top1_error"]}
    return {"val_pixAcc": result["pixAcc"], "val_mIoU": result["mIoU"]}


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
