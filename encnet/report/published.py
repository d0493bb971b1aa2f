"""The published-weights table: each published EncNet/FCN checkpoint's reported number, ours evaluated, and Δ.

``CATALOGUE`` names every checkpoint the suite knows: the authors' model zoo (``modelzoo`` rows of
``reported.csv``) and mmsegmentation's EncNet (``peer`` rows), with the file names they are published under,
the paper config giving the dataset, and the source (hence the protocol, ``encnet.engine.protocols``). The numbers
come from ``reported.csv`` only. A checkpoint absent from ``--weights-root`` is a "not found" row naming the
file to put there; a found one is evaluated once (``runs/published/...``; rerunning reuses its ``eval.json``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from encnet.engine.published_files import PUBLISHED_FILES, PublishedFile
from encnet.report.reported import format_reported, load_reported, lookup
from encnet.report.tables import to_markdown, write_table_files

__all__ = ["CATALOGUE", "PublishedCheckpoint", "find_weights", "main", "published_rows", "table_frame"]

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PublishedCheckpoint:
    row: str  # reported.csv ``row``
    experiment: str  # reported.csv ``experiment``: modelzoo | peer
    source: str  # encnet.engine.published_weights.SOURCES
    config: str  # configs/<profile>/<config>.yaml: the dataset (the network comes from the file)
    file: PublishedFile  # its names and where it is published (encnet.engine.published_files)
    overrides: tuple[str, ...] = ()  # config overrides the source's protocol needs

    @property
    def files(self) -> tuple[str, ...]:
        return self.file.names

    def expected(self) -> str:
        return self.files[0]


def _zoo(row: str, config: str, stem: str, overrides: tuple[str, ...] = ()) -> PublishedCheckpoint:
    return PublishedCheckpoint(row, "modelzoo", "pytorch-encoding", config, PUBLISHED_FILES[stem], overrides)


def _mmseg(row: str, config: str, stem: str) -> PublishedCheckpoint:
    return PublishedCheckpoint(row, "peer", "mmseg", config, PUBLISHED_FILES[stem])


CATALOGUE: tuple[PublishedCheckpoint, ...] = (
    _zoo("EncNet_ResNet50s_PContext", "pcontext_encnet_r50", "encnet_resnet50s_pcontext-4de91d59"),
    _zoo("EncNet_ResNet101s_PContext", "pcontext_encnet_r101", "encnet_resnet101s_pcontext-9f27ea13"),
    _zoo("EncNet_ResNet50s_ADE", "ade20k_encnet_r50", "encnet_resnet50s_ade-07ac287c"),
    # get_encnet_resnet101_ade: base_size=640, crop_size=576 (v0.5.0 and today)
    _zoo("EncNet_ResNet101s_ADE", "ade20k_encnet_r101", "encnet_resnet101s_ade-3f54fa3b",
         ("eval.base_size=640", "eval.crop_size=576")),
    _zoo("FCN_ResNet50s_ADE", "ade20k_fcn_r50", "fcn_resnet50s_ade-662e979d"),
    _mmseg("EncNet R-50-D8 512x512 80k", "ade20k_encnet_r50",
           "encnet_r50-d8_512x512_80k_ade20k_20200622_042412-44b46b04"),
    _mmseg("EncNet R-101-D8 512x512 80k", "ade20k_encnet_r101",
           "encnet_r101-d8_512x512_80k_ade20k_20200622_101128-dd35e237"),
    _mmseg("EncNet R-50-D8 512x512 160k", "ade20k_encnet_r50",
           "encnet_r50-d8_512x512_160k_ade20k_20200622_101059-b2db95e0"),
    _mmseg("EncNet R-101-D8 512x512 160k", "ade20k_encnet_r101",
           "encnet_r101-d8_512x512_160k_ade20k_20200622_073348-7989641f"),
)
METRICS = ("pixAcc", "mIoU")


def find_weights(entry: PublishedCheckpoint, root: str | Path) -> Path | None:
    """The first of the entry's file names present under ``root`` (directly or one folder down)."""
    root = Path(root)
    for name in entry.files:
        nested = sorted(root.glob(f"*/{name}")) if root.is_dir() else []
        for candidate in (root / name, *nested):
            if candidate.is_file():
                return candidate
    return None


def _out_dir(entry: PublishedCheckpoint, runs_root: str | Path, weights: Path) -> Path:
    return Path(runs_root) / "published" / entry.config / weights.name.split(".")[0]


