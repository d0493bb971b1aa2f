"""The paper-vs-release ledger: every switch really selects what the ledger says, both ways.

Each test builds the model, the data pipeline, the loss or the config from the ledger's two values through the
same code the engine uses (``load_config`` → ``encnet.engine.build``), and checks the difference against an
independent oracle: a hand-set attention γ, a hand-written Encoding formula, the label arrays a fixture wrote,
reported.csv, a naive cross-entropy.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn
from torchvision.transforms import v2

from encnet.engine.config import config_from_dict, load_config, to_yaml
from encnet.experiments.discrepancies import (LEDGER_PATH, REPO_ROOT, effects, ledger_table, load_ledger, measurements,
                                  switch_override)
from encnet.engine.build import build_criterion, build_dataset_for, build_model_for
from encnet.models import SegmentationOutput, build_backbone
from encnet.engine.runs import run_dir_for

DEMO = REPO_ROOT / "configs" / "demo" / "context_scenes_encnet.yaml"  # the ledger's demo base
DEMO_FCN = REPO_ROOT / "configs" / "demo" / "context_scenes_fcn.yaml"  # fcn_aux's demo base
PAPER_PCONTEXT = REPO_ROOT / "configs" / "paper" / "pcontext_encnet_r50.yaml"
REQUIRED = {"attention_output", "lateral", "aux_head", "fcn_aux", "backbone_stem", "training_epochs", "rotation",
            "aux_weight", "pcontext_classes", "encoding_scale_sign", "scale_side", "blur", "ade_lr", "coco_lr",
            "epochs_today", "ade_r101_size", "voc_train_aug", "pad_label", "miou_classes", "checkpoint_selection",
            "monitor_view"}
PAPER = REPO_ROOT / "configs" / "paper"


@pytest.fixture(scope="module")
def ledger():
    return load_ledger()


def configs_for(entry, base: Path, extra=()):
    """The resolved configs of the entry's paper and release sides on ``base``."""
    plain = load_config(base, list(extra))
    return {side: load_config(base, [*extra, switch_override(entry, side, plain)]) for side in ("paper", "release")}


# ----------------------------------------------------------------------------------------------- the ledger


def test_ledger_has_the_known_differences_each_with_both_sources(ledger):
    assert REQUIRED <= {e.id for e in ledger}
    for e in ledger:
        assert e.paper.source and e.release.source and e.paper.choice and e.release.choice, e.id
        if e.switch is not None and e.kind != "convention":
            assert e.paper.value != e.release.value, f"{e.id}: the two sides select the same value"
    table = ledger_table(ledger)
    assert list(table["id"]) == [e.id for e in ledger]


def test_ledger_errors_name_the_entry(tmp_path):
    bad = yaml.safe_load(LEDGER_PATH.read_text())
    bad["entries"][1]["switch"] = "model.latteral"
    path = tmp_path / "ledger.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=r"entry 1 \(lateral\).*model\.latteral"):
        load_ledger(path)


def test_suite_defaults_follow_the_side_the_ledger_says(ledger):
    """Every paper config (and the demo config) uses the side that ``suite_follows`` names."""
    all_configs = [load_config(p) for profile in ("paper", "demo")
                   for p in sorted((REPO_ROOT / "configs" / profile).glob("*.yaml"))]
    checked = 0
    for e in ledger:
        if e.switch is None or e.suite_follows == "n/a":
            continue
        # The demo does not represent an entry it does not measure (e.g. scale side on square images).
        configs = [c for c in all_configs if c.profile == "paper" or not e.not_in_demo]
        if e.suite_follows == "both":  # one config per side, e.g. PASCAL-Context 59 (Table 1) and 60 (Table 2)
            section, key = e.switch.split(".")
            used = {getattr(getattr(c, section), key) for c in configs}
            assert {e.paper.value, e.release.value} <= used, e.id
            continue
        for config in configs:
            value = getattr(getattr(config, e.switch.split(".")[0]), e.switch.split(".")[1])
            if e.applies_to and config.experiment not in e.applies_to and config.profile == "paper":
                continue
            if e.id == "fcn_aux":  # the FCN baseline's aux head; EncNet's is aux_head's business
                if config.task == "segmentation" and config.model.name == "fcn":
                    assert value == e.side(e.suite_follows).value, (e.id, config.experiment)
                    checked += 1
                continue
            if e.switch == "model.cifar_block":  # a CIFAR switch: classification configs only
                if config.task == "classification":
                    assert value == e.side(e.suite_follows).value, (e.id, config.experiment)
                    checked += 1
                continue
            if config.task != "segmentation" or (e.switch.startswith("model.") and config.model.name != "encnet"):
                continue
            if e.id == "backbone_stem":  # one value per depth: the suite must not use a deep-stem ResNet
                assert not value.endswith("s"), f"{config.experiment} uses the deep-stem {value}"
            elif isinstance(e.paper.value, dict):
                if config.data.dataset in e.paper.value:
                    assert value == e.side(e.suite_follows).value[config.data.dataset], (e.id, config.experiment)
            else:
                assert value == e.side(e.suite_follows).value, (e.id, config.experiment)
            checked += 1
    assert checked >= 20


