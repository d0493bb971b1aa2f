"""The checks behind the preflight (``encnet.experiments.preflight``) and the gate a paper-profile script passes
before it trains: a dataset present with the official counts, a backbone's weights found and fitting it, the GPUs
and NCCL that ``--gpus`` asks for, the disk the checkpoints need. Each check answers ✓ or ✗ with what it found and,
for a ✗, the fix.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from encnet.experiments.planning import PlannedRun

OK, FAIL, SKIP = "✓", "✗", "–"
# Labels read per split to see that the files decode and the values are in range (encnet.data.check samples).
LABEL_SAMPLE = 3
# A checkpoint holds the weights, the SGD momentum (one tensor per trained parameter) and the buffers; the run
# folder keeps the last and the previous one, and writes the next beside them before the rename.
CHECKPOINT_COPIES = 2


class PreflightError(RuntimeError):
    """What the planned runs need is not there; the message lists each problem with its fix."""


@dataclass(frozen=True)
class Check:
    item: str
    status: str  # OK, FAIL or SKIP (a run its script leaves out on purpose, saying so)
    found: str
    fix: str = ""
    needed_by: tuple[str, ...] = ("every run",)  # the experiments (reproduce scripts) whose runs need it


# --------------------------------------------------------------------------------------------------- data


def _prepare_command(dataset: str, root) -> str:
    import importlib

    from encnet.data import DATASETS

    module = importlib.import_module(DATASETS[dataset][0])
    if dataset != "coco_voc" and hasattr(module, "prepare_command"):
        return f"python -m encnet.data.prepare {dataset if dataset != 'pascal_voc_aug' else 'pascal_voc'} " \
               f"--src DOWNLOADS --root {root}"
    return module.prepare_command(root)


@lru_cache(maxsize=None)
def dataset_check(dataset: str, root: str) -> tuple[str, str, str]:
    """(status, what was found, fix) for one dataset under one root."""
    from encnet.data import DATASETS
    from encnet.data.check import check_dataset, expected_counts

    if DATASETS[dataset][2] is not None:
        return OK, f"{dataset}: generated on first use (demo data)", ""
    if dataset == "coco_voc":
        # COCO's count is set by the release's pixel filter, which rasterises every image once (minutes): the
        # layout is checked here, the count on the first run.
        needed = [Path(root) / p for p in ("train2017", "val2017", "annotations/instances_train2017.json",
                                           "annotations/instances_val2017.json")]
        absent = [str(p) for p in needed if not p.exists()]
        if absent:
            return FAIL, f"coco_voc at {root}: missing {', '.join(absent[:2])}", _prepare_command(dataset, root)
        return OK, f"coco_voc at {root}: train2017, val2017, annotations (count set by the pixel filter)", ""
    report = io.StringIO()
    ok = check_dataset(dataset, root, sample=LABEL_SAMPLE, out=report)
    text = report.getvalue()
    counts = []
    for split, count in expected_counts(dataset, Path(root)).items():
        found = split_size(dataset, root, split)
        counts.append(f"{split} {found if found is not None else '-'}/{count if count is not None else '?'}")
    if ok:
        return OK, f"{dataset} at {root}: {', '.join(counts)} images (found/official)", ""
    problems = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")]
    first = problems[0] if problems else "see python -m encnet.data.check"
    return (FAIL, f"{dataset} at {root}: {', '.join(counts)}; {first}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""),
            f"{_prepare_command(dataset, root)}; then python -m encnet.data.check {dataset} --root {root}")


@lru_cache(maxsize=None)
def split_size(dataset: str, root: str, split: str) -> int | None:
    """Images in one split of a prepared dataset (None when it cannot be read, and for COCO, whose count the pixel
    filter sets on the first run)."""
    from encnet.data import DATASETS, build_dataset

    if dataset == "coco_voc" or DATASETS[dataset][2] is not None:
        return None
    try:
        return len(build_dataset(dataset, root, split))
    except Exception:  # noqa: BLE001 - the dataset check says what is wrong
        return None


# ------------------------------------------------------------------------------------------------ weights


@lru_cache(maxsize=None)
def backbone_shapes(backbone: str) -> dict[str, tuple[int, ...]]:
    """The backbone's state_dict keys and shapes, from a model built on the meta device (no memory, no init)."""
    import torch

    from encnet.models.backbones import build_backbone

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_backbone(backbone, "none").state_dict().items()}


def _known_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    from encnet.models.pretrained import IMAGENET_BACKBONES

    return {name: backbone_shapes(name) for name in IMAGENET_BACKBONES}


@lru_cache(maxsize=None)
def weights_check(backbone: str, pretrained: str, pretrained_dir: str, fetch: bool = False) -> tuple[str, str, str]:
    """(status, what was found, fix) for one backbone's weights; ``fetch`` downloads a torchvision file that is not
    cached yet (a real run), otherwise that is a ✗ (offline nodes cannot)."""
    from encnet.models import pretrained as weights

    try:
        located = weights.locate(backbone, pretrained, pretrained_dir)
        if located.source == "none":
            note = f"; {weights.NO_IMAGENET}" if backbone in weights.IMAGENET_BACKBONES else ""
            return OK, located.describe() + note, ""
        if located.source == "download":
            if not fetch:
                return (FAIL, located.describe(),
                        f"fetch it now where there is internet (python -m encnet.models.pretrained fetch {backbone}),"
                        f" or pre-seed {located.cache_file}, or use --pretrained-dir DIR with "
                        f"DIR/{weights.FOLDER_FILES[backbone]}")
            located = weights.fetch(located)
        weights.check_state(located, backbone_shapes(backbone), _known_shapes())
    except weights.PretrainedWeightsError as err:
        return FAIL, err.problem, err.fix
    return OK, located.describe() + ": tensors fit", ""


