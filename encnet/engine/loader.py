"""The training data loader: sharded over the processes, seeded per rank, and resumable mid-epoch.

Each rank's loader draws its workers' seeds from its own generator (seeded ``seed + rank``); the generator's state
at an epoch's start is what a checkpoint keeps, so a resume replays the epoch's batches and skips the trained ones.
"""

from __future__ import annotations

import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from .preemption import STOP_SIGNALS

__all__ = ["next_batch", "shut_down_workers", "training_loader"]


def _seed_worker(worker_id: int) -> None:
    # torch seeds python's and its own RNG per worker from the loader generator; numpy needs the same.
    np.random.seed(torch.initial_seed() % 2**32)
    # A scheduler may signal the whole process group; the main process decides when to stop, and shuts the
    # workers down itself.
    for name in STOP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def training_loader(dataset, config, ctx) -> tuple[DataLoader, DistributedSampler, torch.Generator]:
    """(loader, sampler, generator) of one rank: ``train.batch_size`` split evenly over the processes, the last
    incomplete batch dropped."""
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=config.seed, drop_last=True)
    generator = torch.Generator()
    generator.manual_seed(config.seed + ctx.rank)
    loader = DataLoader(dataset, batch_size=config.train.batch_size // ctx.world_size, sampler=sampler,
                        num_workers=config.data.workers, pin_memory=ctx.device.type == "cuda", drop_last=True,
                        worker_init_fn=_seed_worker, generator=generator)
    return loader, sampler, generator


def shut_down_workers(batches) -> None:
    """Stop a loader iterator's worker processes now, not when the iterator is collected.

    An exception's traceback (kept by pytest, a notebook, pdb) keeps the epoch's frame and the iterator alive, and
    the workers ignore SIGTERM (``_seed_worker``): multiprocessing's exit handler, which stops leftover children
    with SIGTERM and then joins them, would wait for them forever. torch has no public call for this; the
    iterator's own shutdown method is what its ``__del__`` runs.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def next_batch(batches, fixable: tuple[type[BaseException], ...]):
    """The next batch; an error raised inside a loader worker comes back with torch's whole traceback in its
    message, so an error of a ``fixable`` type is re-raised with just its own message (the file's path)."""
    try:
        return next(batches)
    except fixable as err:
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