def test_quoted_numbers_match_reported_csv(ledger):
    from encnet.report.reported import load_reported, lookup

    reported = load_reported()
    quoted = [r for e in ledger for s in ("paper", "release") for r in e.side(s).reported]
    assert len(quoted) >= 4
    for experiment, row, metric, value in quoted:
        entry = lookup(reported, experiment, row, metric)
        assert entry is not None and entry["value"] == pytest.approx(value), (experiment, row, metric)


# ------------------------------------------------------------------------------------- each switch, both ways


def test_attention_output_paper_is_x_gamma_release_is_relu_x_plus_x_gamma(ledger):
    entry = ledger.get("attention_output")
    torch.manual_seed(0)
    outputs = {}
    for side, config in configs_for(entry, DEMO).items():
        model = build_model_for(config, num_classes=4).double().eval()
        module = model.head.enc_module
        channels = module.fc[0].in_features
        x = torch.randn(2, channels, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        bias = torch.linspace(-2.0, 2.0, channels, dtype=torch.float64)
        gamma = (1.0 / (1.0 + torch.exp(-bias)))[None, :, None, None]  # γ = sigmoid(bias) once FC weights are 0
        # x has negative entries, so the residual and the ReLU both change the release's output.
        expected = {"paper": x * gamma, "release": torch.clamp(x + x * gamma, min=0.0)}
        with torch.no_grad():
            module.fc[0].weight.zero_()
            module.fc[0].bias.copy_(bias)
            outputs[side], _ = module(x)
        torch.testing.assert_close(outputs[side], expected[side])
    assert not torch.allclose(outputs["paper"], outputs["release"])


def test_lateral_adds_layer2_layer3_convs_and_their_features_reach_the_output(ledger):
    entry = ledger.get("lateral")
    torch.manual_seed(0)
    responses = {}
    for side, config in configs_for(entry, DEMO).items():
        model = build_model_for(config, num_classes=4).eval()
        head, channels = model.head, model.backbone.channels
        names = {n.split(".")[1] for n, _ in head.named_parameters()}
        if side == "paper":
            assert not ({"connect", "fusion"} & names)
        else:
            first_convs = [next(m for m in branch.modules() if isinstance(m, nn.Conv2d)) for branch in head.connect]
            assert [(c.in_channels, c.kernel_size) for c in first_convs] == [(channels[1], (1, 1)),
                                                                             (channels[2], (1, 1))]
            fusion = next(m for m in head.fusion.modules() if isinstance(m, nn.Conv2d))
            assert fusion.kernel_size == (3, 3) and fusion.in_channels == 3 * (channels[3] // 4)
        c4 = torch.randn(1, channels[3], 4, 4)
        c2, c3 = torch.randn(1, channels[1], 4, 4), torch.randn(1, channels[2], 4, 4)
        with torch.no_grad():
            first, _ = head(c4, c2, c3)
            second, _ = head(c4, c2 + 1.0, c3 - 1.0)
        responses[side] = (first - second).abs().max().item()
    assert responses["paper"] == 0.0  # the paper's head never reads layer2/layer3
    assert responses["release"] > 1e-4


def test_backbone_stem_release_is_three_3x3_convs(ledger):
    entry = ledger.get("backbone_stem")
    shapes = {}
    for side, config in configs_for(entry, PAPER_PCONTEXT, ["model.pretrained=none"]).items():
        backbone = build_backbone(config.model.backbone, config.model.pretrained).eval()
        convs = [m for m in backbone.conv1.modules() if isinstance(m, nn.Conv2d)]
        if side == "paper":
            assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
                (3, 64, (7, 7), (2, 2))]
        else:
            assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
                (3, 64, (3, 3)), (64, 64, (3, 3)), (64, 128, (3, 3))]
            assert convs[0].stride == (2, 2) and backbone.layer1[0].conv1.in_channels == 128
        with torch.no_grad():
            shapes[side] = backbone(torch.randn(1, 3, 32, 32))[-1].shape
    assert shapes["paper"] == shapes["release"] == (1, 2048, 4, 4)  # both dilated to output stride 8


