"""The notebooks as standalone HTML (``encnet.analysis.notebooks``), read back in headless Chromium.

The reproduction report is built from tables and a figure that ``encnet.report`` writes from the committed run-log
fixtures, the failure-case report from two tiny demo runs trained here (``conftest.train_demo_pair``). The
browser is Debian's ``chromium`` driven through its ``chromedriver`` by selenium; where they are not installed the
browser tests skip and say how to install them. Expectations come from the inputs (the tables and figures that
``encnet.analysis`` finds, the PNG files' sizes, the committed notebook's headings), not from the HTML.
"""

import base64
import math
import os
import re
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from encnet import analysis
from encnet.analysis import notebooks
from encnet.engine.runs import atomic_write_text
from encnet.experiments.summary import main as summary_main
from encnet.experiments.summary import report_lines

from test_analysis import write_tables
from conftest import train_demo_pair

REPO = Path(__file__).resolve().parents[1]
# Debian's paths; another distribution's browser and its matching driver are named by these two variables.
CHROMIUM = Path(os.environ.get("ENCNET_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("ENCNET_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  # Without these Chromium keeps retrying refused connections (updates, sync) and hangs offline.
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1024", "--hide-scrollbars")
# Longer pages are cut there: a full-page PNG of a 1280 px wide page takes 5 kB of memory per row while drawn.
MAX_SHOT_HEIGHT = 32768

PAGE_FACTS = """
return {
  ready: document.readyState,
  title: document.title,
  text: document.body.innerText,
  headings: Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6'))
                 .map(h => h.textContent.replace('\u00b6', '').trim()),
  tables: document.querySelectorAll('table').length,
  images: Array.from(document.images).map(i => ({complete: i.complete, width: i.naturalWidth,
                                                  height: i.naturalHeight, inline: i.src.startsWith('data:image/')})),
  errors: document.querySelectorAll('[data-output-type="error"]').length,
  stderr: document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]').length,
  fetched: Array.from(document.querySelectorAll('script[src], link[href], img[src], iframe[src], source[src]'))
                .map(e => e.getAttribute('src') || e.getAttribute('href')).filter(u => !u.startsWith('data:')),
};
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"the browser test needs Debian's chromium and chromium-driver ({', '.join(missing)} not found): "
                    f"`sudo apt-get install chromium chromium-driver`, or name them in ENCNET_CHROMIUM "
                    f"and ENCNET_CHROMEDRIVER")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium_profile')}"):
        options.add_argument(flag)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never try to download a browser or driver
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        try:
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            driver.quit()


def open_page(driver, html: Path) -> dict:
    """Load ``html`` and wait until the page and all of its images are loaded; the page's facts (PAGE_FACTS)."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(html.resolve().as_uri())  # returns after the load event
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
    return driver.execute_script(PAGE_FACTS)


def screenshot(driver, path: Path) -> tuple[int, int]:
    """The whole page (not only the window) as a PNG at ``path``; its (width, height) in CSS pixels."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    width, height = math.ceil(size["width"]), min(math.ceil(size["height"]), MAX_SHOT_HEIGHT)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))
    return width, height


def assert_screenshot_shows_a_page(path: Path, size: tuple[int, int]) -> None:
    assert path.is_file() and path.stat().st_size > 50_000, f"{path}: missing or too small to show a report"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        assert image.size[1] > 1024, "the screenshot should cover the whole page, not only the window"
        # Text, tables and figures make thousands of colours; a blank or single-colour page makes a handful.
        colours = image.convert("RGB").reduce(4).getcolors(maxcolors=1 << 20)
        assert len(colours) > 200


def assert_clean_standalone_page(facts: dict) -> None:
    assert facts["ready"] == "complete"
    assert facts["errors"] == 0 and "Traceback" not in facts["text"], "the report shows an error output"
    assert facts["fetched"] == [], f"the report fetches {facts['fetched']}: it should open offline"
    assert facts["images"], "no image in the report"
    broken = [i for i, image in enumerate(facts["images"]) if not (image["complete"] and image["width"] > 0)]
    assert not broken, f"images {broken} did not decode"
    assert all(image["inline"] for image in facts["images"]), "every image should be embedded in the page"


def markdown_headings(notebook_path: Path) -> list[str]:
    """The headings of the notebook's own Markdown cells (``#``... lines)."""
    notebook = nbformat.read(notebook_path, as_version=4)
    return [re.sub(r"^#+\s*", "", line).strip() for cell in notebook.cells if cell.cell_type == "markdown"
            for line in cell.source.splitlines() if line.startswith("#")]


def pipe_tables(markdown: str) -> int:
    """How many Markdown tables ``markdown`` holds (one header separator row each)."""
    return len(re.findall(r"^\|(?:\s*:?-{3,}:?\s*\|)+\s*$", markdown, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def reproduction_report(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("report")
    write_tables(out)
    notebook = notebooks.NOTEBOOKS_DIR / f"{notebooks.REPORT}.ipynb"
    committed = notebook.read_bytes()
    html = notebooks.render(notebook, out / "reports" / "reproduction_report.html",
                            notebooks.notebook_env("demo", out / "tables", out / "figures"),
                            notebooks.report_title(notebooks.REPORT, "demo"), timeout=180)
    assert notebook.read_bytes() == committed, "the executed notebook was written back over the committed one"
    return html, out


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory, data_cache) -> tuple[Path, Path]:
    return train_demo_pair(tmp_path_factory.mktemp("demo_runs"), data_cache)


@pytest.fixture(scope="module")
def failure_cases_report(tmp_path_factory, demo_runs) -> Path:
    fcn, _ = demo_runs
    out = tmp_path_factory.mktemp("failure_cases")
    return notebooks.render(notebooks.NOTEBOOKS_DIR / f"{notebooks.FAILURE_CASES}.ipynb",
                            out / "failure_cases.html",
                            notebooks.notebook_env("demo", runs_root=fcn.parents[2], num_images=2),
                            notebooks.report_title(notebooks.FAILURE_CASES, "demo"), timeout=180)


def test_reproduction_report_shows_every_table_and_figure_in_the_browser(browser, reproduction_report, tmp_path):
    html, out = reproduction_report
    facts = open_page(browser, html)
    assert_clean_standalone_page(facts)
    assert facts["title"] == "Reproduction report (demo profile)"

    tables = analysis.find_tables(out / "tables", "demo")
    assert len(tables) == 3  # the fixture's demo, discrepancies and profile-free tables
    for table in tables:
        assert table.name in facts["text"], f"table {table.name} is not in the report"
        if table.markdown is not None:
            assert analysis.table_title(table) in facts["headings"], f"{table.name}'s Markdown is not shown"
    for table in analysis.find_tables(out / "tables", "paper"):  # the paper profile's stay out of the demo report
        if table not in tables:
            assert not re.search(rf"\b{table.name}\b", facts["text"]), f"paper table {table.name} is shown"
            assert analysis.table_title(table) not in facts["headings"]
    # The index of tables, every reported-vs-reproduced number and the direction checks are tables as well.
    markdown_tables = sum(pipe_tables(t.markdown.read_text()) for t in tables if t.markdown is not None)
    assert markdown_tables >= 1 and facts["tables"] >= markdown_tables + 3
    for heading in markdown_headings(notebooks.NOTEBOOKS_DIR / f"{notebooks.REPORT}.ipynb"):
        assert heading in facts["headings"], f"section {heading!r} is missing"

    figures = analysis.find_figures(out / "figures", "demo")
    assert len(figures) == 1 and len(facts["images"]) == len(figures)
    for figure in figures:
        assert figure.stem in facts["text"]
    sizes = []
    for figure in figures:
        with Image.open(figure) as image:
            sizes.append(image.size)
    shown = sorted((i["width"], i["height"]) for i in facts["images"])
    assert shown == sorted(sizes), "the page's images are not the figure files"

    shot = tmp_path / "reproduction_report.png"
    assert_screenshot_shows_a_page(shot, screenshot(browser, shot))


def test_failure_case_report_shows_both_runs_and_every_plot_in_the_browser(browser, failure_cases_report, demo_runs,
                                                                           tmp_path):
    fcn, encnet = demo_runs
    facts = open_page(browser, failure_cases_report)
    assert_clean_standalone_page(facts)
    assert facts["title"] == "Failure cases: FCN against EncNet (demo profile)"
    assert f"FCN: {fcn}" in facts["text"] and f"EncNet: {encnet}" in facts["text"]
    for heading in markdown_headings(notebooks.NOTEBOOKS_DIR / f"{notebooks.FAILURE_CASES}.ipynb"):
        assert heading in facts["headings"], f"section {heading!r} is missing"
    # Both runs' confusion matrices, the worst images, and at least one more overlay (wrong presence calls, or
    # where context helped or hurt most): test_notebooks.py counts the same plots in the executed notebook.
    assert len(facts["images"]) >= 4
    # At least: the runs, the check against eval.json, per-class IoU, size bins, both runs' largest confusions.
    assert facts["tables"] >= 6
    shot = tmp_path / "failure_cases.png"
    assert_screenshot_shows_a_page(shot, screenshot(browser, shot))


def test_the_browser_check_sees_an_error_output_and_tells_it_from_a_warning(browser, tmp_path):
    """The checks above can fail: a page with a traceback is caught, a stderr warning is not taken for one."""
    cells = [nbformat.v4.new_code_cell("import warnings; warnings.warn('careful'); 1 / 0", execution_count=1)]
    cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: careful\n"),
        nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                               traceback=["\x1b[0;31mZeroDivisionError\x1b[0m Traceback (most recent call last)",
                                          "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"])]
    html = tmp_path / "broken.html"
    atomic_write_text(html, notebooks.to_html(nbformat.v4.new_notebook(cells=cells), "broken"))
    facts = open_page(browser, html)
    assert facts["errors"] == 1 and facts["stderr"] == 2 and "Traceback" in facts["text"]
    with pytest.raises(AssertionError, match="error output"):
        assert_clean_standalone_page(facts)


def failing_notebook(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{notebooks.REPORT}.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import os\nprint(os.environ['ENCNET_PROFILE'])"),
        nbformat.v4.new_code_cell("raise ValueError('deliberate failure for the test')"),
        nbformat.v4.new_code_cell("print('never reached')")]), path)
    return path


