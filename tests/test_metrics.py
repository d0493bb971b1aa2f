"""SegmentationMetric vs a hand-computed confusion matrix; reduce() across 2 gloo processes."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from encnet.metrics import (ClassificationMetric, SegmentationMetric, ade20k_final_score, class_iou, confusion_matrix,
                            iou_from_confusion)

TARGET = torch.tensor([[[0, 0, 1, 255], [1, 2, 2, 255]]])
PRED = torch.tensor([[[0, 1, 1, 0], [1, 2, 0, 3]]])
# Labelled (target, pred) pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); class 3 appears only where ignored.
HAND_CONFUSION = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])


def test_confusion_and_scores_by_hand():
    metric = SegmentationMetric(4)
    metric.update(PRED, TARGET)
    assert metric.confusion.dtype == torch.int64
    torch.testing.assert_close(metric.confusion, HAND_CONFUSION, rtol=0, atol=0)
    scores = metric.compute()
    assert scores["pixAcc"] == pytest.approx(100 * 4 / 6)
    assert scores["IoU"][:3] == pytest.approx([100 / 3, 200 / 3, 50])  # TP / (TP + FP + FN)
    assert math.isnan(scores["IoU"][3])  # absent from prediction and target
    assert scores["mIoU"] == pytest.approx(50.0)


def naive_confusion(target, pred, n, ignore=255):
    """The oracle: one pixel at a time, in plain Python."""
    out = [[0] * n for _ in range(n)]
    for t, p in zip(target.reshape(-1).tolist(), pred.reshape(-1).tolist()):
        if t != ignore and 0 <= t < n:
            out[t][p] += 1
    return torch.tensor(out, dtype=torch.int64)


def test_confusion_matrix_equals_a_pixel_by_pixel_count_on_random_maps():
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (3, 17, 19), generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.1] = 255
    target[0, 0, :3] = torch.tensor([-1, 5, 7])  # out of range truths are not counted either
    pred = torch.randint(0, 5, target.shape, generator=gen)
    torch.testing.assert_close(confusion_matrix(target, pred, 5), naive_confusion(target, pred, 5), rtol=0, atol=0)
    torch.testing.assert_close(confusion_matrix(TARGET, PRED, 4), HAND_CONFUSION, rtol=0, atol=0)
    # numpy arrays in (the analysis reads PNGs with numpy): the same counts
    torch.testing.assert_close(confusion_matrix(target.numpy(), pred.numpy(), 5), naive_confusion(target, pred, 5))


def test_a_prediction_outside_the_classes_is_an_error_naming_it():
    with pytest.raises(ValueError, match="class 9, outside 0..3"):
        confusion_matrix(TARGET, torch.where(PRED == 2, 9, PRED), 4)  # a labelled pixel
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(TARGET, PRED[..., :2], 4)
    # ...but not where the truth is ignored: nothing is counted there
    assert confusion_matrix(TARGET, torch.where(TARGET == 255, 99, PRED), 4).sum() == 6


def test_iou_by_hand_in_float64_and_nan_for_a_class_in_neither():
    confusion = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    iou = iou_from_confusion(confusion)
    assert iou.dtype == torch.float64
    assert iou[0].item() == pytest.approx(100 * 3 / (3 + 1 + 2), rel=1e-15)
    assert iou[1].item() == pytest.approx(100 * 4 / (4 + 2 + 1), rel=1e-15)
    assert math.isnan(iou[2])
    # elementwise on images × classes statistics
    per_image = class_iou(torch.tensor([[4, 0]]), torch.tensor([[4, 0]]), torch.tensor([[8, 2]]))
    assert per_image[0, 0].item() == 50.0 and per_image[0, 1].item() == 0.0


def test_logits_accumulation_and_reset():
    metric = SegmentationMetric(4)
    logits = F.one_hot(PRED, 4).permute(0, 3, 1, 2).float() * 3 + torch.rand(1, 4, 2, 4)
    metric.update(logits, TARGET)
    metric.update(PRED, TARGET)
    torch.testing.assert_close(metric.confusion, 2 * HAND_CONFUSION, rtol=0, atol=0)
    metric.reset()
    assert metric.confusion.sum() == 0
    with pytest.raises(ValueError, match="logits"):
        metric.update(PRED[:, :1], TARGET)


def test_class_predicted_but_absent_scores_zero():
    metric = SegmentationMetric(3)
    metric.update(torch.tensor([[2, 0]]), torch.tensor([[0, 0]]))
    iou = metric.compute()["IoU"]
    assert iou[0] == pytest.approx(50.0) and math.isnan(iou[1]) and iou[2] == 0.0
    assert metric.compute()["mIoU"] == pytest.approx(25.0)


def test_reduce_is_a_no_op_without_process_group():
    metric = SegmentationMetric(4)
    metric.update(PRED, TARGET)
    metric.reduce()
    torch.testing.assert_close(metric.confusion, HAND_CONFUSION, rtol=0, atol=0)


def test_classification_metric_and_ade20k_score():
    metric = ClassificationMetric()
    metric.update(torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]), torch.tensor([1, 0, 0, 0]))
    assert metric.compute() == {"accuracy": 75.0, "top1_error": 25.0}
    assert ade20k_final_score(80.0, 40.0) == 60.0


def shard_data(rank: int):
    gen = torch.Generator().manual_seed(rank)
    target = torch.randint(0, 5, (3, 6, 7), generator=gen)
    target[target == 4] = 255  # four values drawn, one of them ignored
    pred = torch.randint(0, 4, (3, 6, 7), generator=gen)
    labels = torch.randint(0, 10, (rank + 3,), generator=gen)
    return pred, target, F.one_hot(labels, 10).float(), torch.randint(0, 10, (rank + 3,), generator=gen)


def worker(rank: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/store", rank=rank, world_size=2)
    pred, target, logits, labels = shard_data(rank)
    seg, cls = SegmentationMetric(4), ClassificationMetric()
    seg.update(pred, target)
    cls.update(logits, labels)
    seg.reduce()
    cls.reduce()
    torch.save({"confusion": seg.confusion, "counts": cls.counts}, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()
    os._exit(0)


def test_reduce_sums_across_two_processes(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, __file__, str(rank), str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]
    logs = [p.communicate(timeout=120)[0] for p in procs]
    files = [tmp_path / f"rank{rank}.pt" for rank in range(2)]
    assert all(f.exists() for f in files), "workers did not report; their output:\n" + "\n".join(logs)

    seg, cls = SegmentationMetric(4), ClassificationMetric()
    for rank in range(2):
        pred, target, logits, labels = shard_data(rank)
        seg.update(pred, target)
        cls.update(logits, labels)
    for f in files:
        result = torch.load(f)
        torch.testing.assert_close(result["confusion"], seg.confusion, rtol=0, atol=0)
        torch.testing.assert_close(result["counts"], cls.counts, rtol=0, atol=0)


if __name__ == "__main__":
    worker(int(sys.argv[1]), sys.argv[2])


def test_size_bin_metric_counts_only_the_pixels_of_each_bin_against_a_hand_count():
    from encnet.metrics import SizeBinMetric

    # One 1×6 image. Bin "small" (code 1): pixels 0-2, "large" (code 2): pixels 3-5.
    target = torch.tensor([[[1, 1, 0, 2, 2, 2]]])
    pred = torch.tensor([[[1, 0, 1, 2, 2, 0]]])
    regions = torch.tensor([[1, 1, 1, 2, 2, 2]])
    metric = SizeBinMetric(3, {"small": 1, "large": 2}, classes=[1, 2])
    metric.update(pred, target, regions)
    metric.reduce()
    got = metric.compute()
    # small: class 1 TP 1, truth 2, predicted 2 → 1/3; class 2 absent there (no union) → mean 1/3.
    # large: class 2 TP 2, truth 3, predicted 2 → 2/3; class 1 absent → mean 2/3.
    assert got["mIoU_small"] == pytest.approx(100 / 3) and got["mIoU_large"] == pytest.approx(200 / 3)
    # Pixels outside every region, and ignored pixels, never count.
    outside = SizeBinMetric(3, {"small": 1}, classes=[1])
    outside.update(torch.tensor([[[1, 1]]]), torch.tensor([[[1, 255]]]), torch.tensor([[0, 1]]))
    assert math.isnan(outside.compute()["mIoU_small"])


def test_miou_all_averages_over_every_class_present_over_classes_with_a_union():
    # confusion[target, pred] by hand, 4 classes; class 3 never occurs; class 2 only predicted (IoU 0).
    conf = torch.tensor([[3, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    iou = [3 / 4, 2 / 4, 0.0]  # TP / (row + col − TP): 3/(4+3−3), 2/(3+3−2), 0/(0+1−0)
    results = {}
    for mode in ("present", "all"):
        metric = SegmentationMetric(4, miou=mode)
        metric.confusion = conf.clone()
        results[mode] = metric.compute()
    assert results["present"]["mIoU"] == pytest.approx(100 * sum(iou) / 3)
    assert results["all"]["mIoU"] == pytest.approx(100 * sum(iou) / 4)
    assert results["all"]["pixAcc"] == results["present"]["pixAcc"] == pytest.approx(100 * 5 / 7)
    with pytest.raises(ValueError, match="miou"):
        SegmentationMetric(4, miou="mean")
