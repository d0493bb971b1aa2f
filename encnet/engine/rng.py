"""Every random number generator a training process draws from, seeded and captured for checkpoints.

A resumed run replays exactly (bit for bit on CPU) because each rank's python, numpy, torch and CUDA states are
checkpointed at an iteration boundary and put back before the next iteration; the loader's own generator and the
sampler position travel separately (``encnet.engine.loader``).
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["global_rng_state", "seed_everything", "set_global_rng_state"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def global_rng_state() -> dict:
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


def set_global_rng_state(state: dict) -> None:
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
