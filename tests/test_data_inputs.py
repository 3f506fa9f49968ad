"""Image inputs that are not one folder: image list files and WebDataset-style tar shards, named by
their key, resolved by one function for every command."""

from __future__ import annotations

import io
import logging
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from kdfiqa.cli.main import main
from kdfiqa.data import FIQADataset, UnlabeledImageFolder, load_rgb, validate_images
from kdfiqa.data import tar_shards
from kdfiqa.data.datasets import ImageSamples
from kdfiqa.data.image_sources import list_images
from kdfiqa.data.labels import read_labels
from kdfiqa.data.tar_shards import TarMember, expand_shards
from kdfiqa.errors import DataError
from tiny_fiqa import TINY


def _png(seed: int, size: int = 12) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.type = len(data), kind
    tar.addfile(info, io.BytesIO(data))


def _shards(folder, count: int = 2, per: int = 3):
    """``count`` shards of ``per`` PNG samples each (with a .cls member beside each image); the
    same images also written as files ``folder/files/<key>.png``, the reference."""
    (folder / "files" / "faces").mkdir(parents=True)
    for s in range(count):
        with tarfile.open(folder / f"data-{s:03d}.tar", "w") as tar:
            for i in range(per):
                key, data = f"faces/{s}{i:03d}", _png(10 * s + i)
                _add(tar, f"{key}.png", data)
                _add(tar, f"{key}.cls", b"1")
                (folder / "files" / f"{key}.png").write_bytes(data)
    return str(folder / f"data-{{000..{count - 1:03d}}}.tar")


def test_brace_patterns_expand_to_padded_ranges_and_choices():
    assert expand_shards("d-{000..002}.tar") == ["d-000.tar", "d-001.tar", "d-002.tar"]
    assert expand_shards("d-{8..10}.tar") == ["d-8.tar", "d-9.tar", "d-10.tar"]
    assert expand_shards("{a,b}-{0..1}.tar") == ["a-0.tar", "a-1.tar", "b-0.tar", "b-1.tar"]
    with pytest.raises(DataError, match="runs backwards"):
        expand_shards("d-{3..1}.tar")


def test_shard_samples_are_named_by_key_and_decode_as_the_same_files(tmp_path):
    images = UnlabeledImageFolder(_shards(tmp_path))
    assert images.names == [f"faces/{s}{i:03d}" for s in range(2) for i in range(3)]
    for sample in images.samples:
        assert isinstance(sample.path, TarMember)
        reference = load_rgb(tmp_path / "files" / f"{sample.name}.png")
        assert np.array_equal(np.asarray(load_rgb(sample.path)), np.asarray(reference))
    assert validate_images(images, num_workers=0, cache=False) == 0


def test_dataloader_workers_read_shards_through_their_own_descriptors(tmp_path):
    images = UnlabeledImageFolder(_shards(tmp_path, per=4))
    expected = [images[i]["image"] for i in range(len(images))]  # the parent opens the shards first
    batches = list(DataLoader(images, batch_size=3, num_workers=2, multiprocessing_context="fork"))
    names = [name for batch in batches for name in batch["name"]]
    assert names == images.names
    assert torch.equal(torch.cat([b["image"] for b in batches]), torch.stack(expected))


def test_duplicate_keys_across_shards_are_refused_in_one_line(tmp_path):
    for s in range(2):
        with tarfile.open(tmp_path / f"d-{s}.tar", "w") as tar:
            _add(tar, "same/key.jpg" if s == 0 else "same/key.png", _png(s))
    with pytest.raises(DataError) as info:
        list_images(str(tmp_path / "d-{0..1}.tar"))
    message = str(info.value)
    assert "\n" not in message and "duplicate sample key 'same/key'" in message and "d-0.tar" in message


@pytest.mark.parametrize("name", ["../escape.png", "/etc/abs.png", "a/../../b.png"])
def test_a_shard_with_an_escaping_member_name_is_refused(tmp_path, name):
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        _add(tar, "ok.png", _png(0))
        _add(tar, name, _png(1))
    with pytest.raises(DataError, match="absolute path or '..'; refusing the shard"):
        list_images(str(tmp_path / "bad.tar"))


