"""Export to ONNX (dynamo and legacy), pt2 and TorchScript: files loaded back independently, budget
re-check, verification, dependencies checked before writing."""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from kdfiqa.budget import VQUALA2025, Budget, BudgetExceeded
from kdfiqa.cli.main import main
from kdfiqa.export import (
    DEFAULT_ATOL,
    METADATA_KEY,
    ExportError,
    export_model,
    load_pt2,
    verification_sizes,
)
from kdfiqa.models import DeployConfig, set_deploy_config

from test_cli_inference import calibrated_model  # an untrained model whose scores depend on the image

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


class TinyFIQA(nn.Module):
    """A small conv regressor with batch norm, a stride-2 conv and global pooling: any resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.GELU(),
                                  nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.SiLU())
        self.fc = nn.Linear(16, 1)
        self.default_input_size = (3, 48, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc(self.body(x).mean(dim=(2, 3))))


class SizeFreezingFIQA(TinyFIQA):
    """Uses a Python int from the input's width: tracing freezes it at the example's width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = int(x.shape[-1]) // 2
        return torch.sigmoid(self.fc(self.body(x[..., :half]).mean(dim=(2, 3))) * 5)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = TinyFIQA()
    with torch.no_grad():  # non-trivial running statistics, so eval-mode BN matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.mark.slow
def test_every_format_matches_eager_at_unseen_resolutions(tmp_path):
    model = tiny_model()
    result = export_model(model, tmp_path, formats=["onnx", "pt2", "torchscript"], input_sizes=[(48, 64)],
                          budget=VQUALA2025, folder=False)
    assert set(result.paths) == {"torchscript", "onnx", "pt2"} and result.within_budget is True
    assert len(result.verifications) == 9 and all(v.passed for v in result.verifications)
    assert all(shape.dynamic_size for shape in result.shapes.values()) and not result.notes

    model.eval()
    x = torch.randn(5, 3, 37, 91)  # neither the tracing size nor a verification size, nor its batch
    expected = model(x).detach().numpy()
    scripted = torch.jit.load(str(result.paths["torchscript"]))
    np.testing.assert_allclose(scripted(x).detach().numpy(), expected, atol=DEFAULT_ATOL)
    session = onnxruntime.InferenceSession(str(result.paths["onnx"]), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=DEFAULT_ATOL)
    program = torch.export.load(str(result.paths["pt2"])).module()
    np.testing.assert_allclose(program(x).detach().numpy(), expected, atol=DEFAULT_ATOL)
    module, meta = load_pt2(result.paths["pt2"])
    assert meta["input_sizes"] == [[3, 48, 64]]


def test_static_size_fixes_height_and_width_and_verifies_at_the_export_size(tmp_path):
    result = export_model(tiny_model(), tmp_path, formats=["pt2"], input_sizes=[(48, 64)], static_size=True)
    assert not result.shapes["pt2"].dynamic_size
    assert [v.input_size for v in result.verifications] == [(3, 48, 64)]
    assert "fixed at 48x64 (static_size=True)" in result.notes[0] and "not verified at" in result.notes[1]
    module, _ = load_pt2(result.paths["pt2"])
    assert module(torch.randn(4, 3, 48, 64)).shape == (4, 1)  # the batch stays dynamic


def test_a_model_that_specialises_its_width_is_exported_fixed_with_a_note(tmp_path):
    # torch.export keeps what the code does with the width exact by fixing it; the verification then
    # runs at the export size only, and the note says why.
    torch.manual_seed(0)
    result = export_model(SizeFreezingFIQA(), tmp_path, formats=["pt2"], input_sizes=[(48, 64)])
    assert not result.shapes["pt2"].dynamic_size and all(v.passed for v in result.verifications)
    assert "fixed at 48x64 (the model's shape arithmetic specialises them)" in result.notes[0]


