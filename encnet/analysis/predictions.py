"""Saved predictions of a run: ``predictions/<tag>/<image id>.png`` (class indices) and, for models with an
SE-loss head, ``se_probabilities.json``, as ``python -m encnet.evaluate RUN_DIR --save-predictions`` writes them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SINGLE_SCALE = "ss"  # predictions/<tag>/ of the default evaluation (evaluate's eval.json)
SE_PROBABILITIES = "se_probabilities.json"


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



def read_prediction(path: Path, run_dir: Path, tag: str) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the predictions of {run_dir} are incomplete; delete "
                                f"{path.parent} and rerun `python -m encnet.evaluate {run_dir} --save-predictions`"
                                + ("" if tag == SINGLE_SCALE else f" with the {tag} setting"))
    return np.asarray(Image.open(path), dtype=np.int64)
