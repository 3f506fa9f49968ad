"""INT8 ONNX export: calibration through the model's evaluation transform, the float32-vs-INT8 check,
refusal on a large drop (nothing written), and the command line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from kdfiqa.cli.main import main
from kdfiqa.errors import ConfigError
from kdfiqa.export import AccuracyDropError, ExportError, export_model
from kdfiqa.export import int8 as int8_module
from kdfiqa.export.int8 import Int8Options

from test_export import _factory_file, tiny_model
from tiny_fiqa import synthetic

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    images, labels = synthetic(tmp_path_factory.mktemp("int8"), 24, seed=1, name="faces")
    return images, labels


def _options(data, **kwargs) -> Int8Options:
    images, labels = data
    return Int8Options(calibrate_images=images, count=8, check_csv=labels, check_root=images, **kwargs)


def test_int8_file_is_quantised_checked_and_reported(tmp_path, data):
    result = export_model(tiny_model(), tmp_path, formats=["onnx"], onnx_exporter="legacy", input_sizes=[32],
                          int8=_options(data))
    report = result.int8
    assert result.paths["onnx-int8"].name == "model.int8.onnx" and result.paths["onnx-int8"].is_file()
    graph = onnx.load(str(result.paths["onnx-int8"]))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # QDQ format
    assert report.calibration_images == 8 and report.float_metrics["n"] == 24
    assert report.drop == pytest.approx(report.float_metrics["score"] - report.int8_metrics["score"])
    assert abs(report.drop) <= report.max_drop
    assert 0 < report.int8_bytes and not list(tmp_path.glob(".*"))  # no temporary left behind


def test_a_large_drop_writes_nothing(tmp_path, data, monkeypatch):
    real = int8_module.score_onnx

    def worse_int8(path, images, **kwargs):  # INT8 scores reversed: its correlations collapse
        scores = real(path, images, **kwargs)
        return scores[::-1].copy() if str(path).endswith(".tmp") and "int8" in str(path) else scores

    monkeypatch.setattr(int8_module, "score_onnx", worse_int8)
    with pytest.raises(AccuracyDropError, match=r"INT8 loses .* more than max_drop 0.01: INT8 file not written"):
        export_model(tiny_model(), tmp_path, formats=["onnx"], onnx_exporter="legacy", input_sizes=[32],
                     int8=_options(data))
    assert not list(tmp_path.iterdir())  # neither the INT8 nor the float file


def test_int8_options_are_checked_before_anything_is_written(tmp_path, data):
    images, labels = data
    with pytest.raises(ConfigError, match="give calibrate_images or calibrate_csv"):
        Int8Options()
    with pytest.raises(ConfigError, match="check_csv and check_root go together"):
        Int8Options(calibrate_images=images, check_csv=labels)
    with pytest.raises(ConfigError, match="count 0 must be between 1 and 1024"):
        Int8Options(calibrate_images=images, count=0)
    with pytest.raises(ExportError, match="add onnx to formats"):
        export_model(tiny_model(), tmp_path / "out", formats=["pt2"], int8=_options(data))
    assert not (tmp_path / "out").exists()


def test_calibration_images_are_rendered_by_the_eval_transform_and_evenly_spaced(data):
    options = Int8Options(calibrate_images=data[0], count=5)
    images = options.calibration(tiny_model(), (40, 56))
    assert len(images) == 5 and images[0]["image"].shape == (3, 40, 56)
    assert images.names == [f"synthetic_{i:05d}.png" for i in (0, 4, 9, 14, 19)]


def test_cli_int8_prints_both_and_exits_1_on_a_drop(tmp_path, data, capsys, monkeypatch):
    images, labels = data
    argv = ["export", _factory_file(tmp_path), "--out", str(tmp_path / "out"), "--format", "onnx", "--input", "32",
            "--onnx-exporter", "legacy", "--int8", "--calibrate-csv", str(labels), "--calibrate-root", str(images),
            "--calibrate-count", "6", "--check-csv", str(labels), "--check-root", str(images)]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["int8"]
    assert report["calibration_images"] == 6 and set(report["float32"]) >= {"srcc", "plcc", "score"}
    assert (tmp_path / "out" / "model.int8.onnx").is_file()

    monkeypatch.setattr(int8_module, "compare_int8", _always_drops)
    assert main([*argv[:3], str(tmp_path / "drop"), *argv[4:]]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "INT8 loses" in err
    assert not (tmp_path / "drop" / "model.int8.onnx").exists()
    assert main(["export", _factory_file(tmp_path), "--out", str(tmp_path / "x"), "--check-csv", str(labels)]) == 2
    assert "--check-csv only applies with --int8" in capsys.readouterr().err


def _always_drops(float_path, int8_path, check, report):
    raise AccuracyDropError(f"INT8 loses 0.5000 of the challenge score on {len(check)} check images")


def test_score_onnx_matches_the_eager_model(tmp_path, data):
    import torch

    model = tiny_model().eval()
    result = export_model(model, tmp_path, formats=["onnx"], onnx_exporter="legacy", input_sizes=[32])
    images = Int8Options(calibrate_images=data[0], count=4).calibration(model, 32)
    with torch.no_grad():
        eager = model(torch.stack([images[i]["image"] for i in range(4)])).view(-1).numpy()
    np.testing.assert_allclose(int8_module.score_onnx(result.paths["onnx"], images), eager, atol=1e-5)
