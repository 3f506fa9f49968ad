"""Options carry their own rules: choices, ranges, needs and the --resume rule, declared on the field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kdfiqa.config import SECTIONS, DataSection, RunConfig, build_layers, load_config_file, resolve_config
from kdfiqa.errors import ConfigError
from kdfiqa.options import RESUME_RULES, check_range, option
from kdfiqa.pipeline.checks import RESUME_KEYS, check_unchanged

# (dotted key, bad value, its flag and the flag's argument, what the message says)
RULES = [
    ("train.optimizer", "adagrad", ("--optimizer", "adagrad"), "'adagrad' is not one of adam, adamw, sgd"),
    ("data.split_method", "random", None, "'random' is not one of kdfiqa, sklearn"),
    ("data.val_fraction", 1.5, ("--val-fraction", "1.5"), "1.5 must be > 0 and < 1"),
    ("train.epochs", 0, ("--epochs", "0"), "0 must be an integer >= 1"),
    ("distill.raw_if_degenerate", True, ("--raw-if-degenerate", True),
     "is only used with {distill.calibrate} or {distill.calibrate_online}; add {distill.calibrate} or "
     "{distill.calibrate_online} or drop {distill.raw_if_degenerate}"),
    ("data.val_root", "images", ("--val-root", "images"),
     "is only used with {data.val_csv}; add {data.val_csv} or drop {data.val_root}"),
    ("distill.pseudo_sets", "all", None, "is only used with {distill.self_train}"),
    ("distill.self_train_head", "fresh", None, "is only used with {distill.self_train}"),
    ("distill.calibrate_on", "all", None, "is only used with {distill.calibrate}"),
    ("data.pseudo_root", "images", ("--pseudo-root", "images"), "is only used with {data.pseudo_csv}"),
    ("model.init_head", "fresh", None, "is only used with {model.init}"),
]
FLAGS = {"distill.calibrate": "--calibrate", "distill.raw_if_degenerate": "--raw-if-degenerate",
         "distill.calibrate_online": "--calibrate-online",
         "data.val_csv": "--val-csv", "data.val_root": "--val-root", "data.pseudo_csv": "--pseudo-csv"}


def _spelled(text: str, flags: bool) -> str:
    for key in ("distill.calibrate_online", "distill.calibrate", "distill.raw_if_degenerate", "distill.self_train", "data.val_csv",
                "data.val_root", "data.pseudo_csv", "model.init"):
        text = text.replace(f"{{{key}}}", FLAGS.get(key, key) if flags else key)
    return text


@pytest.mark.parametrize("key, value, flag, words", RULES, ids=[r[0] for r in RULES])
def test_a_declared_rule_is_refused_from_yaml_with_its_file_and_line(tmp_path, key, value, flag, words):
    section, name = key.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"description: x\n{section}:\n  {name}: {value if not isinstance(value, bool) else 'true'}\n")
    with pytest.raises(ConfigError) as info:
        resolve_config("distill", load_config_file(path, "distill"))
    separator = " " if words.startswith("is only") else ": "
    message = str(info.value)
    assert message.startswith(f"{path}:3: {key}{separator}{_spelled(words, flags=False)}"), message


@pytest.mark.parametrize("key, value, flag, words", RULES, ids=[r[0] for r in RULES])
def test_a_declared_rule_is_refused_from_set(key, value, flag, words):
    shown = "true" if value is True else value
    with pytest.raises(ConfigError) as info:
        resolve_config("distill", build_layers("distill", sets=[f"{key}={shown}"]))
    message = str(info.value)
    separator = " " if words.startswith("is only") else ": "
    assert message.startswith(f"--set: {key}{separator}{_spelled(words, flags=False)}"), message


@pytest.mark.parametrize("key, value, flag, words", [r for r in RULES if r[2]], ids=[r[0] for r in RULES if r[2]])
def test_a_declared_rule_is_refused_from_a_flag_naming_the_flags(key, value, flag, words, capsys):
    from kdfiqa.cli.main import main

    argv = ["distill", flag[0], *([] if flag[1] is True else [flag[1]]), "--print-config"]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse refuses a choice itself
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    if key == "train.optimizer":
        assert "invalid choice: 'adagrad'" in err, err
        return
    separator = " " if words.startswith("is only") else ": "
    assert f"error: {flag[0]}{separator}{_spelled(words, flags=True)}" in err, err  # named by its flag


def test_a_rule_given_with_what_it_needs_is_accepted():
    config = resolve_config("distill", build_layers("distill", flags={"distill.calibrate": True}, sets=[
        "distill.raw_if_degenerate=true", "distill.calibrate_on=all", "distill.clip_pseudo_labels=false"]))
    assert config.distill.raw_if_degenerate and config.distill.calibrate_on == "all"
    config = resolve_config("distill", build_layers("distill", flags={"distill.self_train": 1}, sets=[
        "distill.pseudo_sets=all", "distill.self_train_head=fresh"]))
    assert config.distill.pseudo_sets == "all"


def test_a_section_built_directly_names_the_field():
    with pytest.raises(ConfigError, match=r"^data\.val_fraction: 0\.0 must be > 0 and < 1$"):
        DataSection(val_fraction=0.0)
    with pytest.raises(ConfigError, match=r"^data\.split_method: 'x' is not one of kdfiqa, sklearn$"):
        DataSection(split_method="x")
    with pytest.raises(ConfigError, match=r"^data\.val_root is only used with data\.val_csv"):
        DataSection(val_root="v")
    with pytest.raises(ConfigError, match=r"^data\.strata: 'many' must be int$"):
        DataSection(strata="many")


def test_one_range_helper():
    check_range("x", 0.5, above=0, below=1)
    check_range("x", None, at_least=1)
    with pytest.raises(ConfigError, match="^x: nan is not a finite number$"):
        check_range("x", float("nan"), at_least=0)
    with pytest.raises(ConfigError, match="^x: 2.5 must be an integer >= 1$"):
        check_range("x", 2.5, at_least=1, integer=True)
    with pytest.raises(ConfigError, match="^x: 11 must be an integer from 0 to 10$"):
        check_range("x", 11, at_least=0, at_most=10, integer=True)


def test_checks_that_build_or_look_up_run_in_validate_not_when_a_section_is_built():
    config = RunConfig.from_dict({"data": {"train_transform": {"mode": "zoom"}}, "loss": {"task": "1.0*msee"}})
    with pytest.raises(ConfigError, match=r"^data\.train_transform: .*mode"):
        config.validate()
    for bad, needle in (({"loss": {"task": "1.0*msee"}}, r"^loss\.task: .*msee"),
                        ({"distill": {"budget": "vquala2052"}}, "unknown budget"),
                        ({"distill": {"feature": ["backbone.0"]}}, "STUDENT_MODULE:TEACHER_MODULE")):
        with pytest.raises(ConfigError, match=needle):
            RunConfig.from_dict(bad).validate()
    RunConfig().validate()


def test_every_field_of_every_section_declares_its_resume_rule():
    for section, cls in SECTIONS.items():
        for field in dataclasses.fields(cls):
            assert field.metadata.get("resume") in RESUME_RULES, f"{section}.{field.name} declares no resume rule"
    with pytest.raises(TypeError):
        option(0, help="no resume rule")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="resume='sometimes'"):
        option(0, resume="sometimes")


def test_resume_keys_are_generated_from_the_fields():
    for key in ("data.split_method", "ssar.epochs", "ssar.margin", "ssar.lr", "ssar.degradations", "train.monitor",
                "train.grad_clip", "train.epochs", "loss.task", "model.input"):
        section, name = key.split(".")
        assert RESUME_KEYS[section][name] == "refuse", key
    assert {k for k, rule in RESUME_KEYS["model"].items() if rule == "model"} == {"name", "kwargs", "head"}
    assert "output_dir" not in RESUME_KEYS["train"] and "device" not in RESUME_KEYS["train"]


def test_resume_with_a_changed_split_method_is_refused():
    stored = RunConfig().to_dict()
    changed = resolve_config("train", build_layers("train", sets=["data.split_method=sklearn"]))
    last = Path("runs/x/last.pt")
    with pytest.raises(ConfigError, match=r"^resume=True: data\.split_method was 'kdfiqa' in runs/x/last\.pt, "
                                          r"now 'sklearn'; .*allow_changes=True"):
        check_unchanged(changed, last, stored=stored)
    check_unchanged(resolve_config("train", []), last, stored=stored)
    other_model = resolve_config("train", build_layers("train", sets=["model.kwargs={width: 2}"]))
    with pytest.raises(ConfigError, match="resumes with its own model") as info:
        check_unchanged(other_model, last, stored=stored)
    assert "allow_changes" not in str(info.value)


def test_a_model_file_named_as_the_model_is_expanded_when_the_config_resolves(tmp_path):
    from kdfiqa.config import ModelSection
    from kdfiqa.models.model_file import write_model_file

    path = write_model_file(tmp_path / "m.yaml", "emo2_1m", {"depths": [1, 2, 4, 2]}, (96, 128))
    config = resolve_config("train", build_layers("train", flags={"model.name": str(path)},
                                                  sets=["model.kwargs.drop_path_rate=0.1"]))
    assert (config.model.name, config.model.input) == ("emo2_1m", [96, 128])
    assert config.model.kwargs == {"depths": [1, 2, 4, 2], "drop_path_rate": 0.1}
    assert ModelSection(name=str(path)).name == str(path)  # building a section reads no file
