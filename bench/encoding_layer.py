"""The Encoding Layer: this project's matrix-product form vs a naive one vs the two-product floor.

    python bench/encoding_layer.py [--quick] [--results-dir DIR] [--device auto|cpu|cuda] [--batch B]

Three implementations, forward + backward (gradients for the input, codewords and smoothing factors):
- ``ours``: ``encnet.nn.Encoding`` (‖x−c‖² expanded, aggregation as AᵀX − (Σa)c; B×N×K and B×K×D only);
- ``naive``: materialises the B×N×K×D residuals x_i − c_k, as mmsegmentation's pure-PyTorch Encoding does
  (written here from the formula, not copied);
- ``floor``: only the two matrix products the layer reduces to, X·Cᵀ (B×N×D · D×K) and AᵀX (B×K×N · B×N×D),
  forward + backward, on the same B×D×H×W input layout: no layer that computes these can be cheaper.

Each case runs in a fresh process on CPU so that its peak-RSS reading is its own. Targets (issue 8) at the
paper's shape N = 60×60, K = 32, D = 512: ≥ 3× faster and ≥ 10× less peak memory than naive, ≤ 2× the floor.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch
from tabulate import tabulate

from common import (
    base_parser, cpu_memory_method, machine_info, measure_peak_bytes, print_targets, resolve_device, target,
    time_interleaved, write_results,
)
from encnet.nn.encoding import Encoding

NAME = "encoding_layer"
IMPLS = ("ours", "naive", "floor")
PAPER_SIDE, PAPER_CODES, PAPER_CHANNELS = 60, 32, 512
FULL = {"sides": [32, 48, 60, 72, 96], "channels": PAPER_CHANNELS, "num_codes": PAPER_CODES, "paper_side": 60}
QUICK = {"sides": [8], "channels": 16, "num_codes": 4, "paper_side": 8}
# CPU: 2, the per-GPU batch of the paper's training (16 images over 8 GPUs); it keeps the naive case at 96²
# near 6 GB of RAM and a full run under 5 minutes on 2 cores. Time and memory are linear in B for all three
# implementations, so the ratios barely depend on it. CUDA: 8 (naive at 96² then needs about 25 GB).
DEFAULT_BATCH = {"cpu": 2, "cuda": 8}


def naive_encoding(x: torch.Tensor, codewords: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """e_k = Σ_i softmax_k(s_k‖x_i − c_k‖²)(x_i − c_k), straight from the formula, via B×N×K×D residuals."""
    x = x.flatten(2).transpose(1, 2)  # B×N×D
    residuals = x.unsqueeze(2) - codewords  # B×N×K×D
    assign = torch.softmax(scale * residuals.pow(2).sum(dim=3), dim=2)  # B×N×K
    return (assign.unsqueeze(3) * residuals).sum(dim=1)  # B×K×D


def make_problem(batch: int, side: int, channels: int, num_codes: int, device: torch.device,
                 dtype: torch.dtype = torch.float32):
    """Input B×D×H×W (requiring grad), an Encoding and a gradient for its B×K×D output, from seed 0."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, side, side, generator=gen, dtype=dtype).to(device).requires_grad_()
    torch.manual_seed(0)
    enc = Encoding(channels, num_codes).to(device=device, dtype=dtype)
    grad_e = torch.randn(batch, num_codes, channels, generator=gen, dtype=dtype).to(device)
    return x, enc, grad_e


def make_step(impl: str, batch: int, side: int, channels: int, num_codes: int, device: torch.device):
    """A closure doing one forward + backward of ``impl``; returns the gradients (not accumulated)."""
    x, enc, grad_e = make_problem(batch, side, channels, num_codes, device)
    if impl == "ours":
        inputs = (x, enc.codewords, enc.scale)
        return lambda: torch.autograd.grad(enc(x), inputs, grad_e)
    if impl == "naive":
        inputs = (x, enc.codewords, enc.scale)
        return lambda: torch.autograd.grad(naive_encoding(x, enc.codewords, enc.scale), inputs, grad_e)
    if impl == "floor":
        gen = torch.Generator().manual_seed(1)
        n = side * side
        assign = torch.softmax(torch.randn(batch, n, num_codes, generator=gen), 2).to(device).requires_grad_()
        grad_l2 = torch.randn(batch, n, num_codes, generator=gen).to(device)
        inputs = (x, enc.codewords, assign)

        def floor_step():
            xf = x.flatten(2).transpose(1, 2)
            products = (torch.matmul(xf, enc.codewords.t()), torch.matmul(assign.transpose(1, 2), xf))
            return torch.autograd.grad(products, inputs, (grad_l2, grad_e))

        return floor_step
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def measure_peak(case: dict) -> dict:
    """Peak memory of one forward + backward at full size, after a tiny warm-up of the same code."""
    device = torch.device(case["device"])
    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    # Initialises kernels and the thread pool outside the measured call.
    make_step(case["impl"], 1, 4, case["channels"], case["num_codes"], device)()
    step = make_step(case["impl"], case["batch"], case["side"], case["channels"], case["num_codes"], device)
    return {**case, "peak_bytes": measure_peak_bytes(step, device)}


