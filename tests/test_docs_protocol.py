"""The paper's protocol as the docs state it, against the configs it describes.

``docs/paper.md`` gives, per dataset, every setting of ``configs/paper/*.yaml`` in tables with the columns
``setting | key | value | paper | release v0.5.0``: each section names its configs on a "Configs:" line, each row a
config key (``train.epochs``) or a quantity derived from the configs (``classes``, ``train_images``,
``val_images``, ``iterations``) and the value every config of the section has ("v; `config`: w" gives one config
its own). The oracle is ``load_config`` on the files, and for the derived quantities the official split sizes
and the trainer's loader length (``encnet.engine.schedules.iterations_per_epoch``, itself tested against torch's
loader). Every "epochs × ⌊images / batch⌋ = iterations" written anywhere in the docs, and the iterations of
``tables/paper_cost.md``, are held to the same computation.
"""

from __future__ import annotations

import importlib
import math
import re
from functools import lru_cache
from pathlib import Path

import pytest

from encnet.data import DATASETS
from encnet.data.check import OFFICIAL_COUNTS
from encnet.engine.config import Config, load_config
from encnet.engine.schedules import iterations_per_epoch
from encnet.report.benchmarks import train_images, train_iterations

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "paper.md"
PAPER_CONFIGS = REPO / "configs" / "paper"
HEADER = ["setting", "key", "value", "paper", "release v0.5.0"]
DERIVED = ("classes", "train_images", "val_images", "iterations")
ITERATIONS = re.compile(r"(\d[\d,]*) × ⌊(\d[\d,]*) / (\d[\d,]*)⌋(?: = (\d[\d,]*))?")


@lru_cache(maxsize=None)
def paper_configs() -> dict[str, Config]:
    return {path.stem: load_config(path) for path in sorted(PAPER_CONFIGS.glob("*.yaml"))}


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def value_of(config: Config, key: str):
    """What ``config`` says for a key of the page: a dotted config key, or a quantity derived from the config."""
    if key == "classes":
        if config.data.num_classes is not None:
            return config.data.num_classes
        module, name, _ = DATASETS[config.data.dataset]
        return getattr(importlib.import_module(module), name).num_classes
    if key == "train_images":
        return train_images(config)
    if key == "val_images":
        return OFFICIAL_COUNTS.get(config.data.dataset, {}).get(config.data.val_split)
    if key == "iterations":
        return train_iterations(config)
    section, _, name = key.partition(".")
    if not name or not hasattr(config, section) or not hasattr(getattr(config, section), name):
        raise KeyError(key)
    return getattr(getattr(config, section), name)


def _number(text: str) -> float:
    text = text.strip()
    if re.fullmatch(r"\d{1,3}(,\d{3})+", text):
        text = text.replace(",", "")
    if "/" in text:
        numerator, denominator = text.split("/")
        return float(numerator) / float(denominator)
    return float(text)


def matches(cell: str, value) -> bool:
    """Whether a value cell states ``value``: "—" for none, yes/no, numbers (1,000 separators, a/b fractions),
    lists as "a, b, c", names in backticks."""
    cell = cell.strip()
    if value is None:
        return cell == "—"
    if isinstance(value, bool):
        return cell == ("yes" if value else "no")
    if isinstance(value, (int, float)):
        try:
            return math.isclose(_number(cell), value, rel_tol=1e-12)
        except ValueError:
            return False
    if isinstance(value, (list, tuple)):
        parts = cell.split(", ")
        return len(parts) == len(value) and all(matches(p, v) for p, v in zip(parts, value))
    return len(cell) > 2 and cell[0] == cell[-1] == "`" and cell.strip("`") == str(value)


def per_config(cell: str, names: list[str]) -> dict[str, str]:
    """The value cell as {config: cell text}: one default, "; `config`: value" parts for the exceptions."""
    default, own = None, {}
    for part in (p.strip() for p in cell.split(";")):
        found = re.fullmatch(r"`(\w+)`: (.+)", part)
        if found and found.group(1) in names:
            own[found.group(1)] = found.group(2)
        elif default is None:
            default = part
        else:
            raise AssertionError(f"value cell {cell!r}: two defaults ({default!r}, {part!r})")
    return {name: own.get(name, default) for name in names}


