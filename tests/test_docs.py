"""The README and docs/ as a reader uses them: every relative link resolves, every quoted command is one the code
accepts, and the verdict tables hold what the committed run's CSVs say.

A quoted command is checked the way the code itself would take it: the program exists (a module, a script, a file
of this repository), its ``--help`` runs and names every option the command passes, every repository path it
names exists, ``key=value`` overrides of ``encnet.train`` load with the config they follow (unknown keys and
out-of-range values are errors there), and a command that asks for ``--dry-run`` is run as quoted.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pytest

from encnet.engine.config import load_config
from encnet.report import tables, verdicts

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```bash\n(.*?)^```", re.M | re.S)
# Programs of other projects that a page may quote: not this code's to accept.
EXTERNAL = {".venv/bin/pip", ".venv/bin/jupyter", "pip", "sudo", "tensorboard"}
# Placeholders a reader replaces: paths under them are not expected in a checkout.
PLACEHOLDERS = ("RUN_ID", "RUN_DIR", "/data", "~/", "/shared/", "weights/", "runs/")


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def _links() -> list[tuple[Path, str]]:
    found = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        found += [(page, target) for target in LINK.findall(text)
                  if not re.match(r"[a-z]+:", target)]  # http:, https:, mailto: are not ours to resolve
    return found


@pytest.mark.parametrize("page,target", _links(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_every_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.relative_to(REPO)}: link {target!r} points to nothing ({resolved})"
    if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), (f"{page.relative_to(REPO)}: link {target!r}: no heading with that "
                                              f"anchor in {resolved.relative_to(REPO)}")


def _commands() -> list[tuple[Path, str]]:
    """Every command line of every ```bash block (continuations joined, comments dropped, ``&&`` split)."""
    found = []
    for page in PAGES:
        for block in FENCE.findall(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                command: list[str] = []
                for word in [*words, "&&"]:
                    if word == "&&":
                        if command:
                            found.append((page, shlex.join(command)))
                        command = []
                    else:
                        command.append(word)
    return found


def _program(words: list[str]) -> tuple[list[str], list[str]]:
    """(how to start the program with Python or bash, the arguments the quoted command gives it)."""
    if words[0] == "torchrun":  # torchrun [its options] -m module args: the module is what the suite provides
        i = words.index("-m")
        return [sys.executable, "-m", words[i + 1]], words[i + 2:]
    if words[0] in ("python", ".venv/bin/python"):
        if words[1] == "-m":
            return [sys.executable, "-m", words[2]], words[3:]
        return [sys.executable, words[1]], words[2:]
    if words[0] in ("bash", "sbatch"):
        i = 1
        while words[i].startswith("-"):  # sbatch's own options come before the script
            i += 2 if words[i] in ("--nodes",) else 1
        return ["bash", words[i]], words[i + 1:]
    raise AssertionError(f"a command this test does not know how to check: {shlex.join(words)}")


@lru_cache(maxsize=None)
def _help_text(program: tuple[str, ...]) -> tuple[int, str]:
    done = subprocess.run([*program, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def _help(program: tuple[str, ...]) -> str:
    returncode, text = _help_text(program)
    assert returncode == 0, f"`{shlex.join(program)} --help` failed:\n{text}"
    return text


def _is_repo_path(word: str) -> bool:
    return (not word.startswith("-") and "=" not in word and not any(p in word for p in PLACEHOLDERS)
            and re.search(r"\.(ya?ml|py|sh|sbatch|ipynb|md|pth)$", word) is not None and "*" not in word
            and "{" not in word)


def _without_help(program: list[str]) -> bool:
    # no --help of their own: the file is what the page promises (CI runs .ci/run itself)
    return program[0] == "bash" and (
        program[1] in (".ci/run", "bench/gpu_suite.sh", "scripts/install_peers.sh", "run_tests.sh")
        or program[1].endswith(".sbatch"))


@pytest.fixture(scope="module")
def helps_fetched() -> None:
    """Every quoted program's ``--help``, fetched side by side: each is a fresh interpreter importing torch, which
    leaves the other core idle when they run one after another."""
    programs = set()
    for _, command in _commands():
        words = shlex.split(command)
        try:
            program = _program(words)[0] if words[0] not in EXTERNAL else None
        except AssertionError:  # the command's own test says what is wrong with it
            continue
        if program and not _without_help(program) and (program[1] == "-m" or (REPO / program[1]).is_file()):
            programs.add(tuple(program))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_help_text, programs))


@pytest.mark.parametrize("page,command", _commands(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_every_quoted_command_is_one_the_code_accepts(page, command, helps_fetched):
    words = shlex.split(command)
    if words[0] in EXTERNAL:
        return
    program, args = _program(words)
    where = f"{page.relative_to(REPO)}: `{command}`"
    if program[0] == "bash":
        assert (REPO / program[1]).is_file(), f"{where}: no file {program[1]}"
        if _without_help(program):
            return
    if program[1] != "-m":
        assert (REPO / program[1]).is_file(), f"{where}: no file {program[1]}"
    text = _help(tuple(program))
    for option in [a.split("=", 1)[0] for a in args if a.startswith("--")]:
        assert option in text, f"{where}: {option} is not an option of {program[-1]} (its --help does not name it)"
    for word in args:
        if _is_repo_path(word):
            assert (REPO / word).exists(), f"{where}: {word} does not exist"
    if program[-1] == "encnet.train" and args and args[0].endswith(".yaml"):
        overrides = [a for a in args[1:] if "=" in a and not a.startswith("-")]
        load_config(REPO / args[0], overrides)  # raises, naming the key, on anything a run would refuse
    if "--dry-run" in args and program[0] != "bash":
        done = subprocess.run([*program, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{where} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"


def test_the_verdict_tables_are_the_committed_runs():
    table = verdicts.verdict_table(REPO / "tables", "demo")
    for page in (REPO / "README.md", REPO / "docs" / "demo.md"):
        text = page.read_text()
        assert verdicts.replace_block(text, table, str(page)) == text, (
            f"{page.relative_to(REPO)}: the verdicts block differs from tables/*_demo_directions.csv; "
            "`python -m encnet.report.verdicts --profile demo --update README.md docs/demo.md` rewrites it")


def test_the_verdicts_block_is_replaced_whole_and_a_missing_marker_is_an_error():
    text = f"a\n{verdicts.BEGIN}\nold\nlines\n{verdicts.END}\nb\n"
    assert verdicts.replace_block(text, "new") == f"a\n{verdicts.BEGIN}\nnew\n{verdicts.END}\nb\n"
    with pytest.raises(ValueError, match="expected one"):
        verdicts.replace_block("no markers", "new")


def test_the_verdict_block_rounds_as_the_figures_do(tmp_path):
    # A bound of 32.16503 is +32.17 in the figure titles (formatted unrounded); the CSV must keep enough digits
    # that the block built from it does not print +32.16 (it did, when the CSV held four).
    checks = pd.DataFrame([{"claim": "K=16 > K=0 (mIoU)", "metric": "mIoU", "reported_gap": 1.4,
                            "reproduced_gap": 22.10013, "ci_low": 12.03522, "ci_high": 32.16503, "n_pairs": 5,
                            "verdict": "reproduced"}])
    tables.write_directions(checks, tables.output_name("codewords", "demo"), tmp_path)
    (row,) = verdicts.verdict_rows(tmp_path / "tables", "demo")
    assert row[2] == f"{22.10013:+.2f} [{12.03522:+.2f}, {32.16503:+.2f}]" == "+22.10 [+12.04, +32.17]"


def test_the_readme_is_a_five_minute_read():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def test_the_readmes_library_snippet_runs(tmp_path):
    # Run as a reader pastes it: a fresh interpreter, outside the repository, the installed package.
    (snippet,) = re.findall(r"^```python\n(.*?)^```", (REPO / "README.md").read_text(), re.M | re.S)
    assert len([line for line in snippet.splitlines() if line.strip()]) <= 6, "the quick start is ≤ 6 lines"
    check = "\nassert out.out.shape == (2, 59, 96, 96) and out.se.shape == (2, 59) and loss.dim() == 0\n" \
            "assert set(parts) == {'main', 'aux', 'se'} and bool(loss.isfinite())\nprint('snippet ok')\n"
    done = subprocess.run([sys.executable, "-c", snippet + check], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and "snippet ok" in done.stdout, done.stderr[-3000:]


# "<minutes> min on a [quiet ]2-core machine at <GFLOP/s> GFLOP/s", bold or not: the demo's one time figure.
DEMO_TIME = re.compile(r"(\d+(?:\.\d+)?) min\**,? on an? (?:quiet )?2-core machine at \**(\d+(?:\.\d+)?) GFLOP/s")
MINUTES = re.compile(r"(\d+(?:\.\d+)?) min\b")


def demo_time_figures() -> dict[str, list[tuple[str, str]]]:
    """Every statement of the demo's time: docs/demo.md's Time section (the figure the lead updates after a demo
    rerun), the README and `run_all.sh --help`."""
    demo = (REPO / "docs" / "demo.md").read_text()
    time_section = demo[demo.index("\n## Time\n"):]
    help_text = subprocess.run(["bash", "run_all.sh", "--help"], cwd=REPO, capture_output=True, text=True,
                               timeout=60).stdout
    return {"docs/demo.md (Time)": DEMO_TIME.findall(time_section), "README.md": DEMO_TIME.findall(
        (REPO / "README.md").read_text()), "run_all.sh --help": DEMO_TIME.findall(help_text)}


def test_the_demo_time_is_one_figure_with_the_machines_speed_everywhere():
    figures = demo_time_figures()
    assert all(len(found) == 1 for found in figures.values()), f"one time statement per place expected: {figures}"
    (reference,) = figures["docs/demo.md (Time)"]
    for place, (found,) in figures.items():
        assert found == reference, (f"{place} says {found[0]} min at {found[1]} GFLOP/s, docs/demo.md's Time section "
                                    f"{reference[0]} min at {reference[1]} GFLOP/s: update it to the same figure")
    # No second figure beside it: every minute count of the demo's pages is that one (the README's other one is
    # the test suite's).
    readme = [m for line in (REPO / "README.md").read_text().splitlines() if "run_tests.sh" not in line
              for m in MINUTES.findall(line)]
    demo = (REPO / "docs" / "demo.md").read_text()
    help_text = subprocess.run(["bash", "run_all.sh", "--help"], cwd=REPO, capture_output=True, text=True,
                               timeout=60).stdout
    for place, minutes in [("README.md", readme), ("docs/demo.md", MINUTES.findall(demo)),
                           ("run_all.sh --help", MINUTES.findall(help_text))]:
        assert set(minutes) == {reference[0]}, f"{place} gives the demo's time as {sorted(set(minutes))} min"
