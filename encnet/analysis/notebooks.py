"""The suite's notebooks, executed against one profile's outputs and written as standalone HTML under ``reports/``.

``python -m encnet.analysis.notebooks --profile demo`` runs ``notebooks/reproduction_report.ipynb`` (always) and
``notebooks/failure_cases.ipynb`` (demo profile by default; paper only with ``--failure-cases``, since it
evaluates a whole validation split when the runs have no saved predictions) in a fresh ``python3`` kernel
started in ``notebooks/``, with the parameters passed through the environment variables the notebooks read
(``ENCNET_PROFILE``, ``ENCNET_TABLES_DIR``, ``ENCNET_FIGURES_DIR``, ``ENCNET_RUNS_ROOT``, ``ENCNET_NUM_IMAGES``).
The committed notebooks are only read: their outputs go into the HTML, never back into the ``.ipynb``.

Importing this module loads no notebook machinery (run_all's summary imports it for the report names); nbclient
and nbconvert are imported when a notebook runs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from encnet.engine.runs import atomic_write_text

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO / "notebooks"
REPORT = "reproduction_report"
FAILURE_CASES = "failure_cases"
TITLES = {REPORT: "Reproduction report", FAILURE_CASES: "Failure cases: FCN against EncNet"}
KERNEL = "python3"

# The lab template fetches require.js, MathJax and Mermaid from a CDN. These notebooks use none of them (no
# widgets, no math, no diagrams), and a report must open offline without contacting anyone, so those blocks go.
# nbconvert renders an error output exactly like a stderr stream (a warning, say): the wrapper lets a reader's
# search, or a test, tell a traceback from a warning.
TEMPLATE_NAME = "encnet_standalone.html.j2"
TEMPLATE = """{%- extends "index.html.j2" -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block error -%}
<div class="encnet-error-output" data-output-type="error">{{ super() }}</div>
{%- endblock error %}
"""


class NotebookFailed(RuntimeError):
    """A notebook did not run to the end (a cell raised, timed out, or the kernel died)."""


@dataclass(frozen=True)
class Job:
    """One notebook to render: where it is, where its HTML goes, and the environment its kernel gets."""

    notebook: Path
    html: Path
    env: dict[str, str]
    title: str


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (what a user typed), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ModuleNotFoundError(f"{module} is not installed: the notebook reports need nbclient, nbconvert and "
                                  f"ipykernel (`.venv/bin/pip install -e '.[test]'`, or `bash scripts/setup_venv.sh`)")


def _failed_cell(notebook) -> tuple[int, object] | None:
    for index, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return index, cell.get("execution_count")
    return None


def execute(notebook_path: Path, env: Mapping[str, str], timeout: int | None = None):
    """Run every cell of ``notebook_path`` in a fresh kernel started in the notebook's folder, with ``env`` added
    to this process's environment; return the executed notebook (the file is not written).

    Raises :class:`NotebookFailed` naming the notebook, the cell and its error when a cell fails.
    """
    _require("nbclient")
    _require("ipykernel")
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellControlSignal, CellExecutionError, CellTimeoutError, DeadKernelError

    notebook = nbformat.read(notebook_path, as_version=4)
    # The kernel's own log (ipykernel warns on every start that a local kernel talks over TCP, through a port on
    # 127.0.0.1 guarded by a key in a private connection file) is noise in a report run; a cell's errors are
    # outputs, not log lines, and still fail the run.
    client = NotebookClient(notebook, timeout=timeout, kernel_name=KERNEL,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(notebook_path.parent)}})
    try:
        # The kernel's environment replaces ours unless given whole.
        client.execute(env={**os.environ, **env})
    except CellExecutionError as error:
        failed = _failed_cell(notebook)
        where = "a cell" if failed is None else f"cell {failed[0]} (In [{failed[1]}])"
        raise NotebookFailed(f"{shown(notebook_path)}: {where} failed: {error.ename}: {error.evalue}") from None
    except (CellTimeoutError, DeadKernelError, CellControlSignal) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise NotebookFailed(f"{shown(notebook_path)}: {type(error).__name__}: {first}") from None
    return notebook


def to_html(notebook, title: str) -> str:
    """The executed notebook as one HTML page: inputs, outputs and every image inline, nothing fetched."""
    _require("nbconvert")
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(embed_images=True, extra_loaders=[DictLoader({TEMPLATE_NAME: TEMPLATE})],
                            template_file=TEMPLATE_NAME)
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": title}})
    return body


def render(notebook_path: Path, html_path: Path, env: Mapping[str, str] | None = None, title: str | None = None,
           timeout: int | None = None) -> Path:
    """Execute ``notebook_path`` and write it as standalone HTML to ``html_path``.

    When a cell fails, :class:`NotebookFailed` is raised and no HTML is left at ``html_path``: a report from
    an earlier run there is removed too, as it no longer shows what the outputs now hold.
    """
    notebook_path, html_path = Path(notebook_path), Path(html_path)
    if not notebook_path.is_file():
        raise FileNotFoundError(f"no notebook at {notebook_path}")
    try:
        notebook = execute(notebook_path, env or {}, timeout)
    except NotebookFailed:
        html_path.unlink(missing_ok=True)
        raise
    # Through a temporary file and a rename: a reader (or a crash) never meets half a page.
    atomic_write_text(html_path, to_html(notebook, title or notebook_path.stem))
    return html_path


def notebook_env(profile: str, tables_dir: Path | None = None, figures_dir: Path | None = None,
                 runs_root: Path | None = None, num_images: int | None = None) -> dict[str, str]:
    """The environment variables the notebooks read their parameters from. Paths are made absolute: the
    notebooks read relative ones from the repository root, which is not where a user may have typed them."""
    env = {"ENCNET_PROFILE": profile}
    for name, path in (("ENCNET_TABLES_DIR", tables_dir), ("ENCNET_FIGURES_DIR", figures_dir),
                       ("ENCNET_RUNS_ROOT", runs_root)):
        if path is not None:
            env[name] = str(Path(path).resolve())
    if num_images is not None:
        env["ENCNET_NUM_IMAGES"] = str(num_images)
    return env


def report_title(name: str, profile: str) -> str:
    return f"{TITLES[name]} ({profile} profile)"


def report_profile(html_path: Path) -> str | None:
    """The profile a report was built for, read back from its ``<title>`` (None: not one of ours)."""
    with open(html_path, encoding="utf-8", errors="replace") as handle:
        head = handle.read(4096)  # the title is in the first lines; the page runs to megabytes of images
    match = re.search(r"<title>[^<]*\((\w+) profile\)</title>", head)
    return match.group(1) if match else None


def no_runs_reason(runs_root: Path, profile: str) -> str | None:
    """Why the failure-case notebook has nothing to compare under ``runs_root`` (None: it has a pair)."""
    from encnet.analysis.run_folders import find_latest_pair

    if os.environ.get("ENCNET_FCN_RUN") and os.environ.get("ENCNET_ENCNET_RUN"):
        return None  # the pair was chosen explicitly; the notebook does not look under runs_root
    if not Path(runs_root).is_dir():
        return f"no runs folder at {shown(Path(runs_root))}"
    try:
        find_latest_pair(runs_root, profile)
    except FileNotFoundError as error:
        return str(error).split(";")[0]
    return None


def plan(profile: str, out_dir: Path, tables_dir: Path, figures_dir: Path, runs_root: Path,
         failure_cases: bool | None = None, notebooks_dir: Path = NOTEBOOKS_DIR,
         num_images: int | None = None) -> tuple[list[Job], list[str]]:
    """The notebooks to render for ``profile`` and, for those left out, one line each saying why."""
    for name, folder in (("tables", tables_dir), ("figures", figures_dir)):
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"no {name} folder at {folder}: build the tables and figures with "
                                    f"`bash run_all.sh --profile {profile}`, or pass --{name}-dir")
    if failure_cases is None:
        failure_cases = profile == "demo"
    env = notebook_env(profile, tables_dir, figures_dir, runs_root, num_images)
    jobs = [Job(Path(notebooks_dir) / f"{REPORT}.ipynb", Path(out_dir) / f"{REPORT}.html", env,
                report_title(REPORT, profile))]
    skipped = []
    if not failure_cases:
        skipped.append(f"{FAILURE_CASES}.ipynb: not run for the {profile} profile (it evaluates a whole "
                       f"validation split when predictions are missing); --failure-cases runs it")
    elif (reason := no_runs_reason(runs_root, profile)) is not None:
        skipped.append(f"{FAILURE_CASES}.ipynb: skipped, {reason}")
    else:
        jobs.append(Job(Path(notebooks_dir) / f"{FAILURE_CASES}.ipynb", Path(out_dir) / f"{FAILURE_CASES}.html",
                        env, report_title(FAILURE_CASES, profile)))
    for job in jobs:
        if not job.notebook.is_file():
            raise FileNotFoundError(f"no notebook at {job.notebook}: run from a clone of the repository, or pass "
                                    f"--notebooks-dir")
    return jobs, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m encnet.analysis.notebooks", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("demo", "paper"), default="demo")
    parser.add_argument("--tables-dir", type=Path, default=REPO / "tables")
    parser.add_argument("--figures-dir", type=Path, default=REPO / "figures")
    parser.add_argument("--runs-root", type=Path, default=REPO / "runs", help="run folders (failure cases)")
    parser.add_argument("--out-dir", type=Path, default=REPO / "reports", help="where the HTML goes")
    parser.add_argument("--failure-cases", action=argparse.BooleanOptionalAction, default=None,
                        help="render failure_cases.ipynb too (default: demo profile only)")
    parser.add_argument("--num-images", type=int, help="images per overlay figure (failure cases; default 6)")
    parser.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--cell-timeout", type=int, default=3600,
                        help="seconds one cell may run (default 3600; 0: no limit)")
    args = parser.parse_args(argv)
    try:
        jobs, skipped = plan(args.profile, args.out_dir, args.tables_dir, args.figures_dir, args.runs_root,
                             args.failure_cases, args.notebooks_dir, args.num_images)
    except FileNotFoundError as error:
        print(f"encnet.analysis.notebooks: {error}", file=sys.stderr)
        return 2
    for module in ("nbclient", "nbconvert", "ipykernel"):
        try:
            _require(module)
        except ModuleNotFoundError as error:
            print(f"encnet.analysis.notebooks: {error}", file=sys.stderr)
            return 2
    for line in skipped:
        print(line, flush=True)
    for number, job in enumerate(jobs, 1):
        start = time.perf_counter()
        print(f"[{number}/{len(jobs)}] executing {shown(job.notebook)} ({args.profile} profile) ...", flush=True)
        try:
            render(job.notebook, job.html, job.env, job.title, args.cell_timeout or None)
        except NotebookFailed as error:
            print(f"encnet.analysis.notebooks: {error}; no HTML written for it. Fix the cause and rerun "
                  f"`python -m encnet.analysis.notebooks --profile {args.profile}`", file=sys.stderr)
            return 1
        size = job.html.stat().st_size / 1e6
        print(f"      wrote {shown(job.html)} ({size:.1f} MB, {time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
