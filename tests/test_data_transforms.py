from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kdfiqa.data import PRESETS, build_transform
from kdfiqa.errors import ConfigError

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def smooth_image(width: int, height: int) -> Image.Image:
    """Red grows left->right, green top->bottom, blue constant: every position is identifiable."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 90)], -1).round().astype(np.uint8), "RGB")


def unnormalise(t: torch.Tensor) -> torch.Tensor:
    return t * IMAGENET_STD + IMAGENET_MEAN


def test_teacher_and_student_views_show_the_same_crop_and_flip():
    torch.manual_seed(0)
    img = smooth_image(300, 200)
    transform = build_transform({"mode": "random_crop", "size": 32, "crop": 96, "teacher_size": 64, "flip": True})
    flips = 0
    for _ in range(12):
        views = transform(img)
        student, teacher = unnormalise(views["image"]), unnormalise(views["teacher_image"])
        assert student.shape == (3, 32, 32) and teacher.shape == (3, 64, 64)
        down = F.interpolate(teacher[None], size=(32, 32), mode="area")[0]
        assert (down - student).abs().mean() < 0.01
        flips += bool(student[0, :, 0].mean() > student[0, :, -1].mean())  # red decreasing = flipped
        assert student[0].max() - student[0].min() < 96 / 300 + 0.02  # a 96-px-wide piece of the ramp
    assert 0 < flips < 12


def test_center_crop_matches_resize_then_crop_reference():
    img = smooth_image(400, 300)
    out = unnormalise(build_transform({"mode": "center_crop", "size": 224, "resize": [240, 240]})(img)["image"])
    ref = img.resize((240, 240), Image.Resampling.BILINEAR).crop((8, 8, 232, 232))
    ref_t = torch.from_numpy(np.asarray(ref, np.float32) / 255).permute(2, 0, 1)
    assert (out - ref_t).abs().max() < 2.5 / 255


def test_conquerit_preset_normalises_to_symmetric_range():
    img = Image.fromarray(np.array([[[0, 255, 128]]], np.uint8).repeat(300, 0).repeat(260, 1))
    out = build_transform("conquerit_test")(img)["image"]
    assert out.shape == (3, 224, 224)
    assert torch.allclose(out[:, 100, 100], torch.tensor([-1.0, 1.0, 128 / 255 * 2 - 1]), atol=1e-6)


def test_small_images_are_upscaled_to_fit_the_crop():
    img = smooth_image(50, 30)
    out = unnormalise(build_transform({"mode": "random_crop", "size": 64, "normalize": "imagenet"})(img)["image"])
    assert out.shape == (3, 64, 64)
    # short side (30) becomes 64: the crop covers the full height, so green spans the whole ramp
    assert out[1, 0].mean() < 0.05 and out[1, -1].mean() > 0.95


def test_randcrop_or_resize_does_both():
    torch.manual_seed(1)
    img = smooth_image(120, 120)
    transform = build_transform({"mode": "randcrop_or_resize", "size": 16, "crop": 40, "normalize": "none"})
    full_ramp = [bool(transform(img)["image"][0].max() - transform(img)["image"][0].min() > 0.8) for _ in range(30)]
    assert 0 < sum(full_ramp) < 30


def test_native_and_multi_crop():
    img = smooth_image(77, 53)
    native = build_transform("native_test")(img)["image"]
    assert native.shape == (3, 53, 77)
    ref = (torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1) - IMAGENET_MEAN) / IMAGENET_STD
    assert torch.allclose(native, ref, atol=1e-6)
    torch.manual_seed(0)
    crops = build_transform({"preset": "baseline_test", "size": 24, "num_crops": 5, "teacher_size": 48})(img)
    assert crops["image"].shape == (5, 3, 24, 24) and crops["teacher_image"].shape == (5, 3, 48, 48)
    assert not torch.equal(crops["image"][0], crops["image"][1])


def test_resize_stretches_to_rectangular_size():
    out = build_transform("bit_ssvgg_test")(smooth_image(500, 500))["image"]
    assert out.shape == (3, 224, 336)


def test_every_preset_builds():
    img = smooth_image(80, 64)
    for name in PRESETS:
        spec = {"preset": name}
        if name not in ("native_test", "2077agent_student_train"):
            spec["size"] = 16
        assert build_transform(spec)(img)["image"].shape[-3] == 3


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ({"mode": "zoom", "size": 4}, "'mode'"),
        ({"mode": "resize"}, "'size'"),
        ({"mode": "resize", "size": -3}, "'size'"),
        ({"mode": "resize", "size": 4, "colour": 1}, "'colour'"),
        ({"mode": "resize", "size": 4, "normalize": "zscore"}, "normalize"),
        ("nonexistent", "preset"),
        ({"mode": "randcrop_or_resize", "size": 4, "crop_prob": 1.5}, "crop_prob"),
        ({"mode": "multi_crop", "size": 4, "num_crops": 0}, "num_crops"),
        ({"mode": "center_crop", "size": 4, "resize": "big"}, "'resize'"),
    ],
)
def test_bad_specs_raise_config_error(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        build_transform(spec)


def test_center_crop_boxes_never_leave_the_image_whatever_the_size():
    """Rounding put a box edge about 1e-14 outside some images; rendering clamps every box."""
    from PIL import Image

    for spec in ({"mode": "center_crop", "size": 224, "resize": 224},
                 {"mode": "center_crop", "size": 224, "resize": [224, 224]},
                 {"mode": "center_crop", "size": [224, 192], "resize": 240},
                 {"mode": "random_crop", "size": 224}):
        views = build_transform(spec)
        for width, height in ((500, 500), (250, 300), (333, 517), (224, 225), (1023, 767), (97, 131)):
            out = views(Image.new("RGB", (width, height), (120, 30, 200)))["image"]
            assert out.shape[-2:] == tuple(views.views["image"]), (spec, width, height)


def test_a_box_a_rounding_error_outside_the_image_renders():
    from PIL import Image

    views = build_transform({"mode": "center_crop", "size": 224, "resize": 224})
    img = Image.new("RGB", (500, 500), (10, 200, 30))
    out = views.render(img, [(-2.8e-14, 0.0, 500.00000000000006, 500.0)], False)["image"]
    assert out.shape == (3, 224, 224)


def test_resize_random_crop_places_the_crop_on_the_short_side_resized_grid():
    """Resize(352) + RandomCrop(352) on a 704x1056 image: the box is 704 source pixels square (the
    scale is 2), its left edge on the 2-pixel grid of the resized image, inside the image."""
    from PIL import Image

    views = build_transform({"mode": "resize_random_crop", "size": 352, "resize": 352})
    img = Image.new("RGB", (1056, 704), (1, 2, 3))
    torch.manual_seed(0)
    for _ in range(20):
        (box,), _ = views.draw(img)
        assert box[3] - box[1] == pytest.approx(704) and box[2] - box[0] == pytest.approx(704)
        assert box[1] == 0 and 0 <= box[0] <= 1056 - 704 and box[0] / 2 == int(box[0] / 2)
    assert views(img)["image"].shape == (3, 352, 352)
    with pytest.raises(ConfigError, match="resize"):
        build_transform({"mode": "resize_random_crop", "size": 352, "resize": 300})
