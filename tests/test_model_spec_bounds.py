"""Every model spec is bounded before memory is touched, and every build failure is one line naming
the spec: declared per-family bounds, the parameter count on the ``meta`` device, the factory's own
exceptions, through ``create_model``, model files, checkpoints and the command line."""

from __future__ import annotations

import contextlib
import io
import time

import pytest
import torch

from kdfiqa.budget.search import MAX_TRIALS, SPACES, sample
from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
from kdfiqa.cli.main import main
from kdfiqa.errors import CheckpointError, ConfigError
from kdfiqa.models import MAX_PARAMETERS, create_backbone, create_model, list_backbones
from kdfiqa.models.model_file import write_model_file
from kdfiqa.models.rebuild import load_model
from tiny_fiqa import synthetic

HUGE_DEPTHS = [3_000_000, 2, 2, 2]
FAST = 20.0
"""Seconds a refusal may take on a loaded machine (it takes well under one)."""


def _cli(argv: list[str]) -> tuple[int, str, float]:
    """Exit status, stderr and wall seconds of the command line run in-process."""
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, err.getvalue(), time.perf_counter() - start


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list:
    """``--root`` and ``--csv`` flags of a few synthetic faces."""
    images, labels = synthetic(tmp_path_factory.mktemp("faces"), 8, 0, "faces")
    return ["--root", images, "--csv", labels, "--val-fraction", "0.5", "--batch-size", "2"]


def _one_clean_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "unexpected failure" not in lines[0] and "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("kwargs, field", [
    ({"depths": HUGE_DEPTHS}, "depths[0]: 3000000 must be an integer from 0 to 64"),
    ({"depths": [10**9, 2, 2, 2]}, "depths[0]"),
    ({"depths": [0, 0, 0, 0]}, "depths: [0, 0, 0, 0] must have an entry above zero"),
    ({"depths": [1] * 1_000_000}, "depths: 1000000 entries, at most 8"),
    ({"embed_dims": [-32, 48, 80, 180]}, "embed_dims[0]: -32 must be an integer from 1 to 4096"),
    ({"exp_ratios": [2.0, 2.5, 3.0, 1e9]}, "exp_ratios[3]"),
    ({"window_size": 10**6}, "window_size: 1000000"),
    ({"head": {"hidden": [10**9]}}, "head: hidden[0]"),
])
def test_declared_bounds_refuse_before_anything_is_built(kwargs, field):
    start = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        create_model("emo2_1m", **kwargs)
    assert time.perf_counter() - start < 1.0
    message = str(caught.value)
    assert message.startswith("model emo2_1m(") and field in message and "\n" not in message


def test_a_spec_within_the_declared_bounds_is_counted_on_the_meta_device_first():
    kwargs = dict(depths=[64] * 4, embed_dims=[4000] * 4, head_dims=[20] * 4, exp_ratios=[16] * 4)
    with pytest.raises(ConfigError, match=f"parameters, over the {MAX_PARAMETERS:,} any model may have"):
        create_backbone("emo2_1m", **kwargs)


def test_the_meta_count_leaves_the_random_state_alone():
    torch.manual_seed(3)
    first = create_model("emo2_1m").state_dict()
    torch.manual_seed(3)
    again = create_model("emo2_1m").state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("name, kwargs, quoted", [
    ("emo2_1m", {"head_dims": [7, 7, 7, 7]}, "ValueError: width 80 is not divisible by head_dim 7"),
    ("lighthspa_fiqa", {"width_mult": -1.0}, "width_mult: -1.0 must be > 0 and <= 4"),
    ("dualbranch_fiqa", {"widths": [32, 64, 96]}, "need one entry per stage"),
    ("timm:resnet18", {"in_chans": 0}, "in_chans: 0 must be an integer from 1 to 64"),
])
def test_a_factory_failure_is_one_config_error_naming_the_spec(name, kwargs, quoted):
    with pytest.raises(ConfigError) as caught:
        create_model(name, **kwargs)
    message = str(caught.value)
    assert message.startswith(f"model {name}(") and quoted in message and "\n" not in message


@pytest.mark.slow
def test_every_registered_variant_and_search_draw_is_within_bounds():
    import random

    for name in list_backbones("emo*"):
        create_backbone(name)
    rng = random.Random(0)
    for space in SPACES.values():
        for _ in range(3):
            create_model(space.model, **sample(space, rng))


