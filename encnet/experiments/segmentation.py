"""The shared driver behind ``reproduce/*.py``: run what is missing, then rebuild tables and figures from logs.

An experiment is a list of rows; a row is (label, config file, overrides, evaluation, reported-row keys). Each
(row, seed) resolves to a config and so to its run folder (``encnet.engine.runs.run_dir_for``): two rows with the same
resolved config are the same run, trained once — the α = 0.2 point of the SE-loss sweep *is* the ablation's
EncNet run, and the K = 32 point of the codewords sweep (run without SE-loss) its "w/o SE-loss" run. Finished
runs are reused, unfinished ones resumed from their checkpoint. Outputs are then
built from the run folders and ``reported.csv`` only (``encnet.report``), so ``--from-logs`` rebuilds them
without training.

Profiles: ``paper`` uses ``configs/paper`` (the paper's protocol: crop 480, base 520, batch 16, K = 32,
α = 0.2, aux 0.2); ``demo`` uses ``configs/demo`` (CPU-sized runs on the generated ``context_scenes`` data).
Demo and paper runs live under ``<runs-root>/<profile>/`` and never share a table.

Where the demo differs from the paper: a deeper tiny backbone (``resnet_tiny_deep``, stage 3 three blocks deep)
plays R101, so the "R101" rows are runs of their own; the demo data puts its scene band beyond the networks'
receptive field (``layout: far``), has small and large objects (claim 3, ``sizes: small_large``), and the codewords
sweep runs on scenes told apart only by the distribution of the backdrop's colours (claim 2, ``cue: mixture``);
seed s draws its own data (the config's data seed + s), and every demo direction is decided on the seeds its two
arms share (``DEMO_SEEDS``, each row its power plan's number of them) with a 95 % interval
(``encnet.report.stats``), and needs the control classes learned; the demo data always labels its background, so
the 60-class table reuses the ablation's run; VOC's "COCO" stage is other generated images (data seed 1000 + s) and
its "trainval" stage fine-tunes on the demo train split (there is no train+val split), so its numbers stay "test
server" as in the paper. Each table's caption says which of these apply.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[2]
CONFIG_ROOT = REPO / "configs"
PROFILES = ("demo", "paper")
# The knobs the paper fixes, printed by --dry-run for every run (one name per knob, as in the configs).
KEY_SETTINGS = (("data", "dataset"), ("data", "num_classes"), ("model", "name"), ("model", "backbone"),
                ("data", "crop_size"), ("data", "base_size"), ("train", "batch_size"), ("model", "num_codes"),
                ("train", "se_weight"), ("model", "se_loss"), ("train", "aux_weight"), ("model", "aux"),
                ("model", "aux_head"), ("train", "base_lr"), ("train", "epochs"), ("data", "train_split"),
                ("data", "scale_side"), ("data", "blur_prob"), ("data", "rotate_degrees"), ("data", "pad_label"),
                ("eval", "miou"), ("model", "init_from"))


@dataclass(frozen=True)
class Row:
    """One line of a table or one point of a figure, and the run behind it."""

    label: str
    config: str | None  # file name under configs/<profile>/; None: nothing can run (e.g. a test-server score)
    overrides: tuple[str, ...] = ()
    eval: str = "ss"  # "ss": the single-scale eval.json every run writes; "ms": the config's multi-scale + flip
    reported: tuple[str, str] | None = None  # (experiment, row) in reported.csv
    not_run_reason: str | None = None  # shown instead of a result; the run still trains when config is set
    init_from: str | None = None  # label of the row whose run (same seed) initialises this one (VOC stages)
    x: float | None = None  # position on a sweep figure
    extra: bool = False  # a sweep point the paper did not run (labelled so; the figure marks it from the paper curve)
    comparable: bool = True  # False when the reproduced split differs from the reported one
    # How many of the experiment's seeds (the first ones) this row runs; None: all. The demo gives each arm the
    # seeds its claims' power plan asks for, and a direction pairs the seeds both of its arms ran.
    num_seeds: int | None = None

    def seeds(self, seeds: Sequence[int]) -> tuple[int, ...]:
        return tuple(seeds if self.num_seeds is None else seeds[: self.num_seeds])


@dataclass(frozen=True)
class Experiment:
    name: str  # output stem: tables/<name>.md or figures/<name>.png (with _demo for the demo profile)
    title: str
    caption: str
    rows: tuple[Row, ...]
    seeds: tuple[int, ...] = (0,)
    metrics: tuple[str, ...] = ("pixAcc", "mIoU")
    directions: tuple = ()  # encnet.report.tables.Direction
    figure: dict | None = None  # xlabel, chosen, chosen_label, log2_x, paper_curve: the experiment is a figure
    sections: tuple = ()  # encnet.report.tables.Section: the paper's whole table, printed around our rows
    learned: object = None  # encnet.report.tables.Learned: the demo's learning criterion, shown under the table


# --------------------------------------------------------------------------------------------- experiments

# Seeds per demo arm: each row runs the first N of the experiment's seeds (``--seeds`` replaces the list, so a
# disjoint list reruns the same design), and a direction pairs the seeds its two arms share. N comes from the power
# plan on a pilot (seeds 10–13, the final design; README "Power"), cut to what the demo's time allows.
DEMO_SEEDS = tuple(range(10))
DEMO_ARM_SEEDS = {"FCN": 10, "EncNet": 10, "EncNet w/o SE-loss": 6, "EncNet R101": 6, "sweep extra": 2,
                  "codewords": 5}
# Demo: the scene-independent classes (ring, cross) every arm must learn before a direction gets a verdict.
DEMO_CONTROLS = ("IoU_ring", "IoU_cross")
# Demo claim 2 (Encoding Layer > global average pooling): scenes that only the colour distribution tells apart.
DEMO_MIXTURE = ("data.options.cue=mixture",)
# The demo's learning criterion, written before the final runs (issue 24): an arm has read the scene on a seed when
# the mean IoU of its scene-dependent classes (mIoU_scene) is at least 50, and the arms whose claims are about
# reading it must do so on at least 90 % of their seeds. (FCN cannot see the band: its mIoU_scene stays low by
# design. Without SE-loss, reading the scene is what claim 3 measures, so that arm is not required to.)
DEMO_LEARNED_METRIC, DEMO_LEARNED_AT, DEMO_LEARNED_SHARE = "mIoU_scene", 50.0, 0.9
SE_WEIGHTS = (0.0, 0.1, 0.2, 0.4, 0.8)
# Figure 5 (right): K = 0 is global average pooling in place of the Encoding Layer. The paper's own points are
# PAPER_NUM_CODES; EXTRA_NUM_CODES are the suite's additions, marked as such in the figure's data.
PAPER_NUM_CODES = (0, 16, 32)
EXTRA_NUM_CODES = (8, 64)
NUM_CODES = tuple(sorted(PAPER_NUM_CODES + EXTRA_NUM_CODES))
CHOSEN_SE_WEIGHT, CHOSEN_NUM_CODES = 0.2, 32


def _learned(*required: str):
    from encnet.report.tables import Learned

    return Learned(DEMO_LEARNED_METRIC, DEMO_LEARNED_AT, DEMO_LEARNED_SHARE, required, "reads the scene")


def _demo_notes(profile: str, *notes: str) -> str:
    if profile == "paper":
        return ""
    return (" Demo profile: a CPU-sized EncNet/FCN with the tiny ResNet on the generated context_scenes data "
            "(classes that only the scene tells apart; seed s trains and evaluates on its own draw of the data), so "
            "only the direction of a difference can be compared with the paper, not its size; Δ is left blank. "
            + " ".join(notes))


def experiments(profile: str) -> dict[str, Experiment]:
    """Every experiment of PAPER.md §5 / reported.csv, with its rows resolved for ``profile``."""
    from encnet.report.tables import Direction, Section

    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, found {profile!r}")
    demo = profile == "demo"
    # Which config file plays each role. The demo has one backbone and one dataset, so roles that differ only
    # in backbone or dataset in the paper share a demo config, and hence a run.
    fcn = "context_scenes_fcn.yaml" if demo else "pcontext_fcn_r50.yaml"
    enc50 = "context_scenes_encnet.yaml" if demo else "pcontext_encnet_r50.yaml"
    enc101 = "context_scenes_encnet.yaml" if demo else "pcontext_encnet_r101.yaml"
    deep = ("model.backbone=resnet_tiny_deep",) if demo else ()  # the demo's R101: a run of its own
    seeds = DEMO_SEEDS if demo else (0,)
    controls = DEMO_CONTROLS if demo else ()

    def arm(name: str) -> int | None:
        return DEMO_ARM_SEEDS[name] if demo else None
    same_backbone = ("'R101' rows train resnet_tiny_deep (resnet_tiny with stage 3 three blocks deep, as R101 "
                     "deepens R50's stage 3), not the R50 rows' resnet_tiny.")
    abl = "pcontext_ablation"
    learned_demo = _learned("EncNet", "EncNet R101")
    ablation = Experiment(
        "ablation", "PASCAL-Context ablation (paper Table 1, 59 classes w/o background)",
        "Single-scale evaluation except the last row (multi-scale + flip); mean ± std over seeds."
        + _demo_notes(profile, same_backbone,
                      "mIoU_scene: mean IoU of the 8 scene-dependent classes (the scene band is beyond the "
                      "reach of every network's convolutions, so only a global module can read it); "
                      "mIoU_small / mIoU_large: the same over the pixels within 2 px "
                      "of small (6–9 px) / large (14–18 px) objects; IoU_ring / IoU_cross: the scene-independent "
                      "control classes, which every arm must learn (IoU ≥ 50) before a direction gets a verdict. "
                      "'mIoU_small_minus_large' compares the SE-loss's gain on small objects with its gain on "
                      "large ones (paper §2: mostly small objects)."),
        (Row("FCN", fcn, reported=(abl, "FCN"), num_seeds=arm("FCN")),
         Row("EncNet w/o SE-loss", enc50, ("model.se_loss=false",), reported=(abl, "EncNet"),
             num_seeds=arm("EncNet w/o SE-loss")),
         Row("EncNet", enc50, reported=(abl, "EncNet+SE"), num_seeds=arm("EncNet")),
         Row("EncNet R101", enc101, deep, reported=(abl, "EncNet+SE R101"), num_seeds=arm("EncNet R101")),
         Row("EncNet R101 MS+flip", enc101, deep, eval="ms", reported=(abl, "EncNet+SE R101 MS"),
             num_seeds=arm("EncNet R101"))),
        seeds=seeds,
        metrics=(("pixAcc", "mIoU", "mIoU_scene", "mIoU_small", "mIoU_large", "IoU_ring", "IoU_cross") if demo
                 else ("pixAcc", "mIoU")),
        learned=learned_demo if demo else None,
        directions=(Direction("EncNet", "FCN", "mIoU", controls),
                    Direction("EncNet", "EncNet w/o SE-loss", "mIoU", controls),
                    *((Direction("EncNet", "EncNet w/o SE-loss", "mIoU_small", controls),
                       Direction("EncNet", "EncNet w/o SE-loss", "mIoU_large", controls),
                       Direction("EncNet", "EncNet w/o SE-loss", "mIoU_small_minus_large", controls)) if demo else ()),
                    Direction("EncNet R101", "EncNet", "mIoU", controls),
                    Direction("EncNet R101 MS+flip", "EncNet R101", "mIoU", controls),
                    Direction("EncNet", "FCN", "pixAcc", controls)),
    )
    # α = 0 is the model without the SE-loss head: the same run as the ablation's "w/o SE-loss" row.
    # α = 0 and 0.2 are the ablation's runs (and seeds); the other points get the seeds the demo's time leaves.
    se_rows = tuple(
        Row("α=0 (no SE-loss)", enc50, ("model.se_loss=false",), x=0.0, num_seeds=arm("EncNet w/o SE-loss"))
        if a == 0.0 else Row(f"α={a:g}", enc50, (f"train.se_weight={a:g}",), x=a,
                             num_seeds=arm("EncNet" if a == CHOSEN_SE_WEIGHT else "sweep extra"))
        for a in SE_WEIGHTS)
    se_weight = Experiment(
        "se_weight", "pixAcc and mIoU against the SE-loss weight α (PASCAL-Context, EncNet R50)",
        "Single-scale evaluation; the paper chose α = 0.2." + _demo_notes(profile), se_rows,
        seeds=seeds, directions=(Direction("α=0.2", "α=0 (no SE-loss)", "mIoU", controls),),
        figure={"xlabel": "SE-loss weight α", "chosen": CHOSEN_SE_WEIGHT, "chosen_label": "paper: α = 0.2",
                "log2_x": False, "paper_curve": "se_weight_curve"})
    mixture = DEMO_MIXTURE if demo else ()
    codewords = Experiment(
        "codewords", "pixAcc and mIoU against the number of codewords K (PASCAL-Context, EncNet R50, "
        + ("demo: with SE-loss)" if demo else "no SE-loss)"),
        "Single-scale evaluation, EncNet without SE-loss; K = 0 is global average pooling in place of the Encoding "
        "Layer. The paper's Figure 5 has K = 0, 16, 32 and chose K = 32; K = 8 and 64 are extra points of this "
        "suite. Without SE-loss is inferred: the paper does not say, but its K = 32 point equals Table 1's "
        "EncNet without SE-loss (78.1 / 47.6)." + _demo_notes(
            profile, "The demo sweep runs on context_scenes with cue=mixture: every scene's backdrop has the same "
                     "mean colour, and only which two colours it mixes tells the scene (claim 2: the Encoding "
                     "Layer against global average pooling). It trains with SE-loss, unlike the paper's sweep: "
                     "without it no arm read the mixture's scene reliably in the demo's 60 epochs (pilot, seeds "
                     "10–11: scene-class IoU 25–43 for K = 16 and 32, 13–14 for K = 0)."),
        # The demo runs the paper's K only: the extra points would cost 10 more runs for no claim.
        _codeword_rows(enc50, mixture, PAPER_NUM_CODES if demo else NUM_CODES, arm("codewords"), se_loss=demo),
        seeds=seeds,
        directions=tuple(Direction(f"K={k}", "K=0", "mIoU", controls) for k in PAPER_NUM_CODES if k),
        # The demo also plots mIoU_scene: whether each arm read the scene (the learning criterion, ≥ 50).
        metrics=("pixAcc", "mIoU", "mIoU_scene") if demo else ("pixAcc", "mIoU"),
        # Linear K axis: K = 0 has no place on a log axis.
        figure={"xlabel": "number of codewords K (0: global average pooling)", "chosen": float(CHOSEN_NUM_CODES),
                "chosen_label": "paper: K = 32", "log2_x": False,
                "paper_curve": "codewords_curve", "zero_label": "GAP"})
    pcontext = Experiment(
        "pcontext", "PASCAL-Context, 60 classes with background (paper Table 2)",
        "Multi-scale + flip evaluation." + _demo_notes(
            profile, "context_scenes always labels its background, so this is the ablation's EncNet R101 run "
                     "evaluated multi-scale + flip."),
        (Row("EncNet R101", enc101 if demo else "pcontext60_encnet_r101.yaml", deep, eval="ms",
             reported=("pcontext_sota", "EncNet")),),
        sections=(Section("pcontext_sota", "Table 2"),),
    )
    voc = _voc(profile, enc50)
    ade_fcn = fcn if demo else "ade20k_fcn_r50.yaml"
    ade50 = enc50 if demo else "ade20k_encnet_r50.yaml"
    ade101 = enc101 if demo else "ade20k_encnet_r101.yaml"
    ade20k = Experiment(
        "ade20k", "ADE20K validation (paper Table 4) and test final score (Table 5)",
        "Multi-scale + flip evaluation; final score = (pixAcc + mIoU) / 2 (Table 5's score is the test set's, "
        "from the ADE20K evaluation server; ours is computed on val)."
        + _demo_notes(profile, "The demo has one dataset, so these are the ablation's runs evaluated multi-scale "
                               "+ flip; " + same_backbone),
        (Row("FCN R50", ade_fcn, eval="ms", reported=("ade20k_val", "FCN R50")),
         Row("EncNet R50", ade50, eval="ms", reported=("ade20k_val", "EncNet R50")),
         Row("EncNet R101", ade101, deep, eval="ms", reported=("ade20k_val", "EncNet R101")),
         Row("EncNet R101 (test set)", None, reported=("ade20k_test", "EncNet R101"), not_run_reason="test server")),
        metrics=("pixAcc", "mIoU", "final_score"),
        directions=(Direction("EncNet R50", "FCN R50", "mIoU"),),
        sections=(Section("ade20k_val", "val (Table 4)"), Section("ade20k_test", "test (Table 5)")),
    )
    return {e.name: e for e in (ablation, se_weight, codewords, pcontext, voc, ade20k)}


def _codeword_rows(config: str, data: tuple[str, ...] = (), codes: tuple[int, ...] = NUM_CODES,
                   num_seeds: int | None = None, se_loss: bool = False) -> tuple[Row, ...]:
    """Figure 5 (right) as the paper ran it, plus the suite's extra K values.

    Every point is without SE-loss. The paper does not say so; it is inferred from its K = 32 point, which
    equals Table 1's "EncNet w/o SE-loss" row (78.1 pixAcc / 47.6 mIoU), not the EncNet row (79.4 / 49.2). So
    K = 32 here is the ablation's "w/o SE-loss" run (in the demo, ``data`` moves the sweep to its own data, and
    ``se_loss`` keeps the SE-loss, without which no demo arm learned that data's scene).
    """
    rows = []
    for k in codes:
        overrides = (*data, f"model.se_loss={str(se_loss).lower()}", f"model.num_codes={k}")
        if k in PAPER_NUM_CODES:
            rows.append(Row(f"K={k}", config, overrides, x=float(k), reported=("codewords_curve", f"K={k}"),
                            num_seeds=num_seeds))
        else:
            rows.append(Row(f"K={k} (extra)", config, overrides, x=float(k), extra=True, num_seeds=num_seeds))
    return tuple(rows)


def _voc(profile: str, enc50: str) -> Experiment:
    """VOC 2012: train_aug → trainval, and COCO → train_aug → trainval (PAPER.md §5), each stage from the last."""
    from encnet.report.tables import Section

    demo = profile == "demo"
    coco = "context_scenes_pretrain_encnet.yaml" if demo else "voc_coco_encnet_r101.yaml"
    aug = enc50 if demo else "voc_aug_encnet_r101.yaml"
    # Demo stage 3: a short fine-tune at a tenth of the learning rate, as the paper's trainval stage (no warm-up:
    # it starts from trained weights).
    demo_tv = ("train.base_lr=0.04", "train.epochs=2", "train.warmup_epochs=0")
    trainval, tv = (enc50, demo_tv) if demo else ("voc_trainval_encnet_r101.yaml", ())
    server = "test server (stage trained: submit its checkpoint)"
    rows = (
        Row("train_aug (val)", aug, eval="ms"),
        Row("train_aug → trainval (test)", trainval, tv, init_from="train_aug (val)",
            reported=("voc_test", "EncNet"), not_run_reason=server),
        Row("COCO pre-training (COCO val)", coco),
        Row("COCO → train_aug (val)", aug, init_from="COCO pre-training (COCO val)", eval="ms"),
        Row("COCO → train_aug → trainval (test)", trainval, tv, init_from="COCO → train_aug (val)",
            reported=("voc_test_coco", "EncNet (COCO pre-trained)"), not_run_reason=server),
    )
    return Experiment(
        "voc", "PASCAL VOC 2012 without and with COCO pre-training (paper Table 3, EncNet R101)",
        "Each stage starts from the previous stage's weights (model.init_from). The paper's numbers are test-set "
        "IoU from the evaluation server; our rows show the train_aug stage on val (multi-scale + flip), since the "
        "trainval stage trains on val; their per-class IoU comes from the run's own confusion matrix." + _demo_notes(
            profile, "The 'COCO' stage trains on other generated images (data seed 1000 + s); the 'trainval' stage "
                     "fine-tunes on the demo train split (the demo has no train+val split); the no-COCO "
                     "train_aug stage is the ablation's EncNet run."),
        rows, metrics=("mIoU",),
        sections=(Section("voc_test", "without COCO"), Section("voc_test_coco", "with COCO")))


# ------------------------------------------------------------------------------------------------ planning


@dataclass
class PlannedRun:
    config: object  # encnet.engine.config.Config
    run_dir: Path
    config_file: Path
    overrides: list[str]
    seed: int
    rows: list[str] = field(default_factory=list)
    evals: list[str] = field(default_factory=list)  # "ss" and/or "ms"

    @property
    def finished(self) -> bool:
        return (self.run_dir / "DONE").is_file()


def _config_path(profile: str, name: str, config_root: Path) -> Path:
    path = config_root / profile / name
    if not path.is_file():
        raise FileNotFoundError(f"experiment config {path} not found; the {profile} profile expects it under "
                                f"{config_root / profile} (run from a full checkout of the repository)")
    return path


def plan(experiment: Experiment, profile: str, seeds: Sequence[int], runs_root: str | Path,
         data_root: str | None = None, extra: Sequence[str] = (), config_root: Path = CONFIG_ROOT,
         follow: str | None = None) -> tuple[list[PlannedRun], dict[tuple[str, int], PlannedRun]]:
    """Resolve every (row, seed) to its run; rows with the same resolved config share one ``PlannedRun``.

    ``follow`` ("paper" or "release") puts every run on that side of each ledger entry that applies to it
    (``encnet.experiments.discrepancies.follow_overrides``); a row's own overrides and ``extra`` keep their values.
    ``None`` keeps each config as it is, i.e. on the side each entry's ``suite_follows`` names.
    Returns the unique runs in dependency order and the (row label, seed) → run mapping.
    """
    from encnet.engine.config import load_config
    from encnet.engine.runs import run_dir_for

    ledger = None
    if follow is not None:
        from encnet.experiments.discrepancies import follow_overrides, load_ledger

        ledger = load_ledger()

    by_dir: dict[Path, PlannedRun] = {}
    by_row: dict[tuple[str, int], PlannedRun] = {}
    for seed in seeds:
        for row in experiment.rows:
            if row.config is None or seed not in row.seeds(seeds):
                continue
            path = _config_path(profile, row.config, config_root)
            overrides = [*row.overrides, f"seed={seed}", *extra]
            if ledger is not None:
                overrides += [o for choice in follow_overrides(ledger, follow, path, overrides, config_root)
                              for o in choice.overrides]
            if data_root:
                overrides.append(f"data.root={data_root}")  # not part of the run id: a moved dataset keeps its runs
            if row.init_from:
                source = by_row.get((row.init_from, seed))
                if source is None:
                    raise ValueError(f"row {row.label!r} starts from {row.init_from!r}, which must come earlier "
                                     f"in experiment {experiment.name!r}")
                overrides.append(f"model.init_from={source.run_dir}")
            config = load_config(path, overrides)
            if profile == "demo" and "seed" in config.data.options:
                # The unit of replication is (data draw, initialisation): seed s trains and evaluates on its own
                # draw of the generator (the config's data seed + s), so paired arms share data and the
                # verdicts speak for the generator, not for one draw of it.
                overrides.append(f"data.options.seed={int(config.data.options['seed']) + seed}")
                config = load_config(path, overrides)
            run_dir = run_dir_for(config, runs_root)
            planned = by_dir.setdefault(run_dir, PlannedRun(config, run_dir, path, overrides, seed))
            planned.rows.append(row.label)
            if row.eval not in planned.evals:
                planned.evals.append(row.eval)
            by_row[(row.label, seed)] = planned
    return list(by_dir.values()), by_row


def describe(run: PlannedRun) -> str:
    """One dry-run line: status, folder, the rows it serves, its key settings and evaluations."""
    config = run.config
    settings = []
    for section, key in KEY_SETTINGS:
        value = getattr(getattr(config, section), key, None)
        if key == "init_from" and not value:
            continue
        settings.append(f"{key}={value}")
    if "ms" in run.evals:
        settings.append(f"ms_scales={list(config.eval.scales)} flip={config.eval.flip}")
    status = "done" if run.finished else ("partial" if (run.run_dir / "checkpoint_last.pt").is_file() else "to run")
    config_file = run.config_file.relative_to(REPO) if run.config_file.is_relative_to(REPO) else run.config_file
    return (f"[{status}] {run.run_dir}  (rows: {', '.join(run.rows)}; seed {run.seed}; eval {'+'.join(run.evals)})\n"
            f"    {config_file} {' '.join(run.overrides)}\n    " + " ".join(settings))


def ledger_summary(follow: str | None) -> str:
    """The dry run's ledger block: for every entry with a switch, the side the runs are put on and its value."""
    from encnet.experiments.discrepancies import FOLLOWED_KINDS, format_value, load_ledger

    lines = [f"ledger sides ({'--follow ' + follow if follow else 'default: each entry as the ledger says'}; "
             "configs/discrepancies.yaml):"]
    for e in load_ledger():
        if e.switch is None:
            continue
        if e.suite_follows in ("both", "n/a"):
            side = f"{e.suite_follows} (one config per side)"
        elif follow is None or e.kind not in FOLLOWED_KINDS:
            side = e.suite_follows + ("" if follow is None else f" ({e.kind}: kept)")
        else:
            side = follow
        shown = e.side(side).value if side in ("paper", "release") else None
        value = "" if shown is None else f" = {format_value(shown)}"
        lines.append(f"  {e.id:<22} {e.switch:<20} {side}{value}")
    return "\n".join(lines)


