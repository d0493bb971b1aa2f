"""Train one experiment: ``python -m encnet.train CONFIG [key=value ...] [--resume] [--run-dir DIR]``.

The same command runs on one process or under ``torchrun --nproc_per_node N`` (and torchrun's multi-node
flags): one process per device, nccl on CUDA, gloo on CPU, a DistributedSampler, SyncBN when more than
one process trains (``train.syncbn``). The recipe is the paper's (PAPER.md §5): SGD with momentum and weight
decay, lr = base_lr / 16 · batch_size, poly schedule stepped every iteration, heads at 10× the lr.

Reproducibility: seeds are set for python, numpy and torch; every rank's RNG states, the loader's generator
and the sampler epoch are checkpointed at the end of each epoch, so a stopped run resumed with ``--resume``
produces the same weights and metrics as an uninterrupted one (bit for bit on CPU).

``train(config, run_dir=None, resume=False) -> Path`` is the same thing as a function for reproduce scripts.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from . import distributed, runs
from .config import Config, ConfigError, effective_lr, load_config, to_dict, to_yaml
from .evaluate import evaluate_model, write_eval
from .experiment import (build_criterion, build_dataset_for, build_metric, build_model_for, build_optimizer,
                         dataset_num_classes, load_model_weights)
from .schedules import lr_at

__all__ = ["NonFiniteLossError", "RunExistsError", "main", "train", "user_errors"]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint on disk is the last good state."""


