"""What every benchmark in ``bench/`` shares: the command line, machine facts, timing, peak memory, results.

Each benchmark writes ``<results-dir>/<name>-<device>.json`` with one schema, read back by
``encnet.report.benchmarks`` to build ``tables/benchmarks.md``::

    {"benchmark": name, "device": tag, "quick": bool, "machine": {...}, "config": {...},
     "rows": [{column: value, ...}, ...], "targets": [{"target", "measured", "threshold", "pass", "note"}],
     "notes": [str, ...]}
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import platform
import random
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_TABLE = REPO_ROOT / "tables" / "benchmarks.md"
DEFAULT_COST_TABLE = REPO_ROOT / "tables" / "paper_cost.md"

# Running as `python bench/<name>.py` puts bench/ (not the repo root) on sys.path; an editable install
# makes `encnet` importable anyway, this keeps a plain checkout working too.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the smoke test (seconds)")
    parser.add_argument(
        "--results-dir", type=Path, default=DEFAULT_RESULTS_DIR,
        help="where the JSON goes; tables/benchmarks.md is rebuilt only for the default folder",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="auto: CUDA when available, else CPU",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch.cuda.is_available() is False; use --device cpu")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def device_tag(device: torch.device) -> str:
    """'cpu', or the GPU's name as a file-name-safe slug (results from different GPUs must not collide)."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def matmul_gflops() -> float:
    """This CPU's float32 matrix-product speed now, at the current thread count (run_all's probe)."""
    from encnet.experiments.summary import matmul_gflops as probe

    return probe()


def matmul_step(device: torch.device, size: int = 1024) -> tuple[Callable[[], object], float]:
    """(one float32 ``size``³ matrix product, its FLOPs): timed in turns with a benchmark's own calls, its rate is
    what the CPU did in matrix products under the same load, the ceiling of any row made of them."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=gen).to(device) for _ in range(2))
    return (lambda: torch.mm(a, b)), 2.0 * size**3


def machine_info(device: torch.device) -> dict:
    """Versions, git state and date (from ``encnet.engine.runs.capture_env``) plus what decides CPU timings."""
    from encnet.engine.runs import capture_env

    env = capture_env(world_size=1, device=device.type)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_model": env["cpu_model"],
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": env["torch"],
        "cuda": env["cuda"],
        "python": env["python"],
        "git_commit": env["git_commit"],
        "git_dirty": env["git_dirty"],
        "hostname": env["hostname"],
        "platform": env["platform"],
        "date": env["start_time"],
        # A shared machine makes CPU timings noisy; the 1-minute load at the start says how busy it was.
        "load_average_1m_at_start": round(load[0], 2) if load else None,
        # What this CPU does in float32 matrix products at the benchmark's thread count, at the start and (added
        # by write_results) at the end: a row faster than the matrix products that make it up cannot be right.
        "matmul_GFLOP_s_at_start": round(matmul_gflops(), 1) if device.type == "cpu" else None,
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {"median_s": statistics.median(times), "q25_s": q[0], "q75_s": q[2], "repeats": len(times)}


def interleaved_times(
    fns: dict[str, Callable[[], object]], device: torch.device, *, rounds: int = 3,
    min_round_time: float = 0.3, warmup: int = 1, shuffle_seed: int | None = 0,
) -> dict[str, list[list[float]]]:
    """Single-call wall times of each function, measured in turns: ``times[name][round]`` lists the calls.

    Each round calls every function in turn, repeatedly until ``min_round_time`` has passed (at least once),
    so that a change in the load of a shared machine hits all of them alike and their ratios stay fair.
    Single calls, not blocks, because the slow cases here take seconds per call.

    Each round takes the functions in its own order (a ``random.Random(shuffle_seed)`` permutation per round;
    the same seed, the same orders), so that no contender always runs first, or always after the same other one:
    with models of a few hundred MiB each, what the previous call left in the caches and the allocator can favour a
    fixed position. ``shuffle_seed=None``: every round in the given order.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    times: dict[str, list[list[float]]] = {name: [] for name in fns}
    shuffler = random.Random(shuffle_seed) if shuffle_seed is not None else None
    for _ in range(rounds):
        order = list(fns.items())
        if shuffler is not None:
            shuffler.shuffle(order)
        for name, fn in order:
            calls = []
            start = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                fn()
                synchronize(device)
                calls.append(time.perf_counter() - t0)
                if time.perf_counter() - start >= min_round_time:
                    break
            times[name].append(calls)
    return times


