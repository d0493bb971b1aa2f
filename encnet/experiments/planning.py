"""Resolve an experiment's (row, seed) pairs to runs, and describe them (``--dry-run``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from encnet.experiments.experiment import CONFIG_ROOT, REPO, Experiment

# The knobs the paper fixes, printed by --dry-run for every run (one name per knob, as in the configs).
KEY_SETTINGS = (("data", "dataset"), ("data", "num_classes"), ("model", "name"), ("model", "backbone"),
                ("data", "crop_size"), ("data", "base_size"), ("train", "batch_size"), ("model", "num_codes"),
                ("train", "se_weight"), ("model", "se_loss"), ("train", "aux_weight"), ("model", "aux"),
                ("model", "aux_head"), ("train", "base_lr"), ("train", "epochs"), ("data", "train_split"),
                ("data", "scale_side"), ("data", "blur_prob"), ("data", "rotate_degrees"), ("data", "pad_label"),
                ("eval", "miou"), ("model", "init_from"))


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