def published_rows(profile: str, weights_root: str | Path, runs_root: str | Path = "runs",
                   data_root: str | None = None, evaluate: bool = True, device: str | None = None,
                   reported: pd.DataFrame | None = None) -> list[dict]:
    """One dict per (checkpoint, metric): reported value, ours (None if not evaluated), status."""
    from encnet.engine.runs import read_json

    reported = load_reported() if reported is None else reported
    rows = []
    for entry in CATALOGUE:
        weights = find_weights(entry, weights_root)
        ours: dict | None = None
        if weights is None:
            status = (f"not found: {entry.expected()} in {Path(weights_root)} (nor a folder below it); download it "
                      f"from {entry.file.where()}")
        else:
            out_dir = _out_dir(entry, runs_root, weights)
            if (out_dir / "eval.json").is_file():
                ours, status = read_json(out_dir / "eval.json"), "evaluated (reused)"
            elif evaluate:
                from encnet.engine.evaluate_published import evaluate_published

                overrides = list(entry.overrides) + ([f"data.root={data_root}"] if data_root else [])
                ours = evaluate_published(weights, REPO / "configs" / profile / f"{entry.config}.yaml",
                                          source=entry.source, out_dir=out_dir, overrides=overrides, device=device)
                status = "evaluated"
            else:
                status = f"found {weights}; not evaluated (dry run)"
        protocol = (ours or {}).get("protocol", {}).get("name") or {"pytorch-encoding": "release",
                                                                    "mmseg": "mmseg"}[entry.source]
        for metric in METRICS:
            entry_reported = lookup(reported, entry.experiment, entry.row, metric)
            if entry_reported is None and metric != "mIoU":
                continue  # mmsegmentation publishes mIoU only
            value = None if ours is None else float(ours[metric])
            rows.append({"checkpoint": entry.row, "source": entry.source, "protocol": protocol,
                         "config": entry.config, "metric": metric,
                         "published": None if entry_reported is None else float(entry_reported["value"]),
                         "published_text": format_reported(entry_reported), "ours": value,
                         "delta": None if value is None or entry_reported is None
                         else value - float(entry_reported["value"]),
                         "file": str(weights) if weights else entry.expected(), "status": status})
    return rows


def table_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """The display table: one line per checkpoint, published / ours / Δ per metric, and the status."""
    lines = {}
    for row in rows:
        line = lines.setdefault(row["checkpoint"], {"Checkpoint": row["checkpoint"], "Source": row["source"],
                                                    "Protocol": row["protocol"]})
        m = row["metric"]
        line[f"{m} published"] = row["published_text"]
        line[f"{m} ours"] = "—" if row["ours"] is None else f"{row['ours']:.2f}"
        line[f"{m} Δ"] = "—" if row["delta"] is None else f"{row['delta']:+.2f}"
        line["Status"] = row["status"]
    frame = pd.DataFrame(list(lines.values())).fillna("—")
    ordered = ["Checkpoint", "Source", "Protocol"] + [f"{m} {c}" for m in METRICS for c in ("published", "ours", "Δ")]
    return frame[[c for c in ordered if c in frame.columns] + ["Status"]]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python reproduce/table_published.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("demo", "paper"), default="paper",
                        help="only 'paper' has published weights; 'demo' prints a note and exits 0")
    parser.add_argument("--weights-root", default="weights", help="folder holding the downloaded checkpoints")
    parser.add_argument("--data-root", help="dataset root (the paper profile's real datasets)")
    parser.add_argument("--runs-root", default="runs", help="where runs/published/... eval folders go")
    parser.add_argument("--out-dir", default=str(REPO), help="where tables/ goes (default: repo root)")
    parser.add_argument("--dry-run", action="store_true", help="list what is found; evaluate nothing, write nothing")
    parser.add_argument("--from-logs", action="store_true", help="use existing eval.json files only")
    parser.add_argument("--device", choices=["cuda", "cpu"])
    # run_all.sh passes every script the same options; those that mean nothing here are accepted and ignored.
    args, ignored = parser.parse_known_args(argv)
    if args.profile != "paper":
        print("published weights are evaluated in the paper profile only (real datasets); nothing to do for "
              f"--profile {args.profile}")
        return 0
    evaluate = not (args.dry_run or args.from_logs)
    try:
        rows = published_rows(args.profile, args.weights_root, args.runs_root, args.data_root, evaluate=evaluate,
                              device=args.device)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = table_frame(rows)
    title = "Published checkpoints evaluated by the suite"
    caption = ("Each checkpoint under its source's own protocol (release: PyTorch-Encoding v0.5.0 multi-scale "
               "sliding window; mmseg: mmsegmentation's multi-scale whole-image test). Published numbers from "
               "encnet/report/reported.csv; Δ = ours − published.")
    print(to_markdown(table, f"{title} (--weights-root {args.weights_root})", caption, []))
    if not args.dry_run and any(row["ours"] is not None for row in rows):
        for path in write_table_files(table, pd.DataFrame(rows), "published", title, caption, [], args.out_dir):
            print(f"wrote {path}")
    return 0
