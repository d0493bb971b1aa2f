"""``tables/benchmarks.md`` from the benchmark results in ``bench/results/*.json`` — never by running them.

    python -m encnet.report.benchmarks [--results-dir bench/results] [--out tables/benchmarks.md]

Each JSON is one run of one ``bench/<name>.py`` on one device (schema in ``bench/common.py``). The table
opens with every target (PASS/MISS, measured against threshold), then each benchmark's rows; every row
carries the machine and date it was measured on, because CPU timings mean nothing without them.
Results of ``--quick`` runs (tiny sizes, for the smoke test) are left out unless asked for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

__all__ = ["load_results", "machine_label", "matmul_speed", "targets_frame", "rows_frame",
           "build_benchmarks_markdown", "write_benchmarks_table", "markdown_table", "paper_cost_frame",
           "build_paper_cost_markdown", "write_paper_cost_table", "measured_step", "train_images", "train_iterations",
           "main"]

ORDER = ("encoding_layer", "model_overhead", "syncbn", "data_pipeline", "train_step", "syncbn_cuda",
         "paper_training", "ms_eval", "peers")
REQUIRED = ("benchmark", "device", "machine", "rows", "targets")


def load_results(results_dir: str | Path) -> list[dict]:
    """All results in ``results_dir``, in table order (benchmarks as in ORDER, then by name and device)."""
    results = []
    for path in sorted(Path(results_dir).glob("*.json")):
        record = json.loads(path.read_text())
        missing = [key for key in REQUIRED if key not in record]
        if missing:
            raise ValueError(
                f"{path} is not a benchmark result: it lacks {missing}; regenerate it with "
                f"`python bench/<name>.py` or remove it"
            )
        results.append(record)
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(results, key=lambda r: (rank.get(r["benchmark"], len(ORDER)), r["benchmark"], r["device"]))


def machine_label(machine: dict) -> str:
    """'AMD EPYC, 2 cores, 2 threads, torch 2.14.1' or 'NVIDIA H100 80GB HBM3, torch 2.14.1'."""
    if machine.get("device_name", "cpu") != "cpu":
        head = machine["device_name"]
    else:
        threads = machine.get("torch_threads", "?")
        head = f"{machine.get('cpu_model', '?')}, {machine.get('cpu_cores', '?')} cores, " \
               f"{threads} thread{'' if threads == 1 else 's'}"
    return f"{head}, torch {machine.get('torch', '?')}"


def _date(machine: dict) -> str:
    return str(machine.get("date", "?"))[:16].replace("T", " ")


def matmul_speed(machine: dict) -> str:
    """'61–64': the CPU's float32 matrix-product GFLOP/s at the run's start and end ('not recorded' before the
    probe was; 'n/a' on a GPU)."""
    if machine.get("device_name", "cpu") != "cpu":
        return "n/a"
    speeds = [machine.get(f"matmul_GFLOP_s_at_{when}") for when in ("start", "end")]
    if all(v is None for v in speeds):
        return "not recorded"
    return "–".join("?" if v is None else f"{v:.0f}" for v in speeds)


def _stamp(result: dict) -> dict:
    machine = result["machine"]
    return {"device": result["device"], "machine": machine_label(machine), "date": _date(machine),
            "load_1m": machine.get("load_average_1m_at_start"), "matmul_GFLOP_s": matmul_speed(machine),
            "commit": (machine.get("git_commit") or "uncommitted")[:8]}


def targets_frame(results: list[dict]) -> pd.DataFrame:
    records = [
        {"benchmark": r["benchmark"], "target": t["target"], "measured": t["measured"],
         "threshold": t["threshold"], "result": "PASS" if t["pass"] else "MISS", "note": t.get("note", ""),
         **_stamp(r)}
        for r in results for t in r["targets"]
    ]
    return pd.DataFrame.from_records(records)


def rows_frame(result: dict) -> pd.DataFrame:
    """The rows of one result, each with its machine stamp. A row that timed matrix products in its own rounds
    keeps that figure as ``matmul_GFLOP_s`` (its achieved rate is judged against it); the start/end probe then
    goes under ``matmul_probe_GFLOP_s`` rather than over it."""
    stamp = _stamp(result)
    if any("matmul_GFLOP_s" in row for row in result["rows"]):
        stamp["matmul_probe_GFLOP_s"] = stamp.pop("matmul_GFLOP_s")
    return pd.DataFrame.from_records([{**row, **stamp} for row in result["rows"]])


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub table; a ``|`` inside a cell (e.g. "max |diff|") is escaped, or it would split the
    row into extra columns and the whole table would render as a paragraph."""
    escaped = frame.apply(lambda column: column.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v))
    escaped.columns = [str(c).replace("|", "\\|") for c in frame.columns]
    return escaped.to_markdown(index=False, floatfmt=".3g", missingval="n/a")


