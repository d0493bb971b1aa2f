"""Cross-process BatchNorm: "sync once" vs "sync twice" vs torch.nn.SyncBatchNorm, 2 processes.

    python bench/syncbn.py [--quick] [--results-dir DIR] [--device auto|cpu|cuda]

Two worker processes (gloo on CPU; nccl on CUDA, which needs 2 GPUs) each run forward + backward of a
BatchNorm over 512 channels in training mode. For each variant we count the collectives one forward +
backward issues — by wrapping ``torch.distributed``'s collective functions in the worker, which sees those
of any implementation, and cross-checked against ``encnet.nn.syncbn.collective_counts`` — check output
and input gradient against ``F.batch_norm`` over the whole (concatenated) batch, and time calls with all
variants in turns. torch.nn.SyncBatchNorm refuses CPU tensors, so on CPU it is reported "n/a (CPU)".
Workers report through JSON files: gloo may abort at interpreter exit, after the results are written.
Target (issue 8): "once" uses half the collectives of "twice" and is not slower.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from tabulate import tabulate

from common import base_parser, machine_info, print_targets, resolve_device, target, write_results

NAME = "syncbn"
WORLD_SIZE = 2
VARIANTS = ("once", "twice", "torch")
# Per-process activations. 2×512×60×60 is EncNet's head input at a 480 crop with 2 images per GPU (the
# paper's 16 over 8 GPUs); the CPU run adds a quarter-size map, where the collectives' latency weighs more.
SHAPES = {"cpu": [(2, 512, 30, 30), (2, 512, 60, 60)], "cuda": [(2, 512, 60, 60), (8, 512, 60, 60)]}
QUICK_SHAPES = [(2, 8, 4, 4)]
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_single", "reduce_scatter",
               "reduce_scatter_tensor", "broadcast", "all_to_all", "all_to_all_single")


def count_collectives(dist_module) -> Counter:
    """Wrap ``dist_module``'s collectives so that every call adds to the returned Counter (calls and bytes)."""
    counts: Counter = Counter()

    def wrap(name, fn):
        def counted(tensor, *args, **kwargs):
            counts["calls"] += 1
            counts[name] += 1
            if isinstance(tensor, torch.Tensor):
                counts["bytes"] += tensor.numel() * tensor.element_size()
            return fn(tensor, *args, **kwargs)
        return counted

    for name in COLLECTIVES:
        if hasattr(dist_module, name):
            setattr(dist_module, name, wrap(name, getattr(dist_module, name)))
    return counts


def make_variant(variant: str, channels: int, device: torch.device) -> torch.nn.Module:
    from encnet.nn.syncbn import SyncBatchNorm

    module = torch.nn.SyncBatchNorm(channels) if variant == "torch" else SyncBatchNorm(channels, mode=variant)
    return module.to(device).train()