def sections(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading, its configs, its protocol-table rows) for every section of the page with a protocol table."""
    found = []
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        heading = block.splitlines()[0]
        configs = re.search(r"^Configs: (.*?)\.\n\n", block, re.M | re.S)
        rows, header = [], None
        for line in block.splitlines():
            if not line.startswith("|"):
                header = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if header is None:
                header = cells
            elif header == HEADER and not set(line) <= set("|- "):
                rows.append(cells)
        if rows:
            assert configs, f"docs/paper.md, section {heading!r}: a protocol table without a 'Configs:' line"
            found.append((heading, re.findall(r"`(\w+)`", configs.group(1)), rows))
    return found


def mismatches(text: str, configs: dict[str, Config]) -> list[str]:
    """Every value of the page's protocol tables that is not its configs', in words."""
    problems = []
    for heading, names, rows in sections(text):
        for name in names:
            if name not in configs:
                problems.append(f"{heading}: no configs/paper/{name}.yaml")
        keys = [row[1].strip("`") for row in rows]
        if len(set(keys)) != len(keys):
            problems.append(f"{heading}: a key given twice")
        for row in rows:
            assert len(row) == len(HEADER), f"{heading}: row {row} has {len(row)} cells, not {len(HEADER)}"
            key = row[1].strip("`")
            if not (row[1].startswith("`") and ("." in key or key in DERIVED)):
                problems.append(f"{heading}: row {row[0]!r} names no config key (its value would go untested)")
                continue
            for name, cell in per_config(row[2], names).items():
                if name not in configs:
                    continue
                try:
                    value = value_of(configs[name], key)
                except KeyError:
                    problems.append(f"{heading}: {key} is not a key of the configs")
                    break
                if not matches(cell, value):
                    problems.append(f"{heading}: {key} is {cell!r} on the page, {value!r} in {name}")
    return problems


def test_every_value_on_the_protocol_page_is_its_configs():
    assert mismatches(PAGE.read_text(), paper_configs()) == []


def test_every_paper_config_has_its_protocol_section():
    described = {name for _, names, _ in sections(PAGE.read_text()) for name in names}
    assert described == set(paper_configs())


def test_the_check_fails_on_a_changed_number_and_on_a_changed_config():
    text = PAGE.read_text()
    for before, after, key in [("| `train.epochs` | 80 |", "| `train.epochs` | 50 |", "train.epochs"),
                               ("| `iterations` | 151,560 |", "| `iterations` | 151,575 |", "iterations"),
                               ("| `eval.stride_ratio` | 2/3 |", "| `eval.stride_ratio` | 3/4 |", "eval.stride_ratio"),
                               ("`voc_trainval_encnet_r101`: 0.0001", "`voc_trainval_encnet_r101`: 0.001",
                                "train.base_lr")]:
        assert text.count(before) == 1, before
        assert any(key in problem for problem in mismatches(text.replace(before, after), paper_configs())), key
    changed = dict(paper_configs())
    changed["pcontext_encnet_r101"] = load_config(PAPER_CONFIGS / "pcontext_encnet_r101.yaml", ["train.base_lr=0.002"])
    assert [p for p in mismatches(text, changed) if "pcontext_encnet_r101" in p and "train.base_lr" in p]


def test_the_value_cells_are_read_as_written():
    assert matches("24,960", 24_960) and matches("2/3", 2 / 3) and matches("0.0001", 1e-4)
    assert matches("0.5, 0.75, 1.0", [0.5, 0.75, 1.0]) and not matches("0.5, 0.75", [0.5, 0.75, 1.0])
    assert matches("yes", True) and not matches("yes", 1) and matches("—", None) and not matches("0", None)
    assert matches("`short`", "short") and not matches("short", "short") and not matches("`long`", "short")
    assert per_config("59; `b`: 60", ["a", "b"]) == {"a": "59", "b": "60"}


def _iteration_claims() -> list[tuple[str, re.Match]]:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    return [(page.name, m) for page in pages for m in ITERATIONS.finditer(page.read_text())]


def test_every_iteration_count_in_the_docs_is_the_trainers():
    # (epochs, training images, batch) of every paper config, and its iterations by the trainer's arithmetic
    runs = {(c.train.epochs, train_images(c), c.train.batch_size): train_iterations(c)
            for c in paper_configs().values() if train_images(c)}
    claims = _iteration_claims()
    assert {"paper.md", "paper_profile.md"} <= {page for page, _ in claims}
    for page, claim in claims:
        epochs, images, batch = (_int(claim.group(i)) for i in (1, 2, 3))
        assert (epochs, images, batch) in runs, f"{page}: {claim.group(0)!r} is no paper config's run"
        assert epochs * iterations_per_epoch(images, batch) == runs[(epochs, images, batch)]
        if claim.group(4):
            assert _int(claim.group(4)) == runs[(epochs, images, batch)], f"{page}: {claim.group(0)!r}"


def test_the_cost_tables_iterations_are_the_trainers():
    rows = {}
    for line in (REPO / "tables" / "paper_cost.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in paper_configs():
            rows[cells[0]] = cells[6]
    assert set(rows) == set(paper_configs())
    for name, cell in rows.items():
        expected = train_iterations(paper_configs()[name])
        assert cell == ("unknown" if expected is None else str(expected)), name


@pytest.mark.parametrize("page", ["README.md", *sorted(p.name for p in (REPO / "docs").glob("*.md"))])
def test_no_user_facing_page_points_outside_the_repository(page):
    # A user's clone has no ../shared (the project's own notes): what the docs need, they must carry.
    text = (REPO / page if page == "README.md" else REPO / "docs" / page).read_text()
    assert "../shared" not in text and "shared/paper" not in text, f"{page} points to the project's shared folder"