@pytest.mark.slow
def test_emo_windows_export_at_every_resolution(tmp_path):
    # EMO pads feature maps to a multiple of its attention window: that arithmetic must stay dynamic.
    model = calibrated_model()  # emo_1m with real batch-norm statistics: scores depend on the image
    result = export_model(model, tmp_path, formats=["torchscript", "onnx"], onnx_exporter="legacy",
                          input_sizes=[(48, 56)], verify_sizes=[(48, 56), (33, 90), (75, 61)])
    assert len(result.verifications) == 6 and all(v.passed for v in result.verifications)
    assert min(v.eager_spread for v in result.verifications) > 1e-3  # the comparison is not vacuous


@pytest.mark.slow
def test_lighthspa_pooled_keys_export_at_every_resolution(tmp_path):
    # LightHSPA pools keys and values adaptively to 7x7, which ONNX can express only for a fixed input
    # size; the export writes the same averages as matrix products. Maps of 7x7, 4x5 and 10x8 here.
    model = calibrated_model("lighthspa_fiqa")
    result = export_model(model, tmp_path, formats=["onnx"], onnx_exporter="legacy", input_sizes=[224],
                          verify_sizes=[224, (97, 131), (320, 256)])
    assert len(result.verifications) == 3 and all(v.passed for v in result.verifications)
    assert min(v.eager_spread for v in result.verifications) > 1e-3  # the comparison is not vacuous


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_onnx_graph_has_dynamic_height_width_and_metadata(tmp_path, exporter):
    result = export_model(tiny_model(), tmp_path, formats=["onnx"], input_sizes=[64], onnx_exporter=exporter,
                          meta={"eval_transform": {"size": 64}})
    graph = onnx.load(str(result.paths["onnx"]))
    onnx.checker.check_model(graph)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    assert dims[1].dim_value == 3
    assert graph.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = json.loads({p.key: p.value for p in graph.metadata_props}[METADATA_KEY])
    assert meta["eval_transform"] == {"size": 64} and meta["input_sizes"] == [[3, 64, 64]]


def test_torchscript_metadata_and_training_flags_restored(tmp_path):
    model = tiny_model().train()
    model.body[1].eval()  # a mixed state must come back exactly
    result = export_model(model, tmp_path, formats=["torchscript"], input_sizes=[32], name="tiny")
    assert result.paths["torchscript"].name == "tiny.pt"
    assert _metadata(result.paths["torchscript"])["model_name"] == "tiny"
    assert model.training and not model.body[1].training and model.body[4].training


def _metadata(path) -> dict:
    extra = {METADATA_KEY: ""}
    torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra[METADATA_KEY])


def test_defaults_come_from_the_deploy_config(tmp_path):
    derived = export_model(tiny_model(), tmp_path / "a", formats=["torchscript"])
    assert derived.verifications[0].input_size == (3, 48, 64)  # no config attached: default_input_size
    assert derived.paths["torchscript"].name == "model.pt"
    config = DeployConfig("tiny_deployed", input_size=(3, 40, 32),
                          eval_transform={"mode": "center_crop", "resize": 48}, normalize="symmetric")
    result = export_model(set_deploy_config(tiny_model(), config), tmp_path / "b", formats=["torchscript"])
    assert result.paths["torchscript"].name == "tiny_deployed.pt"
    assert result.verifications[0].input_size == (3, 40, 32)
    meta = _metadata(result.paths["torchscript"])
    assert meta["input_sizes"] == [[3, 40, 32]] and DeployConfig.from_dict(meta["deploy"]) == config
    assert meta["eval_transform"] == {"mode": "center_crop", "size": [40, 32], "resize": 48, "normalize": "symmetric"}


def test_verification_catches_a_frozen_size_and_removes_the_file(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ExportError, match="disagrees with the eager model") as info:
        export_model(SizeFreezingFIQA(), tmp_path, formats=["torchscript"], input_sizes=[(48, 64)])
    assert "MISMATCH" in str(info.value)
    assert not (tmp_path / "model.pt").exists()


