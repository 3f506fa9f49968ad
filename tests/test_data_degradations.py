from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from kdfiqa.data import DEGRADATIONS, RandomDegradation, degrade
from kdfiqa.data.synthetic import draw_face
from kdfiqa.errors import ConfigError

SEVERITIES = (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.fixture(scope="module")
def face():
    return draw_face(96, np.random.default_rng(7))


def grey(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float64)


def sharpness(img: Image.Image) -> float:
    """Variance of the Laplacian: falls as detail is lost."""
    return float(ndimage.laplace(grey(img)).var())


def error_vs(clean: Image.Image, img: Image.Image) -> float:
    return float(np.mean((np.asarray(clean, np.float64) - np.asarray(img, np.float64)) ** 2))


def test_zero_severity_is_identity(face):
    for kind in DEGRADATIONS:
        assert np.array_equal(np.asarray(degrade(face, kind, 0.0)), np.asarray(face))


@pytest.mark.parametrize("kind", ["blur", "downup"])
def test_detail_loss_grows_with_severity(face, kind):
    values = [sharpness(degrade(face, kind, s)) for s in SEVERITIES]
    assert all(a > b for a, b in zip(values, values[1:])), values


@pytest.mark.parametrize("kind", list(DEGRADATIONS))
def test_distortion_grows_with_severity(face, kind):
    values = [error_vs(face, degrade(face, kind, s, seed=1)) for s in SEVERITIES]
    assert values[0] == 0.0
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_noise_level_grows_with_severity(face):
    flat = Image.new("RGB", (64, 64), (128, 128, 128))
    stds = [grey(degrade(flat, "noise", s, seed=3)).std() for s in SEVERITIES]
    assert all(a < b for a, b in zip(stds, stds[1:]))
    assert abs(np.asarray(degrade(flat, "noise", 1.0, seed=3), np.float64).std() - 0.2 * 255) < 3


def test_deterministic_under_seed(face):
    for kind in DEGRADATIONS:
        a, b = degrade(face, kind, 0.6, seed=11), degrade(face, kind, 0.6, seed=11)
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(degrade(face, "noise", 0.6, seed=1)), np.asarray(degrade(face, "noise", 0.6, seed=2)))
    first, second = RandomDegradation(seed=4), RandomDegradation(seed=4)
    draws = [first(face) for _ in range(4)]
    for img, kind, s in draws:
        again, kind2, s2 = second(face)
        assert (kind, s) == (kind2, s2) and np.array_equal(np.asarray(img), np.asarray(again))
    assert len({s for _, _, s in draws}) == 4
    rd = RandomDegradation(kinds=("blur",), severity_range=(0.5, 0.5), seed=0)
    out, kind, s = rd(face)
    assert kind == "blur" and s == 0.5 and np.array_equal(np.asarray(out), np.asarray(degrade(face, "blur", 0.5)))


def test_bad_arguments(face):
    with pytest.raises(ConfigError, match="unknown"):
        degrade(face, "sepia", 0.5)
    with pytest.raises(ConfigError, match="severity"):
        degrade(face, "blur", 1.5)
    with pytest.raises(ConfigError):
        RandomDegradation(kinds=("blur", "sepia"))
