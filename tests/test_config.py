"""Run configuration: layering, overrides, validation with file/line, round trips."""

from __future__ import annotations

import textwrap

import pytest
import torch
import yaml

from kdfiqa.config import (
    ConfigLayer,
    RunConfig,
    build_layers,
    list_recipes,
    load_config_file,
    load_recipe,
    parse_override,
    resolve_config,
)
from kdfiqa.engine.config import TrainConfig
from kdfiqa.errors import ConfigError

RECIPE = """\
description: a test recipe
train:
  epochs: 7
  lr: 0.5
  batch_size: 3
data:
  train_transform: {mode: random_crop, flip: true}
commands:
  train:
    model: {name: teacher_net, input: 96}
  distill:
    model: {name: student_net, input: 48}
    distill: {loss: 0.5*temperature_mse}
"""


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_match_dataclass_defaults():
    config = resolve_config("train", [])
    assert config == RunConfig()
    assert config.train == TrainConfig() and config.loss.task == "mse"


def test_layers_apply_in_order_recipe_file_flags_set(tmp_path):
    recipe = write(tmp_path, "r.yaml", RECIPE)
    config_file = write(tmp_path, "c.yaml", "train:\n  lr: 0.25\n  epochs: 5\n")
    layers = build_layers("train", recipe=str(recipe), config_file=config_file,
                          flags={"train.epochs": 4, "train.batch_size": None}, sets=["train.epochs=2"])
    config = resolve_config("train", layers)
    assert config.train.lr == 0.25          # config file beats recipe
    assert config.train.epochs == 2         # --set beats flag beats file
    assert config.train.batch_size == 3     # a flag left unset (None) changes nothing
    assert config.description == "a test recipe"


def test_command_sections_apply_only_to_their_command(tmp_path):
    recipe = str(write(tmp_path, "r.yaml", RECIPE))
    train = resolve_config("train", build_layers("train", recipe=recipe))
    distill = resolve_config("distill", build_layers("distill", recipe=recipe))
    assert (train.model.name, train.model.input) == ("teacher_net", 96)
    assert (distill.model.name, distill.model.input) == ("student_net", 48)
    assert train.distill.loss == RunConfig().distill.loss
    assert distill.distill.loss == "0.5*temperature_mse"
    assert train.train.epochs == distill.train.epochs == 7


@pytest.mark.parametrize(
    "text, needle",
    [
        ("train:\n  epochs: 3\n  lrr: 0.1\n", "c.yaml:3: unknown setting 'train.lrr' (did you mean lr?)"),
        ("model:\n  name: x\ntrian:\n  lr: 1\n", "c.yaml:3: unknown section 'trian' (did you mean train?)"),
        ("data:\n  root: a\n\n  val_fraction: lots\n", "c.yaml:4: data.val_fraction must be float"),
        ("train:\n  epochs: 2.5\n", "c.yaml:2: train.epochs must be int"),
        ("train:\n  channels_last: 1\n", "c.yaml:2: train.channels_last must be bool"),
        ("commands:\n  evaluate: {}\n", "c.yaml:1: 'commands' may only hold"),
        ("train: [1, 2]\n", "c.yaml:1: section 'train' must be a mapping"),
        ("- just a list\n", "c.yaml: a config file must be a mapping"),
        ("train:\n  lr: [unclosed\n", "c.yaml:3: not valid YAML"),
    ],
)
def test_bad_files_name_file_line_and_field(tmp_path, text, needle):
    path = write(tmp_path, "c.yaml", text)
    with pytest.raises(ConfigError) as info:
        resolve_config("train", load_config_file(path, "train"))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / needle)), message


def test_error_line_points_at_the_offending_key(tmp_path):
    text = "description: x\n\ntrain:\n  epochs: 3\n  batch_size: 8\n  momentumm: 0.9\n"
    path = write(tmp_path, "c.yaml", text)
    with pytest.raises(ConfigError, match=r"c\.yaml:6: unknown setting 'train\.momentumm'"):
        resolve_config("train", load_config_file(path))
    # line 6 is really where the key is
    assert text.splitlines()[5].strip().startswith("momentumm")


def test_command_section_errors_name_the_command(tmp_path):
    path = write(tmp_path, "c.yaml", "commands:\n  distill:\n    distill:\n      self_train: yes please\n")
    with pytest.raises(ConfigError, match=r"c\.yaml \[commands\.distill\]:4: distill\.self_train must be int"):
        resolve_config("distill", load_config_file(path, "distill"))


@pytest.mark.parametrize("raw", ["1e-4", "3", "0.5", "[1, 2]", "null", "true", "adamw", "{a: 1}", "'7'"])
def test_parse_override_reads_values_like_yaml(raw):
    key, value = parse_override(f"train.x={raw}")
    assert key == "train.x"
    expected = yaml.safe_load(raw)
    if raw == "1e-4":  # YAML 1.1 reads this as a string; numbers must stay numbers
        expected = 1e-4
    if raw == "'7'":  # a quoted number is still read as a number
        expected = 7.0
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("bad", ["train.lr", "=3", "train.lr=[1,"])
def test_parse_override_rejects_malformed(bad):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(bad)


