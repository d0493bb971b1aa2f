"""Whether CUDA is usable here, and if not, why: the paper profile never falls back to the CPU unasked.

A paper run trains for days on GPUs. On a node where torch cannot use CUDA (a CPU-only torch build, no NVIDIA
driver, a driver older than the CUDA torch was built for, no device visible to the job) the engine used to start it
on the CPU with gloo without a word; ``gpu_refusal`` says in one line why CUDA is unusable and what fixes it, and the
engine refuses unless the CPU was asked for (``--device cpu``). ``process_refusal`` does the same for more processes
on a node than it has visible GPUs (``torchrun --nproc_per_node`` or ``--gpus N`` too large).

``torch.cuda.is_available()`` only says yes or no; the reason comes from ``torch.version.cuda`` (None in a CPU-only
build), the driver's own CUDA version (``cuDriverGetVersion`` from libcuda, which needs no GPU), the job's
``CUDA_VISIBLE_DEVICES``, and the warning torch gives when its first CUDA query fails.
"""

from __future__ import annotations

import ctypes
import os
import warnings

import torch

__all__ = ["DeviceError", "cuda_problem", "driver_cuda_version", "gpu_refusal", "process_refusal", "visible_gpus"]

CPU_ON_PURPOSE = "pass --device cpu to train on the CPU on purpose (days per paper run)"


class DeviceError(RuntimeError):
    """The run needs GPUs that this process cannot use (the message says why and what fixes it)."""


def driver_cuda_version() -> int | None:
    """The newest CUDA version the installed NVIDIA driver supports, as the driver API reports it (12020 for
    12.2); None when no driver library loads."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value


def _as_number(cuda: str) -> int:
    """torch's "12.1" as the driver API's 12010."""
    major, minor = (cuda.split(".") + ["0"])[:2]
    return int(major) * 1000 + int(minor) * 10


def _as_text(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def cuda_problem() -> tuple[str, str] | None:
    """``(why CUDA is unusable, what fixes it)``, or None when torch can use a CUDA device here."""
    built = torch.version.cuda
    if built is None and getattr(torch.version, "hip", None) is None:
        return (f"this torch ({torch.__version__}) is a CPU-only build (torch.version.cuda is None)",
                "install a CUDA build of torch that your driver supports into this environment "
                "(README: 'Installing into an existing environment')")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        return None
    said = next((str(w.message).splitlines()[0] for w in caught if "CUDA" in str(w.message)), "")
    driver = driver_cuda_version()
    if built is not None and driver is None:
        return ("no NVIDIA driver on this node (libcuda.so.1 does not load)",
                "run on a GPU node (under SLURM, ask for the GPUs: --gres=gpu:N)")
    if built is not None and driver is not None and driver < _as_number(built):
        return (f"the NVIDIA driver supports CUDA up to {_as_text(driver)}, older than the CUDA {built} this torch "
                f"({torch.__version__}) is built for",
                f"install a torch built for CUDA {_as_text(driver)} or older, or update the driver")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES is not set"
    return (f"no CUDA device is visible to this process ({where}"
            + (f"; driver for CUDA {_as_text(driver)}" if driver else "") + (f"; torch said: {said}" if said else "")
            + ")",
            "check the job's GPU request (SLURM: --gres=gpu:N) and CUDA_VISIBLE_DEVICES")


def visible_gpus() -> int:
    """CUDA devices this process can use (0 when CUDA is unusable)."""
    return torch.cuda.device_count() if cuda_problem() is None else 0


def gpu_refusal(what: str) -> str | None:
    """One line refusing ``what`` (e.g. "the paper profile trains on GPUs") when CUDA is unusable, else None."""
    problem = cuda_problem()
    if problem is None:
        return None
    why, fix = problem
    return f"{what}, but CUDA is not usable: {why}. Fix: {fix}; or {CPU_ON_PURPOSE}"


def process_refusal(processes: int, how: str) -> str | None:
    """One line refusing ``processes`` processes on this node (``how`` names the option that asked for them) when
    fewer CUDA devices are visible, else None."""
    problem = cuda_problem()
    count = 0 if problem is not None else torch.cuda.device_count()
    if processes <= count:
        return None
    why = f" ({problem[0]})" if problem is not None else ""
    return (f"{how} asks for {processes} processes, one per GPU, but this node has {count} visible CUDA "
            f"device(s){why}. Fix: start at most {count or 'one'} process(es) per node"
            + (f", or {CPU_ON_PURPOSE}" if problem is not None else ", or make the GPUs visible "
               "(CUDA_VISIBLE_DEVICES, the job's GPU request)"))