def test_training_epochs_land_in_the_resolved_config(ledger):
    entry = ledger.get("training_epochs")
    for name, (paper, release) in {"pcontext_encnet_r50": (50, 80)}.items():
        sides = configs_for(entry, REPO_ROOT / "configs" / "paper" / f"{name}.yaml")
        assert (sides["paper"].train.epochs, sides["release"].train.epochs) == (paper, release)
        assert f"epochs: {paper}" in to_yaml(sides["paper"]) and f"epochs: {release}" in to_yaml(sides["release"])
        assert run_dir_for(sides["paper"]) != run_dir_for(sides["release"])
    demo = configs_for(entry, DEMO)
    own = load_config(DEMO).train.epochs
    assert demo["release"].train.epochs == own
    assert demo["paper"].train.epochs == max(1, round(own * 50 / 80))  # the paper's PASCAL-Context ratio
    # ADE20K and VOC train_aug: the paper and v0.5.0 agree (120, 50); today's release differs (epochs_today).
    for name, epochs in {"ade20k_encnet_r50": 120, "voc_aug_encnet_r101": 50}.items():
        assert {c.train.epochs for c in configs_for(entry, PAPER / f"{name}.yaml").values()} == {epochs}


def test_rotation_is_in_the_train_transforms_only_on_the_paper_side(ledger, data_cache):
    entry = ledger.get("rotation")
    tiny = [f"data.root={data_cache}", "data.options={seed: 0, num_train: 8, num_val: 2, image_size: 32}",
            "data.base_size=32", "data.crop_size=32", "data.scale_min=1.0", "data.scale_max=1.0", "data.hflip=false"]
    ignored = {}
    for side, config in configs_for(entry, DEMO, tiny).items():
        dataset = build_dataset_for(config, "train", train=True)
        steps = dataset.transform.transforms.transforms
        rotations = [s for s in steps if isinstance(s, v2.RandomRotation)]
        assert len(rotations) == (1 if side == "paper" else 0)
        if rotations:
            assert list(rotations[0].degrees) == [-10.0, 10.0]
        torch.manual_seed(0)
        # context_scenes has no ignore pixels: only a rotation brings 255 into the corners of a full-size crop.
        ignored[side] = sum(int((dataset[i][1] == 255).sum()) for i in range(len(dataset)))
    assert ignored["release"] == 0 and ignored["paper"] > 0


def test_aux_head_paper_is_a_stage3_se_module_release_an_fcn_head(ledger):
    from encnet.losses import se_targets
    from encnet.nn import FCNHead, SEHead

    entry = ledger.get("aux_head")
    num_classes = 4
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, num_classes, (2, 24, 24), generator=torch.Generator().manual_seed(1))
    for side, config in configs_for(entry, DEMO).items():
        assert config.model.aux_head == entry.side(side).value and config.model.aux
        torch.manual_seed(0)
        model = build_model_for(config, num_classes).double()
        output = model(x.double())
        _, parts = build_criterion(config, num_classes)(output, target)
        c3 = model.backbone.channels[2]
        if side == "paper":
            assert isinstance(model.aux_head, SEHead) and model.aux_head.se_layer.in_features == c3
            assert output.aux is None and set(parts) == {"main", "se", "aux_se"}
            # Its loss is the SE-loss of the stage-3 logits: naive BCE against the classes in each label map.
            present = se_targets(target, num_classes).double()
            p = torch.sigmoid(output.aux_se)
            bce = -(present * p.log() + (1 - present) * (1 - p).log()).mean()
            torch.testing.assert_close(parts["aux_se"], bce)
        else:
            assert isinstance(model.aux_head, FCNHead)
            assert output.aux_se is None and output.aux.shape == (2, num_classes, 24, 24)
            assert set(parts) == {"main", "se", "aux"}


def test_fcn_aux_paper_is_a_plain_fcn_release_adds_the_aux_head(ledger):
    from encnet.nn import FCNHead

    entry = ledger.get("fcn_aux")
    assert load_ledger().get("fcn_aux").demo_base == DEMO_FCN.stem
    num_classes = 4
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, num_classes, (2, 24, 24), generator=torch.Generator().manual_seed(1))
    totals = {}
    for side, config in configs_for(entry, DEMO_FCN).items():
        assert config.model.name == "fcn" and config.model.aux is entry.side(side).value
        torch.manual_seed(0)
        model = build_model_for(config, num_classes).eval()
        with torch.no_grad():
            output = model(x, all_heads=True)  # the loss reads the aux head, which eval forwards skip unasked
            totals[side], parts = build_criterion(config, num_classes)(output, target)
        if side == "paper":
            assert model.aux_head is None and output.aux is None and set(parts) == {"main"}
        else:
            assert isinstance(model.aux_head, FCNHead) and set(parts) == {"main", "aux"}
            expected = parts["main"] + config.train.aux_weight * parts["aux"]
            torch.testing.assert_close(totals[side], expected)
    # Same seed, same backbone and main head: the aux CE term is the whole difference.
    assert totals["release"] > totals["paper"]