def test_set_reaches_inside_mapping_fields_without_replacing_them(tmp_path):
    recipe = str(write(tmp_path, "r.yaml", RECIPE))
    layers = build_layers("train", recipe=recipe, sets=[
        "data.train_transform.flip=false", "data.eval_transform.mode=center_crop",
        "data.eval_transform.resize=[240, 240]", "model.kwargs.drop_path_rate=0.1"])
    config = resolve_config("train", layers)
    assert config.data.train_transform == {"mode": "random_crop", "flip": False}
    assert config.data.eval_transform == {"mode": "center_crop", "resize": [240, 240]}
    assert config.model.kwargs == {"drop_path_rate": 0.1}


def test_set_type_errors_name_the_flag():
    with pytest.raises(ConfigError, match=r"^--set: train\.batch_size must be int, got 'big'"):
        resolve_config("train", build_layers("train", sets=["train.batch_size=big"]))
    with pytest.raises(ConfigError, match=r"^--set: unknown setting 'train\.epoch' \(did you mean epochs\?\)"):
        resolve_config("train", build_layers("train", sets=["train.epoch=3"]))


def test_engine_value_checks_still_apply():
    with pytest.raises(ConfigError, match="optimizer"):
        resolve_config("train", build_layers("train", sets=["train.optimizer=adagrad"]))


def test_ints_are_accepted_for_floats_and_become_floats():
    config = resolve_config("train", [ConfigLayer("t", {"train": {"lr": 1}})])
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


def test_round_trip_through_dict_yaml_and_torch_save(tmp_path):
    layers = build_layers("distill", flags={"model.name": "emo2_1m", "distill.teachers": ["a.pt", "b.csv"]},
                          sets=["data.eval_transform={mode: resize, size: 64}", "train.ema_decay=0.99", "train.betas=[0.8, 0.9]"])
    config = resolve_config("distill", layers)
    assert config.train.betas == (0.8, 0.9)
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig.from_dict(yaml.safe_load(config.to_yaml())) == config
    path = tmp_path / "c.pt"
    torch.save({"config": config.to_dict()}, path)
    loaded = torch.load(path, weights_only=True)["config"]
    assert loaded == config.to_dict()
    assert loaded["data"]["eval_transform"] == {"mode": "resize", "size": 64}
    assert loaded["model"]["name"] == "emo2_1m" and loaded["model"]["kwargs"] == {}


def test_missing_config_file_and_unknown_recipe():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config_file("nope.yaml")
    with pytest.raises(ConfigError, match=r"unknown recipe '2077agnet' \(did you mean 2077agent\?\)"):
        load_recipe("2077agnet")


def test_packaged_recipes_are_listed_with_one_line_descriptions():
    recipes = dict(list_recipes())
    assert recipes, "no packaged recipes found"
    for name, description in recipes.items():
        assert description and "\n" not in description, name


def test_a_key_given_twice_or_a_config_that_is_not_utf8_is_refused_with_its_line(tmp_path):
    from kdfiqa.config import load_config_file

    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  epochs: 1\n  epochs: 5\n")
    with pytest.raises(ConfigError, match=r"twice.yaml:3: key 'epochs' is given twice \(first on line 2\)"):
        load_config_file(twice)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("train:\n  # r\xe9sum\xe9\n  epochs: 1\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin.yaml: not UTF-8"):
        load_config_file(latin)


def test_min_lr_above_lr_is_refused():
    from kdfiqa.engine import TrainConfig

    with pytest.raises(ConfigError, match="min_lr.*above lr"):
        TrainConfig(lr=1e-4, min_lr=1e-3)


@pytest.mark.parametrize("recipe,expected_train,expected_eval,recipe_eval", [
    ("ecnu_sjtu", {"size": [112, 112], "resize": 112}, {"size": [112, 112], "resize": 112}, {"resize": 448}),
    # Resize(240) + CenterCrop(224) at 224 -> Resize(120) + CenterCrop(112) at 112
    ("conquerit", {}, {"resize": [120, 120]}, {"resize": [240, 240]}),
    ("bit_ssvgg", {}, {"size": [112, 168]}, {"size": [224, 336]}),  # the 224x336 test view of a 224 run
])
def test_input_moves_a_recipes_fixed_size_transforms_with_it(recipe, expected_train, expected_eval, recipe_eval):
    """--input is the resolution the network trains at: the recipe's transforms follow it; without
    it they stay the recipe's."""
    from kdfiqa.config import build_layers, resolve_config
    from kdfiqa.data.transform_spec import TransformSpec

    config = resolve_config("train", build_layers("train", recipe=recipe, flags={"model.input": 112}))
    assert config.model.input == 112
    for spec, expected in ((config.data.train_transform, expected_train), (config.data.eval_transform, expected_eval)):
        assert {k: spec.get(k) for k in expected} == expected, spec
    as_written = TransformSpec.parse(resolve_config("train", build_layers("train", recipe=recipe)).data.eval_transform)
    assert {k: as_written.get(k) for k in recipe_eval} == recipe_eval, as_written