def time_interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, *, rounds: int = 3,
    min_round_time: float = 0.3, warmup: int = 1,
) -> dict[str, dict]:
    """Median and quartiles of single-call wall times of each function, measured in turns
    (``interleaved_times``)."""
    times = interleaved_times(fns, device, rounds=rounds, min_round_time=min_round_time, warmup=warmup)
    return {name: summarize([t for calls in ts for t in calls]) for name, ts in times.items()}


def paired_ratio(times: dict[str, list[list[float]]], numerator: str, denominator: str) -> dict:
    """Median and quartiles over the rounds of numerator / denominator, each round's calls against the same
    round's: the load a round ran under cancels out of its ratio."""
    ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(times[numerator], times[denominator])]
    return summarize(ratios)


# ---------------------------------------------------------------------------------------- peak memory

_CLEAR_REFS = Path("/proc/self/clear_refs")


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line")


def _malloc_trim() -> None:
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            ctypes.CDLL(libc_name).malloc_trim(0)
        except (OSError, AttributeError):
            pass


def cpu_memory_method() -> str:
    if _CLEAR_REFS.exists() and os.access(_CLEAR_REFS, os.W_OK):
        return "linux VmHWM (peak RSS, reset via /proc/self/clear_refs) minus RSS before the call"
    return "ru_maxrss high-water minus RSS before the call (fresh process; an upper bound if earlier peaks were higher)"


def measure_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Extra memory at the peak of one call of ``fn`` over what was resident just before it.

    CUDA: the caching allocator's ``max_memory_allocated``. CPU: torch has no CPU allocator statistics and
    tracemalloc does not see its allocations, so we use the kernel's resident-set high-water mark. Large
    tensors are mmap-ed by glibc and given back on free, so RSS follows live tensor memory; call this in a
    fresh process (after a small warm-up) so earlier heap growth cannot hide the peak.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    _malloc_trim()
    if _CLEAR_REFS.exists() and os.access(_CLEAR_REFS, os.W_OK):
        _CLEAR_REFS.write_text("5")  # "5" resets the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0)
        before = _proc_status_kib("VmRSS")
        fn()
        return (_proc_status_kib("VmHWM") - before) * 1024
    before = _proc_status_kib("VmRSS") if Path("/proc/self/status").exists() else 0
    fn()
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - before * 1024


# -------------------------------------------------------------------------------------------- results


def target(name: str, measured: float, threshold: float, passed: bool, note: str = "") -> dict:
    return {"target": name, "measured": measured, "threshold": threshold, "pass": bool(passed), "note": note}


def write_results(args: argparse.Namespace, name: str, device: torch.device, payload: dict) -> Path:
    """Write ``<results-dir>/<name>-<device>.json``; rebuild the table when writing to the default folder."""
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}-{device_tag(device)}.json"
    record = {"benchmark": name, "device": device_tag(device), "quick": bool(args.quick), **payload}
    if hasattr(os, "getloadavg"):
        record["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    if device.type == "cpu":
        record["machine"]["matmul_GFLOP_s_at_end"] = round(matmul_gflops(), 1)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    print(f"\nwrote {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
    if results_dir.resolve() == DEFAULT_RESULTS_DIR.resolve():
        from encnet.report.benchmarks import write_benchmarks_table, write_paper_cost_table

        table = write_benchmarks_table(results_dir, DEFAULT_TABLE)
        cost = write_paper_cost_table(results_dir, DEFAULT_COST_TABLE, REPO_ROOT / "configs" / "paper")
        print(f"rebuilt {table.relative_to(REPO_ROOT)} and {cost.relative_to(REPO_ROOT)}")
    return path


def print_targets(targets: list[dict]) -> None:
    from tabulate import tabulate

    rows = [
        [t["target"], f"{t['measured']:.3g}", f"{t['threshold']:.3g}", "PASS" if t["pass"] else "MISS", t["note"]]
        for t in targets
    ]
    print(tabulate(rows, headers=["target", "measured", "threshold", "", "note"]))
