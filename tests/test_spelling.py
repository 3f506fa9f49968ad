"""Errors name an option as its caller spells it: the flag on the command line, the keyword argument or
config key from Python (:func:`kdfiqa.errors.spelled`), and no message outside the command line's own
modules names a flag literally."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from kdfiqa.errors import ConfigError, DataError, flag_spelling, spelled

PACKAGE = Path(__file__).resolve().parents[1] / "kdfiqa"
FLAG = re.compile(r"(?<![\w-])--[a-z]")
DECLARATIONS = ("help", "flag", "metavar")
"""Keyword arguments that declare an option (its flag, help and metavar), not messages."""
ALLOWED = {
    ("options.py", "RESUME_RULES"): "the rules' descriptions for the documentation, not a message",
    ("config/loader.py", "parse_override"): "--set items are command-line text; the message quotes the item",
    ("config/loader.py", "overrides_layer"): "the origin label of a layer of --set items",
    ("errors.py", "user_message"): "the command line's own rendering of an error (its --debug)",
    ("demo.py", "_command"): "builds a `kdfiqa demo` command line, shown through spelled()",
}
"""(module, top-level name) whose literal flags are not an option named to a Python caller."""


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        for stmt in getattr(node, "body", []) if isinstance(getattr(node, "body", None), list) else []:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                found.add(id(stmt.value))  # module, class, function and attribute docstrings
    return found


def _exempt(tree: ast.AST) -> set[int]:
    """Constants inside an option declaration's keywords or a spelled() call's flag argument."""
    found = set()
    for node in ast.walk(tree):
        parts: list[ast.AST] = []
        if isinstance(node, ast.keyword) and node.arg in DECLARATIONS:
            parts = [node.value]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "spelled" and node.args:
            parts = [node.args[0]]
        found.update(id(sub) for part in parts for sub in ast.walk(part))
    return found


def literal_flags(package: Path = PACKAGE) -> list[str]:
    """``module:line: text`` of every string constant outside kdfiqa/cli that names a flag literally."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        if module.startswith("cli/"):
            continue  # the command line's own modules speak in flags
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = _docstrings(tree) | _exempt(tree)
        for top in tree.body:
            names = [getattr(top, "name", None)] + [getattr(t, "id", None) for t in getattr(top, "targets", [])]
            if any((module, name) in ALLOWED for name in names):
                continue
            for node in ast.walk(top):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skipped
                        and FLAG.search(node.value) and "kdfiqa " not in node.value):
                    found.append(f"{module}:{node.lineno}: {node.value!r}")
    return found


def test_no_message_outside_the_command_line_names_a_flag_literally():
    assert literal_flags() == [], "name these options with kdfiqa.errors.spelled(flag, python_name)"


def test_the_scan_finds_a_literal_flag(tmp_path):
    (tmp_path / "mod.py").write_text('def f():\n    raise ValueError("pass --overwrite")\n'
                                     'def g():\n    """Docs may say --overwrite."""\n'
                                     '    return spelled("--overwrite", "overwrite=True")\n')
    assert literal_flags(tmp_path) == ["mod.py:2: 'pass --overwrite'"]


def test_spelled_follows_the_caller():
    assert spelled("--raw-if-degenerate", "raw_if_degenerate=True") == "raw_if_degenerate=True"
    assert spelled("--batch-size") == "batch_size" and spelled("--device cuda") == "device=cuda"
    with flag_spelling():
        assert spelled("--raw-if-degenerate", "raw_if_degenerate=True") == "--raw-if-degenerate"
        assert spelled("--device cuda") == "--device cuda"
    assert spelled("--root DIR (data.root)", "data.root") == "data.root"  # reset after the command


def test_python_api_names_keywords_and_the_command_line_names_flags(tmp_path):
    """The issue's example: a degenerate calibration from the Python API names raw_if_degenerate=True."""
    from kdfiqa import pipeline

    raised = {}
    for context, name in (("python", None), ("cli", flag_spelling)):
        try:
            if name is None:
                _degenerate_pseudo_label(tmp_path / context, pipeline)
            else:
                with name():
                    _degenerate_pseudo_label(tmp_path / context, pipeline)
        except DataError as exc:
            raised[context] = str(exc)
    assert "raw_if_degenerate=True" in raised["python"] and "--raw-if-degenerate" not in raised["python"]
    assert "calibrate_on" in raised["python"] and "--" not in raised["python"]
    assert "--raw-if-degenerate" in raised["cli"] and "--calibrate" in raised["cli"]


def _degenerate_pseudo_label(out: Path, pipeline) -> None:
    """Pseudo-label with a constant teacher, calibrated on labels: a degenerate fit."""
    from PIL import Image
    from torch import nn

    from kdfiqa.data.csv_files import write_scores

    images = out / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
        names.append(f"{i}.png")
    labels = write_scores(out / "labels.csv", names, list(np.linspace(0.1, 0.9, 8)))

    class Constant(nn.Module):
        default_input_size = (3, 16, 16)

        def forward_logits(self, x):
            return x.new_zeros(x.shape[0], 1)

        forward = forward_logits

    pipeline.pseudo_label(Constant(), images, out / "pseudo.csv",
                          calibrate_on=pipeline.Labels(labels, images))


def test_config_errors_name_the_key_in_python_and_key_and_flag_at_the_command_line():
    from kdfiqa.config import DataSection

    with pytest.raises(ConfigError) as python:
        DataSection(val_fraction=2.0)
    with flag_spelling(), pytest.raises(ConfigError) as cli:
        DataSection(val_fraction=2.0)
    assert str(python.value).startswith("data.val_fraction: ") and "--val-fraction" not in str(python.value)
    assert str(cli.value).startswith("data.val_fraction (--val-fraction): ")
