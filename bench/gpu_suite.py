"""Everything only a GPU shows, in one run: ``bash bench/gpu_suite.sh [--quick]`` (this file does the work).

Parts, each writing ``bench/results/<part>-<gpu>.json`` (schema in ``bench/common.py``), with the seconds
each may take on one GPU so that the whole run fits 9 minutes (a part past its budget stops and says so):

=================  ======  ===============================================================================
part               budget  what
=================  ======  ===============================================================================
encoding_amp         30 s  Encoding layer ours / naive / floor, fp32 and bf16 autocast, N=60², K=32, D=512
train_step          210 s  FCN and EncNet, R50 and R101, 480², batch 2/4/8/16, fp32 and bf16 AMP,
                           channels_last off/on: step time and peak memory (sizes every paper run)
ms_eval              60 s  multi-scale evaluation images/s, one window, a window and its mirror, batched
                           (``bench/ms_eval.py``): which ``eval.max_batch`` the GPU's default should be
peers                60 s  the suite against the authors' release and mmsegmentation (``bench/peers.py``):
                           train step, its peak memory, eval forward, both multi-scale protocols (the
                           training transform is a CPU's job: measured by the CPU run); skipped with the
                           install command where ``.peers/`` is absent
syncbn_cuda          45 s  encnet SyncBatchNorm on CUDA tensors, 2 processes sharing the GPU (gloo), against
                           BatchNorm over the concatenated batch (values and gradients); time vs CPU tensors
paper_training       90 s  ``python -m encnet.train`` on the paper profile (EncNet R50, 480² crops, batch 16)
                           over generated data, 52 iterations; images/s and peak memory from its own log
(start-up, spare)    45 s  Python/CUDA start-up of the processes, result writing
=================  ======  ===============================================================================

``--quick`` runs the same parts on the CPU at tiny sizes (the smoke test); the CUDA-only measurements
(bf16 speed, SyncBN over CUDA tensors) are then recorded as "n/a (no CUDA)". CPU numbers from ``--quick`` say
nothing about a GPU and are left out of the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

from common import REPO_ROOT, base_parser, machine_info, measure_peak_bytes, resolve_device, synchronize, \
    target, time_interleaved, write_results

BUDGET_S = {"encoding_amp": 30, "train_step": 210, "ms_eval": 60, "peers": 60, "syncbn_cuda": 45,
            "paper_training": 90}
TOTAL_BUDGET_S = 540
assert sum(BUDGET_S.values()) + 45 <= TOTAL_BUDGET_S

FULL = {
    "encoding": {"batch": 8, "side": 60, "channels": 512, "codes": 32},
    "models": ("fcn", "encnet"), "backbones": ("resnet50", "resnet101"), "crop": 480,
    "batches": (16, 8, 4, 2),  # 16 first: the global batch on one GPU is what the cost table reads
    "steps": 5, "syncbn_shape": (2, 512, 60, 60), "syncbn_calls": 20,
    "training": {"image_size": 240, "num_train": 208, "epochs": 4, "batch": 16},
}
QUICK = {
    "encoding": {"batch": 2, "side": 8, "channels": 16, "codes": 4},
    "models": ("fcn", "encnet"), "backbones": ("resnet_tiny",), "crop": 64, "batches": (2,),
    "steps": 2, "syncbn_shape": (2, 8, 4, 4), "syncbn_calls": 2,
    "training": {"image_size": 32, "num_train": 8, "epochs": 1, "batch": 4},
}
PRECISIONS = ("fp32", "bf16")
NUM_CLASSES = 59


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class Deadline:
    """Seconds left of one part's budget; parts check it between measurements and record what they skipped."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def passed(self) -> bool:
        return time.perf_counter() > self.end


# ------------------------------------------------------------------------------------ 1. Encoding layer


