from __future__ import annotations

import os
from pathlib import Path

import pytest

from kdfiqa.data import FIQADataset, read_labels
from kdfiqa.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_challenge_format_appends_png_to_file_but_keeps_name(tmp_path):
    csv = write(tmp_path / "train.csv", "a1,0.5\nsub/b2.jpg,0.25\n\nc3,1\n")
    labels = read_labels(csv)
    assert [(l.name, l.score, l.line) for l in labels] == [("a1", 0.5, 1), ("sub/b2.jpg", 0.25, 2), ("c3", 1.0, 4)]
    ds = FIQADataset(tmp_path, csv)
    assert [p.name for p in ds.image_paths()] == ["a1.png", "b2.jpg", "c3.png"]
    assert ds.names == ["a1", "sub/b2.jpg", "c3"]


@pytest.mark.parametrize("header", ["img_name,MOS", "Image,mos", "image,score", "extra,IMAGE,Score"])
def test_headed_csv_columns(tmp_path, header):
    n = header.count(",") + 1
    pad = "x," if n == 3 else ""
    csv = write(tmp_path / "g.csv", f"\ufeff{header}\n{pad}f1.png,0.1\n{pad}f2.png,0.9\n")
    assert [(l.name, l.score) for l in read_labels(csv)] == [("f1.png", 0.1), ("f2.png", 0.9)]


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("", ["no rows"]),
        ("\n\n", ["no rows"]),
        ("image,score\n", ["header only"]),
        ("picture,quality\na,0.1\n", ["line 1", "image column"]),
        ("image,quality\na,0.1\n", ["line 1", "score column"]),
        ("image,mos,MOS\na,0.1,0.2\n", ["line 1", "more than one score"]),
        ("a,0.1\nb,zero\n", ["line 2", "'score'", "'zero'"]),
        ("a,0.1\nb,nan\n", ["line 2", "'score'", "finite"]),
        ("a,0.1\nb,inf\n", ["line 2", "finite"]),
        ("a,0.1\nb,1.5\n", ["line 2", "outside [0, 1]"]),
        ("a,0.1\nb,-0.01\n", ["line 2", "outside"]),
        ("a,0.1\n\nb,0.2\na,0.3\n", ["line 4", "duplicate", "line 1"]),
        ("a,0.1\nb,0.2,7\n", ["line 2", "3 fields"]),
        ("a,0.1\n ,0.2\n", ["line 2", "'image'", "empty"]),
        ("img_name,mos\na,0.1\nb\n", ["line 3", "1 fields"]),
    ],
)
def test_csv_problems_name_file_line_and_field(tmp_path, text, needles):
    csv = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError) as info:
        read_labels(csv)
    message = str(info.value)
    assert "\n" not in message and str(csv) in message
    for needle in needles:
        assert needle in message


def test_score_range_can_be_opened(tmp_path):
    csv = write(tmp_path / "mos.csv", "a,3.5\nb,87\n")
    assert [l.score for l in read_labels(csv, score_range=None)] == [3.5, 87.0]
    assert [l.score for l in read_labels(csv, score_range=(1, 100))] == [3.5, 87.0]


def test_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_labels(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="directory"):
        read_labels(tmp_path)
    (tmp_path / "latin.csv").write_bytes(b"caf\xe9,0.5\n")
    with pytest.raises(DataError, match="UTF-8"):
        read_labels(tmp_path / "latin.csv")
    (tmp_path / "nul.csv").write_bytes(b"a\x00b,0.5\n")
    with pytest.raises(DataError, match="line 1.*NUL"):
        read_labels(tmp_path / "nul.csv")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    (root / "sub" / "ok.png").write_bytes(b"x")
    os.symlink(outside, root / "link.png")
    os.symlink(root / "sub" / "ok.png", root / "inner_link.png")
    return root, outside


@pytest.mark.parametrize("name", ["../secret.png", "sub/../../secret.png", "link.png", "ABSOLUTE"])
def test_names_outside_root_are_rejected_unless_allowed(tmp_path, tree, name):
    root, outside = tree
    name = str(outside) if name == "ABSOLUTE" else name
    csv = write(tmp_path / "l.csv", f"sub/ok.png,0.5\n{name},0.5\n")
    with pytest.raises(DataError) as info:
        FIQADataset(root, csv)
    assert "line 2" in str(info.value) and "outside the image root" in str(info.value)
    ds = FIQADataset(root, csv, allow_outside_root=True)
    assert Path(os.path.realpath(ds.image_paths()[1])) == Path(os.path.realpath(outside))


def test_inside_names_and_inner_symlinks_are_accepted(tmp_path, tree):
    root, _ = tree
    csv = write(tmp_path / "l.csv", "sub/ok.png,0.5\nsub/../inner_link.png,0.1\n")
    assert len(FIQADataset(root, csv)) == 2


def test_names_are_kept_exactly_as_written_so_a_spaced_name_is_its_own_file(tmp_path):
    """' x' is not 'x': stripping it would score another image, and kdfiqa's own CSVs of such files
    (pseudo-labels, predictions) must read back."""
    from kdfiqa.data import read_labels

    csv = tmp_path / "labels.csv"
    csv.write_text(" x,0.9\nx,0.1\ny ,0.5\n")
    assert [label.name for label in read_labels(csv)] == [" x", "x", "y "]
