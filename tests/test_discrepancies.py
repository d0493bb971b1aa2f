"""The paper-vs-release ledger: every switch really selects what the ledger says, both ways.

Each test builds the model, the data pipeline, the loss or the config from the ledger's two values through the
same code the engine uses (``load_config`` → ``encnet.experiment``), and checks the difference against an
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

from encnet.config import config_from_dict, load_config, to_yaml
from encnet.discrepancies import (LEDGER_PATH, REPO_ROOT, effects, ledger_table, load_ledger, measurements,
                                  switch_override)
from encnet.experiment import build_criterion, build_dataset_for, build_model_for
from encnet.models import SegmentationOutput, build_backbone
from encnet.runs import run_dir_for

DEMO = REPO_ROOT / "configs" / "demo" / "context_scenes_encnet.yaml"  # the ledger's demo base
DEMO_FCN = REPO_ROOT / "configs" / "demo" / "context_scenes_fcn.yaml"  # fcn_aux's demo base
PAPER_PCONTEXT = REPO_ROOT / "configs" / "paper" / "pcontext_encnet_r50.yaml"
REQUIRED = {"attention_output", "lateral", "aux_head", "fcn_aux", "backbone_stem", "training_epochs", "rotation",
            "aux_weight", "pcontext_classes", "encoding_scale_sign"}


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
    configs = [load_config(p) for profile in ("paper", "demo")
               for p in sorted((REPO_ROOT / "configs" / profile).glob("*.yaml"))]
    checked = 0
    for e in ledger:
        if e.switch is None or e.suite_follows == "n/a":
            continue
        if e.suite_follows == "both":  # one config per side, e.g. PASCAL-Context 59 (Table 1) and 60 (Table 2)
            section, key = e.switch.split(".")
            used = {getattr(getattr(c, section), key) for c in configs}
            assert {e.paper.value, e.release.value} <= used, e.id
            continue
        for config in configs:
            value = getattr(getattr(config, e.switch.split(".")[0]), e.switch.split(".")[1])
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
    for name, (paper, release) in {"pcontext_encnet_r50": (50, 80), "ade20k_encnet_r50": (120, 180)}.items():
        sides = configs_for(entry, REPO_ROOT / "configs" / "paper" / f"{name}.yaml")
        assert (sides["paper"].train.epochs, sides["release"].train.epochs) == (paper, release)
        assert f"epochs: {paper}" in to_yaml(sides["paper"]) and f"epochs: {release}" in to_yaml(sides["release"])
        assert run_dir_for(sides["paper"]) != run_dir_for(sides["release"])
    demo = configs_for(entry, DEMO)
    own = load_config(DEMO).train.epochs
    assert demo["release"].train.epochs == own
    assert demo["paper"].train.epochs == max(1, round(own * 50 / 80))  # the paper's PASCAL-Context ratio


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
            output = model(x)
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


def test_demo_sides_the_suite_follows_are_the_plain_demo_run(ledger):
    sides = measurements(ledger, "demo")
    assert load_ledger().profiles["demo"]["base"] == DEMO.stem
    measured = [e for e in ledger if e.switch is not None and not e.not_in_demo]
    assert [(m.entry, m.side) for m in sides] == [(e.id, s) for e in measured for s in ("paper", "release")]
    bases = {m.entry: m.base for m in sides}
    assert bases["fcn_aux"] == DEMO_FCN and all(b == DEMO for e, b in bases.items() if e != "fcn_aux")
    for seed in (0, 1):
        for m in sides:
            plain = run_dir_for(load_config(m.base, [f"seed={seed}"]))
            follows = ledger.get(m.entry).suite_follows
            assert (run_dir_for(m.config(seed)) == plain) == (m.side == follows), (m.entry, m.side)
        # One shared run per base config plus one per entry: the side the suite does not follow.
        assert len({run_dir_for(m.config(seed)) for m in sides}) == len(set(bases.values())) + len(measured)


def test_paper_sides_cover_both_datasets_for_epochs_and_the_weights_the_deep_stem_needs(ledger):
    sides = measurements(ledger, "paper")
    epochs = {(m.row, m.side): m.config(0).train.epochs for m in sides if m.entry == "training_epochs"}
    assert epochs == {("training_epochs/pcontext_encnet_r50", "paper"): 50,
                      ("training_epochs/pcontext_encnet_r50", "release"): 80,
                      ("training_epochs/ade20k_encnet_r50", "paper"): 120,
                      ("training_epochs/ade20k_encnet_r50", "release"): 180}
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