def ledger_line(run: PlannedRun) -> str:
    """Which side of each ledger entry one planned run is on (its own values decide)."""
    from encnet.experiments.discrepancies import entry_sides, load_ledger

    sides = entry_sides(load_ledger(), run.config)
    return "    ledger: " + ", ".join(f"{entry} {side}" for entry, side in sides)


# ------------------------------------------------------------------------------------------------- running


def _ms_settings(config) -> tuple[list[float], bool, str]:
    from encnet.engine.evaluate import eval_tag

    scales, flip = list(config.eval.scales), bool(config.eval.flip)
    return scales, flip, eval_tag(scales, flip, config.data.val_split, config) or "ss"


def eval_tag_for(row: Row, run: PlannedRun) -> str:
    return "ss" if row.eval == "ss" else _ms_settings(run.config)[2]


def _torchrun(gpus: int, module: str, args: Sequence[str]) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
               "-m", module, *args]
    print("$ " + shlex.join(command), flush=True)
    done = subprocess.run(command)
    if done.returncode != 0:
        raise RuntimeError(f"`{shlex.join(command)}` exited with {done.returncode}; see its output above. "
                           f"Rerunning the same reproduce command resumes from the last checkpoint.")


def _ms_overrides(config) -> list[str]:
    """The planned multi-scale protocol as eval overrides (the protocol is not part of the run id)."""
    e = config.eval
    return [f"eval.scales={list(e.scales)}", f"eval.flip={str(bool(e.flip)).lower()}",
            f"eval.crop_size={'null' if e.crop_size is None else e.crop_size}",
            f"eval.base_size={'null' if e.base_size is None else e.base_size}", f"eval.stride_ratio={e.stride_ratio}",
            f"eval.accumulate={e.accumulate}", f"eval.align_corners={str(bool(e.align_corners)).lower()}"]


