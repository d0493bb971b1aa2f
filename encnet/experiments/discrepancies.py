"""The paper-vs-release ledger (``configs/discrepancies.yaml``): loading, run planning, and the effect table.

The ledger is data: one entry per known difference between the CVPR 2018 paper and the authors' released code,
with both sides' choice, where each is stated, and the config switch (a dotted key) that selects it. This module

- ``load_ledger`` reads and checks it (unknown fields, kinds, sides and switches are errors naming the entry);
- ``measurements`` turns it into what measures each entry: one base config with the paper's and with the
  release's value of the switch. Sides whose resolved configs coincide (the side of most entries that the
  suite's defaults already follow *is* the base config) are the same run folder and train once;
- ``effects`` is pure: per entry and metric, mean ± std over seeds of each side, Δ = release − paper, the
  seed-to-seed spread, and whether |Δ| exceeds it.

``follow_overrides`` is ``--follow paper|release``: the overrides that put one config on one side of every entry
that applies to it, and ``entry_sides`` reads back which side a resolved config is on (the dry runs print both).

Nothing here trains: ``encnet.experiments.discrepancies_table`` (``reproduce/table_discrepancies.py``) launches the
planned runs and writes the table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

from encnet.engine.config import Config, ConfigError, SafeLoader, load_config

__all__ = [
    "EFFECT_COLUMNS",
    "KINDS",
    "LEDGER_PATH",
    "SIDES",
    "Discrepancy",
    "Ledger",
    "Measurement",
    "Side",
    "FOLLOWED_KINDS",
    "effects",
    "entry_sides",
    "follow_overrides",
    "format_value",
    "ledger_table",
    "load_ledger",
    "measurements",
    "side_value",
    "switch_override",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
LEDGER_PATH = REPO_ROOT / "configs" / "discrepancies.yaml"
SIDES = ("paper", "release")
KINDS = ("paper-vs-release", "release-internal", "reporting", "convention", "results")
SUITE_FOLLOWS = ("paper", "release", "both", "n/a")
EFFECT_COLUMNS = ["row", "entry", "metric", "paper_mean", "paper_std", "release_mean", "release_std", "n_paper",
                  "n_release", "delta", "spread", "exceeds"]

_ENTRY_FIELDS = {"id", "what", "kind", "switch", "paper", "release", "suite_follows", "no_effect", "not_in_demo",
                 "paper_configs", "paper_note", "demo_scale_from", "explained_by", "note", "demo_base",
                 "applies_to"}
# --follow chooses a side of these kinds only. A release-internal entry's paper side is what the reported numbers
# (and release v0.5.0's training script) used, so both --follow paper and --follow release keep it there.
FOLLOWED_KINDS = ("paper-vs-release", "reporting")
_SIDE_FIELDS = {"choice", "source", "value", "paper_extra", "reported"}


@dataclass(frozen=True)
class Side:
    """One side of a difference: what it chooses, where that is stated, and the switch's value for it."""

    choice: str
    source: str
    value: Any = None  # a scalar, or {dataset: value} where the choice depends on the dataset
    paper_extra: tuple[str, ...] = ()  # further overrides this side needs in the paper profile
    reported: tuple[tuple, ...] = ()  # (experiment, row, metric, value) rows of reported.csv this side quotes


@dataclass(frozen=True)
class Discrepancy:
    id: str
    what: str
    kind: str
    switch: str | None
    paper: Side
    release: Side
    suite_follows: str
    no_effect: str | None = None
    not_in_demo: str | None = None
    paper_configs: tuple[str, ...] = ()
    paper_note: str | None = None
    demo_scale_from: str | None = None
    explained_by: tuple[str, ...] = ()
    note: str | None = None
    demo_base: str | None = None  # the demo config this entry starts from, when not profiles.demo.base
    applies_to: tuple[str, ...] = ()  # config names (configs/<profile>/<name>.yaml) --follow sets it on; () all

    def side(self, name: str) -> Side:
        if name not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, found {name!r}")
        return self.paper if name == "paper" else self.release

    @property
    def measurable(self) -> bool:
        """Whether the entry has a switch that can be run both ways."""
        return self.switch is not None


