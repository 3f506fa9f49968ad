"""CSV files: one way of opening them, rows with line numbers, atomic score and table writers."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdfiqa.data import read_labels
from kdfiqa.data.csv_files import SCORE_HEADER, read_rows, write_scores, write_table
from kdfiqa.errors import DataError


def test_read_rows_skips_blank_rows_and_numbers_lines(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes('\ufeffa,1\n\n ,  \n"multi\nline",2\r\nc,3'.encode("utf-8"))
    assert read_rows(path) == [(1, ["a", "1"]), (5, ["multi\nline", "2"]), (6, ["c", "3"])]
    assert read_rows(path)[0].line == 1 and read_rows(path)[0].fields == ["a", "1"]


def test_read_rows_names_the_file_and_what_it_is(tmp_path):
    with pytest.raises(DataError, match=r"missing\.csv: label file not found"):
        read_rows(tmp_path / "missing.csv", what="label file")
    with pytest.raises(DataError, match="is a directory, expected a CSV file"):
        read_rows(tmp_path)
    (tmp_path / "latin.csv").write_bytes(b"caf\xe9,1\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_rows(tmp_path / "latin.csv")


def test_challenge_format_round_trips_through_read_labels(tmp_path):
    names = ["plain", "with,comma", 'with "quotes"', "ünïcode/ímage.jpg"]
    scores = [0.1, 1 / 3, np.float32(0.7), np.float64(2 / 7)]
    path = write_scores(tmp_path / "sub" / "labels.csv", names, scores)
    text = path.read_bytes().decode("utf-8")
    assert "\r" not in text and text.endswith("\n") and not text.startswith("image")
    labels = read_labels(path)
    assert [label.name for label in labels] == names
    assert [label.score for label in labels] == [float(s) for s in scores]  # repr: exact


def test_headed_scores_and_float_format(tmp_path):
    path = write_scores(tmp_path / "p.csv", ["a", "b"], [0.25, 0.123456789], header=True, float_format=".6f")
    assert path.read_text(encoding="utf-8") == f"{','.join(SCORE_HEADER)}\na,0.250000\nb,0.123457\n"
    assert [(label.name, label.score) for label in read_labels(path)] == [("a", 0.25), ("b", 0.123457)]


def test_write_scores_needs_a_score_per_name(tmp_path):
    with pytest.raises(ValueError, match="2 names but 1 scores"):
        write_scores(tmp_path / "x.csv", ["a", "b"], [0.5])
    assert list(tmp_path.iterdir()) == []


def test_table_writes_header_and_cells_of_any_type(tmp_path):
    rows = [("x.png", np.float32(0.1), 0.1, 3, "blur:0.5"), ("y.png", 1e-12, float("1.5"), np.int64(7), "")]
    path = write_table(tmp_path / "t.csv", ("image", "predicted", "true", "n", "degradations"), rows)
    with open(path, newline="", encoding="utf-8") as f:
        read = list(csv.DictReader(f))
    assert [float(r["predicted"]) for r in read] == [float(np.float32(0.1)), 1e-12]
    assert [r["true"] for r in read] == ["0.1", "1.5"] and [r["n"] for r in read] == ["3", "7"]
    assert read[1]["degradations"] == ""


def test_table_rejects_a_row_of_another_width_and_keeps_the_old_file(tmp_path):
    path = write_table(tmp_path / "t.csv", ("a", "b"), [(1, 2)])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="row 2 has 3 fields, the header 2"):
        write_table(path, ("a", "b"), [(1, 2), (1, 2, 3)])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left behind


def test_written_files_get_the_usual_permissions(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("")
    written = write_scores(tmp_path / "w.csv", ["a"], [0.5])
    assert os.stat(written).st_mode == os.stat(plain).st_mode


def test_without_overwrite_an_existing_csv_is_refused_and_kept(tmp_path):
    from kdfiqa.atomic_write import OutputExistsError

    path = write_scores(tmp_path / "s.csv", ["a"], [0.5])
    with pytest.raises(OutputExistsError, match="s.csv: already exists.*overwrite=True"):
        write_table(path, ("image", "score"), [("b", 0.25)], overwrite=False)
    assert read_rows(path)[0].fields == ["a", "0.5"]
    assert write_scores(path, ["b"], [0.25], overwrite=True) == path and read_rows(path)[0].fields == ["b", "0.25"]
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]


NAME_CHARS = st.sampled_from([*"ab,\"'\r\n -_.é日\t\\", "🙂"])


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.text(NAME_CHARS, min_size=1, max_size=8).filter(lambda n: n.strip()), min_size=1,
                      max_size=6, unique=True),
       header=st.booleans())
def test_every_written_scores_csv_reads_back_to_the_same_names_and_scores(tmp_path_factory, names, header):
    """Names with commas, quotes, CR, LF, unicode and leading dashes survive a write and a read, in the
    challenge format (header-less, through read_labels) and with a header (the predictions' file)."""
    path = tmp_path_factory.mktemp("csv") / "scores.csv"
    scores = [round(i / (len(names) + 1), 6) for i in range(1, len(names) + 1)]
    write_scores(path, names, scores, header=header)
    rows = read_rows(path)
    if header:
        assert rows[0].fields == list(SCORE_HEADER)
        rows = rows[1:]
    assert [r.fields[0] for r in rows] == names
    assert [float(r.fields[1]) for r in rows] == scores
    if not header:
        labels = read_labels(path)
        assert [(label.name, label.score) for label in labels] == list(zip(names, scores))