def _has_ms_eval(run: PlannedRun) -> bool:
    """The run has a multi-scale evaluation made with exactly the planned protocol."""
    from encnet.engine.runs import read_json

    scales, flip, tag = _ms_settings(run.config)
    path = run.run_dir / f"eval_{tag}.json"
    if not path.is_file():
        return False
    done = read_json(path).get("settings", {})
    e, d = run.config.eval, run.config.data
    want = {"scales": list(scales), "flip": flip, "crop_size": e.crop_size or d.crop_size,
            "base_size": e.base_size or d.base_size, "stride_ratio": e.stride_ratio,
            "accumulate": e.accumulate, "align_corners": e.align_corners}
    return all(done.get(k) == v for k, v in want.items())


def _train_in_subprocesses(runs: Sequence[PlannedRun], jobs: int, runs_root: str | Path, bar) -> None:
    """Train independent runs ``jobs`` at a time, one single-process ``encnet.train`` each.

    On a CPU machine a tiny demo run cannot use more than one core well, so training two runs side by side
    nearly halves the wall time. A run that starts from another (``model.init_from``) waits for it. Each run's
    output goes to ``<run_dir>/train.log``.
    """
    from encnet.engine.runlock import describe_holder, live_holder

    pending = [r for r in runs if not r.finished]
    sources = {r.run_dir: Path(r.config.model.init_from) if r.config.model.init_from else None for r in pending}
    waiting_on = {r.run_dir for r in pending}
    running: list[tuple[PlannedRun, subprocess.Popen, object]] = []
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // jobs)), ENCNET_NO_PROGRESS="1")
    failed: list[str] = []
    announced: set[Path] = set()
    while pending or running:
        for run, proc, log in list(running):
            if proc.poll() is None:
                continue
            log.close()
            running.remove((run, proc, log))
            waiting_on.discard(run.run_dir)
            bar.update()
            if proc.returncode != 0:
                tail = (run.run_dir / "train.log").read_text().splitlines()[-15:]
                failed.append(f"{run.run_dir} (exit {proc.returncode}):\n    " + "\n    ".join(tail))
        ready = [r for r in pending if sources[r.run_dir] not in waiting_on]
        for run in [r for r in ready if r.finished]:  # trained by another process meanwhile
            print(f"{run.run_dir} was finished by another process; reusing its result", flush=True)
            ready.remove(run)
            pending.remove(run)
            waiting_on.discard(run.run_dir)
            bar.update()
        for run in [r for r in ready if live_holder(r.run_dir)]:
            # Another script or job is training this run: skip it for now, reuse its result when it finishes.
            ready.remove(run)
            if run.run_dir not in announced:
                announced.add(run.run_dir)
                print(f"{run.run_dir} is being trained by {describe_holder(live_holder(run.run_dir) or {})}; "
                      f"skipping it for now and reusing its result when it finishes", flush=True)
        while ready and len(running) < jobs and not failed:
            run = ready.pop(0)
            pending.remove(run)
            run.run_dir.mkdir(parents=True, exist_ok=True)
            log = open(run.run_dir / "train.log", "a")
            command = [sys.executable, "-m", "encnet.train", str(run.config_file), *run.overrides, "--resume",
                       "--run-dir", str(run.run_dir)]
            running.append((run, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        if failed and not running:
            raise RuntimeError("training failed; rerunning the same command resumes what stopped:\n  "
                               + "\n  ".join(failed))
        if not ready and pending and not running and not announced & {r.run_dir for r in pending}:
            raise RuntimeError(f"runs wait for a stage that is not planned: {[str(r.run_dir) for r in pending]}")
        time.sleep(0.5)


def execute(runs: Sequence[PlannedRun], gpus: int, runs_root: str | Path, progress: bool = True,
            jobs: int = 1, evaluate_ms: bool = True) -> None:
    """Train what is unfinished (resuming from a checkpoint), then add the missing multi-scale evaluations
    (unless ``evaluate_ms`` is False).

    ``jobs`` > 1 (single-process runs only) trains that many runs side by side in subprocesses.
    """
    from tqdm import tqdm

    todo = [r for r in runs if not r.finished]
    if jobs > 1 and gpus == 1 and len(todo) > 1:
        with tqdm(total=len(todo), desc=f"runs ({jobs} at a time)", unit="run", disable=not progress) as bar:
            _train_in_subprocesses(todo, jobs, runs_root, bar)
    for run in tqdm(runs, desc="runs", unit="run", disable=not progress):
        if not run.finished:
            if gpus > 1:
                _torchrun(gpus, "encnet.train", [str(run.config_file), *run.overrides, "--resume",
                                                 "--run-dir", str(run.run_dir)])
            else:
                from encnet.engine.train import train

                train(run.config, run_dir=run.run_dir, resume=True)
        if evaluate_ms and "ms" in run.evals and not _has_ms_eval(run):
            scales, flip, _ = _ms_settings(run.config)
            if gpus > 1:
                _torchrun(gpus, "encnet.evaluate", [str(run.run_dir), "--ms"])
            else:
                from encnet.engine.evaluate import evaluate

                evaluate(run.run_dir, scales=scales, flip=flip, eval_overrides=_ms_overrides(run.config))


# ------------------------------------------------------------------------------------------------- outputs


def result_refs(experiment: Experiment, by_row: dict[tuple[str, int], PlannedRun],
                seeds: Sequence[int]) -> list[tuple[str, Path, str]]:
    """(row label, run folder, eval tag) for every row and seed whose number is shown."""
    return [(row.label, by_row[(row.label, seed)].run_dir, eval_tag_for(row, by_row[(row.label, seed)]))
            for row in experiment.rows if row.config is not None and row.not_run_reason is None
            for seed in row.seeds(seeds)]


def write_outputs(experiment: Experiment, profile: str, refs: Sequence[tuple[str, str | Path, str]],
                  runs_root: str | Path, out_dir: str | Path, reported_csv: str | Path | None = None) -> list[Path]:
    """Tables or figures from run folders and reported.csv only (no training code runs here)."""
    from encnet.report import figures, runlogs, tables
    from encnet.report.reported import REPORTED_CSV, load_reported

    results = runlogs.collect_results(refs, runs_root)
    reported = load_reported(reported_csv or REPORTED_CSV)
    if experiment.figure is not None:
        spec = dict(experiment.figure)
        curve = spec.pop("paper_curve", None)
        paper = figures.paper_points(reported, curve, experiment.metrics) if curve else None
        points = figures.sweep_points(results, {r.label: r.x for r in experiment.rows}, experiment.metrics, profile)
        checks = None
        if experiment.directions:
            at_x = {r.label: r.x for r in experiment.rows}
            checks = tables.direction_checks(figures.paper_at_rows(paper, at_x), experiment.directions, results)
        paths = figures.plot_sweep(points, experiment.name, experiment.title, profile=profile, out_dir=out_dir,
                                   paper=paper, checks=checks, **spec)
        if checks is not None:
            paths.append(tables.write_directions(checks, tables.output_name(experiment.name, profile), out_dir))
        return paths
    rows = [tables.TableRow(r.label, *(r.reported or (None, None)), not_run_reason=r.not_run_reason,
                            comparable=r.comparable) for r in experiment.rows]
    metrics = (tables.whole_metrics(reported, experiment.sections, experiment.metrics) if experiment.sections
               else list(experiment.metrics))
    comparison = tables.compare(rows, metrics, reported, results, profile)
    table = (tables.whole_table(comparison, rows, reported, experiment.sections, metrics, experiment.metrics,
                                profile) if experiment.sections else None)
    best = tables.best_validation_note(runlogs.collect_best_validation(refs, runs_root),
                                       [r.label for r in experiment.rows])
    learned = (tables.learning_note(results, [r.label for r in experiment.rows], experiment.learned)
               if experiment.learned is not None else None)
    return tables.write_table(comparison, experiment.name, experiment.title, experiment.caption.strip(), profile,
                              out_dir, experiment.directions, notes=[n for n in (learned, best) if n], table=table,
                              results=results)


# --------------------------------------------------------------------------------------------------- CLI


def parse_args(name: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python reproduce/{_SCRIPTS.get(name, name)}.py",
        description=f"Reproduce '{name}': train the missing runs, then rebuild its outputs from the run logs.")
    parser.add_argument("--profile", choices=PROFILES, default="demo",
                        help="demo: CPU-sized runs on generated data (default); paper: the paper's protocol")
    parser.add_argument("--data-root", help="dataset root (paper profile; the demo generates its data into a cache)")
    parser.add_argument("--gpus", type=int, default=1,
                        help="processes per run: 1 trains in this process, N>1 launches torchrun --nproc_per_node N")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the experiment's own)")
    parser.add_argument("--dry-run", action="store_true", help="print every run with its key settings; run nothing")
    parser.add_argument("--from-logs", action="store_true", help="rebuild the outputs from existing runs only")
    parser.add_argument("--runs-root", default="runs", help="root of the run folders (default: runs)")
    parser.add_argument("--out-dir", default=str(REPO), help="where tables/ and figures/ go (default: repo root)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many single-process runs side by side (CPU demo: one per core)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="extra config overrides for every run (they change the run ids), e.g. train.epochs=1 "
                             "train.warmup_epochs=0")
    parser.add_argument("--follow", choices=("paper", "release"), default=None,
                        help="put every run on this side of every ledger entry (configs/discrepancies.yaml) that "
                             "applies to it; release = v0.5.0, the recipe behind the model-zoo weights. Default: "
                             "each entry's own side (suite_follows). --dry-run lists each entry's side")
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error(f"--gpus must be at least 1, found {args.gpus}")
    if args.dry_run and args.from_logs:
        parser.error("--dry-run and --from-logs exclude each other")
    return args


_SCRIPTS = {"ablation": "table_ablation", "se_weight": "figure_se_weight", "codewords": "figure_codewords",
            "pcontext": "table_pcontext", "voc": "table_voc", "ade20k": "table_ade20k",
            "discrepancies": "table_discrepancies", "train_all": "train_all"}


def report_user_error(err: BaseException, args: argparse.Namespace) -> int:
    """Print a fixable error (missing dataset, bad config, failed run) without a traceback; exit status 2."""
    print(f"error: {err}", file=sys.stderr)
    if args.profile == "paper" and not args.data_root and isinstance(err, FileNotFoundError):
        print("hint: the paper profile reads the real datasets: pass --data-root DIR (see README, 'Preparing the "
              "real datasets')", file=sys.stderr)
    return 2


def guarded(args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Run a script's body; fixable errors (and a failed training run) print in one block, exit status 2."""
    from encnet.engine.train import user_errors

    try:
        return body()
    except (*user_errors(), RuntimeError) as err:  # RuntimeError: a training subprocess failed (log tail inside)
        return report_user_error(err, args)


def run_experiment(experiment: Experiment, args: argparse.Namespace, label: str,
                   write: Callable[[dict, tuple[int, ...]], list[Path]],
                   describe_run: Callable[[PlannedRun], str] = describe) -> int:
    """Plan the runs, then either list them (``--dry-run``) or train what is missing and write the outputs.

    ``write(by_row, seeds)`` builds the outputs from the run logs; every reproduce script shares the rest.
    """
    seeds = tuple(args.seeds) if args.seeds else experiment.seeds
    follow = getattr(args, "follow", None)
    runs, by_row = plan(experiment, args.profile, seeds, args.runs_root, args.data_root, args.set, follow=follow)
    if args.dry_run:
        print(f"{experiment.title} — profile {args.profile}, seeds {list(seeds)}: {len(runs)} run(s), "
              f"{sum(not r.finished for r in runs)} to run")
        print(ledger_summary(follow))
        for run in runs:
            print(describe_run(run))
            print(ledger_line(run))
        return 0
    start = time.perf_counter()
    if not args.from_logs:
        execute(runs, args.gpus, args.runs_root, progress=os.environ.get("ENCNET_NO_PROGRESS", "") in ("", "0"),
                jobs=args.jobs)
    for path in write(by_row, seeds):
        print(f"wrote {path}")
    print(f"{label} ({args.profile}): {len(runs)} run(s), {time.perf_counter() - start:.1f} s")
    return 0


def main(name: str, argv: Sequence[str] | None = None) -> int:
    """The whole command of one ``reproduce/<script>.py``."""
    args = parse_args(name, argv)
    experiment = experiments(args.profile)[name]

    def write(by_row, seeds):
        return write_outputs(experiment, args.profile, result_refs(experiment, by_row, seeds), args.runs_root,
                             args.out_dir)

    return guarded(args, lambda: run_experiment(experiment, args, name, write))
