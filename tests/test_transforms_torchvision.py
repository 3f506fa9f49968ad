"""The crop transforms against torchvision's, bit for bit, on square and non-square images.

The ECNU-SJTU winner trains with ``Resize(352) + RandomCrop(352)`` and evaluates with
``Resize(352) + CenterCrop(352)`` (both followed by ToTensor and ImageNet Normalize); kdfiqa's
``resize_random_crop`` and ``center_crop`` must give the same tensors, and for the random crop the
same crop from the same torch seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from kdfiqa.data import build_transform
from kdfiqa.data.transforms import resized_size

SIZES = [(500, 500), (250, 300), (300, 250), (353, 1000), (1000, 353), (640, 481), (352, 352), (351, 700)]
"""(width, height): square, portrait, landscape, odd margins, an image already at the crop's short side."""

IMAGENET = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # smooth content plus noise, so that a one-pixel shift or a different filter tap shows
    y, x = np.mgrid[0:height, 0:width]
    base = 127 + 60 * np.sin(x / 7.0)[..., None] * np.cos(y / 11.0)[..., None]
    pixels = np.clip(base + rng.normal(0, 25, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _reference(*steps) -> T.Compose:
    return T.Compose([*steps, T.ToTensor(), IMAGENET])


@pytest.mark.parametrize("width,height", SIZES)
def test_resize_then_center_crop_equals_torchvision(width, height):
    img = _image(width, height, width * height)
    ours = build_transform({"mode": "center_crop", "size": 352, "resize": 352, "normalize": "imagenet"})(img)["image"]
    theirs = _reference(T.Resize(352), T.CenterCrop(352))(img)
    assert ours.shape == theirs.shape == (3, 352, 352)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("width,height", SIZES)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_resize_then_random_crop_equals_torchvision_from_the_same_seed(width, height, seed):
    img = _image(width, height, seed)
    transform = build_transform({"mode": "resize_random_crop", "size": 352, "resize": 352, "normalize": "imagenet"})
    torch.manual_seed(seed)
    ours = transform(img)["image"]
    torch.manual_seed(seed)
    theirs = _reference(T.Resize(352), T.RandomCrop(352))(img)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("width,height", [(500, 375), (375, 500), (240, 240)])
def test_fixed_size_resize_then_center_crop_equals_torchvision(width, height):
    img = _image(width, height, 3)
    spec = {"mode": "center_crop", "size": 224, "resize": [240, 250], "normalize": "imagenet"}
    ours = build_transform(spec)(img)["image"]
    theirs = _reference(T.Resize((240, 250)), T.CenterCrop(224))(img)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("width,height", [(800, 600), (601, 799)])
def test_center_crop_without_resize_equals_torchvision(width, height):
    img = _image(width, height, 5)
    ours = build_transform({"mode": "center_crop", "size": 448, "normalize": "imagenet"})(img)["image"]
    assert torch.equal(ours, _reference(T.CenterCrop(448))(img))


@pytest.mark.parametrize("width,height", [(250, 300), (1000, 353), (7, 3), (3, 7), (352, 352)])
def test_resized_size_is_torchvisions(width, height):
    resized = T.Resize(352)(Image.new("RGB", (width, height)))
    assert resized_size(width, height, 352) == resized.size


@pytest.mark.parametrize("width,height", [(150, 120), (500, 400), (224, 300), (64, 64)])
@pytest.mark.parametrize("seed", [3, 11])
def test_random_crop_equals_torchvision_from_the_same_seed(width, height, seed):
    """The baseline's and DERS' RandomCrop is an integer cut of the image: the same window, the
    same pixels (a box at a fractional offset would be a sub-pixel resample, i.e. a blur)."""
    img = _image(width, height, seed)
    crop = min(64, width, height)
    torch.manual_seed(seed)
    ours = build_transform({"mode": "random_crop", "size": crop, "normalize": "imagenet"})(img)["image"]
    torch.manual_seed(seed)
    assert torch.equal(ours, _reference(T.RandomCrop(crop))(img))


@pytest.mark.parametrize("spec", [
    {"mode": "multi_crop", "size": 48, "num_crops": 4},
    {"mode": "randcrop_or_resize", "size": 48, "crop_prob": 1.0},
])
def test_every_random_crop_is_a_window_of_the_source(spec):
    img = _image(150, 120, 2)
    source = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    torch.manual_seed(0)
    out = build_transform({**spec, "normalize": "none"})(img)["image"]
    crops = out if out.dim() == 4 else out.unsqueeze(0)
    windows = source.unfold(1, 48, 1).unfold(2, 48, 1)  # (3, rows, cols, 48, 48)
    for crop in crops:
        exact = (windows == crop[:, None, None]).flatten(3).all(-1).all(0)
        assert exact.any(), "a random crop is not a pixel-exact window of the image"


def test_crops_of_a_small_image_cut_its_upscaled_copy_on_the_integer_grid():
    """An image smaller than the crop is upscaled (aspect kept) to the crop's size, then cut at
    integer offsets: the same pixels as torchvision's Resize to that size + crop."""
    img = _image(100, 50, 4)
    upscaled = _reference(T.Resize((64, 128)))(img)
    torch.manual_seed(5)
    ours = build_transform({"mode": "random_crop", "size": 64, "normalize": "imagenet"})(img)["image"]
    windows = upscaled.unfold(2, 64, 1)  # (3, 64, cols, 64)
    assert any(torch.equal(ours, windows[:, :, c]) for c in range(windows.shape[2]))
    centre = build_transform({"mode": "center_crop", "size": 64, "normalize": "imagenet"})(img)["image"]
    assert torch.equal(centre, upscaled[:, :, 32:96])
