"""``--threads N``: offered by every training and scoring command, in force while the command runs."""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from kdfiqa.cli.config_flags import intra_op_threads
from kdfiqa.cli.main import build_parser, main

THREADED = ("train", "distill", "pseudo-label", "predict", "evaluate", "demo", "search")
"""The commands that train or score (and so run torch's intra-op kernels)."""


@pytest.fixture
def other_threads():
    """A thread count other than the current one (restored after the test)."""
    before = torch.get_num_threads()
    yield 2 if before == 1 else 1
    torch.set_num_threads(before)


@pytest.mark.parametrize("command", THREADED)
def test_every_training_and_scoring_command_offers_threads(command):
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    flags = {flag for action in subparsers.choices[command]._actions for flag in action.option_strings}
    assert "--threads" in flags


@pytest.mark.parametrize("command, argv", [
    ("train", ["train", "--root", "r", "--csv", "c.csv", "--model", "emo2_1m"]),
    ("predict", ["predict", "m.pt", "photos", "--out", "s.csv"]),
])
def test_threads_reach_torch_while_the_command_runs(monkeypatch, other_threads, command, argv):
    seen = []
    module = importlib.import_module(f"kdfiqa.cli.{command}")
    monkeypatch.setattr(module, "run", lambda args: seen.append((torch.get_num_threads(),
                                                                 os.environ.get("OMP_NUM_THREADS"))) or 0)
    before, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    assert main([*argv, "--threads", str(other_threads)]) == 0
    assert seen == [(other_threads, str(other_threads))]
    assert torch.get_num_threads() == before and os.environ.get("OMP_NUM_THREADS") == omp  # restored


def test_without_threads_nothing_changes(monkeypatch, other_threads):
    torch.set_num_threads(other_threads)
    with intra_op_threads(None):
        assert torch.get_num_threads() == other_threads


def test_threads_below_one_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "m.pt", "photos", "--out", "s.csv", "--threads", "0"])
    assert info.value.code == 2 and "--threads: 0 must be >= 1" in capsys.readouterr().err