def test_budget_refuses_a_model_file_with_huge_depths_in_seconds(tmp_path):
    path = write_model_file(tmp_path / "huge.yaml", "emo2_1m", {"depths": HUGE_DEPTHS})
    code, err, seconds = _cli(["budget", path])
    line = _one_clean_line(err)
    assert code == 2 and seconds < FAST
    assert str(path) in line and "depths[0]: 3000000" in line


@pytest.mark.parametrize("kwargs, field", [
    ({"embed_dims": [-32, 48, 80, 180]}, "embed_dims[0]: -32"),
    ({"depths": [0, 0, 0, 0]}, "must have an entry above zero"),
    ({"head_dims": [7, 7, 7, 7]}, "cannot be built: ValueError"),
])
def test_budget_names_the_model_file_and_the_field(tmp_path, kwargs, field):
    path = write_model_file(tmp_path / "bad.yaml", "emo2_1m", kwargs)
    code, err, _ = _cli(["budget", path])
    line = _one_clean_line(err)
    assert code == 2 and str(path) in line and field in line


@pytest.mark.parametrize("value, field", [
    ("[3000000,2,2,2]", "depths[0]: 3000000 must be an integer from 0 to 64"),
    ("[0,0,0,0]", "must have an entry above zero"),
])
def test_train_refuses_hostile_depths_from_set_in_seconds(tmp_path, data, value, field):
    code, err, seconds = _cli(["train", "--model", "emo2_1m", "--set", f"model.kwargs.depths={value}", *data,
                               "--device", "cpu", "--out", tmp_path / "run"])
    line = _one_clean_line(err)
    assert code == 2 and seconds < FAST and field in line and "model emo2_1m(" in line


def test_train_refuses_a_negative_width_from_a_model_file(tmp_path, data):
    path = write_model_file(tmp_path / "negative.yaml", "lighthspa_fiqa", {"width_mult": -0.5})
    code, err, _ = _cli(["train", "--model", path, *data, "--device", "cpu", "--out", tmp_path / "run"])
    line = _one_clean_line(err)
    expected = f"{path}:2: kwargs: model lighthspa_fiqa(width_mult=-0.5): width_mult: -0.5 must be > 0"
    assert code == 2 and expected in line


def test_a_checkpoint_with_a_stored_kwarg_out_of_bounds_is_refused(tmp_path):
    model = create_model("emo2_1m")
    ckpt = build_checkpoint(model, epoch=0)
    ckpt["model"]["kwargs"] = {"depths": HUGE_DEPTHS}
    ckpt["model"].pop("deploy", None)
    path = tmp_path / "hostile.pt"
    save_checkpoint(path, ckpt)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    assert time.perf_counter() - start < FAST
    message = str(caught.value)
    assert str(path) in message and "depths[0]: 3000000" in message and "\n" not in message


def test_view_cache_is_bounded_at_config_time(tmp_path, data):
    code, err, seconds = _cli(["distill", "--teacher", "emo2_1m", "--model", "emo2_1m", "--view-cache",
                               1_000_000_000, *data, "--out", tmp_path / "run"])
    line = _one_clean_line(err)
    assert code == 2 and "--view-cache" in line and "64" in line and seconds < FAST


def test_search_trials_are_bounded_and_the_bound_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    assert f"at most {MAX_TRIALS}" in capsys.readouterr().out
    code, err, _ = _cli(["search", "--trials", MAX_TRIALS + 1, "--no-latency"])
    assert code == 2 and f"--trials must be from 1 to {MAX_TRIALS}" in _one_clean_line(err)


def test_the_bounds_are_in_the_registry_for_plugins():
    from kdfiqa.models import Bound, register_model
    from kdfiqa.models.registry import MODELS

    @register_model(name="bounded_plugin_test", bounds={"width": Bound(at_least=1, at_most=8, integer=True)})
    def bounded_plugin_test(width: int = 2) -> torch.nn.Module:
        """A plugin model with a declared bound."""
        return torch.nn.Linear(width, 1)

    try:
        with pytest.raises(ConfigError, match=r"width: 9 must be an integer from 1 to 8"):
            create_model("bounded_plugin_test", width=9)
    finally:
        MODELS.remove("bounded_plugin_test")