def test_over_budget_refused_unless_allowed(tmp_path):
    tight = Budget(max_gflops=1e-6, max_params=10, name="tight")
    with pytest.raises(BudgetExceeded, match="tight"):
        export_model(tiny_model(), tmp_path / "a", input_sizes=[32], budget=tight)
    assert not (tmp_path / "a").exists()
    result = export_model(tiny_model(), tmp_path / "b", formats=["torchscript"], input_sizes=[32, 64],
                          budget=tight, allow_over_budget=True)
    assert result.within_budget is False and result.paths["torchscript"].exists()
    params = sum(p.numel() for p in tiny_model().parameters())
    assert [r.params for r in result.budget_reports] == [params, params]
    assert [r.input_size for r in result.budget_reports] == [(3, 32, 32), (3, 64, 64)]


@pytest.mark.parametrize("module", ["onnx", "onnxruntime", "onnxscript"])
def test_a_missing_dependency_is_refused_before_any_file_is_written(tmp_path, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import MODULE` raise ImportError
    with pytest.raises(ExportError, match=rf"needs {module}.*kdfiqa\[onnx\]"):
        export_model(tiny_model(), tmp_path / "out", formats=["torchscript", "onnx"], input_sizes=[32])
    assert not (tmp_path / "out").exists()


def test_cli_missing_dependency_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    out = tmp_path / "out"
    assert main(["export", _factory_file(tmp_path), "--out", str(out), "--format", "torchscript", "onnx"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pip install 'kdfiqa[onnx]'" in err
    assert not (out / "model.pt").exists()
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # the legacy exporter does without it
    assert main(["export", _factory_file(tmp_path), "--out", str(out), "--format", "onnx", "--onnx-exporter",
                 "legacy", "--input", "32"]) == 0


def test_unknown_format_and_old_opset(tmp_path):
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(tiny_model(), tmp_path, formats=["tflite"])
    with pytest.raises(ExportError, match="opset"):
        export_model(tiny_model(), tmp_path, formats=["onnx"], input_sizes=[32], opset=13)


def test_verification_sizes_are_distinct_odd_and_keep_channels():
    sizes = verification_sizes(224)
    assert sizes[0] == (3, 224, 224) and len(set(sizes)) == 3
    assert all(c == 3 and h % 2 and w % 2 and h != w for c, h, w in sizes[1:])


FACTORY = """
import torch
from torch import nn

class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.fc = nn.Linear(4, 1)
        self.default_input_size = (3, 32, 32)

    def forward(self, x):
        return torch.sigmoid(self.fc(self.conv(x).mean(dim=(2, 3))))

def build():
    torch.manual_seed(0)
    return Small()
"""


def _factory_file(tmp_path, source: str = FACTORY) -> str:
    path = tmp_path / "factories.py"
    path.write_text(source)
    return f"{path}:build"


def test_cli_export_writes_verified_files_and_exit_codes(tmp_path, capsys):
    target = _factory_file(tmp_path)
    out = tmp_path / "out"
    assert main(["export", target, "--out", str(out), "--input", "40", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["within_budget"] is True
    assert {v["format"] for v in report["verifications"]} == {"pt2", "onnx"}
    assert all(v["passed"] for v in report["verifications"])
    assert report["dynamic_size"] == {"onnx": True, "pt2": True} and report["int8"] is None
    assert (out / "model.pt2").exists() and (out / "model.onnx").exists()

    over = ["export", target, "--out", str(tmp_path / "over"), "--max-params", "10"]
    assert main(over) == 1
    assert "exceeds budget" in capsys.readouterr().err
    assert not (tmp_path / "over" / "model.pt").exists()
    assert main(over + ["--allow-over-budget", "--format", "torchscript"]) == 0
    assert (tmp_path / "over" / "model.pt").exists()


def test_cli_export_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "nope.pt" in err


UNEXPORTABLE = """
import torch
import torch.nn.functional as F


class GridPooled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return torch.sigmoid(F.adaptive_avg_pool2d(self.conv(x), 3).mean(dim=(1, 2, 3))[:, None])


def build():
    return GridPooled()
"""


def test_cli_export_onnx_failure_is_one_line_exit_2(tmp_path, capfd):
    # Adaptive pooling to a 3x3 grid cannot be written in ONNX for a dynamic input size.
    target = _factory_file(tmp_path, UNEXPORTABLE)
    assert main(["export", target, "--out", str(tmp_path / "out"), "--format", "onnx", "--input", "32",
                 "--onnx-exporter", "legacy"]) == 2
    out, err = capfd.readouterr()
    assert out == ""  # the exporter's own graph dump is silenced
    assert len(err.strip().splitlines()) == 1
    assert "ONNX export of GridPooled failed" in err and "adaptive_avg_pool2d" in err
    assert not (tmp_path / "out" / "model.onnx").exists()


@pytest.mark.slow
def test_the_python_export_rechecks_the_default_budget_as_the_cli_does(tmp_path):
    """export_model's default budget is vquala2025 (a name works too): an over-budget model is
    refused before anything is written; budget=None skips the check."""
    from kdfiqa.models import create_model

    over = create_model("emo_5m")  # 0.90 GFLOPs at 224x224
    for budget in ({}, {"budget": "vquala2025"}):
        with pytest.raises(BudgetExceeded, match="vquala2025"):
            export_model(over, tmp_path / "over", formats=["torchscript"], **budget)
    assert not (tmp_path / "over").exists()
    result = export_model(tiny_model(), tmp_path / "free", formats=["torchscript"], budget=None)
    assert result.within_budget is None


@pytest.mark.slow
def test_export_model_takes_a_checkpoint_path_as_the_cli_does(tmp_path):
    from kdfiqa.checkpoint import build_checkpoint, save_checkpoint

    from kdfiqa.models import create_model

    save_checkpoint(tmp_path / "tiny.pt", build_checkpoint(create_model("mobilenetv3_small_fiqa")))
    result = export_model(str(tmp_path / "tiny.pt"), tmp_path / "out", formats=["torchscript"], input_sizes=[64])
    assert result.paths["torchscript"].is_file() and result.within_budget
    assert result.verifications and all(v.passed for v in result.verifications)


def test_cli_export_never_replaces_a_file_unless_asked(tmp_path, capsys):
    target = _factory_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"a checkpoint the user keeps here")
    argv = ["export", target, "--out", str(out), "--input", "40", "--format", "torchscript"]
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "model.pt").read_bytes() == b"a checkpoint the user keeps here"
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "model.pt").read_bytes() != b"a checkpoint the user keeps here"
    with pytest.raises(Exception, match="atol"):
        export_model(tiny_model(), tmp_path / "x", formats=["torchscript"], input_sizes=[32], atol=-1.0)


@pytest.mark.slow
def test_every_export_of_a_registered_model_writes_a_model_folder_that_reloads(tmp_path, capsys):
    """``kdfiqa export`` of a checkpoint also writes model.safetensors, config.json and a README.md
    card (with the checkpoint's metrics) that load back to the same scores; a model built outside
    the registry is exported without a folder, with a note saying why."""
    from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
    from kdfiqa.models import create_model
    from kdfiqa.targets import load_target

    torch.manual_seed(0)
    model = create_model("mobilenetv3_small_fiqa").eval()
    save_checkpoint(tmp_path / "tiny.pt", build_checkpoint(model, metrics={"score": 0.625}))
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "tiny.pt"), "--out", str(out), "--input", "64", "--format",
                 "torchscript", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["paths"]["folder"] == str(out)
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "README.md"}
    assert "0.625" in (out / "README.md").read_text()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(load_target(str(out)).eval()(x), model(x), atol=1e-6)
    assert main(["export", str(tmp_path / "tiny.pt"), "--out", str(out), "--input", "64", "--format",
                 "torchscript"]) == 2  # the folder's files too are never replaced unless asked
    assert "already exists" in capsys.readouterr().err
    result = export_model(tiny_model(), tmp_path / "hand", formats=["torchscript"], input_sizes=[32])
    assert "folder" not in result.paths and not (tmp_path / "hand" / "config.json").exists()
    assert any(note.startswith("no model folder") for note in result.notes)
