"""Drawing for the notebooks: class colours, masks blended over images, confusion heatmaps (matplotlib
``Figure`` objects, not registered with pyplot)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from encnet.analysis.scores import IGNORE_INDEX, confusion_frame


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