def forward_backward(module: torch.nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    """Output and the gradients for input, weight and bias of one training-mode call."""
    out = module(x)
    return out, torch.autograd.grad(out, (x, module.weight, module.bias), grad_out)


def worker(rank: int, port: int, workdir: Path) -> None:
    import torch.distributed as dist
    import torch.nn.functional as F

    from encnet.nn.syncbn import collective_counts, reset_collective_counts

    config = json.loads((workdir / "config.json").read_text())
    device = torch.device("cuda", rank) if config["device"] == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(config["threads"])
    counts = count_collectives(dist)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=WORLD_SIZE)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    report = {"rank": rank, "shapes": []}
    for shape in config["shapes"]:
        channels = shape[1]
        # Every rank draws every rank's shard, so that it can check against BN over the whole batch.
        gens = [torch.Generator().manual_seed(1000 + r) for r in range(WORLD_SIZE)]
        xs = [torch.randn(*shape, generator=g) for g in gens]
        grads = [torch.randn(*shape, generator=g) for g in gens]
        x_all = torch.cat(xs).requires_grad_()
        ref_out = F.batch_norm(x_all, None, None, training=True, eps=1e-5)
        (ref_grad,) = torch.autograd.grad(ref_out, x_all, torch.cat(grads))
        mine = slice(rank * shape[0], (rank + 1) * shape[0])
        x = xs[rank].to(device).requires_grad_()
        grad_out = grads[rank].to(device)

        steps, per_variant = {}, {}
        for variant in VARIANTS:
            module = make_variant(variant, channels, device)
            counts.clear()
            reset_collective_counts()
            try:
                out, (grad_x, _, _) = forward_backward(module, x, grad_out)
            except ValueError as err:  # torch.nn.SyncBatchNorm on CPU
                per_variant[variant] = {"available": False, "reason": f"n/a ({device.type.upper()}): {err}"}
                continue
            sync()
            per_variant[variant] = {
                "available": True,
                "collectives": counts["calls"],
                "collective_bytes": counts["bytes"],
                "collectives_by_name": {k: v for k, v in counts.items() if k not in ("calls", "bytes")},
                "module_counter": dict(collective_counts),
                "max_abs_error_out": (out.detach().cpu() - ref_out[mine].detach()).abs().max().item(),
                "max_abs_error_grad": (grad_x.cpu() - ref_grad[mine]).abs().max().item(),
            }
            steps[variant] = functools.partial(forward_backward, module, x, grad_out)

        # Fixed call counts (not a time budget): both ranks must issue the same collectives.
        times = {variant: [] for variant in steps}
        for step in steps.values():
            step()
        for _ in range(config["rounds"]):
            for variant, step in steps.items():
                sync()
                dist.barrier()
                start = time.perf_counter()
                for _ in range(config["calls"]):
                    step()
                sync()
                times[variant].append((time.perf_counter() - start) / config["calls"])
        for variant, ts in times.items():
            per_variant[variant]["median_s"] = statistics.median(ts)
            per_variant[variant]["block_means_s"] = ts
        report["shapes"].append({"shape": shape, "variants": per_variant})

    path = workdir / f"rank{rank}.json"
    path.with_suffix(".tmp").write_text(json.dumps(report))
    os.replace(path.with_suffix(".tmp"), path)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # torch 2.14's gloo can abort in interpreter teardown; the results are already on disk


