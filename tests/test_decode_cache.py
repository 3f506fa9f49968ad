"""The up-front decode check: in worker processes, and cached so that a second run over unchanged
images decodes none of them."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from kdfiqa.data import FIQADataset, validate_images
from kdfiqa.data import images as images_module
from kdfiqa.data.decode_cache import CACHE_ENV, cache_folder
from kdfiqa.errors import DataError


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def decodes(monkeypatch):
    """The paths :func:`load_rgb` is asked to decode in this process."""
    seen = []
    real = images_module.load_rgb

    def counting(path, **kwargs):
        seen.append(str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(images_module, "load_rgb", counting)
    return seen


def _data(root, n, bad=()):
    """``n`` 8x8 PNGs under ``root`` (``bad`` indices: a file that is no image) and their labels."""
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"{i:04d}.png"
        if i in bad:
            (root / name).write_bytes(b"not an image at all")
        else:
            Image.fromarray(np.full((8, 8, 3), i % 256, dtype=np.uint8)).save(root / name)
        names.append(name)
    (root / "labels.csv").write_text("".join(f"{n},0.5\n" for n in names))
    return FIQADataset(root, root / "labels.csv")


def test_a_second_check_decodes_nothing_and_a_changed_file_is_checked_again(tmp_path, cache_dir, decodes):
    dataset = _data(tmp_path / "imgs", 6)
    assert validate_images(dataset, num_workers=0) == 0
    assert len(decodes) == 6 and len(list(cache_dir.glob("*.json"))) == 1
    decodes.clear()
    again = FIQADataset(tmp_path / "imgs", tmp_path / "imgs" / "labels.csv")  # as a new run builds it
    assert validate_images(again, num_workers=0) == 0
    assert decodes == []
    touched = tmp_path / "imgs" / "0003.png"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert validate_images(dataset, num_workers=0) == 0
    assert decodes == [str(touched)]
    decodes.clear()
    touched.write_bytes(b"broken now")  # same path, new content: checked, reported, and not trusted after
    with pytest.raises(DataError, match="0003.png: not a recognised image format"):
        validate_images(dataset, num_workers=0)
    with pytest.raises(DataError, match="0003.png: not a recognised image format"):
        validate_images(dataset, num_workers=0)
    assert decodes == [str(touched)] * 2


def test_a_bad_image_is_reported_the_same_with_and_without_cache_and_workers(tmp_path, cache_dir, monkeypatch,
                                                                                 decodes):
    count = 2 * images_module.CHECKS_PER_WORKER + 3  # enough for two worker processes
    dataset = _data(tmp_path / "imgs", count, bad=(5, count - 1))
    messages = {}
    for label, workers, env in (("no cache", 0, "off"), ("fills cache", 0, str(cache_dir)),
                                ("from cache", 0, str(cache_dir)), ("workers", 2, "off"),
                                ("workers + cache", 2, str(cache_dir))):
        monkeypatch.setenv(CACHE_ENV, env)
        decodes.clear()
        with pytest.raises(DataError) as info:
            validate_images(dataset, num_workers=workers)
        messages[label] = str(info.value)
        if label in ("from cache", "workers + cache"):
            assert decodes == [str(tmp_path / "imgs" / n) for n in ("0005.png", f"{count - 1:04d}.png")]
        if label == "workers":
            assert decodes == []  # every image was decoded in the worker processes
    assert len(set(messages.values())) == 1, messages
    assert messages["no cache"].startswith(f"2 of {count} images cannot be used")


def test_a_corrupt_cache_file_is_ignored_and_rebuilt(tmp_path, cache_dir, decodes):
    dataset = _data(tmp_path / "imgs", 4)
    validate_images(dataset, num_workers=0)
    (cache_file,) = cache_dir.glob("*.json")
    for garbage in ("{not json", '{"version": 1, "passed": [1, 2]}', "[]"):
        cache_file.write_text(garbage)
        decodes.clear()
        assert validate_images(dataset, num_workers=0) == 0
        assert len(decodes) == 4  # nothing trusted from the broken file
        decodes.clear()
        assert validate_images(dataset, num_workers=0) == 0 and decodes == []  # rebuilt


def test_a_stricter_pixel_limit_checks_again_and_the_cache_can_be_turned_off(tmp_path, cache_dir, monkeypatch,
                                                                             decodes):
    dataset = _data(tmp_path / "imgs", 3)
    validate_images(dataset, num_workers=0)
    dataset.max_pixels = 8 * 8 - 1
    with pytest.raises(DataError, match="over the limit of 63"):
        validate_images(dataset, num_workers=0)
    monkeypatch.setenv(CACHE_ENV, "off")
    assert cache_folder() is None
    dataset.max_pixels = 64
    decodes.clear()
    validate_images(dataset, num_workers=0)
    validate_images(dataset, num_workers=0)
    assert len(decodes) == 6