def part_encoding(args, device, sizes, machine) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from encoding_layer import make_step

    e = sizes["encoding"]
    steps = {}
    for impl in ("ours", "naive", "floor"):
        step = make_step(impl, e["batch"], e["side"], e["channels"], e["codes"], device)
        for precision in PRECISIONS:
            def run(step=step, precision=precision):
                with autocast(device, precision):
                    return step()
            steps[(impl, precision)] = run
    timings = time_interleaved({f"{i}|{p}": fn for (i, p), fn in steps.items()}, device, rounds=3,
                               min_round_time=0.0 if args.quick else 0.3)
    rows = []
    for (impl, precision), fn in steps.items():
        t = timings[f"{impl}|{precision}"]
        rows.append({"impl": impl, "precision": precision, "N": f"{e['side']}x{e['side']}", "batch": e["batch"],
                     "K": e["codes"], "D": e["channels"], "ms": 1e3 * t["median_s"],
                     "peak_MiB": measure_peak_bytes(fn, device) / 2**20 if device.type == "cuda" else None})
    by = {(r["impl"], r["precision"]): r for r in rows}
    targets = [target(f"ours vs naive time ({p})", by[("naive", p)]["ms"] / by[("ours", p)]["ms"], 3.0,
                      by[("naive", p)]["ms"] / by[("ours", p)]["ms"] >= 3.0, "naive/ours") for p in PRECISIONS]
    print(tabulate(rows, headers="keys", floatfmt=".4g"))
    write_results(args, "encoding_amp", device, {
        "machine": machine, "config": e, "rows": rows, "targets": targets,
        "notes": ["forward + backward; bf16 = torch.autocast(bfloat16): encnet's Encoding computes in float32 "
                  "inside autocast (cancellation in ‖x‖²−2x·c+‖c‖²), the naive form and the floor follow autocast",
                  "peak_MiB: torch.cuda.max_memory_allocated over one call, beyond what was allocated before"
                  if device.type == "cuda" else "peak memory: n/a (CPU quick run)"]})


# ----------------------------------------------------------------------------------- 2. training step


def part_train_step(args, device, sizes, machine) -> None:
    from encnet.losses import SegmentationLoss
    from encnet.models import build_model

    deadline = Deadline(BUDGET_S["train_step"])
    crop = sizes["crop"]
    rows, skipped = [], []
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for backbone in sizes["backbones"]:
        for name in sizes["models"]:
            torch.manual_seed(0)
            extra = {"se_loss": True} if name == "encnet" else {}
            model = build_model(name, NUM_CLASSES, backbone=backbone, aux=True, **extra).to(device).train()
            criterion = SegmentationLoss(NUM_CLASSES, se_weight=0.2, aux_weight=0.2)
            for batch in sizes["batches"]:
                for precision in PRECISIONS:
                    for channels_last in (False, True):
                        setting = {"model": name, "backbone": backbone, "crop": crop, "batch": batch,
                                   "precision": precision, "channels_last": channels_last}
                        if deadline.passed():
                            skipped.append(setting)
                            continue
                        rows.append({**setting, **time_train_step(model, criterion, setting, device,
                                                                  sizes["steps"])})
                        r = rows[-1]
                        print(f"  {name} {backbone} batch {batch} {precision} channels_last={channels_last}: "
                              f"{r['step_s'] or float('nan'):.4g} s/step, peak {r['peak_MiB'] or 0:.0f} MiB "
                              f"{r['note']}", flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
    notes = [
        "step = zero_grad, forward + SegmentationLoss (aux 0.2, SE 0.2 for EncNet) + backward + SGD step "
        f"(momentum 0.9); median of {sizes['steps']} timed steps after 2 warm-up steps; bf16 = torch.autocast "
        "with bfloat16 (no GradScaler needed); channels_last = model and batch in NHWC",
        "peak_MiB = torch.cuda.max_memory_allocated during the timed steps: weights, gradients, momentum and "
        "activations of one process (what must fit the GPU)",
        f"torch.backends.cudnn.benchmark on; TF32 for convolutions at torch's default "
        f"({torch.backends.cudnn.allow_tf32}), for matmuls {torch.backends.cuda.matmul.allow_tf32}"
        if device.type == "cuda" else "CPU quick run: tiny model, numbers meaningless",
    ]
    if skipped:
        notes.append(f"{len(skipped)} setting(s) skipped: past the part's {BUDGET_S['train_step']} s budget")
    fp32 = [r for r in rows if r["precision"] == "fp32" and not r["channels_last"]]
    best = {}
    for r in rows:
        key = (r["model"], r["backbone"], r["batch"])
        best[key] = min(best.get(key, r["step_s"]), r["step_s"])
    targets = [target("fastest setting vs fp32 NCHW step time", best[k] / r["step_s"], 1.0,
                      best[k] / r["step_s"] <= 1.0, f"{k[0]} {k[1]} batch {k[2]}")
               for r in fp32 for k in [(r["model"], r["backbone"], r["batch"])] if r["batch"] == max(sizes["batches"])]
    write_results(args, "train_step", device, {
        "machine": machine, "config": {k: sizes[k] for k in ("models", "backbones", "crop", "batches", "steps")},
        "rows": rows, "skipped": skipped, "targets": targets, "notes": notes})


def time_train_step(model, criterion, setting: dict, device: torch.device, steps: int) -> dict:
    memory_format = torch.channels_last if setting["channels_last"] else torch.contiguous_format
    model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(0)
    batch, crop = setting["batch"], setting["crop"]
    image = torch.randn(batch, 3, crop, crop, generator=gen).to(device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, NUM_CLASSES, (batch, crop, crop), generator=gen).to(device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, setting["precision"]):
            loss, _ = criterion(model(image), labels)
        loss.backward()
        optimizer.step()

    try:
        for _ in range(2 if device.type == "cuda" else 1):
            step()
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - t0)
    except torch.OutOfMemoryError:
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
        return {"step_s": None, "images_per_s": None, "peak_MiB": None, "note": "out of memory"}
    finally:
        del optimizer
    median = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"step_s": median, "images_per_s": batch / median, "peak_MiB": peak, "note": ""}