def test_aux_weight_changes_the_loss_by_the_weight_difference_times_the_aux_ce(ledger):
    entry = ledger.get("aux_weight")
    torch.manual_seed(0)
    num_classes = 4
    target = torch.randint(0, num_classes, (2, 5, 5))
    target[0, 0, :3] = 255
    output = SegmentationOutput(torch.randn(2, num_classes, 5, 5, dtype=torch.float64),
                                torch.randn(2, num_classes, 5, 5, dtype=torch.float64), None)
    # Naive cross-entropy over the labelled pixels: −mean log softmax at the target.
    logp = output.aux - output.aux.exp().sum(1, keepdim=True).log()
    valid = target != 255
    picked = logp.permute(0, 2, 3, 1)[valid].gather(1, target[valid][:, None]).squeeze(1)
    aux_ce = -picked.mean()
    totals = {}
    for side, config in configs_for(entry, DEMO).items():
        criterion = build_criterion(config, num_classes)
        assert criterion.aux_weight == entry.side(side).value == config.train.aux_weight
        totals[side], _ = criterion(output, target)
    torch.testing.assert_close(totals["release"] - totals["paper"], (0.4 - 0.2) * aux_ce)


def test_pcontext_classes_59_ignores_background_60_keeps_it(ledger, tmp_path):
    from data_fixtures import pascal_context_png

    entry = ledger.get("pcontext_classes")
    labels = pascal_context_png(tmp_path)["2010_000001"].astype(np.int64)
    masks = {}
    for side, config in configs_for(entry, PAPER_PCONTEXT, [f"data.root={tmp_path}"]).items():
        dataset = build_dataset_for(config, "val", train=False)
        assert dataset.num_classes == entry.side(side).value
        masks[side] = dataset[0][1].numpy()
    np.testing.assert_array_equal(masks["paper"], labels)  # 60 classes: 0 is background, a class
    np.testing.assert_array_equal(masks["release"], np.where(labels == 0, 255, labels - 1))  # 59: ignored


def test_encoding_scale_sign_is_a_reparametrisation_of_the_papers_formula():
    from encnet.nn import Encoding

    torch.manual_seed(0)
    layer = Encoding(6, 5).double()
    assert bool(((layer.scale >= -1) & (layer.scale <= 0)).all())  # the release's U(−1, 0) initialisation
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    s_paper = -layer.scale.detach()  # the paper's smoothing factors, positive
    desc = x.flatten(2).transpose(1, 2)  # B×N×D
    residual = desc[:, :, None, :] - layer.codewords.detach()[None, None]  # B×N×K×D, the naive way
    weights = torch.softmax(-s_paper * residual.pow(2).sum(-1), dim=2)  # exp(−s_k‖r_ik‖²), paper §3.1
    expected = (weights[..., None] * residual).sum(1)
    torch.testing.assert_close(layer(x), expected)


def test_cifar_block_switch_builds_each_sides_block(ledger):
    from encnet.models.cifar import PostActBlock, PreActBlock

    entry = ledger.get("cifar_block")
    kinds = {}
    for side in ("paper", "release"):
        chosen = {"name": "EncNet-4k16d", entry.switch.split(".")[1]: entry.side(side).value}
        config = config_from_dict({"task": "classification", "model": chosen,
                                   "data": {"dataset": "context_textures"}})
        model = build_model_for(config, 10)
        blocks = [m for m in model.modules() if isinstance(m, (PreActBlock, PostActBlock))]
        assert len(blocks) == 6  # 3 stages × 2 basic blocks
        kinds[side] = {type(m) for m in blocks}
    assert kinds == {"paper": {PreActBlock}, "release": {PostActBlock}}


def test_cifar_entries_say_the_smoothing_method_is_the_papers_and_configs_use_wd_5e4(ledger):
    """Issue 12: the random smoothing factors are §3.5's own method (no learned-vs-drawn side), the paper and the
    release's script agree on weight decay 5e-4, and CIFAR errors are reported last-epoch with best beside."""
    drop = ledger.get("cifar_encoding_drop")
    assert drop.switch is None and "U(0, 1)" in drop.paper.choice and "0.5" in drop.paper.choice
    assert "learned" not in drop.release.choice
    assert ledger.get("cifar_reported_error").kind == "reporting"
    ids = [e.id for e in ledger]
    start = ids.index("cifar_encoding_drop")
    assert ids[start:start + 5] == ["cifar_encoding_drop", "cifar_block", "cifar_init", "cifar_weight_decay",
                                    "cifar_reported_error"]  # one block, where the old entry stood
    for path in sorted((REPO_ROOT / "configs").glob("*/cifar10_*.yaml")):
        config = load_config(path)
        assert config.train.weight_decay == 5e-4 and config.model.cifar_block == "preact", path


