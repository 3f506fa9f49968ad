"""The model registry: names, defaults, recorded kwargs and errors."""

from __future__ import annotations

import pytest
import torch

from kdfiqa.errors import ConfigError
from kdfiqa.models import create_backbone, create_model, list_backbones, list_models, model_info

EMO_NAMES = ["emo_1m", "emo_2m", "emo_5m", "emo_6m", "emo2_1m", "emo2_2m", "emo2_5m", "emo2_20m"]
ZOO_NAMES = ["mobilenetv3_large_fiqa", "mobilenetv3_small_fiqa", "mobilenetv2_fiqa", "edgenext_xxs_fiqa",
             "dualbranch_fiqa", "lighthspa_fiqa"]


def test_every_backbone_and_zoo_model_is_a_model_name():
    names = list_models()
    assert set(EMO_NAMES) <= set(list_backbones())
    assert set(EMO_NAMES + ZOO_NAMES) <= set(names)
    assert names == sorted(names)
    assert list_models("emo2_*") == ["emo2_1m", "emo2_20m", "emo2_2m", "emo2_5m"]


def test_seed_student_and_teacher_roles():
    assert model_info("emo2_1m").is_student
    assert not model_info("emo2_5m").is_student
    assert model_info("emo2_1m").default_input_size == (3, 224, 224)


def test_create_model_records_what_rebuilds_it():
    model = create_model("emo2_1m", window_size=8, pretrained=False, head={"dropout": 0.1})
    assert model.model_name == "emo2_1m"
    assert model.model_kwargs == {"window_size": 8, "head": {"dropout": 0.1}}  # no 'pretrained'
    twin = create_model(model.model_name, **model.model_kwargs)
    assert [p.shape for p in twin.parameters()] == [p.shape for p in model.parameters()]


def test_backbone_name_becomes_a_regressor_with_scores_in_unit_interval():
    model = create_model("emo_1m").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 80))
    assert out.shape == (2, 1) and bool(((out > 0) & (out < 1)).all())
    assert model.backbone is not None and model.default_input_size == (3, 224, 224)


@pytest.mark.parametrize("call", [lambda: create_model("emo2_1mm"), lambda: create_backbone("nope"),
                                  lambda: model_info("emo3_1m")])
def test_unknown_names_are_config_errors_with_hints(call):
    with pytest.raises(ConfigError, match="unknown model"):
        call()


def test_close_match_is_suggested():
    with pytest.raises(ConfigError, match="did you mean emo2_1m"):
        create_model("emo2_1mm")