# ------------------------------------------------------------------------------------------ machine checks


def device_checks(profile: str, gpus: int, device: str | None) -> list[Check]:
    import torch
    import torch.distributed as dist

    from encnet.engine.devices import CPU_ON_PURPOSE, cuda_problem

    if device == "cpu":
        return [Check("GPUs", OK, "the CPU, as asked (--device cpu)"),
                Check("NCCL", OK, "not needed (gloo on the CPU)")]
    problem = cuda_problem()
    count = 0 if problem is not None else torch.cuda.device_count()
    if profile == "demo" and device is None and gpus == 1:
        gpu = Check("GPUs", OK, f"{count} visible; the demo trains on the CPU when there is none")
    elif problem is not None:
        gpu = Check("GPUs", FAIL, f"--gpus {gpus}, but CUDA is not usable: {problem[0]}",
                    f"{problem[1]}; or {CPU_ON_PURPOSE}")
    elif count < gpus:
        gpu = Check("GPUs", FAIL, f"--gpus {gpus}, but {count} CUDA device(s) are visible",
                    f"--gpus {count}, or make the GPUs visible (CUDA_VISIBLE_DEVICES, SLURM --gres=gpu:{gpus})")
    else:
        gpu = Check("GPUs", OK, f"{count} visible ({torch.cuda.get_device_name(0)}), --gpus {gpus}")
    if gpus == 1 or (problem is not None and profile == "demo"):
        nccl = Check("NCCL", OK, f"not needed (--gpus {gpus})")
    elif dist.is_available() and dist.is_nccl_available():
        nccl = Check("NCCL", OK, f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))} in this torch build")
    else:
        nccl = Check("NCCL", FAIL, f"this torch ({torch.__version__}) has no NCCL: --gpus {gpus} needs it",
                     "install a CUDA build of torch from pytorch.org (they ship NCCL)")
    return [gpu, nccl]


def checkpoint_bytes(config) -> int:
    """Bytes of one checkpoint of ``config``'s network: weights and buffers, plus SGD's momentum per parameter."""
    import torch

    with torch.device("meta"):
        model = network(config)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    momentum = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return state + momentum


def network(config):
    """The config's network with random weights (no files read), for shapes, sizes and FLOPs."""
    from encnet.data import dataset_class
    from encnet.engine.build import build_model_for

    classes = config.data.num_classes or dataset_class(config.data.dataset).num_classes
    return build_model_for(config, classes, backbone_weights=False)


def structure(config) -> tuple:
    """What fixes a run's network and its per-iteration cost (everything else leaves both alone)."""
    m, d = config.model, config.data
    crop = tuple(d.crop_size) if isinstance(d.crop_size, list) else (d.crop_size, d.crop_size)
    return (config.task, m.name, m.backbone, m.num_codes, m.se_loss, m.aux, m.aux_head, m.lateral, m.cifar_block,
            d.dataset, d.num_classes, crop)


_EXAMPLE: dict[tuple, object] = {}  # structure → a config that has it (lru_cache keys must be hashable)


def example(config) -> tuple:
    key = structure(config)
    _EXAMPLE.setdefault(key, config)
    return key


def config_of(key: tuple):
    return _EXAMPLE[key]


@lru_cache(maxsize=None)
def structure_bytes(key: tuple) -> int:
    return checkpoint_bytes(_EXAMPLE[key])


def disk_check(runs: Sequence[PlannedRun], runs_root: str | Path) -> Check:
    todo = [r for r in runs if not r.finished]
    sizes = [structure_bytes(example(r.config)) for r in todo]
    needed = CHECKPOINT_COPIES * sum(sizes) + (max(sizes) if sizes else 0)
    where = Path(runs_root).resolve()
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    found = (f"{free / 2**30:,.1f} GiB free at {where}; the {len(todo)} unfinished run(s) write "
             f"{needed / 2**30:,.1f} GiB of checkpoints (the last and the previous one per run)")
    if free >= needed:
        return Check("disk", OK, found)
    return Check("disk", FAIL, found, f"free {(needed - free) / 2**30:,.1f} GiB there, or --runs-root on a "
                                             "larger disk")


def gate(runs: Sequence[PlannedRun], args) -> None:
    """Before a paper-profile script trains: this machine can run ``runs`` (each dataset present as
    ``encnet.data.check`` reads it, CUDA and ``--gpus`` GPUs unless ``--device cpu``, every backbone file present,
    fetched if it is torchvision's and online, and fitting its backbone). Raises :class:`PreflightError` listing
    each problem with its fix."""
    if args.profile != "paper" or getattr(args, "from_logs", False):
        return
    todo = [r for r in runs if not r.finished]
    if not todo:
        return
    problems = []
    for dataset, root in dict.fromkeys((r.config.data.dataset, str(r.config.data.root)) for r in todo):
        status, text, fix = dataset_check(dataset, root)
        if status == FAIL:
            problems.append(f"dataset {text}. Fix: {fix}; or, where it is prepared elsewhere, --data-root DIR")
    problems += [f"{c.item}: {c.found}. Fix: {c.fix}" for c in
                 device_checks(args.profile, args.gpus, getattr(args, "device", None)) if c.status == FAIL]
    for backbone, pretrained, folder in dict.fromkeys(
            (r.config.model.backbone, r.config.model.pretrained, r.config.model.pretrained_dir)
            for r in todo if r.config.task == "segmentation"):
        status, text, fix = weights_check(backbone, pretrained, folder, fetch=True)
        if status == FAIL:
            problems.append(f"weights {backbone}: {text}. Fix: {fix}")
    if problems:
        raise PreflightError("nothing was trained; what these runs need is missing:\n  " + "\n  ".join(problems))