# ------------------------------------------------------------------------------------------ planning, table


def test_demo_sides_the_suite_follows_are_the_demo_base_run_with_the_ledgers_overrides(ledger):
    sides = measurements(ledger, "demo")
    # The demo's ledger runs are short (profiles.demo.overrides): every side adds them, the followed side nothing else.
    common = list(load_ledger().profiles["demo"]["overrides"])
    assert common and all(list(m.overrides[: len(common)]) == common for m in sides)
    assert load_ledger().profiles["demo"]["base"] == DEMO.stem
    from encnet.experiments.discrepancies import evaluation_only

    # An evaluation setting is not part of the run id: both its sides would be one run, so it is not measured.
    measured = [e for e in ledger if e.switch is not None and not e.not_in_demo and not evaluation_only(e)]
    assert [(m.entry, m.side) for m in sides] == [(e.id, s) for e in measured for s in ("paper", "release")]
    bases = {m.entry: m.base for m in sides}
    assert bases["fcn_aux"] == DEMO_FCN and all(b == DEMO for e, b in bases.items() if e != "fcn_aux")
    for seed in (0, 1):
        for m in sides:
            plain = run_dir_for(load_config(m.base, [*common, f"seed={seed}"]))
            follows = ledger.get(m.entry).suite_follows
            assert (run_dir_for(m.config(seed)) == plain) == (m.side == follows), (m.entry, m.side)
        # One shared run per base config plus one per entry: the side the suite does not follow.
        assert len({run_dir_for(m.config(seed)) for m in sides}) == len(set(bases.values())) + len(measured)


def test_paper_sides_cover_both_datasets_for_epochs_and_the_weights_the_deep_stem_needs(ledger):
    sides = measurements(ledger, "paper")
    epochs = {(m.row, m.side): m.config(0).train.epochs for m in sides if m.entry == "training_epochs"}
    assert epochs == {("training_epochs", "paper"): 50, ("training_epochs", "release"): 80}
    today = {m.side: (m.config(0).train.epochs, m.config(0).train.base_lr) for m in sides
             if m.entry in ("epochs_today",)}
    assert today == {"paper": (120, 0.01), "release": (180, 0.01)}
    lrs = {(m.entry, m.side): m.config(0).train.base_lr for m in sides if m.entry in ("ade_lr", "coco_lr")}
    assert lrs == {("ade_lr", "paper"): 0.01, ("ade_lr", "release"): 0.004, ("coco_lr", "paper"): 0.01,
                   ("coco_lr", "release"): 0.004}
    size = {m.side: (m.config(0).data.base_size, m.config(0).data.crop_size) for m in sides
            if m.entry == "ade_r101_size"}
    assert size == {"paper": (520, 480), "release": (640, 576)}
    assert not [m for m in sides if m.entry == "miou_classes"]  # an evaluation setting: one run, not measured
    stem = {m.side: m.config(0).model for m in sides if m.entry == "backbone_stem"}
    assert (stem["paper"].backbone, stem["paper"].pretrained) == ("resnet50", "imagenet")
    assert stem["release"].backbone == "resnet50s" and stem["release"].pretrained.endswith("resnet50s.pth")
    aux = {(m.entry, m.side): (m.config(0).model.name, m.config(0).model.aux, m.config(0).model.aux_head)
           for m in sides if m.entry in ("aux_head", "fcn_aux")}
    assert aux == {("aux_head", "paper"): ("encnet", True, "se"), ("aux_head", "release"): ("encnet", True, "fcn"),
                   ("fcn_aux", "paper"): ("fcn", False, "fcn"), ("fcn_aux", "release"): ("fcn", True, "fcn")}
    cifar = {m.side: (m.config(0).model.name, m.config(0).model.cifar_block) for m in sides if m.entry == "cifar_block"}
    assert cifar == {"paper": ("EncNet-32k128d", "preact"), "release": ("EncNet-32k128d", "postact")}


