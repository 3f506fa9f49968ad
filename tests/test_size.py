"""One size parser and one transform spec: every entry point that reads a size accepts and refuses
the same values with the same words, and both ways of moving a transform to another resolution agree."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kdfiqa.budget import MAX_SIDE, parse_input_size
from kdfiqa.cli.config_flags import image_size_arg, input_size_arg
from kdfiqa.config import ConfigLayer, resolve_config
from kdfiqa.data.transform_spec import TransformSpec
from kdfiqa.errors import ConfigError
from kdfiqa.inference import resolve_eval_transform
from kdfiqa.models import DeployConfig, create_model, set_deploy_config
from kdfiqa.models.model_file import read_model_file
from kdfiqa.size import Size, format_size

SIDES = st.one_of(st.integers(-2, 40), st.sampled_from([0, 224, 336, MAX_SIDE, MAX_SIDE + 1, 10 ** 6]))
VALUES = st.one_of(
    SIDES,
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.lists(SIDES, max_size=4),
    st.lists(st.one_of(SIDES, st.booleans(), st.floats(0, 300, width=16)), min_size=1, max_size=3),
    st.lists(SIDES, min_size=1, max_size=3).map(lambda dims: "x".join(map(str, dims))),
    st.text(alphabet="0123456789xX -.", max_size=9),
)


def _outcome(read, value, where: str):
    """(height, width) when ``read`` accepts ``value``, else the error's text after ``where``."""
    try:
        return Size.parse(read(value)).hw
    except ConfigError as exc:
        text, prefix = str(exc), f"{where}: " if where else ""
        assert text.startswith(prefix) and "\n" not in text, text
        return text[len(prefix):]


def _flag(value):
    try:
        return image_size_arg(value)
    except argparse.ArgumentTypeError as exc:  # argparse prints it after the flag's name
        raise ConfigError(f"--input: {exc}") from None


def _config(value):
    layer = ConfigLayer("run.yaml", {"model": {"input": value}}, {"model.input": 3})
    return resolve_config("train", [layer]).model.input


def _model_file(folder: Path):
    def read(value):
        path = folder / "m.yaml"
        path.write_text(yaml.safe_dump({"name": "emo2_1m", "input": value}, sort_keys=False))
        return read_model_file(path).input

    return read


@settings(max_examples=150, deadline=None)
@given(value=VALUES)
def test_every_size_entry_point_accepts_and_refuses_alike(value, tmp_path_factory):
    expected = _outcome(lambda v: Size.parse(v, ""), value, "")  # the one parser, any channels
    expected_rgb = _outcome(lambda v: Size.parse(v, "", rgb=True), value, "")  # where kdfiqa feeds RGB
    assert expected_rgb == expected or "feeds RGB images" in expected_rgb
    assert _outcome(parse_input_size, value, "input size") == expected  # budgets (public API)
    assert _outcome(lambda v: DeployConfig(None, input_size=v).input_size, value,
                    "deploy config of model: input_size") == expected_rgb
    assert _outcome(lambda v: TransformSpec.parse({"mode": "resize", "size": v}).size, value,
                    "transform field 'size'") == expected_rgb
    assert _outcome(_config, value, "run.yaml:3: model.input") == expected_rgb
    folder = tmp_path_factory.getbasetemp()
    assert _outcome(_model_file(folder), value, f"{folder / 'm.yaml'}:2: input") == expected_rgb
    if isinstance(value, str):
        assert _outcome(_flag, value, "--input") == expected_rgb
        if not isinstance(expected_rgb, str):
            assert Size.parse(input_size_arg(value)).hw == expected_rgb


