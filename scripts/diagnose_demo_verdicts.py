"""Why the demo's contradicted verdicts come out as they do (issue 35): measurements on trained demo runs.

    python scripts/diagnose_demo_verdicts.py ms RUN_DIR ... [--limit N]
    python scripts/diagnose_demo_verdicts.py size-bins --with RUN_DIR ... --without RUN_DIR ...
    python scripts/diagnose_demo_verdicts.py cifar --plain RUN_DIR ... --se RUN_DIR ...

``ms``: EncNet R101 runs (``context_scenes_encnet.yaml model.backbone=resnet_tiny_deep``): every scale alone, the
scaled image whole against the sliding window, flip alone, windows with and without the scene band
(``encnet.analysis.ms_views``). ``size-bins``: EncNet (``--with`` the SE-loss) against EncNet w/o SE-loss
(``--without``), per size bin: mIoU, shape IoU, scene accuracy (``encnet.analysis.size_bins``). ``cifar``: ResNet-16d
(``--plain``) against SE-ResNet-16d (``--se``): training curves, clean training error, SE gate statistics
(``encnet.analysis.se_gates``). Runs are paired by their config's seed; differences get the suite's 95 % paired t
interval (``encnet.report.stats``). Each run's measurement is kept as JSON under ``--out`` (default
``runs/diagnosis``) and reused when present (``--fresh`` recomputes). Runs with one thread, like the demo's jobs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _seed(run_dir: Path) -> int:
    import yaml

    return int(yaml.safe_load((run_dir / "config.yaml").read_text())["seed"])


def _cached(out: Path, kind: str, run_dir: Path, compute, fresh: bool) -> dict:
    path = out / f"{kind}_{run_dir.parent.name}_{run_dir.name}.json"
    if path.is_file() and not fresh:
        return json.loads(path.read_text())
    result = compute()
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_dir": str(run_dir), "seed": _seed(run_dir), **result}, indent=1))
    print(f"  wrote {path}", flush=True)
    return json.loads(path.read_text())


def _interval(values: dict[int, float]) -> str:
    from encnet.report.stats import format_interval, t_interval

    seeds = sorted(values)
    return f"{format_interval(t_interval([values[s] for s in seeds]))} (n={len(seeds)})"


def _mean_sd(values) -> str:
    import statistics

    values = [v for v in values if v == v]
    if not values:
        return "nan"
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):6.2f} ± {sd:5.2f}"


def _every(n: int):
    def progress(done: int, total: int) -> None:
        if done % n == 0 or done == total:
            print(f"  {done}/{total} images", flush=True)
    return progress


def _print_table(rows: list[list], headers: list[str]) -> None:
    from tabulate import tabulate

    print(tabulate(rows, headers=headers, tablefmt="github", floatfmt=".2f"), flush=True)


def cmd_ms(args) -> None:
    from encnet.analysis.ms_views import diagnose_multi_scale
    from encnet.analysis.trained_model import load_trained_run

    results = {}
    for run_dir in map(Path, args.runs):
        def compute(run_dir=run_dir):
            run = load_trained_run(run_dir)
            return {"protocols": diagnose_multi_scale(run, limit=args.limit, progress=_every(50))}
        print(f"ms: {run_dir}", flush=True)
        results[run_dir] = _cached(args.out, "ms", run_dir, compute, args.fresh)
    by_seed = {r["seed"]: r["protocols"] for r in results.values()}
    seeds = sorted(by_seed)
    protocols = [p for p in next(iter(by_seed.values())) if p != "counts"]
    metrics = ("mIoU", "mIoU_scene", "mIoU_small", "mIoU_large", "IoU_ring", "IoU_cross")
    rows = [[p] + [_mean_sd(by_seed[s][p].get(m, float("nan")) for s in seeds) for m in metrics] for p in protocols]
    print(f"\nper protocol, mean ± sd over seeds {seeds}:")
    _print_table(rows, ["protocol", *metrics])
    print("\nper seed, mIoU_scene:")
    _print_table([[p] + [by_seed[s][p]["mIoU_scene"] for s in seeds] for p in protocols], ["protocol", *seeds])
    print("\nper seed, mIoU:")
    _print_table([[p] + [by_seed[s][p]["mIoU"] for s in seeds] for p in protocols], ["protocol", *seeds])
    print("\ncounts (per seed):")
    _print_table([[k] + [by_seed[s]["counts"][k] for s in seeds] for k in by_seed[seeds[0]]["counts"]],
                 ["count", *seeds])
    comparisons = [("mIoU_scene", "whole_1.25_flip", "slide_1.25_flip"),
                   ("mIoU_scene", "whole_0.75_flip", "slide_0.75_flip"),
                   ("mIoU_scene", "windows_cue", "windows_cueless"),
                   ("mIoU_scene", "slide_1.25_flip@cue_covered", "slide_1.25_flip@cueless_only"),
                   ("mIoU", "ss_flip", "ss"),
                   ("mIoU", "ms_slide_flip", "ss"),
                   ("mIoU", "ms_whole_flip", "ss"),
                   ("mIoU", "ms_whole_flip", "ms_slide_flip"),
                   ("mIoU_scene", "ms_slide_flip", "ss"),
                   ("mIoU_scene", "ms_whole_flip", "ss"),
                   ("mIoU", "ms_cover_flip", "ss"),
                   ("mIoU_scene", "ms_cover_flip", "ss"),
                   ("IoU_ring", "ms_slide_flip", "ss"),
                   ("IoU_cross", "ms_slide_flip", "ss"),
                   ("mIoU_small", "ms_slide_flip", "ss"),
                   ("mIoU_large", "ms_slide_flip", "ss")]
    for scale in ("0.75", "1", "1.25"):
        comparisons += [("mIoU", f"slide_{scale}_flip", "ss"), ("mIoU", f"whole_{scale}_flip", "ss"),
                        ("mIoU_scene", f"slide_{scale}_flip", "ss"), ("mIoU_scene", f"whole_{scale}_flip", "ss")]
    print("\npaired differences (a − b), 95 % t interval over seeds:")
    _print_table([[m, a, b, _interval({s: by_seed[s][a][m] - by_seed[s][b][m] for s in seeds})]
                  for m, a, b in comparisons], ["metric", "a", "b", "a − b"])
    checks = []
    for run_dir, r in results.items() if args.limit is None else ():  # the engine evaluates every image
        logged = run_dir / "eval_ms_flip.json"
        if logged.is_file():
            engine = json.loads(logged.read_text())
            mine = r["protocols"]["ms_slide_flip"]
            checks.append([r["seed"], engine["mIoU"], mine["mIoU"], engine.get("mIoU_scene"), mine["mIoU_scene"]])
    if checks:
        print("\nms_slide_flip against the engine's eval_ms_flip.json (python -m encnet.evaluate RUN --ms):")
        _print_table(checks, ["seed", "engine mIoU", "here mIoU", "engine mIoU_scene", "here mIoU_scene"])


def cmd_size_bins(args) -> None:
    from encnet.analysis.size_bins import scene_shape_groups, size_bin_breakdown, size_bin_confusions
    from encnet.analysis.trained_model import load_trained_run

    arms = {}
    for arm, run_dirs in (("with", args.with_se), ("without", args.without_se)):
        arms[arm] = {}
        for run_dir in map(Path, run_dirs):
            def compute(run_dir=run_dir):
                run = load_trained_run(run_dir)
                shapes = scene_shape_groups(run.dataset.class_names, run.dataset.ambiguous_classes)
                confusions = size_bin_confusions(run)
                return {"breakdown": {b: size_bin_breakdown(c, shapes) for b, c in confusions.items()},
                        "confusion": {b: c.tolist() for b, c in confusions.items()},
                        "class_names": list(run.dataset.class_names)}
            print(f"size-bins ({arm} SE-loss): {run_dir}", flush=True)
            r = _cached(args.out, "sizebins", run_dir, compute, args.fresh)
            arms[arm][r["seed"]] = r
    seeds = sorted(set(arms["with"]) & set(arms["without"]))
    quantities = ("mIoU", "shape_IoU", "scene_accuracy", "right_class", "right_shape_wrong_scene", "other_shape",
                  "other")
    for arm in ("with", "without"):
        print(f"\nEncNet {arm} SE-loss, mean ± sd over seeds {seeds}:")
        _print_table([[b] + [_mean_sd(arms[arm][s]["breakdown"][b][q] for s in seeds) for q in quantities]
                      for b in ("small", "large", "all")], ["bin", *quantities])
        print(f"per seed, scene accuracy small / large ({arm} SE-loss):",
              {s: (round(arms[arm][s]["breakdown"]["small"]["scene_accuracy"], 1),
                   round(arms[arm][s]["breakdown"]["large"]["scene_accuracy"], 1)) for s in seeds})
    print("\nper class IoU per bin (mean over seeds):")
    from encnet.metrics import iou_from_confusion

    names = arms["with"][seeds[0]]["class_names"]
    rows = []
    for arm in ("with", "without"):
        for b in ("small", "large"):
            ious = torch.stack([iou_from_confusion(torch.tensor(arms[arm][s]["confusion"][b])) for s in seeds])
            rows.append([f"{arm} SE, {b}"] + [ious[:, k].nanmean().item() for k in range(len(names))])
    _print_table(rows, ["arm, bin", *names])
    print("\npaired differences EncNet − EncNet w/o SE-loss (95 % t interval), and their small − large:")
    table = []
    for q in ("mIoU", "shape_IoU", "scene_accuracy", "right_class"):
        gain = {b: {s: arms["with"][s]["breakdown"][b][q] - arms["without"][s]["breakdown"][b][q] for s in seeds}
                for b in ("small", "large")}
        table.append([q, _interval(gain["small"]), _interval(gain["large"]),
                      _interval({s: gain["small"][s] - gain["large"][s] for s in seeds})])
    _print_table(table, ["quantity", "gain, small", "gain, large", "gain small − gain large"])
    print("\nshape IoU small − large within each arm:")
    _print_table([[arm, _interval({s: arms[arm][s]["breakdown"]["small"]["shape_IoU"]
                                   - arms[arm][s]["breakdown"]["large"]["shape_IoU"] for s in seeds})]
                  for arm in ("with", "without")], ["arm", "shape IoU small − large"])
    checks = []
    for arm in ("with", "without"):
        for s in seeds:
            logged = Path(arms[arm][s]["run_dir"]) / "eval.json"
            if logged.is_file():
                engine = json.loads(logged.read_text())
                mine = arms[arm][s]["breakdown"]
                checks.append([arm, s, engine["mIoU_small"], mine["small"]["mIoU"], engine["mIoU_large"],
                               mine["large"]["mIoU"]])
    if checks:
        print("\nper-bin mIoU against the engine's eval.json (the run's single-scale evaluation):")
        _print_table(checks, ["arm", "seed", "engine small", "here small", "engine large", "here large"])


def cmd_cifar(args) -> None:
    from encnet.analysis.se_gates import gate_statistics, record_se_gates
    from encnet.analysis.trained_model import load_trained_run
    from encnet.engine.build import build_dataset_for
    from encnet.engine.runs import read_jsonl

    def clean_error(run, split_dataset) -> float:
        loader = torch.utils.data.DataLoader(split_dataset, batch_size=100, shuffle=False)
        wrong = total = 0
        with torch.no_grad():
            for images, labels in loader:
                wrong += int((run.model(images).argmax(1) != labels).sum())
                total += len(labels)
        return 100.0 * wrong / total

    arms = {}
    for arm, run_dirs in (("plain", args.plain), ("se", args.se)):
        arms[arm] = {}
        for run_dir in map(Path, run_dirs):
            def compute(run_dir=run_dir):
                run = load_trained_run(run_dir)
                train_set = build_dataset_for(run.config, run.config.data.train_split, train=False)
                out = {"curves": [{k: rec.get(k) for k in ("epoch", "loss", "train_top1_error", "val_top1_error")}
                                  for rec in read_jsonl(run_dir / "metrics.jsonl")],
                       "clean_train_error": clean_error(run, train_set),
                       "test_error": clean_error(run, run.dataset)}
                if run.config.model.name.startswith("SE-"):
                    loader = torch.utils.data.DataLoader(run.dataset, batch_size=100, shuffle=False)
                    labels = torch.cat([y for _, y in loader])
                    gates = record_se_gates(run.model, (x for x, _ in loader))
                    hidden = {n.removesuffix(".attention"): m.fc1.out_channels
                              for n, m in run.model.named_modules() if type(m).__name__ == "SqueezeExcitation"}
                    out["gates"] = {n: gate_statistics(g, labels, hidden[n]) for n, g in gates.items()}
                return out
            print(f"cifar ({arm}): {run_dir}", flush=True)
            r = _cached(args.out, "cifar", run_dir, compute, args.fresh)
            arms[arm][r["seed"]] = r
    seeds = sorted(set(arms["plain"]) & set(arms["se"]))
    epochs = len(arms["plain"][seeds[0]]["curves"])
    rows = []
    for e in range(epochs):
        row = [e + 1]
        for arm in ("plain", "se"):
            for k in ("loss", "train_top1_error", "val_top1_error"):
                row.append(_mean_sd(arms[arm][s]["curves"][e][k] for s in seeds))
        rows.append(row)
    print(f"\ntraining curves, mean ± sd over seeds {seeds} (train error: augmented batches in train mode):")
    _print_table(rows, ["epoch", "ResNet loss", "ResNet train err", "ResNet test err", "SE loss", "SE train err",
                        "SE test err"])
    print("\nlast checkpoint, eval mode:")
    _print_table([[arm] + [_mean_sd(arms[arm][s][k] for s in seeds) for k in ("clean_train_error", "test_error")]
                  for arm in ("plain", "se")], ["arm", "clean train error", "test error"])
    print("\npaired SE − ResNet (95 % t interval):")
    _print_table([[k, _interval({s: arms["se"][s][k] - arms["plain"][s][k] for s in seeds})]
                  for k in ("clean_train_error", "test_error")]
                 + [["final train loss", _interval({s: arms["se"][s]["curves"][-1]["loss"]
                                                    - arms["plain"][s]["curves"][-1]["loss"] for s in seeds})],
                    ["generalisation gap (test − clean train)",
                     _interval({s: (arms["se"][s]["test_error"] - arms["se"][s]["clean_train_error"])
                                - (arms["plain"][s]["test_error"] - arms["plain"][s]["clean_train_error"])
                                for s in seeds})]],
                 ["quantity", "SE − ResNet"])
    blocks = list(arms["se"][seeds[0]]["gates"])
    stats = ("channels", "hidden", "mean", "std", "min", "max", "image_std", "class_std", "channel_std")
    print("\nSE gates on the test images per block, mean over seeds:")
    _print_table([[b] + [sum(arms["se"][s]["gates"][b][k] for s in seeds) / len(seeds) for k in stats]
                  for b in blocks], ["block", *stats])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "diagnosis", help="per-run JSON results")
    parser.add_argument("--fresh", action="store_true", help="recompute even where a JSON result exists")
    sub = parser.add_subparsers(dest="command", required=True)
    ms = sub.add_parser("ms", help="multi-scale + flip: scales, windows, whole image (EncNet R101 runs)")
    ms.add_argument("runs", nargs="+")
    ms.add_argument("--limit", type=int, help="first N validation images only (default: all)")
    bins = sub.add_parser("size-bins", help="SE-loss small − large: per size bin, with and without SE-loss")
    bins.add_argument("--with", dest="with_se", nargs="+", required=True, help="EncNet runs")
    bins.add_argument("--without", dest="without_se", nargs="+", required=True, help="EncNet w/o SE-loss runs")
    cifar = sub.add_parser("cifar", help="SE-ResNet-16d against ResNet-16d: curves, gates")
    cifar.add_argument("--plain", nargs="+", required=True, help="ResNet-16d runs")
    cifar.add_argument("--se", nargs="+", required=True, help="SE-ResNet-16d runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    {"ms": cmd_ms, "size-bins": cmd_size_bins, "cifar": cmd_cifar}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
