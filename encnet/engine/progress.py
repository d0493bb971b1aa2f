"""What a person watching a training run sees, from rank 0 only.

- every ``train.log_every`` iterations, wherever stdout goes (a terminal, a SLURM log file), one line: the loss and
  its parts over the iterations since the previous line, the lr, images/s, the time left in the epoch and in the
  run, and the peak memory (CUDA's allocator since the epoch began on a GPU; this process's peak RSS on a CPU);
- the same records as JSON lines in the run folder's ``progress.jsonl`` (``metrics.jsonl`` keeps one record per
  epoch, as its readers expect);
- with ``train.tensorboard: true``, TensorBoard event files in ``<run folder>/tensorboard/``, so
  ``tensorboard --logdir runs/`` shows every run's curves while they train (the optional extra: ``pip install -e
  '.[tensorboard]'`` in the clone);
- on a terminal, the per-iteration progress bar (tqdm; ``ENCNET_NO_PROGRESS=1`` hides it) and one line per epoch.

Watching never changes what trains: every number comes from values the loop already holds on the host (the
all-reduced loss parts), the wall clock and the memory counters; nothing draws a random number, waits for the
device or talks to another rank. So neither ``train.log_every`` nor ``train.tensorboard`` is part of the run id.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import torch

from . import runs
from .config import Config, ConfigError

__all__ = ["PROGRESS_FILE", "TENSORBOARD_DIR", "TrainingProgress", "check_tensorboard", "duration", "epoch_line",
           "peak_memory_mib", "truncate_progress"]

PROGRESS_FILE = "progress.jsonl"
TENSORBOARD_DIR = "tensorboard"
TENSORBOARD_INSTALL = "pip install tensorboard"  # what the extra `.[tensorboard]` adds, wherever encnet came from
# The loss parts in the order a line shows them (the record keys of the training loop).
_PARTS = (("loss_main", "main"), ("loss_aux", "aux"), ("loss_se", "se"), ("loss_aux_se", "aux_se"))


def check_tensorboard(config: Config) -> None:
    """With ``train.tensorboard`` on, TensorBoard must be importable: said before any run folder is made."""
    if not config.train.tensorboard:
        return
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"train.tensorboard=true writes TensorBoard event files, but tensorboard is not installed "
                          f"({err}); install it with `{TENSORBOARD_INSTALL}` (in the clone: `pip install -e "
                          f"'.[tensorboard]'`), or set train.tensorboard=false") from None


def progress_bar_wanted() -> bool:
    return sys.stderr.isatty() and os.environ.get("ENCNET_NO_PROGRESS", "0") != "1"


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """(MiB, what was measured): CUDA's allocator peak on a GPU (``torch.cuda.max_memory_allocated``, reset at
    each epoch's start by the trainer), else this process's peak resident set size (``getrusage``)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_allocated"
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, "cpu_rss"


