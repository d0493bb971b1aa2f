"""The notebooks: stored without outputs, and executed top to bottom (nbclient) against runs made here.

Two tiny demo runs (FCN and EncNet, one epoch on a small context_scenes variant) are trained with the real
engine; the FCN run is evaluated with ``--save-predictions`` and the EncNet run is left without predictions,
so the failure-case notebook has to make them itself (``analysis.ensure_predictions``). The reproduction
report runs against tables and figures written by ``encnet.report`` from the committed run-log fixtures.
"""

import json
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from encnet import analysis
from encnet.metrics import iou_from_confusion

from conftest import train_demo_pair
from test_analysis import write_tables

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory, data_cache) -> tuple[Path, Path]:
    return train_demo_pair(tmp_path_factory.mktemp("analysis_runs"), data_cache)


def execute(name: str, env: dict, monkeypatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))  # the kernel inherits the test's environment
    notebook = nbformat.read(REPO / "notebooks" / name, as_version=4)
    client = NotebookClient(notebook, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "notebooks")}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return notebook


def text_of(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            parts.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def png_count(notebook) -> int:
    return sum("image/png" in o.get("data", {}) for c in notebook.cells for o in c.get("outputs", []))


def cells_with_outputs(notebook) -> list[int]:
    return [i for i, c in enumerate(notebook.cells)
            if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_carry_no_outputs_or_execution_counts(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    dirty = cells_with_outputs(notebook)
    assert not dirty, (f"{path.name}: cells {dirty} carry outputs or execution counts; clear them with "
                       f"`jupyter nbconvert --clear-output --inplace {path.relative_to(REPO)}`")
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell should hold the parameters"


def test_both_notebooks_are_checked():
    assert {p.name for p in NOTEBOOKS} >= {"failure_cases.ipynb", "reproduction_report.ipynb"}


def test_failure_cases_notebook_runs_on_the_latest_demo_runs(demo_runs, monkeypatch):
    fcn, encnet = demo_runs
    had_predictions = analysis.predictions_dir(encnet).is_dir()
    start = time.perf_counter()
    notebook = execute("failure_cases.ipynb", {"ENCNET_RUNS_ROOT": fcn.parents[2], "ENCNET_PROFILE": "demo",
                                               "ENCNET_NUM_IMAGES": 2}, monkeypatch)
    text = text_of(notebook)
    # The notebook found the runs through the environment and compared the pair trained here.
    assert f"FCN: {fcn}" in text and f"EncNet: {encnet}" in text
    if not had_predictions:
        assert "encnet.evaluate" in text and analysis.predictions_dir(encnet).is_dir()
    assert png_count(notebook) >= 4  # confusion matrices and overlays
    print(f"failure_cases.ipynb executed in {time.perf_counter() - start:.1f} s")


def test_recomputed_metrics_from_saved_predictions_equal_the_engines_evaluation(demo_runs):
    fcn, encnet = demo_runs
    for run in demo_runs:
        analysis.ensure_predictions(run)  # a no-op when the notebook test already made them
    comparison = analysis.compare_runs([fcn, encnet])
    assert comparison.labels == ["FCN", "EncNet"] and len(comparison.ids) == 6
    for label, run in zip(comparison.labels, demo_runs):
        engine = json.loads((run / "eval.json").read_text())
        recomputed = iou_from_confusion(comparison.confusion[label]).numpy()
        np.testing.assert_allclose(recomputed, engine["IoU"], rtol=0, atol=1e-9)
        # The per-image statistics add up to the split's matrix.
        np.testing.assert_array_equal(comparison.tp[label].sum(0), np.diag(comparison.confusion[label]))
        np.testing.assert_array_equal(comparison.pred_pixels[label].sum(0), comparison.confusion[label].sum(0))
    assert comparison.gt_pixels.sum() == 6 * 32 * 32  # context_scenes has no ignored pixels
    assert comparison.se_run == "EncNet" and comparison.se_probabilities.shape == (6, 11)
    assert ((comparison.se_probabilities > 0) & (comparison.se_probabilities < 1)).all()
    presence = comparison.presence()
    assert presence.loc["all classes", "images_with_class"] == (comparison.gt_pixels > 0).sum()


def test_reproduction_report_notebook_shows_every_table_of_the_profile(tmp_path, monkeypatch):
    write_tables(tmp_path)
    notebook = execute("reproduction_report.ipynb", {"ENCNET_PROFILE": "demo", "ENCNET_TABLES_DIR": tmp_path / "tables",
                                                     "ENCNET_FIGURES_DIR": tmp_path / "figures"}, monkeypatch)
    text = text_of(notebook)
    assert "table_ablation_demo" in text and "EncNet+SE > FCN (mIoU)" in text
    assert "table_ablation " not in text  # the paper-profile table stays out of the demo report
    assert png_count(notebook) == 1  # the demo figure
    assert cells_with_outputs(notebook)  # the stored-notebook check does catch an executed notebook