def run_workers(config: dict, timeout: float) -> list[dict]:
    from encnet.engine.distributed import find_free_port

    with tempfile.TemporaryDirectory(prefix="syncbn-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "config.json").write_text(json.dumps(config))
        port = find_free_port()
        procs = [
            subprocess.Popen([sys.executable, __file__, "--worker", str(rank), str(port), str(workdir)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for rank in range(WORLD_SIZE)
        ]
        outputs = []
        for proc in procs:
            try:
                outputs.append(proc.communicate(timeout=timeout))
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                raise RuntimeError(f"syncbn workers did not finish within {timeout:.0f} s") from None
        reports = []
        for rank, (proc, (_, err)) in enumerate(zip(procs, outputs)):
            path = workdir / f"rank{rank}.json"
            if not path.exists():
                raise RuntimeError(f"worker {rank} wrote no results (exit {proc.returncode}):\n{err[-3000:]}")
            reports.append(json.loads(path.read_text()))
        return reports


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(int(args.worker[0]), int(args.worker[1]), Path(args.worker[2]))
        return

    device = resolve_device(args.device)
    if device.type == "cuda" and torch.cuda.device_count() < WORLD_SIZE:
        if args.device == "cuda":
            raise SystemExit(f"nccl needs one GPU per process: {WORLD_SIZE} GPUs, found "
                             f"{torch.cuda.device_count()}; run with --device cpu (gloo)")
        device = torch.device("cpu")
    machine = machine_info(device)
    # Two processes share the machine's cores.
    threads = args.threads or max(1, (os.cpu_count() or 2) // WORLD_SIZE)
    machine["torch_threads"] = threads
    config = {
        "device": device.type, "threads": threads,
        "shapes": QUICK_SHAPES if args.quick else SHAPES[device.type],
        "rounds": 2 if args.quick else 15, "calls": 2 if args.quick else 10,
    }
    reports = run_workers(config, timeout=120 if args.quick else 280)

    rows, targets = [], []
    for shape_index, shape in enumerate(config["shapes"]):
        per_rank = [r["shapes"][shape_index]["variants"] for r in reports]
        for variant in VARIANTS:
            results = [v[variant] for v in per_rank]
            shape_text = "x".join(map(str, shape))
            if not results[0]["available"]:
                rows.append({"shape_per_process": shape_text, "variant": variant, "collectives": None,
                             "collective_bytes": None, "time_ms": None, "max_abs_error": None,
                             "note": results[0]["reason"].split(":")[0]})
                continue
            for r in results:
                if variant != "torch" and sum(r["module_counter"].get(f"{phase}_calls", 0)
                                              for phase in ("forward", "backward")) != r["collectives"]:
                    raise AssertionError(f"{variant}: collectives seen by the wrapper ({r['collectives']}) and "
                                         f"by encnet.nn.syncbn.collective_counts ({r['module_counter']}) differ")
                if r["max_abs_error_out"] > 1e-4 or r["max_abs_error_grad"] > 1e-4:
                    raise AssertionError(f"{variant} disagrees with BatchNorm over the whole batch: {r}")
            # A call lasts as long as its slowest process.
            time_s = max(r["median_s"] for r in results)
            rows.append({
                "shape_per_process": shape_text, "variant": variant,
                "collectives": results[0]["collectives"], "collective_bytes": results[0]["collective_bytes"],
                "time_ms": time_s * 1e3,
                "max_abs_error": max(max(r["max_abs_error_out"], r["max_abs_error_grad"]) for r in results),
                "note": ", ".join(f"{k} {v}" for k, v in sorted(results[0]["collectives_by_name"].items())),
            })
        once, twice = (next(r for r in rows if r["variant"] == v and r["shape_per_process"] == shape_text)
                       for v in ("once", "twice"))
        where = f"per-process {shape_text}, {WORLD_SIZE} processes, {device.type}"
        ratio_calls = once["collectives"] / twice["collectives"]
        ratio_time = once["time_ms"] / twice["time_ms"]
        targets += [
            target("once/twice collectives", ratio_calls, 0.5, ratio_calls <= 0.5, where),
            target("once/twice time", ratio_time, 1.0, ratio_time <= 1.0, where),
        ]
    print(tabulate(rows, headers="keys", floatfmt=".4g", missingval="n/a"))
    print()
    print_targets(targets)

    notes = [
        "collectives = calls to torch.distributed collectives during one forward + backward, counted by "
        "wrapping torch.distributed in each worker (matches encnet.nn.syncbn.collective_counts)",
        f"time = median over {config['rounds']} rounds of the mean of {config['calls']} forward + backward "
        f"calls, variants in turns, slowest process; {threads} torch thread(s) per process",
        "max_abs_error = output and input gradient against F.batch_norm over the concatenated batch (float32)",
        "torch.nn.SyncBatchNorm refuses CPU tensors (n/a on CPU); on CUDA it all-gathers (mean, invstd, count) "
        "in the forward and all-reduces (Σdy, Σdy·x̂) in the backward",
    ]
    if device.type == "cpu":
        notes.append("CPU timings on a shared machine are noisy (see machine.load_average_1m_at_start)")
    write_results(args, NAME, device, {
        "machine": machine,
        "config": {**config, "world_size": WORLD_SIZE, "backend": "nccl" if device.type == "cuda" else "gloo"},
        "workers": reports,
        "rows": rows,
        "targets": targets,
        "notes": notes,
    })


if __name__ == "__main__":
    main()
