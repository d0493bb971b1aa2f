"""Failure-case analysis for the notebooks: FCN against EncNet on the same images, and the reproduction report.

Everything here reads run folders (``encnet.engine.runs`` layout), the predictions that
``python -m encnet.evaluate RUN_DIR --save-predictions`` writes (``predictions/<tag>/<image id>.png``, class
indices; ``se_probabilities.json`` for models with an SE-loss head: per image, the sigmoid of the
class-presence logits), the dataset's own label files, and ``tables/`` / ``figures/``. Nothing here trains.

Split by concern: ``scores`` and ``presence`` (pure: numpy in, frames out), ``drawing`` (matplotlib),
``predictions`` and ``run_folders`` (files on disk), ``comparison`` (two runs read once), ``report_tables`` (the
reproduction report's tables and figures). The computing functions are pure and work on numpy arrays;
:func:`compare_runs` reads the files once into a :class:`RunComparison` whose methods are what the notebook
cells call; the confusion matrix and IoU arithmetic is :mod:`encnet.metrics`' (one implementation). Conventions follow
``docs/ARCHITECTURE.md``: ignore label 255, IoU in percent, ``confusion[truth, prediction]`` as in
:class:`encnet.metrics.SegmentationMetric`, a class absent from both truth and prediction has IoU NaN and is left out of
means.

Per-image mIoU (the mean over the classes that occur in the image's truth or prediction) is an analysis
device, not the paper's metric: the paper's mIoU comes from one confusion matrix over the whole split.
"""

from encnet.analysis.scores import (IGNORE_INDEX, confusion_frame, context_effect, image_miou, largest_confusions,
                                    per_class_iou_table, per_image_table, worst_images)
from encnet.analysis.presence import presence_failures, presence_metrics
from encnet.analysis.drawing import class_palette, colourize, plot_confusion, plot_overlays
from encnet.analysis.predictions import ensure_predictions, predictions_dir
from encnet.analysis.run_folders import RunSummary, find_latest_pair, list_runs, load_run, project_root
from encnet.analysis.comparison import RunComparison, compare_runs
from encnet.analysis.report_tables import (TableFiles, direction_summary, find_figures, find_tables,
                                           reported_vs_reproduced, table_profile, table_title)

__all__ = [
    "IGNORE_INDEX",
    "RunComparison",
    "RunSummary",
    "TableFiles",
    "class_palette",
    "colourize",
    "compare_runs",
    "confusion_frame",
    "context_effect",
    "direction_summary",
    "ensure_predictions",
    "find_figures",
    "find_latest_pair",
    "find_tables",
    "image_miou",
    "largest_confusions",
    "list_runs",
    "load_run",
    "per_class_iou_table",
    "per_image_table",
    "plot_confusion",
    "plot_overlays",
    "predictions_dir",
    "presence_failures",
    "presence_metrics",
    "project_root",
    "reported_vs_reproduced",
    "table_profile",
    "table_title",
    "worst_images",
]