def duration(seconds: float) -> str:
    """``1:02:03``, or ``3d 01:02:03`` past a day (the ETA of a run of days)."""
    whole = int(round(max(seconds, 0.0)))
    days, rest = divmod(whole, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


def epoch_line(config: Config, record: dict) -> str:
    line = (f"epoch {record['epoch']}/{config.train.epochs}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
            f"{record['images_per_s']:.1f} img/s  {record['epoch_time_s']:.1f}s")
    if "val_mIoU" in record:
        line += f"  val pixAcc {record['val_pixAcc']:.2f}  mIoU {record['val_mIoU']:.2f}"
    if "val_top1_error" in record:
        line += f"  val error {record['val_top1_error']:.2f}%"
    return line


def truncate_progress(run_dir: Path, iteration: int | None) -> None:
    """Start the run's ``progress.jsonl`` afresh (``iteration`` None), or keep only the records up to the
    iteration a resume starts from: the iterations after it are trained, and logged, again."""
    path = run_dir / PROGRESS_FILE
    if iteration is None:
        path.unlink(missing_ok=True)
    elif path.is_file():
        runs.truncate_jsonl(path, [r for r in runs.read_jsonl(path) if r["iter"] <= iteration])


class TrainingProgress:
    """Rank 0's reports of one training session (a fresh start or a resume), fed by the training loop.

    ``start_epoch`` before an epoch's first iteration, ``step`` after each iteration with the loss parts summed
    over the processes (the loop's all-reduced values, as host floats), ``end_epoch`` with the epoch's record,
    ``close`` at the end (also after a failure). On other ranks every call does nothing.
    """

    def __init__(self, config: Config, ctx, run_dir: Path, iters_per_epoch: int, total_iters: int,
                 start_iter: int, say=print):
        self.config, self.ctx, self.run_dir = config, ctx, run_dir
        self.iters_per_epoch, self.total_iters = iters_per_epoch, total_iters
        self.every = config.train.log_every
        self.active = ctx.is_main
        self.say = say
        self.writer = None
        if self.active and config.train.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: TensorBoard drops the points an earlier session logged after the iteration this one starts
            # from (a resume's checkpoint; 0 for a fresh start), which this session trains, and logs, again.
            self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR), purge_step=start_iter + 1)
        self.bar = None

    def start_epoch(self, epoch: int, skip: int) -> None:
        if not self.active:
            return
        self.epoch = epoch
        self.epoch_start = self.window_start = time.perf_counter()
        self.done_in_epoch = 0  # iterations this session trained in this epoch (a resume skips the first ones)
        self.window: dict[str, float] = {}
        self.window_iters = self.window_images = 0
        if progress_bar_wanted():
            from tqdm import tqdm

            self.bar = tqdm(total=self.iters_per_epoch, initial=skip, leave=False, dynamic_ncols=True,
                            desc=f"epoch {epoch + 1}/{self.config.train.epochs}")

    def step(self, i: int, sums: dict[str, float], lr: float, images: int) -> None:
        """Iteration ``i`` (0-based, within the epoch) is trained: ``sums`` are its loss parts summed over the
        processes, ``images`` the images all processes trained on."""
        if not self.active:
            return
        now = time.perf_counter()
        self.done_in_epoch += 1
        self.window_iters += 1
        self.window_images += images
        for key, value in sums.items():
            self.window[key] = self.window.get(key, 0.0) + value
        it = self.epoch * self.iters_per_epoch + i + 1  # iterations done in the run
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{sums['loss'] / self.ctx.world_size:.3f}", lr=f"{lr:.2e}",
                                 img_s=f"{self.window_images / max(now - self.window_start, 1e-9):.1f}")
            self.bar.update()
            if i + 1 == self.iters_per_epoch:
                self._close_bar()  # before the validation, which has a bar of its own
        if self.every and it % self.every == 0:
            self._report(it, i + 1, lr, now)

    def _report(self, it: int, epoch_iter: int, lr: float, now: float) -> None:
        seconds_per_iter = (now - self.epoch_start) / self.done_in_epoch
        record = {"epoch": self.epoch + 1, "iter": it, "epoch_iter": epoch_iter, "lr": lr}
        for key, value in self.window.items():  # the mean over the window's iterations and the processes
            if key == "train_errors":
                record["train_top1_error"] = 100.0 * value / max(self.window_images, 1)
            else:
                record[key] = value / (self.window_iters * self.ctx.world_size)
        memory, measured = peak_memory_mib(self.ctx.device)
        record.update(images_per_s=self.window_images / max(now - self.window_start, 1e-9),
                      eta_epoch_s=(self.iters_per_epoch - epoch_iter) * seconds_per_iter,
                      eta_run_s=(self.total_iters - it) * seconds_per_iter,
                      peak_memory_MiB=memory, memory=measured, time=time.time())
        runs.append_jsonl(self.run_dir / PROGRESS_FILE, record)
        self._line(self._format(record))
        if self.writer is not None:
            parts = [k for k, _ in _PARTS if record.get(k, 0.0) != 0.0]  # no flat curve for a head that is off
            for key in ("loss", *parts, "train_top1_error", "lr", "images_per_s", "peak_memory_MiB"):
                if key in record:
                    self.writer.add_scalar(f"train/{key}", record[key], it)
            self.writer.flush()
        self.window, self.window_iters, self.window_images, self.window_start = {}, 0, 0, now

    def _format(self, r: dict) -> str:
        # A head that is switched off logs 0 for its part (metrics.jsonl keeps every key); the line leaves it out.
        parts = " ".join(f"{name} {r[key]:.4f}" for key, name in _PARTS if key in r and r[key] != 0.0)
        text = (f"epoch {r['epoch']}/{self.config.train.epochs} iter {r['epoch_iter']}/{self.iters_per_epoch}  "
                f"loss {r['loss']:.4f}" + (f" ({parts})" if parts else ""))
        if "train_top1_error" in r:
            text += f"  error {r['train_top1_error']:.1f}%"
        where = "GPU" if r["memory"] == "cuda_allocated" else "RSS"
        return (f"{text}  lr {r['lr']:.2e}  {r['images_per_s']:.1f} img/s  eta epoch {duration(r['eta_epoch_s'])}"
                f" run {duration(r['eta_run_s'])}  peak {where} {r['peak_memory_MiB']:,.0f} MiB")

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stdout)  # above the bar, which is redrawn under it
            sys.stdout.flush()
        else:
            self.say(text)

    def end_epoch(self, record: dict) -> None:
        """After the epoch's validation: its line, and its curves' points at the epoch's last iteration."""
        if not self.active:
            return
        self._close_bar()
        if self.writer is not None:
            it = record["iter"]
            for key in ("loss", "train_top1_error"):
                if key in record:
                    self.writer.add_scalar(f"epoch/{key}", record[key], it)
            for key in ("val_mIoU", "val_pixAcc", "val_top1_error"):
                if key in record:
                    self.writer.add_scalar(f"val/{key[len('val_'):]}", record[key], it)
            self.writer.flush()
        self.say(epoch_line(self.config, record))

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self._close_bar()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