def test_the_forms_a_size_is_written_in():
    for value in (224, "224", " 224X224 ", (224, 224), [3, 224, 224], "3x224x224", Size(224, 224)):
        assert Size.parse(value) == Size(224, 224)
    assert Size.parse("224x336").chw == (3, 224, 336) == parse_input_size([224, 336])
    assert parse_input_size((1, 97, 131)) == (1, 97, 131)  # budgets measure any channel count
    assert (str(Size(224, 336)), Size(224, 336).describe(channels=True)) == ("224x336", "3x224x336")
    assert format_size((3, 64, 48)) == "64x48" and format_size((3, 64, 48), channels=True) == "3x64x48"
    assert (Size(64, 64).as_config(), Size(64, 48).as_config()) == (64, [64, 48])
    for bad in (True, False, 224.0, "224.0", 0, -3, MAX_SIDE + 1, "224x336x3x1", [], None, {"h": 1}):
        with pytest.raises(ConfigError, match="is not an input size"):
            parse_input_size(bad)
    with pytest.raises(ConfigError, match="^--teacher-input: .*has 1 channels; kdfiqa feeds RGB images"):
        Size.parse("1x224x224", "--teacher-input", rgb=True)


def test_yaml_text_sizes_are_read_and_bad_ones_name_file_and_line():
    layer = ConfigLayer("run.yaml", {"model": {"input": "224x336"}, "distill": {"deploy_input": ["112", 224]}},
                        {"model.input": 4, "distill.deploy_input": 9})
    config = resolve_config("distill", [layer])
    assert (config.model.input, config.distill.deploy_input) == ([224, 336], [112, 224])
    bad = ConfigLayer("run.yaml", {"distill": {"teacher_input": [3, 0, 5]}}, {"distill.teacher_input": 7})
    with pytest.raises(ConfigError, match=r"^run\.yaml:7: distill\.teacher_input: \[3, 0, 5\] is not an input size"):
        resolve_config("distill", [bad])


# ---------------------------------------------------------------- the transform spec's single rules

def test_a_preset_without_a_normalisation_takes_the_deploy_configs():
    config = DeployConfig(None, normalize="symmetric", eval_transform={"preset": "2077agent_test"})
    assert config.normalize == "symmetric" and config.input_size == (3, 224, 224)
    assert config.eval_transform == {"mode": "resize", "size": [224, 224], "normalize": "symmetric"}
    # a preset that names its normalisation keeps it: the transform is the one source
    named = DeployConfig(None, normalize="none", eval_transform={"preset": "conquerit_test"})
    assert named.normalize == "symmetric" and named.to_dict()["normalize"] == "symmetric"


CENTER_CROP = {"mode": "center_crop", "size": 224, "resize": 240, "normalize": "imagenet"}
AT_112x168 = {"mode": "center_crop", "size": [112, 168], "resize": 168, "normalize": "imagenet"}


def test_a_config_input_and_a_deploy_replace_move_a_crop_alike():
    recipe = ConfigLayer("recipe.yaml", {"model": {"input": 224}, "data": {"eval_transform": dict(CENTER_CROP)}})
    flags = ConfigLayer("command-line flags", {"model": {"input": [112, 168]}})
    followed = resolve_config("train", [recipe, flags]).data.eval_transform
    replaced = DeployConfig("net", input_size=224, eval_transform=CENTER_CROP).replace(input_size=(112, 168))
    assert TransformSpec.parse(followed) == replaced.eval_transform == AT_112x168
    assert replaced.input_size == (3, 112, 168)
    # the resize stays >= the whole crop (an int is the short side, either side may be it)
    spec = TransformSpec.parse(CENTER_CROP).rescaled(Size(224, 224), Size(112, 168))
    assert spec == AT_112x168 and spec.resize >= max(spec.size.hw)
    # a crop box of its own fixes the geometry; only the view's size moves
    boxed = TransformSpec.parse({**CENTER_CROP, "crop": 224}).rescaled(Size(224, 224), Size(112, 112))
    assert (boxed.size, boxed.crop, boxed.resize) == (Size(112, 112), Size(224, 224), 240)


def test_evaluating_at_another_input_moves_the_transform_by_the_same_rule():
    model = create_model("mobilenetv3_small_fiqa")
    set_deploy_config(model, DeployConfig(model.deploy_config.name, model.deploy_config.kwargs, 224, CENTER_CROP))
    assert resolve_eval_transform(None, model, input_size="112x168") == AT_112x168