@dataclass(frozen=True)
class Ledger:
    entries: tuple[Discrepancy, ...]
    profiles: dict = field(default_factory=dict)  # demo: {base, seeds, overrides}; paper: {seeds}

    def __iter__(self):
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, entry_id: str) -> Discrepancy:
        for entry in self.entries:
            if entry.id == entry_id:
                return entry
        raise KeyError(f"no ledger entry {entry_id!r}; known: {', '.join(e.id for e in self.entries)}")


# ------------------------------------------------------------------------------------------------ loading


def _check_fields(found: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(found) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known fields: {', '.join(sorted(allowed))}")


def _switch_is_known(switch: str) -> bool:
    import dataclasses
    import typing

    cls: Any = Config
    for part in switch.split("."):
        if not dataclasses.is_dataclass(cls):
            return False
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return False
        cls = hints[part]
    return not dataclasses.is_dataclass(cls)


def _side(data: Any, where: str) -> Side:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping with choice, source and value, found {data!r}")
    _check_fields(data, _SIDE_FIELDS, where)
    for key in ("choice", "source"):
        if not data.get(key):
            raise ValueError(f"{where}: '{key}' is required (what the side chooses and where it is stated)")
    return Side(data["choice"], data["source"], data.get("value"), tuple(data.get("paper_extra") or ()),
                tuple(tuple(r) for r in data.get("reported") or ()))


def _entry(data: dict, where: str) -> Discrepancy:
    _check_fields(data, _ENTRY_FIELDS, where)
    for key in ("id", "what", "kind", "paper", "release", "suite_follows"):
        if key not in data:
            raise ValueError(f"{where}: '{key}' is required")
    where = f"{where} ({data['id']})"
    if data["kind"] not in KINDS:
        raise ValueError(f"{where}: kind must be one of {KINDS}, found {data['kind']!r}")
    if data["suite_follows"] not in SUITE_FOLLOWS:
        raise ValueError(f"{where}: suite_follows must be one of {SUITE_FOLLOWS}, found {data['suite_follows']!r}")
    switch = data.get("switch")
    if switch is not None and not _switch_is_known(switch):
        raise ValueError(f"{where}: switch {switch!r} is not a config key (see encnet/engine/config.py)")
    if switch is None and not (data.get("no_effect") or data.get("note")):
        raise ValueError(f"{where}: an entry without a switch must say why in 'no_effect' or 'note'")
    return Discrepancy(
        id=data["id"], what=data["what"], kind=data["kind"], switch=switch,
        paper=_side(data["paper"], f"{where}.paper"), release=_side(data["release"], f"{where}.release"),
        suite_follows=data["suite_follows"], no_effect=data.get("no_effect"), not_in_demo=data.get("not_in_demo"),
        paper_configs=tuple(data.get("paper_configs") or ()), paper_note=data.get("paper_note"),
        demo_scale_from=data.get("demo_scale_from"), explained_by=tuple(data.get("explained_by") or ()),
        note=data.get("note"), demo_base=data.get("demo_base"),
        applies_to=tuple(data.get("applies_to") or ()),
    )


def load_ledger(path: str | Path = LEDGER_PATH) -> Ledger:
    """Read and check the ledger; every error names the entry and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the discrepancy ledger is missing: expected {path} (it is part of the repository)")
    data = yaml.load(path.read_text(), Loader=SafeLoader) or {}
    entries = tuple(_entry(e, f"{path}: entry {i}") for i, e in enumerate(data.get("entries") or []))
    ids = [e.id for e in entries]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"{path}: duplicated entry id(s) {duplicated}")
    for entry in entries:
        unknown = [i for i in entry.explained_by if i not in ids]
        if unknown:
            raise ValueError(f"{path}: entry {entry.id} is explained_by unknown id(s) {unknown}")
    return Ledger(entries, data.get("profiles") or {})


# ----------------------------------------------------------------------------------------------- planning


def _get_dotted(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def side_value(entry: Discrepancy, side: str, base: Config) -> Any:
    """The switch's value for ``side`` when the run starts from ``base``.

    A dataset-dependent value takes the base config's dataset. For a dataset the ledger does not list (the
    demo's generated data) an entry with ``demo_scale_from`` keeps that dataset's paper/release ratio: the
    release side is the base config's own value, the paper side that value times paper/release.
    """
    value = entry.side(side).value
    if not isinstance(value, dict):
        return value
    dataset = base.data.dataset
    if dataset in value:
        return value[dataset]
    source = entry.demo_scale_from
    if source is None:
        raise ValueError(f"ledger entry {entry.id}: no {side} value for dataset {dataset!r} (values for "
                         f"{sorted(value)}) and no demo_scale_from to scale one")
    own = _get_dotted(base, entry.switch)
    if side == "release":
        return own
    ratio = entry.paper.value[source] / entry.release.value[source]
    scaled = own * ratio
    return max(1, round(scaled)) if isinstance(own, int) else scaled


def switch_override(entry: Discrepancy, side: str, base: Config) -> str:
    """``key=value`` selecting ``side`` of ``entry`` on ``base``, as ``load_config`` overrides spell it."""
    value = side_value(entry, side, base)
    # YAML spelling, because load_config parses override values as YAML.
    return f"{entry.switch}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


@dataclass(frozen=True)
class Measurement:
    """One side of one entry on one base config: what a run adds to the base to select that side."""

    row: str  # the table row: the entry id, plus the base config's name when an entry has several
    entry: str
    side: str
    value: Any  # the switch's value on this side
    base: Path  # configs/<profile>/<name>.yaml
    overrides: tuple[str, ...]

    def config(self, seed: int, extra: Sequence[str] = ()) -> Config:
        """The resolved config of this side for ``seed`` (what the run trains and what names its folder)."""
        try:
            return load_config(self.base, [*self.overrides, f"seed={seed}", *extra])
        except ConfigError as err:
            raise ConfigError(f"ledger entry {self.entry}, {self.side} side: {err}") from None


def measurements(ledger: Ledger, profile: str, configs_dir: str | Path | None = None) -> list[Measurement]:
    """Both sides of every entry that ``profile`` measures, in ledger order.

    Demo: every entry with a switch and without ``not_in_demo`` starts from its ``demo_base`` (default
    ``profiles.demo.base``) plus ``profiles.demo.overrides``. Paper: each entry starts from each of its
    ``paper_configs`` and adds its sides' ``paper_extra``. Sides whose resolved configs coincide are one run
    folder (``encnet.engine.runs.run_dir_for``): the side the suite's defaults follow is the plain base config, shared
    by all entries (with that base) and other tables.
    """
    if profile not in ("demo", "paper"):
        raise ValueError(f"profile must be 'demo' or 'paper', found {profile!r}")
    configs_dir = Path(configs_dir) if configs_dir is not None else REPO_ROOT / "configs"
    settings = ledger.profiles.get(profile, {})
    common = list(settings.get("overrides") or [])
    out = []
    for entry in ledger:
        if not entry.measurable or (profile == "demo" and entry.not_in_demo) or evaluation_only(entry):
            continue
        if entry.switch.startswith("eval."):
            # The evaluation protocol is not in the run id, so both sides would be one run, and the table
            # compares single-scale evaluations: such an entry is tested, not measured here.
            continue
        if profile == "demo":
            if "base" not in settings:
                raise ValueError("the ledger's profiles.demo.base is missing (the demo config every entry starts from)")
            names = [entry.demo_base or settings["base"]]
        else:
            names = list(entry.paper_configs)
            if not names:
                raise ValueError(f"ledger entry {entry.id} has a switch but no paper_configs to run it on")
        for name in names:
            base_path = configs_dir / profile / f"{name}.yaml"
            base = load_config(base_path, common)
            row = entry.id if len(names) == 1 else f"{entry.id}/{name}"
            for side in SIDES:
                overrides = [*common, switch_override(entry, side, base)]
                if profile == "paper":
                    overrides += list(entry.side(side).paper_extra)
                out.append(Measurement(row, entry.id, side, side_value(entry, side, base), base_path, tuple(overrides)))
    return out


def evaluation_only(entry: Discrepancy) -> bool:
    """The switch is an evaluation setting: not part of the run id, so both sides would be one trained run."""
    return entry.switch is not None and entry.switch.startswith("eval.")


# ----------------------------------------------------------------------------------------------- --follow


def _entry_task(entry: Discrepancy, configs_dir: Path) -> str:
    """The task of the entry's paper configs: an entry never applies to the other task's configs."""
    for name in entry.paper_configs:
        path = configs_dir / "paper" / f"{name}.yaml"
        if path.is_file():
            return load_config(path).task
    return "segmentation"


def _resolved(entry: Discrepancy, side: str, config: Config) -> tuple[bool, Any]:
    """(applies, value): ``side``'s value for ``config``'s dataset; a mapping without it does not apply."""
    value = entry.side(side).value
    if isinstance(value, dict):
        if config.data.dataset not in value:
            return False, None
        return True, value[config.data.dataset]
    return True, value


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


@dataclass(frozen=True)
class FollowChoice:
    """What ``--follow`` does with one entry on one config: the overrides it adds, or why it adds none."""

    entry: str
    switch: str
    side: str
    overrides: tuple[str, ...] = ()
    reason: str | None = None  # set when the entry is left as the config has it


def follow_overrides(ledger: Ledger, side: str, config_path: str | Path, overrides: Sequence[str] = (),
                     configs_dir: str | Path | None = None) -> list[FollowChoice]:
    """Put ``config_path`` + ``overrides`` on ``side`` of every ledger entry that applies to it.

    An entry applies when it has a switch, is of a followed kind (``FOLLOWED_KINDS``) and not followed
    both ways, its paper configs are of the config's task, the config is one of its ``applies_to`` (when set),
    the switch is not set explicitly in ``overrides``, a dataset mapping has the config's dataset, the config's
    value is one of the two sides' (so a ResNet-101 is never turned into the ResNet-50s), and the config accepts
    the new value (an FCN rejects EncNet-head switches). The side's ``paper_extra`` comes along.
    """
    if side not in SIDES:
        raise ValueError(f"--follow must be one of {SIDES}, found {side!r}")
    configs_dir = Path(configs_dir) if configs_dir is not None else REPO_ROOT / "configs"
    config_path = Path(config_path)
    config = load_config(config_path, list(overrides))
    explicit = {o.split("=", 1)[0].strip() for o in overrides}
    choices = []
    for entry in ledger:
        if entry.switch is None or entry.suite_follows in ("both", "n/a"):
            continue

        def skip(reason: str, chosen: str = side) -> None:
            choices.append(FollowChoice(entry.id, entry.switch, chosen, (), reason))

        if entry.kind not in FOLLOWED_KINDS:
            skip(f"{entry.kind}: stays on the side behind the reported numbers", entry.suite_follows)
            continue
        if _entry_task(entry, configs_dir) != config.task:
            skip(f"a {_entry_task(entry, configs_dir)} setting")
            continue
        if entry.applies_to and config_path.stem not in entry.applies_to:
            skip(f"applies to {', '.join(entry.applies_to)} only")
            continue
        if entry.switch in explicit:
            skip("set explicitly by this run")
            continue
        applies, value = _resolved(entry, side, config)
        if not applies:
            skip(f"no value for dataset {config.data.dataset}")
            continue
        current = _get_dotted(config, entry.switch)
        if current not in [_resolved(entry, s, config)[1] for s in SIDES]:
            skip(f"{entry.switch}={format_value(current)} is neither side's value")
            continue
        if value == current and not entry.side(side).paper_extra:
            choices.append(FollowChoice(entry.id, entry.switch, side))  # already on that side
            continue
        added = (f"{entry.switch}={_yaml_value(value)}", *entry.side(side).paper_extra)
        try:
            load_config(config_path, [*overrides, *added])
        except ConfigError as err:
            skip(f"the config rejects it ({err})")
            continue
        choices.append(FollowChoice(entry.id, entry.switch, side, added))
    return choices


def entry_sides(ledger: Ledger, config: Config, configs_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """(entry id, side) for every switched entry of ``config``'s task: which side its value is on.

    The side is "paper", "release", "paper = release" where both sides agree for this dataset, or "neither"
    (the value of the config itself is printed with it).
    """
    configs_dir = Path(configs_dir) if configs_dir is not None else REPO_ROOT / "configs"
    out = []
    for entry in ledger:
        if entry.switch is None or _entry_task(entry, configs_dir) != config.task:
            continue
        if entry.suite_follows in ("both", "n/a") and _get_dotted(config, entry.switch) is None:
            continue
        if entry.applies_to and config.experiment not in entry.applies_to:
            continue  # e.g. fcn_aux's model.aux on an EncNet: that value is another entry's business
        values = {s: _resolved(entry, s, config) for s in SIDES}
        if not all(applies for applies, _ in values.values()):
            continue
        current = _get_dotted(config, entry.switch)
        on = [s for s in SIDES if values[s][1] == current]
        side = " = ".join(on) if on else "neither"
        out.append((entry.id, f"{side} ({format_value(current)})"))
    return out


# ------------------------------------------------------------------------------------------------ effects


def effects(results: pd.DataFrame) -> pd.DataFrame:
    """Per (row, metric): each side's mean and sample std over seeds, Δ = release − paper, spread, exceeds.

    ``results`` has columns row, entry, side, seed, metric, value (one line per run and metric). The spread is
    the seed-to-seed standard deviation pooled over the two sides, sqrt((s_paper² + s_release²) / 2); an effect
    "exceeds" it when |Δ| > spread. Needs two seeds per side for a spread; otherwise ``exceeds`` is None.
    """
    records = []
    for (row, metric), group in results.groupby(["row", "metric"], sort=False):
        stats = {}
        for side in SIDES:
            values = group[group["side"] == side].sort_values("seed")["value"].astype(float)
            stats[side] = (float(values.mean()) if len(values) else math.nan,
                           float(values.std(ddof=1)) if len(values) > 1 else math.nan, len(values))
        delta = stats["release"][0] - stats["paper"][0]
        spread = math.sqrt((stats["paper"][1] ** 2 + stats["release"][1] ** 2) / 2)
        exceeds = None if math.isnan(spread) or math.isnan(delta) else bool(abs(delta) > spread)
        records.append({
            "row": row, "entry": group["entry"].iloc[0], "metric": metric,
            "paper_mean": stats["paper"][0], "paper_std": stats["paper"][1],
            "release_mean": stats["release"][0], "release_std": stats["release"][1],
            "n_paper": stats["paper"][2], "n_release": stats["release"][2],
            "delta": delta, "spread": spread, "exceeds": exceeds,
        })
    return pd.DataFrame.from_records(records, columns=EFFECT_COLUMNS)


def format_value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return "—" if value is None else str(value)


def ledger_table(ledger: Ledger) -> pd.DataFrame:
    """The ledger as a printable table: one line per entry."""
    lines = []
    for e in ledger:
        switch = "—" if e.switch is None else (
            f"`{e.switch}`: {format_value(e.paper.value)} (paper) / {format_value(e.release.value)} (release)")
        lines.append({
            "id": e.id, "kind": e.kind, "what": e.what,
            "paper": f"{e.paper.choice} [{e.paper.source}]",
            "release": f"{e.release.choice} [{e.release.source}]",
            "switch": switch, "suite follows": e.suite_follows,
            "effect by construction": e.no_effect or e.note or "",
        })
    return pd.DataFrame(lines)