def test_effects_against_hand_computed_means_spread_and_verdict():
    rows = []
    for side, values in {"paper": [1.0, 2.0, 3.0], "release": [4.0, 6.0, 8.0]}.items():
        rows += [{"row": "big", "entry": "big", "side": side, "seed": s, "metric": "mIoU", "value": v}
                 for s, v in enumerate(values)]
    for side, values in {"paper": [10.0, 12.0], "release": [10.5, 12.5]}.items():
        rows += [{"row": "small", "entry": "small", "side": side, "seed": s, "metric": "mIoU", "value": v}
                 for s, v in enumerate(values)]
    rows += [{"row": "one", "entry": "one", "side": side, "seed": 0, "metric": "mIoU", "value": 1.0}
             for side in ("paper", "release")]
    table = effects(pd.DataFrame(rows)).set_index("row")
    big = table.loc["big"]
    assert (big["paper_mean"], big["paper_std"], big["release_mean"], big["release_std"]) == (2.0, 1.0, 6.0, 2.0)
    assert big["delta"] == 4.0 and big["spread"] == pytest.approx(math.sqrt(2.5)) and big["exceeds"]
    small = table.loc["small"]  # Δ 0.5 against a spread of √2
    assert small["delta"] == pytest.approx(0.5) and small["spread"] == pytest.approx(math.sqrt(2))
    assert not small["exceeds"]
    assert table.loc["one"]["exceeds"] is None


# ---------------------------------------------------------------------------- release v0.5.0 (issue 12, 8–15)


def _release_preset(entry_id, ledger, extra=()):
    """The training preset of both sides of ``entry_id`` on the demo config."""
    from encnet.engine.build import MEAN, STD  # noqa: F401  (the presets normalise; the tests read the mask)

    sides = configs_for(ledger.get(entry_id), DEMO, list(extra))
    presets = {}
    for side, config in sides.items():
        from encnet.data.presets import SegmentationTrainPreset

        d = config.data
        presets[side] = SegmentationTrainPreset(
            d.base_size, d.crop_size, (d.scale_min, d.scale_max), d.rotate_degrees, hflip=False,
            scale_side=d.scale_side, blur_prob=d.blur_prob, pad_label=0 if d.pad_label == "background" else 255)
    return sides, presets