# ---------------------------------------------------------------------------------- 3. multi-scale eval


def part_ms_eval(args, device, sizes, machine) -> None:
    script = Path(__file__).parent / "ms_eval.py"
    if not script.is_file():
        print(f"ms_eval: skipped, {script.relative_to(REPO_ROOT)} is not in this checkout (batched multi-scale "
              "evaluation is another part of issue 16)", flush=True)
        return
    command = [sys.executable, str(script), "--device", device.type, "--results-dir", str(args.results_dir)]
    if args.quick:
        command.append("--quick")
    try:
        subprocess.run(command, check=True, timeout=BUDGET_S["ms_eval"] * (3 if args.quick else 1), cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        print(f"ms_eval: stopped after its {BUDGET_S['ms_eval']} s budget; no result", flush=True)


def part_peers(args, device, sizes, machine) -> None:
    """``bench/peers.py`` at full sizes, three rounds; ``--quick``: its smoke sizes, the release protocol only (the
    wiring; tests/test_bench_smoke.py's peers test covers every part)."""
    command = [sys.executable, str(Path(__file__).parent / "peers.py"), "--device", device.type, "--results-dir",
               str(args.results_dir)]
    if args.quick:
        command += ["--smoke", "--parts", "ms_release"]
    else:
        command += ["--rounds", "3", "--parts", "train_step", "peak_memory", "eval_forward", "ms_release", "ms_mmseg"]
    try:
        subprocess.run(command, check=True, timeout=BUDGET_S["peers"] * (3 if args.quick else 1), cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        print(f"peers: stopped after its {BUDGET_S['peers']} s budget; no result", flush=True)


# -------------------------------------------------------------------------------------- 4. SyncBN, CUDA


def syncbn_worker(rank: int, port: int, workdir: Path) -> None:
    import torch.distributed as dist
    import torch.nn.functional as F

    from encnet.nn.syncbn import SyncBatchNorm

    config = json.loads((workdir / "config.json").read_text())
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    shape = config["shape"]
    gens = [torch.Generator().manual_seed(7 + r) for r in range(2)]
    xs = [torch.randn(*shape, generator=g) for g in gens]
    grads = [torch.randn(*shape, generator=g) for g in gens]
    x_all = torch.cat(xs).requires_grad_()
    weight = torch.linspace(0.5, 1.5, shape[1]).requires_grad_()
    bias = torch.linspace(-0.2, 0.2, shape[1]).requires_grad_()
    ref = F.batch_norm(x_all, None, None, weight, bias, training=True, eps=1e-5)
    ref_grads = torch.autograd.grad(ref, (x_all, weight, bias), torch.cat(grads))
    mine = slice(rank * shape[0], (rank + 1) * shape[0])
    report = {"rank": rank, "devices": {}}
    for device_name in config["devices"]:
        device = torch.device(device_name)
        module = SyncBatchNorm(shape[1], mode="once").to(device).train()
        with torch.no_grad():
            module.weight.copy_(weight)
            module.bias.copy_(bias)
        x = xs[rank].to(device).requires_grad_()
        grad_out = grads[rank].to(device)

        def call():
            out = module(x)
            return out, torch.autograd.grad(out, (x, module.weight, module.bias), grad_out)

        out, (gx, gw, gb) = call()
        # Weight and bias gradients are this shard's part; the all-reduce DDP does makes them the whole batch's.
        gw_all, gb_all = gw.detach().cpu().clone(), gb.detach().cpu().clone()
        dist.all_reduce(gw_all)
        dist.all_reduce(gb_all)
        errors = {
            "output": (out.detach().cpu() - ref[mine].detach()).abs().max().item(),
            "grad_input": (gx.cpu() - ref_grads[0][mine]).abs().max().item(),
            "grad_weight": (gw_all - ref_grads[1]).abs().max().item(),
            "grad_bias": (gb_all - ref_grads[2]).abs().max().item(),
        }
        times = []
        for _ in range(3):
            dist.barrier()
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(config["calls"]):
                call()
            synchronize(device)
            times.append((time.perf_counter() - t0) / config["calls"])
        report["devices"][device_name] = {"errors": errors, "median_s": statistics.median(times)}
    path = workdir / f"rank{rank}.json"
    path.with_suffix(".tmp").write_text(json.dumps(report))
    os.replace(path.with_suffix(".tmp"), path)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # gloo can abort in interpreter teardown; the results are on disk


def part_syncbn(args, device, sizes, machine) -> None:
    from encnet.engine.distributed import find_free_port

    devices = ["cpu"] + (["cuda:0"] if device.type == "cuda" else [])
    config = {"shape": list(sizes["syncbn_shape"]), "calls": sizes["syncbn_calls"], "devices": devices}
    with tempfile.TemporaryDirectory(prefix="syncbn-cuda-") as tmp:
        workdir = Path(tmp)
        (workdir / "config.json").write_text(json.dumps(config))
        port = find_free_port()
        procs = [subprocess.Popen([sys.executable, __file__, "--syncbn-worker", str(r), str(port), tmp],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
        errs = []
        for proc in procs:
            try:
                errs.append(proc.communicate(timeout=BUDGET_S["syncbn_cuda"] * (3 if args.quick else 1))[1])
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                raise RuntimeError("syncbn workers ran past the part's budget") from None
        reports = []
        for rank, err in enumerate(errs):
            path = workdir / f"rank{rank}.json"
            if not path.is_file():
                raise RuntimeError(f"syncbn worker {rank} wrote no results:\n{err[-3000:]}")
            reports.append(json.loads(path.read_text()))
    rows = []
    for name in ("cpu", "cuda:0"):
        if name not in devices:
            rows.append({"tensors": name, "note": "n/a (no CUDA)"})
            continue
        per_rank = [r["devices"][name] for r in reports]
        errors = {k: max(r["errors"][k] for r in per_rank) for k in per_rank[0]["errors"]}
        rows.append({"tensors": name, "ms": 1e3 * max(r["median_s"] for r in per_rank),
                     **{f"max_abs_error_{k}": v for k, v in errors.items()}, "note": ""})
    worst = max(v for r in rows for k, v in r.items() if k.startswith("max_abs_error"))
    targets = [target("SyncBN vs BatchNorm on the whole batch: max |diff|", worst, 1e-4, worst <= 1e-4,
                      f"2 processes, {'x'.join(map(str, config['shape']))} each, values and gradients")]
    print(tabulate(rows, headers="keys", floatfmt=".4g"))
    write_results(args, "syncbn_cuda", device, {
        "machine": machine, "config": config, "workers": reports, "rows": rows, "targets": targets,
        "notes": ["2 processes share one GPU and talk through gloo (it copies CUDA tensors through host memory; "
                  "nccl needs one GPU per process); encnet.nn.SyncBatchNorm, mode 'once'",
                  "reference: F.batch_norm over the concatenated batch in float32 on the CPU; weight/bias "
                  "gradients summed over the processes as DDP does",
                  f"ms = median over 3 blocks of {config['calls']} forward + backward calls, slowest process"]})


# ------------------------------------------------------------------------------- 5. paper-profile training


def part_training(args, device, sizes, machine) -> None:
    tr = sizes["training"]
    with tempfile.TemporaryDirectory(prefix="paper-training-") as tmp:
        run_dir = Path(tmp) / "run"
        overrides = [
            "data.dataset=context_scenes", f"data.root={tmp}/cache", "data.num_classes=null",
            f"data.options={{seed: 0, num_train: {tr['num_train']}, num_val: 4, image_size: {tr['image_size']}}}",
            "model.pretrained=none", f"train.epochs={tr['epochs']}", f"train.batch_size={tr['batch']}",
            "train.val_every=0", f"train.checkpoint_every={tr['epochs']}", "eval.scales=[1.0]",
            f"data.workers={min(8, os.cpu_count() or 1)}",
        ]
        if args.quick:
            overrides += ["model.backbone=resnet_tiny", "data.base_size=36", "data.crop_size=32", "data.workers=0"]
        command = [sys.executable, "-m", "encnet.train", str(REPO_ROOT / "configs" / "paper" / "pcontext_encnet_r50.yaml"),
                   *overrides, "--run-dir", str(run_dir), "--device", device.type]
        env = {**os.environ, "ENCNET_NO_PROGRESS": "1", "PYTHONPATH": str(REPO_ROOT)}
        start = time.perf_counter()
        proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=BUDGET_S["paper_training"] * (3 if args.quick else 1))
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"encnet.train exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        env_json = json.loads((run_dir / "env.json").read_text())
    rows = [{"epoch": r["epoch"], "iterations": r["iter"], "images_per_s": r["images_per_s"],
             "epoch_time_s": r["epoch_time_s"], "peak_memory_MiB": r.get("peak_memory_MiB"), "loss": r["loss"]}
            for r in records]
    print(tabulate(rows, headers="keys", floatfmt=".4g"))
    last = rows[-1]
    write_results(args, "paper_training", device, {
        "machine": machine,
        "config": {"config": "configs/paper/pcontext_encnet_r50.yaml", "overrides": overrides, **tr,
                   "iterations": last["iterations"], "per_process_batch": env_json.get("per_process_batch")},
        "rows": rows,
        "targets": [target("training images/s (last epoch) per GPU", last["images_per_s"], 0.0,
                           last["images_per_s"] > 0, "read from the run's metrics.jsonl")],
        "notes": [f"`python -m encnet.train configs/paper/pcontext_encnet_r50.yaml` with the overrides in config "
                  "(generated context_scenes images, no pretrained weights; crop, batch, lr recipe and heads "
                  "as the paper profile); images/s and peak memory are the run's own metrics.jsonl fields",
                  "the first epoch includes cudnn autotuning and the loader's start; read the last",
                  f"wall time of the whole command {wall:.1f} s (start-up, data generation, final evaluation)"]})


# ------------------------------------------------------------------------------------------------ main

PARTS = {"encoding_amp": part_encoding, "train_step": part_train_step, "ms_eval": part_ms_eval,
         "peers": part_peers, "syncbn_cuda": part_syncbn, "paper_training": part_training}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--syncbn-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.syncbn_worker:
        syncbn_worker(int(args.syncbn_worker[0]), int(args.syncbn_worker[1]), Path(args.syncbn_worker[2]))
        return
    device = resolve_device("cpu" if args.quick and args.device == "auto" else args.device)
    if device.type != "cuda" and not args.quick:
        raise SystemExit("bench/gpu_suite.sh measures a GPU and found none (torch.cuda.is_available() is False); "
                         "run `bash bench/gpu_suite.sh --quick` for the CPU smoke run")
    sizes = QUICK if args.quick else FULL
    spent = {}
    for name in args.parts:
        start = time.perf_counter()
        print(f"\n=== {name} (budget {BUDGET_S[name]} s)", flush=True)
        PARTS[name](args, device, sizes, machine_info(device))
        spent[name] = time.perf_counter() - start
        print(f"=== {name}: {spent[name]:.1f} s", flush=True)
    print("\n" + tabulate([[k, f"{v:.1f}", BUDGET_S[k]] for k, v in spent.items()],
                          headers=["part", "seconds", "budget"]))


if __name__ == "__main__":
    main()