def run_peaks(cases: list[dict]) -> list[dict]:
    """On CPU each case in its own fresh process, so that its resident-set high-water mark is its alone.

    The processes run side by side: each reads only its own peak, and nothing here is timed.
    """
    if cases[0]["device"] != "cpu":
        return [measure_peak(case) for case in cases]
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(case)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for case in cases]
    results = []
    for case, proc in zip(cases, procs):
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"worker for {case} failed (exit {proc.returncode}):\n{err[-3000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check_agreement(channels: int, num_codes: int, side: int, device: torch.device) -> dict:
    """Ours vs naive, output and all gradients: float64 on a small case (must agree to rounding), float32
    at the benchmark's shape with batch 1. Raises AssertionError when they disagree."""
    result = {}
    for tag, dtype, (b, d, k, s) in (
        ("float64", torch.float64, (2, 24, 6, 5)),
        ("float32", torch.float32, (1, channels, num_codes, side)),
    ):
        x, enc, grad_e = make_problem(b, s, d, k, device, dtype)
        params = (x, enc.codewords, enc.scale)
        results = []
        for layer in (enc, lambda t: naive_encoding(t, enc.codewords, enc.scale)):
            out = layer(x)
            results.append((out.detach(), *torch.autograd.grad(out, params, grad_e)))
        errors = [relative_error(o, n) for o, n in zip(*results)]
        result[f"{tag}_shape_BDKN"] = [b, d, k, s * s]
        result[f"{tag}_max_rel_error"] = max(errors)
    # float64: rounding only; float32: the expansion ‖x‖² − 2x·c + ‖c‖² cancels about log10(D) digits.
    if result["float64_max_rel_error"] > 1e-10 or result["float32_max_rel_error"] > 1e-3:
        raise AssertionError(f"ours and naive Encoding disagree: {result}")
    return result


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="default: 2 on CPU, 8 on CUDA")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure_peak(json.loads(args.worker))))
        return

    device = resolve_device(args.device)
    args.batch = args.batch or DEFAULT_BATCH[device.type]
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    machine = machine_info(device)
    agreement = check_agreement(sizes["channels"], sizes["num_codes"], sizes["paper_side"], device)
    print(f"ours vs naive, max relative error: float64 {agreement['float64_max_rel_error']:.1e}, "
          f"float32 {agreement['float32_max_rel_error']:.1e}")

    rounds, min_round_time = (2, 0.02) if args.quick else (3, 0.5)
    results = {}
    for side in sizes["sides"]:
        case = {"batch": args.batch, "side": side, "channels": sizes["channels"],
                "num_codes": sizes["num_codes"], "device": device.type, "threads": torch.get_num_threads()}
        peaks = {r["impl"]: r["peak_bytes"] for r in run_peaks([{**case, "impl": impl} for impl in IMPLS])}
        steps = {impl: make_step(impl, args.batch, side, sizes["channels"], sizes["num_codes"], device)
                 for impl in IMPLS}
        timings = time_interleaved(steps, device, rounds=rounds, min_round_time=min_round_time)
        del steps
        for impl in IMPLS:
            results[side, impl] = {**case, "impl": impl, "peak_bytes": peaks[impl], **timings[impl]}
            r = results[side, impl]
            print(f"  N={side}² {impl:5s} {r['median_s'] * 1e3:9.2f} ms  {r['peak_bytes'] / 2**20:9.1f} MiB"
                  f"  ({r['repeats']} calls)", flush=True)

    rows = []
    for side in sizes["sides"]:
        ours, naive, floor = (results[side, impl] for impl in IMPLS)
        rows.append({
            "N": f"{side}x{side}", "batch": args.batch, "K": sizes["num_codes"], "D": sizes["channels"],
            **{f"{i}_ms": results[side, i]["median_s"] * 1e3 for i in IMPLS},
            **{f"{i}_peak_MiB": results[side, i]["peak_bytes"] / 2**20 for i in IMPLS},
            "naive/ours time": naive["median_s"] / ours["median_s"],
            "naive/ours memory": naive["peak_bytes"] / max(ours["peak_bytes"], 1),
            "ours/floor time": ours["median_s"] / floor["median_s"],
        })
    print()
    print(tabulate(rows, headers="keys", floatfmt=".3g"))

    paper = next(r for r in rows if r["N"] == f"{sizes['paper_side']}x{sizes['paper_side']}")
    shape = f"N={paper['N']}, K={paper['K']}, D={paper['D']}, B={args.batch}"
    targets = [
        target("speed-up over naive", paper["naive/ours time"], 3.0, paper["naive/ours time"] >= 3.0, shape),
        target("peak-memory saving over naive", paper["naive/ours memory"], 10.0,
               paper["naive/ours memory"] >= 10.0, shape),
        target("time vs matrix-product floor", paper["ours/floor time"], 2.0, paper["ours/floor time"] <= 2.0,
               shape),
    ]
    print()
    print_targets(targets)

    notes = [
        f"forward + backward (grads for input, codewords, scale); median of single calls after a warm-up call, "
        f"the three implementations timed in turns ({rounds} rounds of >= {min_round_time} s or 1 call each) so "
        f"load changes hit all alike",
        f"peak memory = extra memory at the peak of one call over what was resident before it"
        f"{', each case in a fresh process' if device.type == 'cpu' else ''}",
        "floor = X·Cᵀ and AᵀX (the two matrix products of the layer) forward + backward on the same input layout",
        f"batch {args.batch}: time and memory are linear in the batch for all three, so ratios barely depend on it",
    ]
    if device.type == "cpu":
        notes.append("CPU timings on a shared machine are noisy: see machine.load_average_1m_at_start")
    write_results(args, NAME, device, {
        "machine": machine,
        "config": {**sizes, "batch": args.batch, "impls": list(IMPLS),
                   "memory_method": "torch.cuda.max_memory_allocated" if device.type == "cuda"
                   else cpu_memory_method()},
        "agreement": agreement,
        "rows": rows,
        "cases": list(results.values()),
        "targets": targets,
        "notes": notes,
    })


if __name__ == "__main__":
    main()
