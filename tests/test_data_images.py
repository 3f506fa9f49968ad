from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kdfiqa.data import FIQADataset, check_image, load_rgb, read_labels, validate_images
from kdfiqa.errors import DataError


def rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_grey_palette_cmyk_become_rgb(tmp_path):
    grey = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16), "L")
    grey.save(tmp_path / "l.png")
    out = load_rgb(tmp_path / "l.png")
    assert out.mode == "RGB" and np.array_equal(rgb(out)[..., 1], np.asarray(grey))

    pal = Image.new("P", (4, 4))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "p.png")
    px = rgb(load_rgb(tmp_path / "p.png"))
    assert tuple(px[0, 0]) == (255, 0, 0) and tuple(px[1, 1]) == (0, 0, 255)

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)
    red = rgb(load_rgb(tmp_path / "c.jpg"))[4, 4]
    assert red[0] > 240 and red[1] < 15 and red[2] < 15


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 64, 65535, 30000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = rgb(load_rgb(tmp_path / "g16.png"))[..., 0]
    expected = np.round(values / 65535 * 255)
    assert np.array_equal(out, expected)
    assert out[0, 3] == 117  # 30000/65535*255; clipping to 255 would show saturation


@pytest.mark.parametrize(("background", "expected"), [((0, 0, 0), (100, 0, 0)), ((255, 255, 255), (227, 127, 127))])
def test_alpha_is_composited_on_the_background(tmp_path, background, expected):
    Image.new("RGBA", (3, 3), (200, 0, 0, 128)).save(tmp_path / "a.png")
    px = rgb(load_rgb(tmp_path / "a.png", background=background))[1, 1]
    assert np.all(np.abs(px - np.array(expected)) <= 1)
    Image.new("LA", (3, 3), (200, 0)).save(tmp_path / "la.png")
    assert tuple(rgb(load_rgb(tmp_path / "la.png", background=background))[0, 0]) == background


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((2, 4, 3), np.uint8)
    pixels[:, :2] = 255  # white left half, 4 wide x 2 high
    img = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "o.png", exif=exif)
    out = load_rgb(tmp_path / "o.png")
    assert out.size == (2, 4)
    assert rgb(out)[0, 1, 0] == 255 and rgb(out)[3, 1, 0] == 0  # white now at the top


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    Image.new("L", (3000, 3000)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match="over the limit"):
        load_rgb(tmp_path / "big.png", max_pixels=1000 * 1000)
    # a header claiming 100k x 100k pixels: refused before PIL tries to allocate it
    png = (tmp_path / "big.png").read_bytes()
    ihdr = png.index(b"IHDR")
    forged = png[: ihdr + 4] + (100_000).to_bytes(4, "big") * 2 + png[ihdr + 12 :]
    (tmp_path / "bomb.png").write_bytes(forged)
    with pytest.raises(DataError, match="bomb"):
        load_rgb(tmp_path / "bomb.png")


def make_bad_files(root: Path) -> dict[str, str]:
    """Bad image files by name -> a word their reason must contain."""
    Image.new("RGB", (64, 64), (10, 200, 30)).save(root / "good.png")
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    noisy.save(root / "jpeg_full.jpg", quality=90)
    jpeg = (root / "jpeg_full.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    noisy.save(root / "png_full.png")
    png = (root / "png_full.png").read_bytes()
    (root / "truncated.png").write_bytes(png[: len(png) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_bytes(b"this is not an image at all")
    return {"truncated.jpg": "truncat", "truncated.png": "", "empty.png": "empty", "text.png": "recognised",
            "missing.png": "missing"}


def labelled(root: Path, names: list[str]) -> FIQADataset:
    csv = root / "labels.csv"
    csv.write_text("".join(f"{n},0.5\n" for n in names))
    return FIQADataset(root, csv)


def test_validate_reports_every_bad_file_together(tmp_path):
    bad = make_bad_files(tmp_path)
    names = ["good.png", "jpeg_full.jpg", "png_full.png", *bad]
    ds = labelled(tmp_path, names)
    with pytest.raises(DataError) as info:
        validate_images(ds)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{len(bad)} of {len(names)} images")
    assert len(lines) == 1 + len(bad)
    for name, word in bad.items():
        (line,) = [l for l in lines[1:] if l.startswith(str(tmp_path / name) + ":")]
        assert word in line
    assert len(ds) == len(names)  # nothing dropped without skip_bad


def test_skip_bad_drops_and_logs_each(tmp_path, caplog):
    bad = make_bad_files(tmp_path)
    ds = labelled(tmp_path, ["good.png", *bad, "png_full.png"])
    with caplog.at_level(logging.WARNING, logger="kdfiqa.data.images"):
        assert validate_images(ds, skip_bad=True) == len(bad)
    assert ds.names == ["good.png", "png_full.png"]
    for name in bad:
        assert any(name in r.getMessage() for r in caplog.records)
    assert validate_images(ds) == 0
    assert ds[1]["name"] == "png_full.png"  # indices follow the kept samples, no substitution


def test_all_bad_is_an_error_even_when_skipping(tmp_path):
    make_bad_files(tmp_path)
    with pytest.raises(DataError, match="all 2 images"):
        validate_images(labelled(tmp_path, ["empty.png", "text.png"]), skip_bad=True)


def test_getitem_on_a_bad_file_raises_rather_than_substituting(tmp_path):
    make_bad_files(tmp_path)
    ds = labelled(tmp_path, ["good.png", "truncated.jpg"])
    assert ds[0]["image"].shape == (3, 64, 64)
    with pytest.raises(DataError, match="truncated.jpg"):
        ds[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM"]))
def test_random_bytes_only_ever_raise_data_error(tmp_path, data, prefix):
    path = tmp_path / "random.png"
    path.write_bytes(prefix + data)
    reason = check_image(path)
    try:
        load_rgb(path)
    except DataError as exc:
        assert reason == str(exc)
    else:
        assert reason is None


def test_random_bytes_in_a_valid_png_body(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buf, format="PNG")
    good = bytearray(buf.getvalue())
    rng = np.random.default_rng(1)
    for trial in range(40):
        corrupt = bytearray(good)
        for pos in rng.integers(8, len(corrupt), size=4):
            corrupt[pos] = int(rng.integers(256))
        (tmp_path / "c.png").write_bytes(bytes(corrupt))
        reason = check_image(tmp_path / "c.png")
        assert reason is None or str(tmp_path / "c.png") in reason


cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(cells | st.floats(allow_nan=True).map(repr), min_size=0, max_size=4), max_size=6),
       header=st.sampled_from(["", "image,score\n", "img_name,MOS\n", "Image,mos,x\n"]))
def test_random_csv_rows_only_ever_raise_data_error(tmp_path, rows, header):
    import csv as csvlib

    path = tmp_path / "rows.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(header)
        csvlib.writer(f).writerows(rows)
    try:
        labels = read_labels(path)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    assert all(0.0 <= l.score <= 1.0 for l in labels)
    try:
        ds = FIQADataset(tmp_path, path)
        validate_images(ds, num_workers=1)
    except DataError:
        pass