def test_links_devices_and_huge_members_are_skipped_with_a_line(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tar_shards, "MAX_MEMBER_BYTES", 4000)
    with tarfile.open(tmp_path / "mixed.tar", "w") as tar:
        _add(tar, "good.png", _png(0))
        for name, kind in (("link.png", tarfile.SYMTYPE), ("hard.png", tarfile.LNKTYPE),
                           ("dev.png", tarfile.CHRTYPE), ("fifo.png", tarfile.FIFOTYPE)):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, "good.png"
            tar.addfile(info)
        _add(tar, "huge.png", _png(1, size=64))  # about 12 kB of noise: over the patched limit
    with caplog.at_level(logging.WARNING, logger="kdfiqa.data.tar_shards"):
        found = list_images(str(tmp_path / "mixed.tar"))
    assert [key for key, _ in found] == ["good"]
    skipped = " ".join(r.getMessage() for r in caplog.records)
    for name in ("link.png", "hard.png", "dev.png", "fifo.png"):
        assert f"skipping member {name}: a link or special file" in skipped
    assert "skipping member huge.png" in skipped and "over the limit of 4000" in skipped


def test_compressed_and_missing_shards_are_refused(tmp_path):
    with tarfile.open(tmp_path / "c.tar", "w:gz") as tar:
        _add(tar, "a.png", _png(0))
    with pytest.raises(DataError, match="not an uncompressed tar shard"):
        list_images(str(tmp_path / "c.tar"))
    with pytest.raises(DataError, match=r"d-001\.tar: no such tar shard"):
        (tmp_path / "d-000.tar").write_bytes((tmp_path / "c.tar").read_bytes())
        list_images(str(tmp_path / "d-{000..001}.tar"))


def test_a_list_file_resolves_relative_lines_skips_comments_and_names_images_as_written(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        (tmp_path / "imgs" / f"{i}.png").write_bytes(_png(i))
    elsewhere = tmp_path / "other" / "x.png"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(_png(9))
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "all.txt").write_text(f"# faces\n\n../imgs/0.png\n  ../imgs/2.png  \n{elsewhere}\n")
    images = UnlabeledImageFolder(lists / "all.txt")
    assert images.names == ["../imgs/0.png", "../imgs/2.png", str(elsewhere)]
    assert [p.resolve() for p in images.image_paths()] == [(tmp_path / "imgs" / "0.png").resolve(),
                                                          (tmp_path / "imgs" / "2.png").resolve(), elsewhere]


@pytest.mark.parametrize("content, needle", [
    ("a.png\n# c\nmissing.png\n", r"all\.txt line 3: missing\.png: no such image file"),
    ("a.png\na.png\n", "two images are named 'a.png'"),
    ("# only a comment\n\n", "the list names no image"),
])
def test_list_file_errors_name_the_line(tmp_path, content, needle):
    (tmp_path / "a.png").write_bytes(_png(0))
    (tmp_path / "all.txt").write_text(content)
    with pytest.raises(DataError, match=needle) as info:
        list_images(tmp_path / "all.txt")
    assert "\n" not in str(info.value)


def test_a_list_file_may_name_shards_and_unknown_inputs_are_refused(tmp_path):
    pattern = _shards(tmp_path)
    (tmp_path / "extra.png").write_bytes(_png(99))
    (tmp_path / "mix.txt").write_text("extra.png\ndata-{000..001}.tar\n")
    assert [name for name, _ in list_images(tmp_path / "mix.txt")] == \
        ["extra.png"] + [name for name, _ in list_images(pattern)]
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(DataError, match="not a folder, an image list file"):
        list_images(tmp_path / "notes.md")
    with pytest.raises(DataError, match="no such folder"):
        list_images(tmp_path / "absent")


def test_labels_made_from_shards_are_read_back_by_key(tmp_path):
    pattern = _shards(tmp_path)
    (tmp_path / "p.csv").write_text("faces/0001,0.25\nfaces/1002,0.75\n")
    labeled = FIQADataset(pattern, tmp_path / "p.csv")
    assert labeled.names == ["faces/0001", "faces/1002"] and labeled.scores.tolist() == [0.25, 0.75]
    assert np.array_equal(np.asarray(labeled.load(1)), np.asarray(load_rgb(tmp_path / "files/faces/1002.png")))
    (tmp_path / "q.csv").write_text("faces/9999,0.5\n")
    with pytest.raises(DataError, match=r"q\.csv line 1: field 'image': 'faces/9999' is not an image of"):
        FIQADataset(pattern, tmp_path / "q.csv")


