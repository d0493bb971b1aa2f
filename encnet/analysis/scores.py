"""Per-class and per-image scores of predictions against labels, as pandas frames for the notebooks.

IoU in percent; ``confusion[truth, prediction]`` as in :class:`encnet.metrics.SegmentationMetric`, whose
``confusion_matrix`` and ``class_iou`` are the only implementations (numpy arrays in, tensors out: ``.numpy()``);
a class absent from both truth and prediction has IoU NaN and is left out of means. Per-image mIoU (the mean
over the classes in the image's truth or prediction) is an analysis device, not the paper's metric: the
paper's mIoU comes from one confusion matrix over the whole split.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from encnet.metrics import class_iou

IGNORE_INDEX = 255


def image_miou(tp: np.ndarray, gt_pixels: np.ndarray, pred_pixels: np.ndarray) -> np.ndarray:
    """Per-image mIoU (N) from N×C statistics: the mean IoU over the classes in the image's truth or prediction."""
    iou = class_iou(tp, gt_pixels, pred_pixels).numpy()
    counted = ~np.isnan(iou)
    with np.errstate(invalid="ignore"):
        return np.where(counted.any(1), np.nansum(iou, 1) / np.maximum(counted.sum(1), 1), np.nan)


def confusion_frame(confusion: np.ndarray, class_names: Sequence[str], normalize: bool = True) -> pd.DataFrame:
    """The matrix as a DataFrame (rows: truth, columns: prediction); ``normalize``: % of each truth row."""
    confusion = np.asarray(confusion, dtype=np.float64)
    if normalize:
        rows = confusion.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            confusion = np.where(rows > 0, 100.0 * confusion / rows, np.nan)
    names = list(class_names)
    frame = pd.DataFrame(confusion, index=pd.Index(names, name="truth"), columns=pd.Index(names, name="predicted"))
    return frame if normalize else frame.astype(np.int64)


def largest_confusions(confusion: np.ndarray, class_names: Sequence[str], k: int = 10) -> pd.DataFrame:
    """The ``k`` largest off-diagonal cells: truth, predicted, pixels, and their share of the truth class (%)."""
    confusion = np.asarray(confusion)
    off = confusion.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    rows = confusion.sum(1)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    records = []
    for flat in order:
        t, p = divmod(int(flat), confusion.shape[1])
        if off[t, p] == 0:
            break
        records.append({"truth": class_names[t], "predicted": class_names[p], "pixels": int(off[t, p]),
                        "share_of_truth": 100.0 * off[t, p] / rows[t]})
    return pd.DataFrame.from_records(records, columns=["truth", "predicted", "pixels", "share_of_truth"])


def per_class_iou_table(ious: Mapping[str, Sequence[float]], class_names: Sequence[str]) -> pd.DataFrame:
    """Per-class IoU (%) of each run side by side; with two runs, a ``<second> − <first>`` column."""
    table = pd.DataFrame({label: np.asarray(v, dtype=np.float64) for label, v in ious.items()},
                         index=pd.Index(list(class_names), name="class"))
    if len(ious) == 2:
        first, second = list(ious)
        table[f"{second} − {first}"] = table[second] - table[first]
    return table


def per_image_table(ids: Sequence[str], mious: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Per-image mIoU (%) of each run; with two runs, a ``<second> − <first>`` column."""
    return per_class_iou_table(mious, ids).rename_axis("image")


def worst_images(table: pd.DataFrame, by: str, k: int = 6) -> pd.DataFrame:
    """The ``k`` rows of ``table`` with the lowest ``by`` (ties: table order)."""
    return table.sort_values(by, kind="stable", na_position="last").head(k)


def context_effect(table: pd.DataFrame, column: str, k: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(helped, hurt): the ``k`` rows with the largest positive and the largest negative ``column``.

    With ``column`` the EncNet − FCN difference these are where global context helped and where it hurt;
    rows with no difference (0 or NaN) are in neither.
    """
    values = table[column]
    helped = table[values > 0].sort_values(column, ascending=False, kind="stable").head(k)
    hurt = table[values < 0].sort_values(column, ascending=True, kind="stable").head(k)
    return helped, hurt