def build_benchmarks_markdown(results: list[dict], include_quick: bool = False) -> str:
    skipped = [r for r in results if r.get("quick") and not include_quick]
    results = [r for r in results if include_quick or not r.get("quick")]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m encnet.report.benchmarks` from `bench/results/*.json`; each number comes from "
        "`python bench/<benchmark>.py` on the machine named in its row. CPU timings on a shared machine are "
        "noisy: `load_1m` is the machine's 1-minute load average when the run started (2 cores: above 2 means "
        "other work competed for the CPU) and `matmul_GFLOP_s` its float32 matrix-product speed at the run's "
        "thread count, probed at the start and the end of the run (what the CPU did then: a row that computes "
        "faster than that cannot be right).",
        "",
    ]
    if not results:
        lines += ["No benchmark results yet: run `python bench/encoding_layer.py` (and the others).", ""]
    else:
        lines += ["## Targets", "", markdown_table(targets_frame(results)), ""]
    for result in results:
        lines += [f"## {result['benchmark']} ({result['device']})", "",
                  markdown_table(rows_frame(result)), ""]
        for table in result.get("tables", []):
            lines += [f"### {table['title']}", "", markdown_table(pd.DataFrame.from_records(table["rows"])), ""]
        lines += [f"- {note}" for note in result.get("notes", [])]
        lines.append("")
    if skipped:
        lines += [f"({len(skipped)} quick-run result(s) left out: "
                  f"{', '.join(r['benchmark'] + '-' + r['device'] for r in skipped)})", ""]
    return "\n".join(lines)


def write_benchmarks_table(results_dir: str | Path, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(build_benchmarks_markdown(load_results(results_dir)))
    return out_path


# ------------------------------------------------------------------------------ the paper profile's cost

NOT_MEASURED = "not measured"


def train_images(config) -> int | None:
    """The official size of a config's training split (None where a filter decides it: COCO's pixel filter)."""
    from encnet.data.check import OFFICIAL_COUNTS

    dataset, split = config.data.dataset, config.data.train_split
    counts = OFFICIAL_COUNTS.get(dataset, {})
    if dataset == "pascal_voc_aug" and split == "train_aug":  # the dataset's "train" is train_aug
        split = "train"
    if split == "trainval" and counts.get("train") and counts.get("val"):
        return counts["train"] + counts["val"]
    return counts.get(split)


def train_iterations(config) -> int | None:
    """SGD steps of a whole run of ``config`` on its official training split: epochs × the trainer's loader length
    (``encnet.engine.schedules.iterations_per_epoch``: the last partial batch is dropped)."""
    from encnet.engine.schedules import iterations_per_epoch

    images = train_images(config)
    if not images:
        return None
    return config.train.epochs * iterations_per_epoch(images, config.train.batch_size)


def _step_rows(results: list[dict]) -> list[dict]:
    """Measured GPU train-step rows (``train_step`` benchmark, not quick, not CPU) with their machine."""
    return [{**row, "_machine": r["machine"], "_device": r["device"]} for r in results
            if r["benchmark"] == "train_step" and not r.get("quick") and r["device"] != "cpu" for row in r["rows"]]


def _match(rows: list[dict], model: str, backbone: str, crop: int, batch: int, precision: str,
           channels_last: bool) -> dict | None:
    found = [r for r in rows if (r.get("model"), r.get("backbone"), r.get("crop"), r.get("batch"),
                                 r.get("precision"), bool(r.get("channels_last"))) ==
             (model, backbone, crop, batch, precision, channels_last) and r.get("step_s")]
    return min(found, key=lambda r: r["step_s"]) if found else None


def measured_step(results: list[dict], config) -> float | None:
    """Seconds of one measured GPU training step of ``config`` (its model, backbone, crop, global batch, precision
    and memory format), or None when ``results`` hold none."""
    if config.task != "segmentation":
        return None
    t = config.train
    row = _match(_step_rows(results), config.model.name, config.model.backbone, config.data.crop_size, t.batch_size,
                 "bf16" if t.amp else "fp32", t.channels_last)
    return None if row is None else float(row["step_s"])


def paper_cost_frame(results: list[dict], configs_dir: str | Path) -> pd.DataFrame:
    """One line per ``configs/<paper>/*.yaml``: iterations, and from measured train steps the step time,
    GPU-hours and peak memory of training the global batch on one measured GPU ("not measured" otherwise).

    Iterations = epochs × ⌊training images / global batch⌋ (the loader drops the last partial batch).
    The step measured is the config's own: its model, backbone, crop, the whole global batch on one GPU,
    float32 unless ``train.amp``, channels_last as ``train.channels_last``. BatchNorm over the global batch on
    one GPU computes what SyncBN over the paper's 8 × 2 does, so the step is the same computation.
    """
    from encnet.engine.config import load_config

    steps = _step_rows(results)
    records = []
    for path in sorted(Path(configs_dir).glob("*.yaml")):
        config = load_config(path)
        t, d = config.train, config.data
        images = train_images(config)
        iterations = train_iterations(config)
        precision = "bf16" if t.amp else "fp32"
        record = {"experiment": config.experiment, "model": config.model.name,
                  "backbone": config.model.backbone if config.task == "segmentation" else "—",
                  "train_images": images if images else "unknown (filtered set)",
                  "batch": t.batch_size, "epochs": t.epochs,
                  "iterations": iterations if iterations else "unknown",
                  "precision": precision, "step_s": NOT_MEASURED, "gpu_hours": NOT_MEASURED,
                  "peak_GiB": NOT_MEASURED, "measured_on": NOT_MEASURED}
        row = None
        if config.task == "segmentation":
            row = _match(steps, config.model.name, config.model.backbone, d.crop_size, t.batch_size, precision,
                         t.channels_last)
        if row is not None:
            record.update(step_s=round(row["step_s"], 4), peak_GiB=round(row["peak_MiB"] / 1024, 2),
                          measured_on=f"{machine_label(row['_machine'])}, {_date(row['_machine'])}")
            if iterations:
                record["gpu_hours"] = round(iterations * row["step_s"] / 3600, 1)
        records.append(record)
    return pd.DataFrame.from_records(records)


def build_paper_cost_markdown(results: list[dict], configs_dir: str | Path) -> str:
    frame = paper_cost_frame(results, configs_dir)
    measured = int((frame["step_s"] != NOT_MEASURED).sum())
    return "\n".join([
        "# What the paper profile costs",
        "",
        "Generated by `python -m encnet.report.benchmarks` from `configs/paper/*.yaml` and `bench/results/*.json` "
        "(the `train_step` rows that `bash bench/gpu_suite.sh` writes); a cell without a measurement says "
        f"\"{NOT_MEASURED}\". {measured} of {len(frame)} experiments have a measured step.",
        "",
        "- iterations = epochs × ⌊training images / batch⌋ (the last partial batch is dropped); training images "
        "are the official split sizes",
        "- step_s: one SGD step of the config's model with the whole global batch on one GPU, in the config's "
        "precision (all paper configs: float32, as the release trained) and memory format; BatchNorm over the "
        "global batch on one GPU equals the paper's SyncBN over 8 GPUs × 2",
        "- gpu_hours = iterations × step_s / 3600 on the measured GPU: training only (no data-loading stall, "
        "validation or multi-scale evaluation); peak_GiB = torch.cuda.max_memory_allocated during the step",
        "",
        frame.to_markdown(index=False),
        "",
    ])


def write_paper_cost_table(results_dir: str | Path, out_path: str | Path, configs_dir: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(build_paper_cost_markdown(load_results(results_dir), configs_dir))
    return out_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild tables/benchmarks.md from bench/results/*.json")
    parser.add_argument("--results-dir", type=Path, default=Path("bench/results"))
    parser.add_argument("--out", type=Path, default=Path("tables/benchmarks.md"))
    parser.add_argument("--cost-out", type=Path, default=Path("tables/paper_cost.md"))
    parser.add_argument("--configs-dir", type=Path, default=Path("configs/paper"))
    args = parser.parse_args(argv)
    if not args.results_dir.is_dir():
        raise SystemExit(f"no folder {args.results_dir}; run from the repository root or pass --results-dir")
    print(f"wrote {write_benchmarks_table(args.results_dir, args.out)}")
    print(f"wrote {write_paper_cost_table(args.results_dir, args.cost_out, args.configs_dir)}")


if __name__ == "__main__":
    main()
