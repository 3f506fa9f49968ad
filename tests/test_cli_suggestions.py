"""Every option an error message suggests is a real option: of some command (any message in the
package) and of the very command that printed it (a corpus of failing invocations)."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

import kdfiqa
from kdfiqa.cli.main import build_parser, main
from tiny_fiqa import TINY, synthetic

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w])")
PACKAGE = Path(kdfiqa.__file__).resolve().parent


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _message_strings() -> list[tuple[str, str]]:
    """(file, text) of every string constant in the package outside the CLI's parser definitions."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append((path.relative_to(PACKAGE).as_posix(), node.value))
    return found


def test_every_flag_named_in_the_package_exists():
    parser = build_parser()
    known = _options(parser).union(*(_options(p) for p in _subparsers(parser).values()))
    missing = sorted({(where, flag) for where, text in _message_strings() for flag in FLAG.findall(text)
                      if flag not in known})
    assert not missing, missing


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("suggest")
    images, labels = synthetic(root, 20, 0, "labeled")
    outside = root / "outside.csv"
    outside.write_text("../escape.png,0.5\n" + labels.read_text())
    broken = root / "broken"
    broken.mkdir()
    for i, image in enumerate(sorted(images.iterdir())[:6]):
        (broken / image.name).write_bytes(image.read_bytes() if i else b"")
    broken_csv = root / "broken.csv"
    broken_csv.write_text("".join(line + "\n" for line in labels.read_text().splitlines()[:6]))
    return {"images": images, "labels": labels, "outside": outside, "broken": broken, "broken_csv": broken_csv,
            "root": root}


CASES = [
    ["train", "--model", TINY, "--root", "{images}", "--csv", "{labels}", "--device", "cpu"],  # 2 validation images
    ["train", "--model", TINY, "--root", "{images}", "--csv", "{labels}", "--val-fraction", "0.3",
     "--batch-size", "64"],
    ["train", "--model", TINY, "--root", "{images}", "--csv", "{outside}", "--val-fraction", "0.3",
     "--batch-size", "4"],
    ["train", "--model", TINY, "--root", "{broken}", "--csv", "{broken_csv}", "--val-fraction", "0.5",
     "--batch-size", "2"],
    ["evaluate", TINY, "--root", "{broken}", "--csv", "{broken_csv}", "--device", "cpu"],
    ["evaluate", TINY, "--root", "{images}", "--csv", "{outside}", "--device", "cpu"],
    ["distill", "--model", TINY, "--root", "{images}", "--csv", "{labels}", "--val-fraction", "0.3",
     "--calibrate", "--teacher", TINY],
    ["distill", "--model", TINY, "--root", "{images}", "--csv", "{labels}", "--val-fraction", "0.3",
     "--pseudo-csv", "{labels}", "--unlabeled", "{images}", "--teacher", TINY],
    ["distill", "--model", TINY, "--root", "{images}", "--csv", "{labels}", "--val-fraction", "0.3",
     "--distill-loss", "0.5*temperature_mse"],
    ["train", "--model", TINY, "--root", "{images}", "--csv", "{labels}", "--val-fraction", "0.3",
     "--batch-size", "4", "--resume", "--out", "{root}/none"],
    ["pseudo-label", "--teacher", TINY, "--images", "{images}", "--out", "{root}/p.csv", "--root", "{images}"],
]


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a[:1] + [x for x in a if x.startswith("--")][:3]))
def test_a_failing_command_suggests_only_its_own_options(argv, data, capsys, tmp_path):
    argv = [a.format(**data) for a in argv]
    if argv[0] in ("train", "distill") and "--out" not in argv:
        argv += ["--out", str(tmp_path / "run"), "--quiet"]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    suggested = set(FLAG.findall(err))
    own = _options(_subparsers(build_parser())[argv[0]])
    assert suggested, err  # each of these errors says what to do
    assert suggested <= own, (sorted(suggested - own), err)


@pytest.mark.parametrize("argv,needle", [
    (["train", "--model", "m", "--root", "r", "--csv", "c", "--resume", "--overwrite"], "--resume and --overwrite"),
    (["evaluate", "ckpt.pt", "--root", "r", "--csv", "c", "--native", "--input", "32"], "--native and --input"),
    (["pseudo-label", "--teacher", "t.pt", "--images", "i", "--out", "o.csv", "--raw-if-degenerate"],
     "--raw-if-degenerate is only used with --calibrate"),
    (["evaluate", "ckpt.pt", "--root", "r", "--csv", "c", "--workers", "-1"], "--workers: -1 must be >= 0"),
    (["train", "--model", "m", "--root", "r", "--csv", "c", "--set", "train.seed=99999999999999999999"],
     "must be an integer from 0 to"),
])
def test_contradictory_or_impossible_flags_are_one_line_errors(argv, needle, capsys, tmp_path, monkeypatch):
    from kdfiqa.cli.main import main

    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and needle in err and "Traceback" not in err, err


@pytest.mark.parametrize("argv,needle", [
    (["budget", "mobilenetv3_small_fiqa", "--stride", "16"], "--stride only applies to --fill"),
    (["train", "--model", "m", "--root", "r", "--csv", "c", "--val-root", "v"], "--val-root is only used with --val-csv"),
])
def test_flags_that_only_apply_with_another_are_refused_without_it(argv, needle, capsys):
    from kdfiqa.cli.main import main

    assert main(argv) == 2
    assert needle in capsys.readouterr().err
