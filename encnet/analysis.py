"""Failure-case analysis for the notebooks: FCN against EncNet on the same images, and the reproduction report.

Everything here reads run folders (``encnet.engine.runs`` layout), the predictions that
``python -m encnet.evaluate RUN_DIR --save-predictions`` writes (``predictions/<tag>/<image id>.png``, class
indices; ``se_probabilities.json`` for models with an SE-loss head: per image, the sigmoid of the
class-presence logits), the dataset's own label files, and ``tables/`` / ``figures/``. Nothing here trains.

The computing functions are pure and work on numpy arrays (confusion matrices, per-image statistics,
presence calls); :func:`compare_runs` reads the files once into a :class:`RunComparison` whose methods are
what the notebook cells call. Conventions follow ``docs/ARCHITECTURE.md``: ignore label 255, IoU in percent,
``confusion[truth, prediction]`` as in :class:`encnet.metrics.SegmentationMetric`, a class absent from both
truth and prediction has IoU NaN and is left out of means.

Per-image mIoU (the mean over the classes that occur in the image's truth or prediction) is an analysis
device, not the paper's metric: the paper's mIoU comes from one confusion matrix over the whole split.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "IGNORE_INDEX",
    "RunComparison",
    "RunSummary",
    "TableFiles",
    "class_iou",
    "class_palette",
    "colourize",
    "compare_runs",
    "confusion_frame",
    "confusion_matrix",
    "context_effect",
    "direction_summary",
    "ensure_predictions",
    "find_figures",
    "find_latest_pair",
    "find_tables",
    "image_miou",
    "iou_from_confusion",
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

IGNORE_INDEX = 255
SINGLE_SCALE = "ss"  # predictions/<tag>/ of the default evaluation (evaluate's eval.json)
SE_PROBABILITIES = "se_probabilities.json"


# ============================================================================================ pure: metrics


def confusion_matrix(label: np.ndarray, pred: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``confusion[truth, prediction]`` pixel counts (int64, C×C); ignored and out-of-range truths are skipped."""
    label = np.asarray(label).reshape(-1).astype(np.int64)
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    if label.shape != pred.shape:
        raise ValueError(f"label and prediction differ in size: {label.size} vs {pred.size} pixels")
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    # A prediction outside 0..C-1 cannot come from an argmax over C logits; clip so it cannot index another cell.
    index = label[keep] * num_classes + np.clip(pred[keep], 0, num_classes - 1)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def class_iou(tp: np.ndarray, gt_pixels: np.ndarray, pred_pixels: np.ndarray) -> np.ndarray:
    """IoU in % = TP / (truth + predicted − TP), elementwise; NaN where a class is in neither."""
    tp, gt_pixels, pred_pixels = (np.asarray(a, dtype=np.float64) for a in (tp, gt_pixels, pred_pixels))
    union = gt_pixels + pred_pixels - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, 100.0 * tp / union, np.nan)


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    confusion = np.asarray(confusion)
    return class_iou(np.diag(confusion), confusion.sum(1), confusion.sum(0))


def image_miou(tp: np.ndarray, gt_pixels: np.ndarray, pred_pixels: np.ndarray) -> np.ndarray:
    """Per-image mIoU (N) from N×C statistics: the mean IoU over the classes in the image's truth or prediction."""
    iou = class_iou(tp, gt_pixels, pred_pixels)
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


# ============================================================================== pure: comparing two runs


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


# ============================================================================================ pure: drawing


def class_palette(num_classes: int) -> np.ndarray:
    """C×3 uint8 colours: matplotlib's tab20 up to 20 classes, evenly spaced hues beyond."""
    from matplotlib import colormaps
    from matplotlib.colors import hsv_to_rgb

    if num_classes <= 20:
        colours = np.asarray(colormaps["tab20"].colors)[:num_classes]
    else:
        # Golden-ratio hue steps keep neighbouring class ids apart; two brightness levels double the range.
        hues = (np.arange(num_classes) * 0.618033988749895) % 1.0
        values = np.where(np.arange(num_classes) % 2 == 0, 0.95, 0.65)
        colours = hsv_to_rgb(np.stack([hues, np.full(num_classes, 0.75), values], axis=1))
    return np.rint(np.asarray(colours) * 255).astype(np.uint8)


