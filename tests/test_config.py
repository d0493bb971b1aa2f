"""Config loading: the schema is enforced, errors name the key and the source, overrides apply."""

from pathlib import Path

import pytest
import yaml

from encnet.engine.config import Config, ConfigError, config_from_dict, load_config, to_dict, to_yaml

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="demo/exp.yaml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_unknown_key_is_an_error_naming_the_dotted_key_and_file(tmp_path):
    path = write(tmp_path, "train:\n  se_wieght: 0.4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "train.se_wieght" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_top_level_key_and_unknown_override_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="'optimiser'"):
        load_config(write(tmp_path, "optimiser: sgd\n"))
    path = write(tmp_path, "seed: 1\n")
    with pytest.raises(ConfigError, match=r"model\.num_code"):
        load_config(path, ["model.num_code=16"])
    with pytest.raises(ConfigError, match="modle"):
        load_config(path, ["modle.num_codes=16"])


@pytest.mark.parametrize(
    "text, key",
    [
        ("train:\n  epochs: ten\n", "train.epochs"),
        ("train:\n  epochs: 2.5\n", "train.epochs"),
        ("model:\n  se_loss: 1\n", "model.se_loss"),
        ("train:\n  lr_schedule: step\n", "train.lr_schedule"),
        ("eval:\n  scales: [0.5, big]\n", "eval.scales[1]"),
        ("task: detection\n", "task"),
        ("model: encnet\n", "model"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert f"'{key}'" in str(err.value)


def test_overrides_apply_with_yaml_types_and_are_checked(tmp_path):
    path = write(tmp_path, "train:\n  se_weight: 0.2\n  epochs: 3\n")
    config = load_config(path, ["train.se_weight=0.4", "model.num_codes=16", "eval.scales=[1.0, 1.5]",
                                "data.num_classes=60"])
    assert config.train.se_weight == 0.4 and config.model.num_codes == 16
    assert config.eval.scales == [1.0, 1.5] and config.data.num_classes == 60
    assert config.train.epochs == 3
    with pytest.raises(ConfigError, match=r"override 'train\.epochs=many'.*'train\.epochs'"):
        load_config(path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["train.epochs"])


def test_profile_and_experiment_default_to_the_path(tmp_path):
    config = load_config(write(tmp_path, "seed: 3\n", "paper/pcontext_encnet_r50.yaml"))
    assert (config.profile, config.experiment, config.seed) == ("paper", "pcontext_encnet_r50", 3)


def test_ints_are_accepted_as_floats_and_yaml_round_trips(tmp_path):
    config = load_config(write(tmp_path, "train:\n  base_lr: 1\n"))
    assert isinstance(config.train.base_lr, float)
    again = config_from_dict(yaml.safe_load(to_yaml(config)))
    assert again == config
    assert to_dict(again)["model"]["num_codes"] == 32


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_loads(path):
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.profile == path.parent.name and config.experiment == path.stem


def test_fcn_config_resolves_to_no_se_loss_and_rejects_encnet_head_keys(tmp_path):
    config = load_config(write(tmp_path, "model:\n  name: fcn\n"))
    assert config.model.se_loss is False  # the logged config.yaml says what was trained
    with pytest.raises(ConfigError, match="model.num_codes"):
        load_config(write(tmp_path, "model:\n  name: fcn\n  num_codes: 16\n"))
    with pytest.raises(ConfigError, match="model.se_loss"):
        load_config(write(tmp_path, "model:\n  name: fcn\n"), ["model.se_loss=true"])


def test_fcn_baselines_train_without_the_aux_head():
    """Ledger fcn_aux: the paper's plain dilated FCN (the zoo's PASCAL-Context FCN too), in both profiles."""
    paths = sorted((REPO / "configs").glob("*/*fcn*.yaml"))
    assert {p.parent.name for p in paths} == {"demo", "paper"} and len(paths) >= 4
    for path in paths:
        config = load_config(path)
        assert config.model.name == "fcn" and config.model.aux is False, path
    for path in sorted((REPO / "configs").glob("*/*encnet*.yaml")):
        config = load_config(path)
        if config.task == "segmentation":  # EncNet keeps the release's FCN aux head (ledger aux_head)
            assert (config.model.aux, config.model.aux_head) == (True, "fcn"), path


def test_aux_head_values_and_the_paper_encnet_without_se_loss(tmp_path):
    path = write(tmp_path, "model:\n  name: encnet\n  aux_head: se\n")
    assert (load_config(path).model.aux, load_config(path).model.aux_head) == (True, "se")
    # The paper's stage-3 module exists for its SE-loss: "w/o SE-loss" has no aux head, and config.yaml says so.
    config = load_config(path, ["model.se_loss=false"])
    assert (config.model.aux, config.model.se_loss) == (False, False)
    assert "aux: false" in to_yaml(config)
    release = load_config(write(tmp_path, "model:\n  name: encnet\n"), ["model.se_loss=false"])
    assert release.model.aux is True  # the release's FCN aux head does not depend on the SE-loss
    with pytest.raises(ConfigError, match="model.aux_head"):
        load_config(path, ["model.aux_head=psp"])
    with pytest.raises(ConfigError, match="model.aux_head"):
        load_config(write(tmp_path, "model:\n  name: fcn\n  aux_head: se\n"))
    with pytest.raises(ConfigError, match="model.aux_head"):
        load_config(write(tmp_path, "task: classification\nmodel:\n  name: EncNet-8k16d\n  aux_head: se\n"))


def test_classification_rejects_keys_its_model_name_fixes(tmp_path):
    path = write(tmp_path, "task: classification\nmodel:\n  name: EncNet-8k16d\n")
    assert load_config(path).model.name == "EncNet-8k16d"
    with pytest.raises(ConfigError, match="model.num_codes"):
        load_config(path, ["model.num_codes=16"])


def test_overrides_reach_into_data_options(tmp_path):
    path = write(tmp_path, "data:\n  options: {seed: 0, num_train: 160}\n")
    config = load_config(path, ["data.options.num_train=8"])
    assert config.data.options == {"seed": 0, "num_train": 8}


def test_run_id_ignores_the_eval_protocol_and_where_the_runs_root_is(tmp_path):
    from encnet.engine.runs import run_id

    path = write(tmp_path, "model:\n  init_from: runs/demo/stage1/seed0-abc\n")
    base = run_id(load_config(path))
    assert run_id(load_config(path, ["eval.scales=[1.0]", "eval.flip=false"])) == base
    moved = load_config(path, ["model.init_from=/elsewhere/runs/demo/stage1/seed0-abc/checkpoint_last.pt"])
    assert run_id(moved) == base
    assert run_id(load_config(path, ["model.init_from=runs/demo/stage1/seed1-abc"])) != base
    assert run_id(load_config(path, ["train.epochs=3"])) != base


def test_release_recipe_keys_are_checked_and_default_to_todays_behaviour():
    from encnet.engine.config import ConfigError, config_from_dict

    config = config_from_dict({})
    assert (config.data.scale_side, config.data.blur_prob, config.data.pad_label, config.eval.miou) == (
        "long", 0.0, "ignore", "present")
    for key, bad in (("scale_side", "shortest"), ("pad_label", 0)):
        with pytest.raises(ConfigError, match=f"data.{key}"):
            config_from_dict({"data": {key: bad}})
    with pytest.raises(ConfigError, match="eval.miou"):
        config_from_dict({"eval": {"miou": "mean"}})


def test_a_crop_can_be_height_by_width_but_then_the_window_needs_its_own_size(tmp_path):
    base = ["task: segmentation", "data: {dataset: context_scenes, base_size: 112, crop_size: [112, 64]}"]
    config = load_config(write(tmp_path, "\n".join(base + ["eval: {crop_size: 140, base_size: 112}"])))
    assert config.data.crop_size == [112, 64]
    with pytest.raises(ConfigError, match=r"data.crop_size=\[112, 64\] is \[height, width\]; set eval.crop_size"):
        load_config(write(tmp_path, "\n".join(base), "demo/no_window.yaml"))
    with pytest.raises(ConfigError, match="data.crop_size"):
        load_config(write(tmp_path, "\n".join(base), "demo/bad.yaml"), ["data.crop_size=[112, 0]"])
    with pytest.raises(ConfigError, match="data.crop_size"):
        load_config(write(tmp_path, "\n".join(base), "demo/three.yaml"), ["data.crop_size=[112, 64, 3]"])
