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