def _labelled_extent(mask):
    rows = (mask != 255).any(1).nonzero().flatten()
    cols = (mask != 255).any(0).nonzero().flatten()
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_scale_side_release_sets_the_short_side_paper_the_long_side(ledger):
    from torchvision import tv_tensors

    # Scale exactly 1 (s_min = s_max) and a crop larger than the result: the labelled block is the scaled image.
    extra = ["data.base_size=32", "data.crop_size=80", "data.scale_min=1.0", "data.scale_max=1.0"]
    sides = configs_for(ledger.get("scale_side"), DEMO, extra)
    assert (sides["paper"].data.scale_side, sides["release"].data.scale_side) == ("long", "short")
    image = tv_tensors.Image(torch.zeros(3, 20, 40, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.ones(20, 40, dtype=torch.int64))
    from encnet.engine.build import build_dataset_for  # noqa: F401  (same preset arguments as the engine)
    from encnet.data.presets import SegmentationTrainPreset

    extents = {}
    for side, config in sides.items():
        d = config.data
        preset = SegmentationTrainPreset(d.base_size, d.crop_size, (d.scale_min, d.scale_max), hflip=False,
                                         scale_side=d.scale_side)
        torch.manual_seed(0)
        extents[side] = _labelled_extent(preset(image, mask)[1])
    assert extents == {"paper": (16, 32), "release": (32, 64)}  # long side 32 (20×40 → 16×32); short side 32


def test_short_side_draws_every_integer_between_half_and_twice_the_base():
    from torchvision import tv_tensors

    from encnet.data.transforms import random_scale

    image = tv_tensors.Image(torch.zeros(3, 6, 8, dtype=torch.uint8))
    transform = random_scale(10, (0.5, 2.0), "short")
    torch.manual_seed(0)
    shorts = [transform(image).shape[-2] for _ in range(400)]
    assert set(shorts) == set(range(5, 21))  # randint(int(10·0.5), int(10·2)), both ends included
    long_scale = random_scale(10, (0.5, 2.0), "long")
    assert all(5 <= max(long_scale(image).shape[-2:]) <= 20 for _ in range(50))


def test_blur_release_side_blurs_with_pils_gaussian_blur_paper_side_never(ledger, data_cache):
    from PIL import ImageFilter
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    from encnet.data.transforms import PILGaussianBlur

    tiny = [f"data.root={data_cache}", "data.options={seed: 0, num_train: 4, num_val: 2, image_size: 32}"]
    for side, config in configs_for(ledger.get("blur"), DEMO, tiny).items():
        steps = build_dataset_for(config, "train", train=True).transform.transforms.transforms
        blurs = [s for s in steps if isinstance(s, PILGaussianBlur)]
        assert [b.p for b in blurs] == ([0.5] if side == "release" else [])
    rng = np.random.default_rng(0)
    image = tv_tensors.Image(torch.from_numpy(rng.integers(0, 256, (3, 12, 15), dtype=np.uint8)))
    mask = tv_tensors.Mask(torch.from_numpy(rng.integers(0, 4, (12, 15))))
    torch.manual_seed(3)
    out_image, out_mask = PILGaussianBlur(p=1.0)(image, mask)
    torch.manual_seed(3)
    torch.rand(())  # the apply draw, then the radius draw
    radius = float(torch.rand(()))
    expected = F.pil_to_tensor(F.to_pil_image(torch.Tensor(image)).filter(ImageFilter.GaussianBlur(radius)))
    assert 0 < radius < 1
    torch.testing.assert_close(torch.Tensor(out_image), expected, rtol=0, atol=0)
    assert not torch.equal(torch.Tensor(out_image), torch.Tensor(image))
    torch.testing.assert_close(out_mask, mask)  # the mask is never blurred
    same, _ = PILGaussianBlur(p=0.0)(image, mask)
    assert torch.equal(torch.Tensor(same), torch.Tensor(image))
    torch.manual_seed(0)
    blurred = sum(not torch.equal(torch.Tensor(PILGaussianBlur(0.5)(image)), torch.Tensor(image)) for _ in range(200))
    assert 70 < blurred < 130  # p = 0.5


def test_pad_label_release_trains_the_padding_as_background(ledger):
    from torchvision import tv_tensors

    extra = ["data.base_size=16", "data.crop_size=24", "data.scale_min=1.0", "data.scale_max=1.0"]
    sides, presets = _release_preset("pad_label", ledger, extra)
    assert (sides["paper"].data.pad_label, sides["release"].data.pad_label) == ("ignore", "background")
    image = tv_tensors.Image(torch.zeros(3, 16, 16, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.full((16, 16), 3, dtype=torch.int64))
    for side, preset in presets.items():
        torch.manual_seed(0)
        out = preset(image, mask)[1]
        assert int((out == 3).sum()) == 16 * 16  # the image itself, whatever the padding
        padding = out[out != 3]
        assert padding.numel() == 24 * 24 - 16 * 16
        assert set(padding.tolist()) == ({255} if side == "paper" else {0})


def test_voc_train_aug_release_is_sbd_trainval_and_overlaps_voc_val(ledger, tmp_path):
    import data_fixtures as fx

    fx.voc(tmp_path)
    ids = {}
    for side, config in configs_for(ledger.get("voc_train_aug"), PAPER / "voc_aug_encnet_r101.yaml",
                                    [f"data.root={tmp_path}"]).items():
        ids[side] = build_dataset_for(config, config.data.train_split, train=False).ids
    assert ids["paper"] == fx.expected_train_aug()
    assert ids["release"] == sorted(set(fx.SBD_TRAIN) | set(fx.SBD_VAL))
    assert set(ids["release"]) & set(fx.VOC_VAL) and not set(ids["paper"]) & set(fx.VOC_VAL)


def test_miou_classes_all_counts_an_absent_class_as_zero(ledger):
    from encnet.engine.build import build_metric

    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 1]])  # class 2 of 3 is neither labelled nor predicted
    iou0, iou1 = 1 / 2, 2 / 3  # TP/(TP+FP+FN): class 0: 1/(1+0+1); class 1: 2/(2+1+0)
    results = {}
    for side, config in configs_for(ledger.get("miou_classes"), DEMO).items():
        metric = build_metric(config, 3)
        metric.update(pred, target)
        results[side] = metric.compute()["mIoU"]
    assert results["paper"] == pytest.approx(100 * (iou0 + iou1) / 2)
    assert results["release"] == pytest.approx(100 * (iou0 + iou1 + 0) / 3)


def test_checkpoint_selection_logs_the_releases_best_by_mean_of_pixacc_and_miou():
    from encnet.metrics import best_validation

    records = [{"epoch": 1, "loss": 1.0},
               {"epoch": 2, "val_pixAcc": 70.0, "val_mIoU": 30.0},   # 50
               {"epoch": 3, "val_pixAcc": 60.0, "val_mIoU": 44.0},   # 52
               {"epoch": 4, "val_pixAcc": 64.0, "val_mIoU": 40.0},   # 52: a tie keeps the earlier one (strict >)
               {"epoch": 5, "val_pixAcc": 80.0, "val_mIoU": 20.0}]   # 50
    assert best_validation(records) == {"best_val_epoch": 3, "best_val_pixAcc": 60.0, "best_val_mIoU": 44.0}
    assert best_validation(records[:1]) == {}
    entry = load_ledger().get("checkpoint_selection")
    assert entry.kind == "reporting" and entry.switch is None and "best_val_epoch" in entry.note


