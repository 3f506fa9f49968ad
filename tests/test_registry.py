"""The generic Registry, the model registry (names, defaults, recorded kwargs, what a checkpoint may
replay), and the budget presets."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from kdfiqa.budget import VQUALA2025
from kdfiqa.budget.presets import BUDGETS, DEFAULT_BUDGET, get_budget
from kdfiqa.errors import ConfigError
from kdfiqa.models import (
    create_backbone,
    create_model,
    list_backbones,
    list_models,
    model_info,
    register_model,
    restorable_kwargs,
)
from kdfiqa.models.registry import MODELS, UNSAFE_KWARGS
from kdfiqa.models.timm_backbone import TIMM_BACKBONE_KWARGS
from kdfiqa.registry import Registry

EMO_NAMES = ["emo_1m", "emo_2m", "emo_5m", "emo_6m", "emo2_1m", "emo2_2m", "emo2_5m", "emo2_20m"]
ZOO_NAMES = ["mobilenetv3_large_fiqa", "mobilenetv3_small_fiqa", "mobilenetv2_fiqa", "edgenext_xxs_fiqa",
             "dualbranch_fiqa", "lighthspa_fiqa"]


def test_registry_registers_looks_up_lists_and_hints():
    reg: Registry[object] = Registry("widget")

    @reg.register
    def alpha():
        return 1

    @reg.register(name="beta_2")
    def anything():
        return 2

    assert reg.register(3, name="gamma") == 3
    assert reg.get("alpha") is alpha and reg.get("beta_2") is anything
    assert list(reg) == reg.list() == ["alpha", "beta_2", "gamma"] and len(reg) == 3
    assert reg.list("*a") == ["alpha", "gamma"] and reg.list("b*") == ["beta_2"]
    assert "alpha" in reg and "delta" not in reg and 5 not in reg
    with pytest.raises(ConfigError) as info:
        reg.get("alpah")
    assert str(info.value) == "unknown widget 'alpah' (did you mean alpha?); known widgets: alpha, beta_2, gamma"
    with pytest.raises(ConfigError, match=r"^unknown widget 'zzz'; known widgets"):
        reg.get("zzz")
    with pytest.raises(ValueError, match="already registered"):
        reg.register(4, name="alpha")
    with pytest.raises(ValueError, match="needs a name"):
        reg.register(4)
    assert reg.remove("gamma") == 3 and "gamma" not in reg
    listed = Registry("loss", plural="losses", listing="`tool list` shows them")
    with pytest.raises(ConfigError, match=r"^unknown loss 'x'; `tool list` shows them$"):
        listed.get("x")
    assert Registry("loss", plural="losses").unknown("x").args[0].endswith("known losses: none")


def test_budget_presets_are_a_registry_that_imports_no_torch():
    assert DEFAULT_BUDGET == "vquala2025" and get_budget("vquala2025") is VQUALA2025
    assert BUDGETS.list() == ["vquala2025"]
    with pytest.raises(ConfigError, match=r"unknown budget 'vquala2052' \(did you mean vquala2025\?\)"):
        get_budget("vquala2052")
    code = "import sys, kdfiqa.budget.presets, kdfiqa.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


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
    assert model.model_name == "emo2_1m" == model.deploy_config.name
    assert model.model_kwargs == {"window_size": 8, "head": {"dropout": 0.1}}  # no 'pretrained'
    assert model.deploy_config.kwargs == model.model_kwargs
    twin = create_model(model.model_name, **model.model_kwargs)
    assert [p.shape for p in twin.parameters()] == [p.shape for p in model.parameters()]


def test_registered_normalisation_reaches_the_deploy_config():
    assert model_info("mobilenetv3_large_fiqa").normalize == "symmetric"  # Conquerit's (-1, 1) inputs
    assert create_model("mobilenetv3_large_fiqa").deploy_config.eval_transform["normalize"] == "symmetric"
    assert create_model("mobilenetv3_small_fiqa").deploy_config.normalize == "imagenet"
    with pytest.raises(ValueError, match="normalize"):
        register_model(lambda: None, name="test_bad_normalize", normalize="zscore")


def test_backbone_name_becomes_a_regressor_with_scores_in_unit_interval():
    model = create_model("emo_1m").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 80))
    assert out.shape == (2, 1) and bool(((out > 0) & (out < 1)).all())
    assert model.backbone is not None and model.default_input_size == (3, 224, 224)


def test_restorable_kwargs_follow_signatures_and_never_open_files():
    assert {"window_size", "drop_path_rate", "depths", "head"} <= restorable_kwargs("emo2_1m")
    assert "name" not in restorable_kwargs("emo2_1m")  # _create's positional-only preset name
    assert {"width_mult", "use_hspa", "num_heads", "pool_size", "head"} <= restorable_kwargs("lighthspa_fiqa")
    assert {"local_branch", "widths", "kernel_sizes"} <= restorable_kwargs("dualbranch_fiqa")
    assert restorable_kwargs("mobilenetv3_small_fiqa") == TIMM_BACKBONE_KWARGS | {"head", "width"}
    assert restorable_kwargs("timm:resnet18") == TIMM_BACKBONE_KWARGS | {"head"}
    assert {"drop_rate", "drop_path_rate", "in_chans", "img_size", "pooled"} <= TIMM_BACKBONE_KWARGS
    for name in list_models() + ["timm:resnet18"]:
        allowed = restorable_kwargs(name)
        assert not allowed & UNSAFE_KWARGS and not any(k.startswith("pretrained") for k in allowed), name
    with pytest.raises(ConfigError, match="unknown model"):
        restorable_kwargs("emo3_1m")


def test_a_factory_with_kwargs_allows_only_what_it_declares():
    def open_kwargs(width: int = 2, pretrained: bool = False, **kwargs):
        """Test model."""

    def declared(width: int = 2, **kwargs):
        """Test model."""

    register_model(open_kwargs, name="test_open_kwargs")
    register_model(declared, name="test_declared", forwards=[lambda depth=1, checkpoint_path=None: None, {"x"}])
    try:
        assert restorable_kwargs("test_open_kwargs") == {"width"}
        assert restorable_kwargs("test_declared") == {"width", "depth", "x"}
    finally:
        MODELS.remove("test_open_kwargs"), MODELS.remove("test_declared")


@pytest.mark.parametrize("call, kind", [(lambda: create_model("emo2_1mm"), "model"),
                                        (lambda: create_backbone("nope"), "backbone"),
                                        (lambda: model_info("emo3_1m"), "model")])
def test_unknown_names_are_config_errors_with_hints(call, kind):
    listing = "`kdfiqa models` lists them; any timm model is 'timm:NAME'"
    with pytest.raises(ConfigError, match=f"unknown {kind} .*{listing}"):
        call()


def test_close_match_is_suggested():
    with pytest.raises(ConfigError, match=r"did you mean emo2_1m"):
        create_model("emo2_1mm")


def test_a_failed_download_of_published_weights_is_one_line_naming_the_way_out(monkeypatch):
    import urllib.error

    import torchvision.models

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models, "swin_b", offline)
    with pytest.raises(ConfigError, match=r"ecnu_sjtu_teacher\(pretrained=True\): its published weights could not be fetched .*"
                                          r"random weights \(pretrained=False\)"):  # the keyword from Python; the CLI names its --set
        create_model("ecnu_sjtu_teacher", pretrained=True)
    with pytest.raises(urllib.error.URLError):  # without pretrained=True it is not a download: as raised
        create_model("ecnu_sjtu_teacher")
