"""Two (or more) runs' saved predictions on the same images, read once into per-image per-class statistics
(:func:`compare_runs` → :class:`RunComparison`, whose methods are what the failure-case notebook's cells call)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from encnet.analysis.drawing import plot_confusion, plot_overlays
from encnet.analysis.predictions import SE_PROBABILITIES, SINGLE_SCALE, predictions_dir, read_prediction
from encnet.analysis.presence import presence_failures, presence_metrics
from encnet.analysis.run_folders import RunSummary, load_run
from encnet.analysis.scores import (confusion_frame, image_miou, largest_confusions, per_class_iou_table,
                                    per_image_table)
from encnet.metrics import class_iou, confusion_matrix, iou_from_confusion


def _open_dataset(config: dict, split: str):
    """The run's evaluation split without transforms: raw RGB images and label masks via ``dataset.load``."""
    from encnet.data import build_dataset

    data = config["data"]
    kwargs = dict(data.get("options") or {})
    if data.get("num_classes") is not None:
        kwargs["num_classes"] = data["num_classes"]
    return build_dataset(data["dataset"], data.get("root"), split, **kwargs)



@dataclass
class RunComparison:
    """Two (or more) runs' predictions on the same images, reduced to per-image per-class statistics.

    ``tp``/``gt_pixels``/``pred_pixels`` map a run label to images × classes pixel counts; ``confusion`` to
    the split's C×C matrix; ``se_probabilities`` holds images × classes presence probabilities of the run
    with an SE-loss head (None without one).
    """

    runs: dict[str, RunSummary]
    tag: str
    ids: list[str]
    class_names: list[str]
    confusion: dict[str, np.ndarray]
    tp: dict[str, np.ndarray]
    gt_pixels: np.ndarray
    pred_pixels: dict[str, np.ndarray]
    se_probabilities: np.ndarray | None = None
    se_run: str | None = None
    dataset: Any = field(default=None, repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.runs)

    @property
    def difference(self) -> str:
        first, second = self.labels[:2]
        return f"{second} − {first}"

    def class_iou(self) -> pd.DataFrame:
        return per_class_iou_table({k: iou_from_confusion(v).numpy() for k, v in self.confusion.items()},
                                   self.class_names)

    def check_against_eval(self) -> pd.DataFrame:
        """mIoU and pixAcc recomputed from the saved predictions next to the run's own eval record."""
        records = []
        for label, run in self.runs.items():
            conf = self.confusion[label]
            records.append({"run": label, "mIoU (recomputed)": float(np.nanmean(iou_from_confusion(conf).numpy())),
                            "mIoU (eval)": run.evaluation.get("mIoU", np.nan),
                            "pixAcc (recomputed)": 100.0 * np.trace(conf) / conf.sum(),
                            "pixAcc (eval)": run.evaluation.get("pixAcc", np.nan)})
        return pd.DataFrame.from_records(records).set_index("run")

    def size_bins(self) -> pd.DataFrame:
        """Per run, from its eval record: mean IoU of the scene-dependent classes near small and near large
        objects (``mIoU_small``, ``mIoU_large``; data with size bins only) and the control classes' IoU."""
        records = []
        for label, run in self.runs.items():
            record = {"run": label}
            for key in ("mIoU_small", "mIoU_large"):
                record[key] = run.evaluation.get(key, np.nan)
            iou = iou_from_confusion(self.confusion[label]).numpy()
            for name in ("ring", "cross"):
                if name in self.class_names:
                    record[f"IoU_{name}"] = float(iou[self.class_names.index(name)])
            records.append(record)
        return pd.DataFrame.from_records(records).set_index("run")

    def confusions(self, label: str, k: int = 10) -> pd.DataFrame:
        return largest_confusions(self.confusion[label], self.class_names, k)

    def confusion_table(self, label: str, normalize: bool = True) -> pd.DataFrame:
        return confusion_frame(self.confusion[label], self.class_names, normalize)

    def confusion_plot(self, label: str):
        return plot_confusion(self.confusion[label], self.class_names, f"{label}: {self.runs[label].run_dir}")

    def image_class_iou(self, label: str) -> np.ndarray:
        return class_iou(self.tp[label], self.gt_pixels, self.pred_pixels[label]).numpy()

    def per_image(self) -> pd.DataFrame:
        return per_image_table(self.ids, {k: image_miou(self.tp[k], self.gt_pixels, self.pred_pixels[k])
                                          for k in self.labels})

    def presence(self, threshold: float = 0.5) -> pd.DataFrame | None:
        if self.se_probabilities is None:
            return None
        return presence_metrics(self.se_probabilities, self.gt_pixels > 0, self.class_names, threshold)

    def presence_failures(self, threshold: float = 0.5, iou_threshold: float = 50.0) -> pd.DataFrame | None:
        if self.se_probabilities is None:
            return None
        return presence_failures(self.se_probabilities, self.gt_pixels > 0, self.image_class_iou(self.se_run),
                                 self.ids, self.class_names, threshold, iou_threshold)

    def load_masks(self, image_id: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The image (H×W×3) and {"ground truth": mask, <run label>: prediction, ...}."""
        image, truth = self.dataset.load(self.ids.index(image_id))
        masks = {"ground truth": truth}
        for label, run in self.runs.items():
            masks[label] = read_prediction(predictions_dir(run.run_dir, self.tag) / f"{image_id}.png",
                                            run.run_dir, self.tag)
        return image, masks

    def overlays(self, image_ids: Sequence[str], alpha: float = 0.8):
        """image | ground truth | each run, one row per image, with per-image mIoU in the row titles."""
        per_image = self.per_image()
        images, masks, titles = [], [], []
        for image_id in image_ids:
            image, row = self.load_masks(image_id)
            images.append(image)
            masks.append(row)
            scores = ", ".join(f"{k} {per_image.loc[image_id, k]:.0f}" for k in self.labels)
            titles.append(f"{image_id}\nmIoU {scores}")
        return plot_overlays(images, masks, titles, self.class_names, alpha=alpha)


def compare_runs(run_dirs: Sequence[str | Path], tag: str = SINGLE_SCALE) -> RunComparison:
    """Read the ``tag`` predictions of runs evaluated on the same split, with the dataset's labels.

    The first run is the baseline (differences are later − first). Runs must share the dataset, its
    options and the evaluation split; their predictions must exist (see :func:`ensure_predictions`).
    """
    summaries = [load_run(d, tag) for d in run_dirs]
    labels = [s.label for s in summaries]
    if len(set(labels)) != len(labels):  # e.g. two FCN runs: tell them apart by folder
        labels = [f"{s.label} [{s.run_dir.name}]" for s in summaries]
    runs = dict(zip(labels, summaries))
    data_keys = ("dataset", "options", "num_classes")
    first = summaries[0]
    for other in summaries[1:]:
        if any(first.config["data"].get(k) != other.config["data"].get(k) for k in data_keys):
            raise ValueError(f"{first.run_dir} and {other.run_dir} were evaluated on different data "
                             f"({', '.join(data_keys)} differ); compare runs of the same dataset")
    split = first.evaluation.get("settings", {}).get("split") or first.config["data"].get("val_split", "val")
    dataset = _open_dataset(first.config, split)
    num_classes = int(dataset.num_classes)
    class_names = list(first.evaluation.get("class_names") or getattr(dataset, "class_names", None)
                       or [f"class {c}" for c in range(num_classes)])
    ids = [str(i) for i in dataset.ids]
    for run in summaries:
        if not predictions_dir(run.run_dir, tag).is_dir():
            raise FileNotFoundError(f"{run.run_dir} has no predictions/{tag}/; run `python -m encnet.evaluate "
                                    f"{run.run_dir} --save-predictions` (or analysis.ensure_predictions)")

    n = len(ids)
    gt_pixels = np.zeros((n, num_classes), dtype=np.int64)
    tp = {k: np.zeros((n, num_classes), dtype=np.int64) for k in labels}
    pred_pixels = {k: np.zeros((n, num_classes), dtype=np.int64) for k in labels}
    confusion = {k: np.zeros((num_classes, num_classes), dtype=np.int64) for k in labels}
    for i, image_id in enumerate(ids):
        _, truth = dataset.load(i)
        for label, run in runs.items():
            pred = read_prediction(predictions_dir(run.run_dir, tag) / f"{image_id}.png", run.run_dir, tag)
            if pred.shape != truth.shape:
                raise ValueError(f"prediction {image_id}.png of {run.run_dir} is {pred.shape[::-1]} (W×H) but its "
                                 f"label is {truth.shape[::-1]}; the predictions come from another dataset")
            conf = confusion_matrix(torch.from_numpy(np.asarray(truth, dtype=np.int64)), torch.from_numpy(pred),
                                    num_classes).numpy()
            confusion[label] += conf
            tp[label][i] = np.diag(conf)
            pred_pixels[label][i] = conf.sum(0)
            gt_pixels[i] = conf.sum(1)

    se_probabilities, se_run = None, None
    for label, run in runs.items():
        path = predictions_dir(run.run_dir, tag) / SE_PROBABILITIES
        if run.has_se_head and path.is_file():
            stored = json.loads(path.read_text())
            missing = [i for i in ids if i not in stored]
            if missing:
                raise ValueError(f"{path} lacks {len(missing)} of {n} images (e.g. {missing[0]}); rerun "
                                 f"`python -m encnet.evaluate {run.run_dir} --save-predictions`")
            se_probabilities = np.asarray([stored[i] for i in ids], dtype=np.float64)
            se_run = label
    return RunComparison(runs, tag, ids, class_names, confusion, tp, gt_pixels, pred_pixels, se_probabilities,
                         se_run, dataset)
