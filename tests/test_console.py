"""Output that is not a terminal (a pipe, a CI log, a captured test) is laid out unwrapped: every table
row and message whole on one line, through the one console factory the commands print with."""

from __future__ import annotations

import os
import subprocess
import sys

from kdfiqa.config import list_recipes
from kdfiqa.console import UNWRAPPED_WIDTH, make_console


def test_kdfiqa_recipes_piped_keeps_each_row_on_one_line():
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "kdfiqa.cli.main", "recipes"], capture_output=True, text=True,
                         check=True, env=env).stdout
    lines = out.splitlines()
    assert "\u2026" not in out
    for name, description in list_recipes():
        assert any(name in line and description in line for line in lines), (name, description)
    assert max(map(len, lines)) > 80  # wider than the 80 columns rich would otherwise assume


def test_a_console_off_a_terminal_is_unwrapped(capsys):
    console = make_console()
    assert not console.is_terminal and console.width == UNWRAPPED_WIDTH
    message = "word " * 100
    console.print(message, highlight=False)
    assert capsys.readouterr().out == message + "\n"