def colourize(mask: np.ndarray, palette: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """H×W class indices → H×W×3 uint8 colours; ignored (and unknown) pixels are black."""
    mask = np.asarray(mask).astype(np.int64)
    valid = (mask >= 0) & (mask < len(palette)) & (mask != ignore_index)
    out = np.zeros(mask.shape + (3,), dtype=np.uint8)
    out[valid] = palette[mask[valid]]
    return out


def plot_overlays(images: Sequence[np.ndarray], masks: Sequence[Mapping[str, np.ndarray]],
                  titles: Sequence[str], class_names: Sequence[str], alpha: float = 0.8,
                  ignore_index: int = IGNORE_INDEX):
    """One row per image: the image, then each mask (e.g. ground truth | FCN | EncNet) blended over it.

    ``masks[i]`` maps a column name to image ``i``'s H×W class indices. The legend lists the colours of the
    classes that appear in any shown mask. Returns a matplotlib ``Figure`` (not registered with pyplot, so a
    notebook shows it once, where it is returned).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    palette = class_palette(len(class_names))
    columns = ["image"] + (list(masks[0]) if masks else [])
    fig = Figure(figsize=(2.2 * len(columns) + 2.4, 2.2 * max(len(images), 1)), layout="constrained")
    axes = fig.subplots(max(len(images), 1), len(columns), squeeze=False)
    shown: set[int] = set()
    for row, (image, row_masks, title) in enumerate(zip(images, masks, titles)):
        image = np.asarray(image, dtype=np.float64)
        axes[row][0].imshow(image.astype(np.uint8))
        axes[row][0].set_ylabel(title, fontsize=8)
        for col, name in enumerate(columns[1:], start=1):
            mask = np.asarray(row_masks[name])
            shown.update(int(v) for v in np.unique(mask) if 0 <= v < len(class_names) and v != ignore_index)
            blended = (1 - alpha) * image + alpha * colourize(mask, palette, ignore_index)
            axes[row][col].imshow(np.clip(blended, 0, 255).astype(np.uint8), interpolation="nearest")
        for col, name in enumerate(columns):
            if row == 0:
                axes[row][col].set_title(name, fontsize=9)
            axes[row][col].set_xticks([])
            axes[row][col].set_yticks([])
    handles = [Patch(color=palette[c] / 255.0, label=class_names[c]) for c in sorted(shown)]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="classes")
    return fig


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], title: str = ""):
    """Row-normalised confusion matrix (% of each truth class) as a heatmap ``Figure``; the diagonal is recall."""
    from matplotlib.figure import Figure

    frame = confusion_frame(confusion, class_names, normalize=True)
    size = 2.5 + 0.32 * len(class_names)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(frame.to_numpy(), cmap="Blues", vmin=0, vmax=100)
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="% of truth pixels")
    return fig


# ============================================================================================ runs on disk


def project_root(start: str | Path | None = None) -> Path:
    """The repository root above ``start`` (default: the working directory; notebooks run in ``notebooks/``)."""
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "encnet").is_dir():
            return folder
    return start


@dataclass
class RunSummary:
    """One run folder as the analysis sees it."""

    run_dir: Path
    label: str  # "FCN", "EncNet", "EncNet (no SE-loss)"
    config: dict
    evaluation: dict  # the eval*.json of the chosen tag ({} when it has not been evaluated)
    finished: bool

    @property
    def has_se_head(self) -> bool:
        return self.config.get("model", {}).get("name") == "encnet" and bool(self.config["model"].get("se_loss"))


def _model_label(config: dict) -> str:
    model = config.get("model", {})
    if model.get("name") == "fcn":
        return "FCN"
    if model.get("name") == "encnet":
        return "EncNet" if model.get("se_loss", True) else "EncNet (no SE-loss)"
    return str(model.get("name", "?"))


def load_run(run_dir: str | Path, tag: str = SINGLE_SCALE) -> RunSummary:
    """Config, evaluation ``tag`` and a model label of one run folder."""
    from encnet.report.runlogs import read_run

    log = read_run(run_dir)
    return RunSummary(Path(run_dir), _model_label(log.config), log.config, log.evals.get(tag, {}), log.finished)


def _started(run_dir: Path) -> str:
    env = run_dir / "env.json"
    if env.is_file():
        stamp = json.loads(env.read_text()).get("start_time")
        if stamp:
            return str(stamp)
    done = run_dir / "DONE"
    marker = done if done.is_file() else run_dir
    return _dt.datetime.fromtimestamp(marker.stat().st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")


def list_runs(runs_root: str | Path, profile: str = "demo") -> pd.DataFrame:
    """Finished segmentation runs (FCN and EncNet) of ``profile`` under ``runs_root``, newest first."""
    from encnet.report.runlogs import read_run

    records = []
    for config_path in sorted(Path(runs_root).glob(f"{profile}/*/*/config.yaml")):
        run_dir = config_path.parent
        log = read_run(run_dir)
        model, data = log.config.get("model", {}), log.config.get("data", {})
        is_segmentation = log.config.get("task", "segmentation") == "segmentation"
        if not (log.finished and is_segmentation and model.get("name") in ("fcn", "encnet")):
            continue
        records.append({
            "run_dir": run_dir, "experiment": log.config.get("experiment", run_dir.parent.name),
            "model": model.get("name"), "backbone": model.get("backbone"),
            "se_loss": model.get("name") == "encnet" and bool(model.get("se_loss")),
            "num_codes": model.get("num_codes"), "seed": log.seed, "dataset": data.get("dataset"),
            "started": _started(run_dir),
            "predictions": ",".join(sorted(p.name for p in (run_dir / "predictions").glob("*") if p.is_dir())),
            "_data": json.dumps({k: data.get(k) for k in ("dataset", "options", "val_split", "num_classes")},
                                sort_keys=True),
            # The recipe is the optimisation and the augmentation: an EncNet trained with, say, rotation (a
            # ledger switch) is not the FCN's counterpart even on the same data.
            "_train": json.dumps({"train": log.config.get("train", {}),
                                  "data": {k: v for k, v in data.items() if k not in ("root", "workers")}},
                                 sort_keys=True),
            # The suite's default heads, no ledger switch flipped: EncNet with the released attention, no lateral
            # path and the FCN aux head; FCN without an aux head (ledger fcn_aux).
            "_default_head": (not model.get("aux", True)) if model.get("name") == "fcn" else (
                model.get("attention", "release") == "release" and not model.get("lateral", False)
                and model.get("aux_head", "fcn") == "fcn"),
        })
    columns = ["run_dir", "experiment", "model", "backbone", "se_loss", "num_codes", "seed", "dataset", "started",
               "predictions", "_data", "_train", "_default_head"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame.sort_values(["started", "run_dir"], ascending=False, kind="stable").reset_index(drop=True)


def find_latest_pair(runs_root: str | Path, profile: str = "demo") -> tuple[Path, Path]:
    """(FCN run, EncNet run) to compare: the latest finished FCN baseline run (without an aux head, the suite's
    default, when there is one), and the EncNet run that best matches it.

    Among finished EncNet runs on the same data (dataset, generator options, split), the match prefers, in
    order: the sibling experiment (``pcontext_fcn_r50`` → ``pcontext_encnet_r50``), the SE-loss head switched
    on (the presence analysis needs it), the same seed, the same training recipe (optimisation and
    augmentation), the paper's K=32 codewords, the released head (no ledger switch flipped), the same backbone;
    then the latest. Sweeps and ablations of the same data therefore never win over the
    plain EncNet run of the same recipe.
    """
    runs = list_runs(runs_root, profile)
    fix = (f"train both first, e.g. `python -m encnet.train configs/{profile}/pcontext_fcn_r50.yaml` and "
           f"`python -m encnet.train configs/{profile}/pcontext_encnet_r50.yaml` (run folders go to runs/)")
    fcns = runs[runs["model"] == "fcn"]
    if fcns.empty:
        raise FileNotFoundError(f"no finished {profile}-profile FCN run under {Path(runs_root)}/{profile}/; {fix}")
    fcn = fcns.sort_values("_default_head", ascending=False, kind="stable").iloc[0]  # then the latest
    encnets = runs[(runs["model"] == "encnet") & (runs["_data"] == fcn["_data"])]
    if encnets.empty:
        raise FileNotFoundError(f"no finished {profile}-profile EncNet run on the data of {fcn['run_dir']} under "
                                f"{Path(runs_root)}/{profile}/; {fix}")
    sibling = str(fcn["experiment"]).replace("fcn", "encnet")
    score = pd.DataFrame({
        "sibling": encnets["experiment"] == sibling,
        "se_loss": encnets["se_loss"],
        "seed": encnets["seed"] == fcn["seed"],
        "recipe": encnets["_train"] == fcn["_train"],
        "k32": encnets["num_codes"] == 32,
        "default_head": encnets["_default_head"],
        "backbone": encnets["backbone"] == fcn["backbone"],
        "started": encnets["started"],
    })
    best = score.sort_values(list(score.columns), ascending=False, kind="stable").index[0]
    return Path(fcn["run_dir"]), Path(encnets.loc[best, "run_dir"])


def predictions_dir(run_dir: str | Path, tag: str = SINGLE_SCALE) -> Path:
    return Path(run_dir) / "predictions" / tag


_TAG_FLAGS = {SINGLE_SCALE: "", "ms_flip": " --ms"}


def ensure_predictions(run_dir: str | Path, tag: str = SINGLE_SCALE, device: str | None = None) -> Path:
    """The run's ``predictions/<tag>/``, made first if absent.

    Making them is ``python -m encnet.evaluate RUN_DIR --save-predictions`` (``--ms`` for ``ms_flip``), called
    in this process: the notebook has torch loaded already, and a second interpreter would pay its start-up
    again. It rewrites the run's ``eval[_<tag>].json`` with the same numbers.
    """
    folder = predictions_dir(run_dir, tag)
    if folder.is_dir() and any(folder.glob("*.png")):
        return folder
    if tag not in _TAG_FLAGS:
        raise ValueError(f"cannot make predictions for tag {tag!r} here (known: {', '.join(_TAG_FLAGS)}); run "
                         f"`python -m encnet.evaluate {run_dir} --save-predictions` with that setting yourself")
    if not (Path(run_dir) / "checkpoint_last.pt").is_file():
        raise FileNotFoundError(f"{run_dir} has no predictions/{tag}/ and no checkpoint_last.pt to make them "
                                f"from; copy the run folder with its checkpoint, or train it again")
    from encnet.engine.config import load_config
    from encnet.engine.evaluate import evaluate

    print(f"python -m encnet.evaluate {run_dir}{_TAG_FLAGS[tag]} --save-predictions", flush=True)
    scales, flip = None, False
    if tag == "ms_flip":
        config = load_config(Path(run_dir) / "config.yaml")
        scales, flip = config.eval.scales, config.eval.flip
    evaluate(run_dir, scales=scales, flip=flip, save_predictions=True, device=device)
    return folder


# ===================================================================================== the two-run comparison


def _open_dataset(config: dict, split: str):
    """The run's evaluation split without transforms: raw RGB images and label masks via ``dataset.load``."""
    from encnet.data import build_dataset

    data = config["data"]
    kwargs = dict(data.get("options") or {})
    if data.get("num_classes") is not None:
        kwargs["num_classes"] = data["num_classes"]
    return build_dataset(data["dataset"], data.get("root"), split, **kwargs)


def _read_prediction(path: Path, run_dir: Path, tag: str) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the predictions of {run_dir} are incomplete; delete "
                                f"{path.parent} and rerun `python -m encnet.evaluate {run_dir} --save-predictions`"
                                + ("" if tag == SINGLE_SCALE else f" with the {tag} setting"))
    return np.asarray(Image.open(path), dtype=np.int64)


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
        return per_class_iou_table({k: iou_from_confusion(v) for k, v in self.confusion.items()}, self.class_names)

    def check_against_eval(self) -> pd.DataFrame:
        """mIoU and pixAcc recomputed from the saved predictions next to the run's own eval record."""
        records = []
        for label, run in self.runs.items():
            conf = self.confusion[label]
            records.append({"run": label, "mIoU (recomputed)": float(np.nanmean(iou_from_confusion(conf))),
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
            iou = iou_from_confusion(self.confusion[label])
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
        return class_iou(self.tp[label], self.gt_pixels, self.pred_pixels[label])

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
            masks[label] = _read_prediction(predictions_dir(run.run_dir, self.tag) / f"{image_id}.png",
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
            pred = _read_prediction(predictions_dir(run.run_dir, tag) / f"{image_id}.png", run.run_dir, tag)
            if pred.shape != truth.shape:
                raise ValueError(f"prediction {image_id}.png of {run.run_dir} is {pred.shape[::-1]} (W×H) but its "
                                 f"label is {truth.shape[::-1]}; the predictions come from another dataset")
            conf = confusion_matrix(truth, pred, num_classes)
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


# ===================================================================================== the reproduction report


@dataclass(frozen=True)
class TableFiles:
    """One table under ``tables/``: its Markdown, its CSV (tidy numbers) and its direction checks, where present."""

    name: str
    markdown: Path | None
    csv: Path | None
    directions: Path | None


# Tables that belong to no profile (device measurements): shown in every profile's report.
PROFILE_FREE_TABLES = ("benchmarks",)
_DIRECTIONS_SUFFIX = "_directions"


def table_profile(stem: str) -> str | None:
    """The profile a table file belongs to: ``<name>_<profile>`` for non-paper profiles, else ``paper``."""
    from encnet.report.tables import PROFILES

    if stem in PROFILE_FREE_TABLES:
        return None
    for profile in PROFILES:
        if profile != "paper" and stem.endswith(f"_{profile}"):
            return profile
    return "paper"


def find_tables(tables_dir: str | Path, profile: str) -> list[TableFiles]:
    """The tables of ``profile`` (and the profile-free ones) in ``tables_dir``, sorted by name."""
    folder = Path(tables_dir)
    stems = sorted({p.stem for p in folder.glob("*.md")} | {p.stem for p in folder.glob("*.csv")
                                                             if not p.stem.endswith(_DIRECTIONS_SUFFIX)})
    found = []
    for stem in stems:
        if table_profile(stem) not in (profile, None):
            continue

        def existing(path: Path) -> Path | None:
            return path if path.is_file() else None

        found.append(TableFiles(stem, existing(folder / f"{stem}.md"), existing(folder / f"{stem}.csv"),
                                existing(folder / f"{stem}{_DIRECTIONS_SUFFIX}.csv")))
    return found


def table_title(table: TableFiles) -> str:
    """The Markdown's ``# title`` line, or the file name."""
    if table.markdown is not None:
        for line in table.markdown.read_text().splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return table.name


_TIDY = ("row", "metric", "reported", "reproduced_mean", "delta", "status")


def reported_vs_reproduced(tables: Sequence[TableFiles]) -> pd.DataFrame:
    """Every comparison table's tidy numbers in one frame (a ``table`` column first).

    Reads the CSVs that ``encnet.report.tables.write_table`` writes; CSVs of another shape (a table that is
    not reported-vs-reproduced) are skipped — their Markdown is still shown by the report.
    """
    frames = []
    for table in tables:
        if table.csv is None:
            continue
        frame = pd.read_csv(table.csv, keep_default_na=True)
        if not set(_TIDY) <= set(frame.columns):
            continue
        frame.insert(0, "table", table.name)
        frames.append(frame)
    if not frames:
        from encnet.report.tables import COMPARE_COLUMNS

        return pd.DataFrame(columns=["table", *COMPARE_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def direction_summary(tables: Sequence[TableFiles]) -> pd.DataFrame:
    """Every table's direction checks (claim, paper gap, paired reproduced gap, 95 % interval, verdict) in one
    frame."""
    frames = []
    for table in tables:
        if table.directions is not None:
            frame = pd.read_csv(table.directions)
            frame.insert(0, "table", table.name)
            frames.append(frame)
    if not frames:
        from encnet.report.tables import DIRECTION_COLUMNS

        return pd.DataFrame(columns=["table", *DIRECTION_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def find_figures(figures_dir: str | Path, profile: str) -> list[Path]:
    """The PNG figures of ``profile`` in ``figures_dir``, sorted by name."""
    return sorted(p for p in Path(figures_dir).glob("*.png") if table_profile(p.stem) in (profile, None))