def test_monitor_view_release_scores_the_centre_crop_of_each_image_resized_to_cover_it(ledger, tmp_path):
    import data_fixtures as fx

    from encnet.engine.build import build_monitor_dataset
    from encnet.engine.config import ConfigError

    labels = fx.ade20k(tmp_path)  # validation: one 10×13 image
    extra = [f"data.root={tmp_path}", "data.base_size=10", "data.crop_size=8", "eval.crop_size=8",
             "eval.base_size=10", "eval.scales=[1.0]"]
    sides = configs_for(ledger.get("monitor_view"), PAPER / "ade20k_encnet_r50.yaml", extra)
    seen = {side: build_monitor_dataset(config)[0] for side, config in sides.items()}
    expected = np.where(labels["ADE_val_00000001"] == 0, 255, labels["ADE_val_00000001"].astype(np.int64) - 1)
    assert seen["paper"][0].shape == (3, 10, 13) and np.array_equal(seen["paper"][1].numpy(), expected)
    # release: short side 10 → 8, the other int(1.0 * 13 * 8 / 10) = 10; centre crop 8 × 8 at x1 = round(1.0) = 1
    from PIL import Image

    resized = np.array(Image.fromarray(labels["ADE_val_00000001"]).resize((10, 8), Image.NEAREST))[:, 1:9]
    assert seen["release"][0].shape == (3, 8, 8)  # no tie: (i + ½)·10/8 and (j + ½)·13/10 are never integers
    assert np.array_equal(seen["release"][1].numpy(), np.where(resized == 0, 255, resized.astype(np.int64) - 1))
    # Generated demo data is scored whole: --follow release leaves its monitor alone (the config refuses it).
    with pytest.raises(ConfigError, match="monitor_view"):
        load_config(DEMO, ["eval.monitor_view=centre_crop"])


# --------------------------------------------------------------------------------------------------- --follow


def test_follow_release_puts_a_config_on_v050s_side_of_every_entry_that_applies(ledger):
    from encnet.experiments.discrepancies import entry_sides, follow_overrides

    def followed(side, name, overrides=()):
        path = PAPER / f"{name}.yaml"
        added = [o for c in follow_overrides(ledger, side, path, list(overrides)) for o in c.overrides]
        return load_config(path, [*overrides, *added])

    pc = followed("release", "pcontext_encnet_r50")
    assert (pc.data.scale_side, pc.data.blur_prob, pc.train.epochs, pc.model.lateral) == ("short", 0.5, 80, True)
    assert pc.model.backbone == "resnet50s" and pc.model.pretrained.endswith("resnet50s.pth")  # paper_extra too
    assert pc.eval.miou == "all" and pc.train.aux_weight == 0.2  # release-internal aux_weight stays
    paper = followed("paper", "pcontext_encnet_r50")
    assert (paper.data.scale_side, paper.data.blur_prob, paper.train.epochs, paper.data.rotate_degrees) == (
        "long", 0.0, 50, 10.0)
    ade = followed("release", "ade20k_encnet_r101")
    assert (ade.train.base_lr, ade.train.epochs, ade.data.base_size, ade.data.crop_size) == (0.01, 120, 640, 576)
    assert ade.model.backbone == "resnet101" and not ade.model.lateral  # never turned into the ResNet-50s
    assert followed("release", "ade20k_encnet_r50").data.crop_size == 480  # ade_r101_size: the R101 only
    voc = followed("release", "voc_aug_encnet_r101")
    assert (voc.data.train_split, voc.data.pad_label, voc.train.epochs) == ("sbd_trainval", "background", 50)
    assert followed("release", "pcontext_encnet_r50").data.pad_label == "ignore"  # pad_label: VOC/COCO only
    fcn = followed("paper", "pcontext_fcn_r50")  # rejects EncNet head switches: left as it is
    assert fcn.model.attention == "release" and fcn.data.rotate_degrees == 10.0
    cifar = followed("release", "cifar10_encnet_32k128d")
    assert cifar.model.cifar_block == "postact" and cifar.model.name == "EncNet-32k128d"
    assert cifar.data.blur_prob == 0.0  # segmentation keys untouched
    # A run's own override wins over --follow.
    assert followed("release", "pcontext_encnet_r50", ["data.blur_prob=0.25"]).data.blur_prob == 0.25
    # entry_sides reads the side back from the values.
    sides = dict(entry_sides(ledger, followed("release", "pcontext_encnet_r50")))
    assert sides["scale_side"].startswith("release") and sides["blur"].startswith("release")
    assert dict(entry_sides(ledger, load_config(PAPER / "pcontext_encnet_r50.yaml")))["blur"].startswith("paper")
