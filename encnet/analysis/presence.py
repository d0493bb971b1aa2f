"""The SE-loss head's "class present" calls against the truth: precision, recall, and the failures that
coincide with a wrong segmentation."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def presence_metrics(probabilities: np.ndarray, present: np.ndarray, class_names: Sequence[str],
                     threshold: float = 0.5) -> pd.DataFrame:
    """Per-class precision and recall (%) of the SE head's "class present" calls (p > ``threshold``).

    ``probabilities`` and ``present`` are images × classes. The last row, ``all classes``, pools every
    (image, class) call (micro average). Precision is NaN for a class never called present, recall NaN for a
    class that never occurs.
    """
    called = np.asarray(probabilities) > threshold
    present = np.asarray(present, dtype=bool)
    if called.shape != present.shape:
        raise ValueError(f"probabilities {called.shape} and presence {present.shape} differ in shape")
    tp = (called & present).sum(0)
    fp = (called & ~present).sum(0)
    fn = (~called & present).sum(0)
    tp, fp, fn = (np.append(a, a.sum()) for a in (tp, fp, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, 100.0 * tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, 100.0 * tp / (tp + fn), np.nan)
    return pd.DataFrame({"images_with_class": tp + fn, "called_present": tp + fp, "true_calls": tp,
                         "false_alarms": fp, "misses": fn, "precision": precision, "recall": recall},
                        index=pd.Index(list(class_names) + ["all classes"], name="class"))


def presence_failures(probabilities: np.ndarray, present: np.ndarray, image_class_iou: np.ndarray,
                      ids: Sequence[str], class_names: Sequence[str], threshold: float = 0.5,
                      iou_threshold: float = 50.0) -> pd.DataFrame:
    """(image, class) pairs where a wrong presence call coincided with a wrong segmentation of that class.

    A call is wrong when ``p > threshold`` disagrees with the truth: a *miss* (class present, called absent) or
    a *false alarm* (absent, called present). The segmentation of the class in that image is wrong when its
    IoU there is below ``iou_threshold`` (%); a false alarm whose segmentation also left the class out has
    IoU NaN (nothing to get wrong) and is not listed. Sorted by the class IoU, worst first.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    called = probabilities > threshold
    wrong_call = called != present
    with np.errstate(invalid="ignore"):
        wrong_seg = np.asarray(image_class_iou) < iou_threshold  # NaN compares False
    images, classes = np.nonzero(wrong_call & wrong_seg)
    frame = pd.DataFrame({
        "image": [ids[i] for i in images],
        "class": [class_names[c] for c in classes],
        "call": np.where(present[images, classes], "miss", "false alarm"),
        "probability": probabilities[images, classes],
        "IoU": np.asarray(image_class_iou)[images, classes],
    })
    return frame.sort_values(["IoU", "image"], kind="stable").reset_index(drop=True)