class RunExistsError(RuntimeError):
    """An unfinished run is already in the folder and ``resume`` was not asked for."""


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input a person can fix (config, data on disk, a stopped run): commands print their
    message in one block and exit 2 instead of showing a traceback."""
    from encnet.data.base import LabelSizeError, LabelValueError

    return (ConfigError, RunExistsError, NonFiniteLossError, FileNotFoundError, LabelValueError, LabelSizeError)


def log(ctx, message: str) -> None:
    if ctx.is_main:
        print(message, flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(generator: torch.Generator) -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "loader": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_worker(worker_id: int) -> None:
    # torch seeds python's and its own RNG per worker from the loader generator; numpy needs the same.
    np.random.seed(torch.initial_seed() % 2**32)


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


def train(config: Config, run_dir: str | Path | None = None, resume: bool = False,
          output_root: str | Path = "runs", device: str | None = None) -> Path:
    """Train ``config`` into ``run_dir`` (default ``<output_root>/<profile>/<experiment>/<run-id>``).

    A finished run (``DONE`` present) is not rerun. With ``resume`` an unfinished run continues from its last
    checkpoint (or starts if it has none); without it an unfinished run is an error. Returns the run folder.
    """
    ctx = distributed.setup(device)
    run_dir = Path(run_dir) if run_dir is not None else runs.run_dir_for(config, output_root)
    if runs.is_finished(run_dir):
        log(ctx, f"{run_dir} already finished; not rerunning (delete its DONE file to train again)")
        return run_dir
    ckpt_path = run_dir / runs.CHECKPOINT
    checkpoint = None
    if ckpt_path.is_file():
        if not resume:
            raise RunExistsError(
                f"{run_dir} holds an unfinished run with a checkpoint. Continue it with:\n  "
                f"{_resume_command(run_dir)}\nor delete the folder to start over."
            )
        saved = load_config(run_dir / "config.yaml")
        if runs.config_hash(saved) != runs.config_hash(config):
            raise ConfigError(
                f"--resume: {run_dir} was trained with a different config (see its config.yaml); resume with "
                f"`{_resume_command(run_dir)}` or choose another --run-dir"
            )
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=False)

    t = config.train
    if t.batch_size % ctx.world_size:
        raise ConfigError(
            f"train.batch_size={t.batch_size} (global) does not split over {ctx.world_size} processes; use a "
            f"multiple of {ctx.world_size}"
        )
    use_amp = t.amp
    if use_amp and ctx.device.type != "cuda":
        warnings.warn("train.amp=true needs CUDA; this run is on CPU and trains in float32 (set train.amp=false "
                      "to silence this)", stacklevel=2)
        use_amp = False

    # Same initial weights on every rank, then per-rank streams for augmentation and dropout.
    seed_everything(config.seed)
    train_set = build_dataset_for(config, config.data.train_split, train=True)
    val_set = build_dataset_for(config, config.data.val_split, train=False)
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

    start_epoch = 0
    if checkpoint is not None:
        _unwrap(model).load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
        start_epoch = checkpoint["epoch"]
        states = checkpoint["rng"]
        if len(states) != ctx.world_size:
            log(ctx, f"note: checkpoint written by {len(states)} processes, resuming on {ctx.world_size}; the "
                     "run continues but is no longer bitwise reproducible")
        _set_rng_state(states[ctx.rank % len(states)], generator)
        log(ctx, f"resuming {run_dir} after epoch {start_epoch}")

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
            first.setdefault("resumes", []).append({"epoch": start_epoch, **env})
            runs.write_json(run_dir / "env.json", first)
            # Epochs logged after the checkpoint will be trained again.
            runs.truncate_jsonl(metrics_path, [r for r in runs.read_jsonl(metrics_path) if r["epoch"] <= start_epoch])
    distributed.barrier()
    log(ctx, f"{config.profile}/{config.experiment} → {run_dir}\n  {ctx.world_size} process(es) on "
             f"{ctx.device.type}, batch {t.batch_size} ({per_process}/process), effective lr {lr:g} "
             f"(base_lr {t.base_lr:g} / {t.lr_ref_batch} · {t.batch_size}), {t.epochs} epochs × "
             f"{iters_per_epoch} iterations")

    last_saved = start_epoch if checkpoint is not None else None
    val_result = None
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, t.epochs):
            record = _train_epoch(config, ctx, model, criterion, optimizer, scaler, loader, sampler, epoch,
                                  iters_per_epoch, total_iters, lr, use_amp)
            last = epoch + 1 == t.epochs
            if last or (t.val_every and (epoch + 1) % t.val_every == 0):
                metric = build_metric(config, num_classes)
                val_result = evaluate_model(_unwrap(model), val_set, metric, config, ctx, amp=use_amp)
                record.update(_val_summary(config, val_result))
            else:
                val_result = None
            if ctx.is_main:
                runs.append_jsonl(metrics_path, record)
            if last or (epoch + 1) % max(t.checkpoint_every, 1) == 0:
                states = distributed.all_gather_objects(_rng_state(generator))
                if ctx.is_main:
                    runs.atomic_save({
                        "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(), "epoch": epoch + 1, "iteration": (epoch + 1) * iters_per_epoch,
                        "rng": states, "config": to_dict(config), "num_classes": num_classes,
                    }, ckpt_path)
                last_saved = epoch + 1
                distributed.barrier()
            log(ctx, _epoch_line(config, record))
    except KeyboardInterrupt:
        if ctx.is_main:
            where = f"epoch {last_saved} in {ckpt_path}" if last_saved else "none yet (the run restarts from scratch)"
            print(f"\ninterrupted during epoch {epoch + 1}; last complete checkpoint: {where}\n"
                  f"resume with: {_resume_command(run_dir)}", file=sys.stderr, flush=True)
        raise
    except NonFiniteLossError as err:
        where = f"epoch {last_saved} in {ckpt_path}" if last_saved else "none (no epoch completed)"
        raise NonFiniteLossError(f"{err}; last good checkpoint: {where}. Lower train.base_lr (or switch "
                                 f"train.amp off) and train again.") from None

    if ctx.is_main:
        final = {**val_result, "epoch": t.epochs}
        write_eval(run_dir, "", final, config, split=config.data.val_split, scales=None, flip=False,
                   class_names=getattr(val_set, "class_names", None))
        runs.atomic_write_text(run_dir / runs.DONE, time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    distributed.barrier()
    return run_dir


def _train_epoch(config, ctx, model, criterion, optimizer, scaler, loader, sampler, epoch, iters_per_epoch,
                 total_iters, lr, use_amp) -> dict:
    t = config.train
    model.train()
    sampler.set_epoch(epoch)
    totals: dict[str, torch.Tensor] = {}
    progress = None
    if ctx.is_main and _progress_enabled():
        from tqdm import tqdm

        progress = tqdm(total=iters_per_epoch, desc=f"epoch {epoch + 1}/{t.epochs}", leave=False, dynamic_ncols=True)
    if ctx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(ctx.device)
    start = time.perf_counter()
    seen = 0
    for i, (images, targets) in enumerate(loader):
        it = epoch * iters_per_epoch + i
        current = lr_at(t.lr_schedule, lr, it, total_iters, t.poly_power)
        for group in optimizer.param_groups:
            group["lr"] = current * group["lr_mult"]
        images = images.to(ctx.device, non_blocking=True)
        if t.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = targets.to(ctx.device, non_blocking=True)
        with torch.autocast(ctx.device.type, enabled=use_amp):
            output = model(images)
            loss, parts = _loss_parts(config, criterion, output, targets)
        # One small all-reduce per iteration: logged losses are over all processes, and a non-finite loss
        # on any rank stops every rank at the same iteration (no rank is left waiting in a collective).
        stats = torch.stack([parts[k] for k in sorted(parts)]).to(torch.float64)
        distributed.all_reduce_sum(stats)
        if not torch.isfinite(stats).all():
            raise NonFiniteLossError(f"non-finite loss at epoch {epoch + 1}, iteration {i + 1} (lr {current:.3g})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        for key, value in zip(sorted(parts), stats.cpu()):
            totals[key] = totals.get(key, 0.0) + float(value)
        seen += images.shape[0] * ctx.world_size
        if progress is not None:
            elapsed = time.perf_counter() - start
            progress.set_postfix(loss=f"{float(stats[sorted(parts).index('loss')]) / ctx.world_size:.3f}",
                                 lr=f"{current:.2e}", img_s=f"{seen / max(elapsed, 1e-9):.1f}")
            progress.update()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if progress is not None:
        progress.close()
    record = {"epoch": epoch + 1, "iter": (epoch + 1) * iters_per_epoch, "lr": current,
              "images_per_s": seen / seconds, "epoch_time_s": seconds}
    if ctx.device.type == "cuda":  # what sizes a run: this process's peak, weights and optimizer state included
        record["peak_memory_MiB"] = torch.cuda.max_memory_allocated(ctx.device) / 2**20
    for key, value in totals.items():
        if key == "train_errors":
            record["train_top1_error"] = 100.0 * value / seen
        else:
            record[key] = value / (iters_per_epoch * ctx.world_size)
    return record


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
        out = train(config, run_dir=run_dir, resume=args.resume, output_root=args.output_root, device=args.device)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"run folder: {out}", flush=True)
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        rc = 2
    except KeyboardInterrupt:
        rc = 130
    return exit_process(rc)


def exit_process(rc: int) -> int:
    """Leave the process group, then exit. Under torchrun the exit skips interpreter teardown: torch's gloo
    backend can abort there ("terminate called without an active exception") after a run that succeeded."""
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    distributed.cleanup()
    if multi:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