def test_a_failing_cell_fails_the_command_and_leaves_no_html(tmp_path, capsys):
    notebook = failing_notebook(tmp_path / "notebooks")
    written = notebook.read_bytes()
    for folder in ("tables", "figures"):
        (tmp_path / folder).mkdir()
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "reproduction_report.html").write_text("<html>an earlier run's report</html>")
    code = notebooks.main(["--profile", "demo", "--notebooks-dir", str(tmp_path / "notebooks"),
                           "--tables-dir", str(tmp_path / "tables"), "--figures-dir", str(tmp_path / "figures"),
                           "--runs-root", str(tmp_path / "no_runs"), "--out-dir", str(reports)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "reproduction_report.ipynb: cell 1 (In [2]) failed: ValueError: deliberate failure for the test" in err
    assert list(reports.iterdir()) == [], "a report (or a temporary file) was left behind"
    assert notebook.read_bytes() == written
    # No runs: the failure cases are skipped in one line, before anything runs.
    first = out.splitlines()[0]
    assert first.startswith("failure_cases.ipynb: skipped, no runs folder at ") and first.endswith("no_runs")


def test_bad_input_is_refused_before_any_notebook_runs(tmp_path, capsys):
    assert notebooks.main(["--profile", "demo", "--tables-dir", str(tmp_path / "missing"),
                           "--out-dir", str(tmp_path / "reports")]) == 2
    assert "no tables folder at" in capsys.readouterr().err and not (tmp_path / "reports").exists()


def test_the_failure_cases_are_planned_by_profile_and_skipped_without_a_pair(tmp_path, demo_runs):
    fcn, _ = demo_runs
    for folder in ("tables", "figures"):
        (tmp_path / folder).mkdir()
    args = (tmp_path / "reports", tmp_path / "tables", tmp_path / "figures")
    jobs, skipped = notebooks.plan("demo", *args, runs_root=fcn.parents[2])
    assert [j.html.name for j in jobs] == ["reproduction_report.html", "failure_cases.html"] and skipped == []
    assert jobs[1].env["ENCNET_RUNS_ROOT"] == str(fcn.parents[2])
    jobs, skipped = notebooks.plan("paper", *args, runs_root=fcn.parents[2])  # a whole validation split: opt in
    assert [j.html.name for j in jobs] == ["reproduction_report.html"] and "--failure-cases" in skipped[0]
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    jobs, skipped = notebooks.plan("demo", *args, runs_root=tmp_path / "runs")
    assert len(jobs) == 1 and skipped[0].startswith("failure_cases.ipynb: skipped, no finished demo-profile FCN run")


def test_summary_ends_with_the_reproduction_report_of_its_profile(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reports = tmp_path / "reports"
    cells = [nbformat.v4.new_markdown_cell("# a report")]
    for name, profile in ((notebooks.FAILURE_CASES, "demo"), (notebooks.REPORT, "demo")):
        page = notebooks.to_html(nbformat.v4.new_notebook(cells=cells), notebooks.report_title(name, profile))
        atomic_write_text(reports / f"{name}.html", page)
    assert summary_main(["--profile", "demo", "--out-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "report: reports/reproduction_report.html (open it in a browser)"
    assert lines[-2].startswith("failure cases: reports/failure_cases.html")
    # Another profile's report, or one older than the run, is not announced as this run's.
    assert report_lines(tmp_path, "paper")[-1].startswith("report: reports/reproduction_report.html not built")
    later = (reports / "reproduction_report.html").stat().st_mtime + 10
    assert len(report_lines(tmp_path, "demo", since=later)) == 1
    assert "not built by this run" in report_lines(tmp_path, "demo", since=later)[0]


def test_importing_the_module_loads_no_notebook_machinery():
    probe = ("import sys, encnet.analysis.notebooks; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('nbclient', 'nbconvert', 'nbformat', 'jupyter_client')))")
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