def test_predict_paths_take_list_files_and_shards_and_score_each_image_once(tmp_path):
    pattern = _shards(tmp_path)
    (tmp_path / "l.txt").write_text("files/faces/0000.png\n")
    found = ImageSamples.from_paths([pattern, str(tmp_path / "l.txt"), str(tmp_path / "files")])
    assert len(found) == 12 and found.names[:6] == [name for name, _ in list_images(pattern)]


@pytest.mark.slow  # three teacher passes through the command line
def test_pseudo_label_scores_shards_and_list_files_as_the_same_images_in_a_folder(tmp_path, capsys):
    pattern = _shards(tmp_path)
    folder = tmp_path / "files" / "faces"
    (tmp_path / "all.txt").write_text("".join(f"files/faces/{p.name}\n" for p in sorted(folder.iterdir())))
    scores = {}
    for label, images in (("folder", folder), ("shards", pattern), ("list", tmp_path / "all.txt")):
        out = tmp_path / f"{label}.csv"
        torch.manual_seed(0)  # the same (untrained) teacher each time
        assert main(["pseudo-label", "--teacher", TINY, "--images", str(images), "--out", str(out)]) == 0
        scores[label] = {row.name: row.score for row in read_labels(out)}
    assert sorted(scores["shards"]) == [f"faces/{p.stem}" for p in sorted(folder.iterdir())]
    assert sorted(scores["list"]) == [f"files/faces/{p.name}" for p in sorted(folder.iterdir())]
    for path in sorted(folder.iterdir()):
        reference = scores["folder"][path.name]
        assert scores["shards"][f"faces/{path.stem}"] == reference == scores["list"][f"files/faces/{path.name}"]


@pytest.mark.slow  # trains a teacher, then distills
def test_distill_labels_unlabeled_shards_and_trains_on_them_by_key(tmp_path):
    from tiny_fiqa import synthetic

    images, labels = synthetic(tmp_path, 12, 0, "labeled")
    unlabeled = synthetic(tmp_path, 6, 1, "unlabeled")[0]
    with tarfile.open(tmp_path / "u-000.tar", "w") as tar:
        for path in sorted(unlabeled.iterdir()):
            tar.add(path, arcname=f"u/{path.name}")
    base = ["--model", TINY, "--root", images, "--csv", labels, "--device", "cpu", "--quiet", "--epochs", "1",
            "--batch-size", "4", "--val-fraction", "0.3"]
    assert main([str(a) for a in ["train", *base, "--out", tmp_path / "t"]]) == 0
    argv = ["distill", *base, "--teacher", tmp_path / "t" / "best.pt", "--out", tmp_path / "s"]
    assert main([str(a) for a in [*argv, "--unlabeled", tmp_path / "u-{000..000}.tar"]]) == 0
    pseudo = read_labels(tmp_path / "s" / "pseudo_labels.csv")
    assert [row.name for row in pseudo] == [f"u/{p.stem}" for p in sorted(unlabeled.iterdir())]
    assert (tmp_path / "s" / "best.pt").is_file()
    trained_on = FIQADataset(str(tmp_path / "u-{000..000}.tar"), tmp_path / "s" / "pseudo_labels.csv", score_range=None)
    assert all(isinstance(s.path, TarMember) for s in trained_on.samples)


@pytest.mark.parametrize("given, needle", [
    ("absent", "--unlabeled {tmp}/absent: no such folder"),
    ("absent.txt", "--unlabeled {tmp}/absent.txt: no such image list file"),
    ("notes.md", "--unlabeled {tmp}/notes.md: no such folder (give a folder, an image list file"),
])
def test_the_command_line_refuses_an_unlabeled_input_that_is_not_there_in_one_line(tmp_path, capsys, given,
                                                                                     needle):
    (tmp_path / "notes.md").write_text("x")
    (tmp_path / "l.csv").write_text("a.png,0.5\n")
    argv = ["distill", "--model", TINY, "--root", tmp_path, "--csv", tmp_path / "l.csv", "--teacher", TINY,
            "--unlabeled", tmp_path / given, "--out", tmp_path / "run"]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle.format(tmp=tmp_path) in err
