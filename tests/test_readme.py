"""The README's shell blocks are tests: every ``kdfiqa ...`` command runs as written on tiny generated
data, with only sizes, epochs and paths substituted."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from kdfiqa.cli.main import main
from tiny_fiqa import synthetic

README = Path(__file__).resolve().parent.parent / "README.md"

SMALL = {"--input": "32", "--teacher-input": "32", "--trials": "2"}
"""Sizes (and search trials) the tests run at instead of the README's 224/512 and 32 (CPU speed)."""
TRAINING = ["--epochs", "12", "--batch-size", "4", "--device", "cpu", "--quiet"]
"""Added to train/distill commands: short epochs on the CPU, enough for EMOv2 to leave its
near-constant start, so that best.pt exists as the README's next commands expect."""


def readme_commands(text: str) -> list[str]:
    """Every ``kdfiqa`` command of the README's ``bash`` blocks, continuation lines joined, comments
    dropped; a command starting with the line ``python -m pip ... && kdfiqa ...`` counts from kdfiqa."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            line = line.split("&& ")[-1]
            if line.startswith("kdfiqa ") and "..." not in line:
                commands.append(line)
    return commands


def substitute(argv: list[str]) -> list[str]:
    """The README command with the sizes made small and training made short (and INT8's accuracy
    tolerance opened, which a student trained for seconds cannot be held to); nothing else changes."""
    out = [SMALL.get(argv[i - 1], a) if i else a for i, a in enumerate(argv)]
    if out[0] in ("train", "distill"):
        out += TRAINING
    if out[0] == "demo":
        out += ["--quick", "--out", "demo-out"]
    if out[0] == "budget" and "--input" in argv:
        out = argv  # the budget block's sizes are its point
    if out[0] == "export" and "--int8" in argv:
        out += ["--max-drop", "1"]  # a student trained for seconds: the INT8 check runs, its tolerance is moot
    return out


def _order(command: str) -> int:
    """Run the command-line section's flow first, since other blocks use its checkpoints."""
    flow = ("train", "pseudo-label", "distill", "evaluate", "predict", "export")
    word = shlex.split(command)[1]
    return flow.index(word) if word in flow else len(flow)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """data/train (+ train.csv), data/val (+ val.csv), data/unlabeled, photos/, my_models.py."""
    for name, n, seed in (("train", 40, 0), ("val", 12, 1), ("unlabeled", 8, 2)):
        images, labels = synthetic(tmp_path / "gen", n, seed, name)
        shutil.copytree(images, tmp_path / "data" / name)
        if name != "unlabeled":
            shutil.copy(labels, tmp_path / "data" / f"{name}.csv")
    shutil.copytree(tmp_path / "data" / "val", tmp_path / "photos")
    (tmp_path / "my_models.py").write_text(
        "import kdfiqa\n\ndef build_student():\n    return kdfiqa.create_model('mobilenetv3_small_fiqa')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_has_the_documented_flow():
    commands = readme_commands(README.read_text())
    words = {shlex.split(c)[1] for c in commands}
    assert {"demo", "train", "pseudo-label", "distill", "evaluate", "predict", "export", "budget", "search"} <= words


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::kdfiqa.metrics.ConstantInputWarning")  # one epoch may not separate scores
def test_every_readme_command_runs_as_written(workspace, capsys):
    commands = sorted(readme_commands(README.read_text()), key=_order)
    for command in commands:
        argv = substitute(shlex.split(command)[1:])
        code = main(argv)
        err = capsys.readouterr().err
        expected = {0} if argv[0] != "budget" else {0, 1}  # budget: 1 says "over", its documented verdict
        assert code in expected, f"{command}\n-> {argv}\n{err}"
    assert (workspace / "runs" / "student" / "best.pt").is_file()
    assert (workspace / "scores.csv").read_text().startswith("image,score")
    assert any((workspace / "exported").iterdir())
    assert any((workspace / "students").glob("*.yaml")) and (workspace / "front.png").is_file()
