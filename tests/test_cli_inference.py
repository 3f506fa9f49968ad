"""kdfiqa predict / evaluate and the inference library, against direct model runs and scipy."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from kdfiqa.checkpoint import build_checkpoint, save_checkpoint
from kdfiqa.cli.main import main
from kdfiqa.errors import ConfigError
from kdfiqa.inference import load_inference_model, resolve_eval_transform
from kdfiqa.models import create_model, deploy_config, set_deploy_config

MODEL = "emo_1m"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SIZES = [(40, 52), (64, 48), (33, 90), (70, 70), (48, 61), (90, 37)]


def _image(path: Path, h: int, w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1.0, size=(1, 1, 3))
    noise = rng.normal(0, 10 + 8 * seed, size=(h, w, 3))
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("inference")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    names = []
    for i, (h, w) in enumerate(SIZES):
        name = f"sub/img{i}.png" if i % 2 else f"img{i}.jpg"
        _image(images / name, h, w, i)
        names.append(name)
    mos = np.linspace(0.2, 0.9, len(names))
    labels = root / "labels.csv"
    labels.write_text("".join(f"{n},{s:.4f}\n" for n, s in zip(names, mos)))
    model = calibrated_model()
    set_deploy_config(model, deploy_config(model).replace(input_size=(3, 48, 56)))  # as training does
    ckpt = root / "model.pt"
    save_checkpoint(ckpt, build_checkpoint(model))
    return {"root": images, "csv": labels, "names": names, "mos": mos, "ckpt": ckpt, "model": model}


def calibrated_model(name: str = MODEL) -> torch.nn.Module:
    """An untrained model ``name`` whose batch-norm statistics were estimated on random images.

    Freshly initialised, its scores hardly depend on the input; with real statistics they spread, so
    correlations and per-image comparisons mean something.
    """
    torch.manual_seed(0)
    model = create_model(name)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the calibration batches
    with torch.no_grad():
        for _ in range(2):
            model.train()(torch.rand(8, 3, 48, 56) * torch.rand(8, 1, 1, 1) * 4 - 2)
    return model.eval()


def _reference(model, path: Path, size: tuple[int, int] | None) -> float:
    """The score computed by hand: PIL bilinear resize, ImageNet normalisation, one forward."""
    img = Image.open(path).convert("RGB")
    if size is not None:
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    x = (np.asarray(img, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    with torch.no_grad():
        return float(model(torch.from_numpy(x).permute(2, 0, 1)[None]).item())


def _read_scores(path: Path) -> tuple[list[str], dict[str, float]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "score"]
    return [r[0] for r in rows[1:]], {r[0]: float(r[1]) for r in rows[1:]}


def test_predict_folder_uses_the_checkpoint_deploy_transform(data, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["predict", str(data["ckpt"]), str(data["root"]), "--out", str(out), "--device", "cpu"]) == 0
    order, scores = _read_scores(out)
    expected = sorted(f"{data['root'].as_posix()}/{n}" for n in data["names"])
    assert order == expected
    for name in data["names"]:
        ref = _reference(data["model"], data["root"] / name, (48, 56))
        assert scores[f"{data['root'].as_posix()}/{name}"] == pytest.approx(ref, abs=1e-5)


def test_predict_writes_the_challenge_submission_format(data, tmp_path, capsys):
    """--format challenge: no header, names relative to the test folder, read back by read_labels with
    the same scores as the default table."""
    from kdfiqa.data import read_labels

    table, submission = tmp_path / "scores.csv", tmp_path / "submission.csv"
    assert main(["predict", str(data["ckpt"]), str(data["root"]), "--out", str(table), "--device", "cpu"]) == 0
    assert main(["predict", str(data["ckpt"]), str(data["root"]), "--out", str(submission), "--device", "cpu",
                 "--format", "challenge", "--sort"]) == 0
    lines = submission.read_text().splitlines()
    assert len(lines) == len(data["names"]) and not lines[0].startswith("image,")
    labels = read_labels(submission)
    assert sorted(x.name for x in labels) == sorted(data["names"])  # sub/img1.png, img0.jpg: relative to the folder
    _, scores = _read_scores(table)
    for label in labels:
        assert label.score == pytest.approx(scores[f"{data['root'].as_posix()}/{label.name}"], abs=1e-6)
    assert [x.score for x in labels] == sorted((x.score for x in labels), reverse=True)
    capsys.readouterr()
    files = [str(data["root"] / n) for n in data["names"][:2]]
    assert main(["predict", str(data["ckpt"]), *files, "--out", str(tmp_path / "no.csv"), "--format", "challenge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--format challenge: give the one test folder" in err[0]
    assert not (tmp_path / "no.csv").exists()


def test_predict_sort_native_and_files(data, tmp_path):
    out = tmp_path / "sorted.csv"
    files = [str(data["root"] / n) for n in data["names"][:3]]
    assert main(["predict", str(data["ckpt"]), *files, "--out", str(out), "--sort", "--native"]) == 0
    order, scores = _read_scores(out)
    assert sorted(order) == sorted(files)
    assert [scores[n] for n in order] == sorted(scores.values(), reverse=True)
    for name in files:  # native: each image at its own size
        assert scores[name] == pytest.approx(_reference(data["model"], Path(name), None), abs=1e-5)


def test_predict_reports_every_unreadable_image_or_skips_them(data, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _image(folder / "good.png", 40, 40, 0)
    (folder / "empty.png").write_bytes(b"")
    (folder / "junk.jpg").write_bytes(b"not an image at all")
    out = tmp_path / "s.csv"
    assert main(["predict", str(data["ckpt"]), str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "empty.png" in err and "junk.jpg" in err and "--skip-bad" in err
    assert not out.exists()
    assert main(["predict", str(data["ckpt"]), str(folder), "--out", str(out), "--skip-bad"]) == 0
    assert "skipped 2" in capsys.readouterr().err
    assert _read_scores(out)[0] == [f"{folder.as_posix()}/good.png"]


def test_evaluate_json_matches_scipy_on_direct_predictions(data, capsys):
    args = ["evaluate", str(data["ckpt"]), "--root", str(data["root"]), "--csv", str(data["csv"]), "--json",
            "--batch-size", "4"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"srcc", "plcc", "krcc", "rmse", "score", "n"}
    pred = np.array([_reference(data["model"], data["root"] / n, (48, 56)) for n in data["names"]])
    mos = data["mos"]
    assert result["n"] == len(mos)
    assert result["srcc"] == pytest.approx(stats.spearmanr(pred, mos)[0], abs=1e-4)
    assert result["plcc"] == pytest.approx(stats.pearsonr(pred, mos)[0], abs=1e-4)
    assert result["krcc"] == pytest.approx(stats.kendalltau(pred, mos)[0], abs=1e-4)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((pred - mos) ** 2)), abs=1e-4)

    assert main(args + ["--input", "40x40"]) == 0  # --input overrides the checkpoint's size
    resized = json.loads(capsys.readouterr().out)
    pred40 = np.array([_reference(data["model"], data["root"] / n, (40, 40)) for n in data["names"]])
    assert resized["plcc"] == pytest.approx(stats.pearsonr(pred40, mos)[0], abs=1e-4)


def test_evaluate_human_table_and_multi_crop(data, capsys):
    base = ["evaluate", str(data["ckpt"]), "--root", str(data["root"]), "--csv", str(data["csv"])]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "srcc" in out and "plcc" in out and str(len(data["names"])) in out
    # crops as large as the smallest image's sides: every crop is a random window, averaged over N
    assert main(base + ["--multi-crop", "3", "--input", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == len(data["names"])


def test_eval_transform_overrides():
    model = create_model(MODEL)
    spec = {"mode": "center_crop", "size": 224, "resize": [240, 240], "normalize": "symmetric", "flip": True}
    assert resolve_eval_transform(spec, model) == {"mode": "center_crop", "size": [224, 224], "resize": [240, 240],
                                                   "normalize": "symmetric"}
    assert resolve_eval_transform(spec, model, native=True) == {"mode": "native", "normalize": "symmetric"}
    assert resolve_eval_transform("baseline_test", model, multi_crop=5) == {
        "mode": "multi_crop", "size": [224, 224], "num_crops": 5, "normalize": "imagenet"}
    _, h, w = model.default_input_size
    assert resolve_eval_transform(None, model) == {"mode": "resize", "size": [h, w], "normalize": "imagenet"}
    with pytest.raises(ConfigError, match="cannot be combined"):
        resolve_eval_transform(None, model, native=True, multi_crop=2)


def test_checkpoint_of_an_untrained_model_uses_the_registry_default(tmp_path):
    model = create_model(MODEL)
    path = tmp_path / "bare.pt"
    save_checkpoint(path, build_checkpoint(model))
    loaded = load_inference_model(path)
    assert loaded.input_size == tuple(model.default_input_size)
    assert loaded.transform_spec["normalize"] == "imagenet"


def test_older_checkpoint_without_deploy_uses_its_run_config_transform(tmp_path):
    ckpt = build_checkpoint(create_model(MODEL), config={
        "data": {"eval_transform": {"mode": "resize", "size": [40, 44], "normalize": "symmetric"}}})
    del ckpt["model"]["deploy"]
    path = save_checkpoint(tmp_path / "old.pt", ckpt)
    loaded = load_inference_model(path)
    assert loaded.transform_spec == {"mode": "resize", "size": [40, 44], "normalize": "symmetric"}
    assert loaded.input_size == (3, 40, 44) and deploy_config(loaded.model).input_size == (3, 40, 44)


@pytest.mark.parametrize("args, needle", [
    (["predict", "{ckpt}", "{missing}", "--out", "{out}"], "no such file"),
    (["predict", "{missing}.pt", "{root}", "--out", "{out}"], ".pt"),
    (["evaluate", "{ckpt}", "--root", "{root}", "--csv", "{missing}"], "missing"),
    (["evaluate", "{ckpt}", "--root", "{root}", "--csv", "{csv}", "--native", "--multi-crop", "2"], "combined"),
    (["evaluate", "{ckpt}", "--root", "{root}", "--csv", "{csv}", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "{ckpt}", "--root", "{root}"], "--csv"),
])
def test_bad_input_is_one_line_and_exit_2(data, tmp_path, capsys, args, needle):
    fill = {"ckpt": data["ckpt"], "root": data["root"], "csv": data["csv"], "missing": tmp_path / "missing",
            "out": tmp_path / "o.csv"}
    try:
        status = main([a.format(**fill) for a in args])
    except SystemExit as exc:  # argparse errors
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and needle in err


@pytest.mark.slow
def test_entry_point_help_and_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kdfiqa.cli.main", "predict", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "examples:" in proc.stdout and "kdfiqa predict " in proc.stdout
    assert "image,score" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "kdfiqa.cli.main", "predict", "emo_1m", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "o.csv")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nope" in proc.stderr


def test_every_help_shows_examples(capsys):
    for command in ("predict", "evaluate", "export"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        assert "examples:" in out and f"kdfiqa {command} " in out


@pytest.mark.slow
def test_evaluate_under_torchrun_matches_one_process(data, tmp_path):
    argv = ["evaluate", str(data["ckpt"]), "--root", str(data["root"]), "--csv", str(data["csv"]),
            "--json", "--batch-size", "2", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "kdfiqa.cli.main", *argv], capture_output=True, text=True,
                            env=env, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                            "--standalone", "-m", "kdfiqa.cli.main", *argv],
                           capture_output=True, text=True, env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    lines = [line for line in multi.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only rank 0 prints
    one, two = json.loads(single.stdout), json.loads(lines[0])
    assert two["n"] == one["n"] == len(data["names"])
    for key in ("srcc", "plcc", "krcc", "rmse", "score"):
        assert two[key] == pytest.approx(one[key], abs=1e-5)


@pytest.mark.filterwarnings("default::kdfiqa.metrics.ConstantInputWarning")  # shown, as outside the tests
def test_an_undefined_metric_is_one_note_line_not_a_python_warning(data, tmp_path, capsys):
    import warnings

    constant = tmp_path / "constant.csv"
    constant.write_text("".join(f"{n},0.5\n" for n in data["names"]))
    before = warnings.showwarning
    args = ["evaluate", str(data["ckpt"]), "--root", str(data["root"]), "--csv", str(constant), "--json"]
    assert main(args) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line]
    assert notes and all(line.startswith("note: ") for line in notes), captured.err
    assert "constant" in notes[0] and "metrics.py" not in captured.err
    assert json.loads(captured.out)["srcc"] == 0.0
    assert warnings.showwarning is before  # restored after the command


def test_an_image_inside_a_scored_folder_is_never_overwritten(data, tmp_path, capsys):
    import shutil

    folder = tmp_path / "photos"
    shutil.copytree(data["root"], folder)
    target = folder / data["names"][0]
    before = target.read_bytes()
    assert main(["predict", str(data["ckpt"]), str(folder), "--out", str(target), "--overwrite"]) == 2
    assert "would overwrite an image in" in capsys.readouterr().err
    assert target.read_bytes() == before
    assert main(["predict", str(data["ckpt"]), str(folder), "--out", str(folder / "scores.csv")]) == 0


def test_an_image_too_small_for_the_network_at_native_size_is_named(tmp_path, capsys):
    folder = tmp_path / "tiny"
    folder.mkdir()
    _image(folder / "sliver.png", 99, 17, 0)
    argv = ["predict", "ecnu_sjtu_student", str(folder), "--out", str(tmp_path / "s.csv"), "--native"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sliver.png (batch of 1 at 99x17): the model cannot score it" in err[0], err
    assert "--input" in err[0]
