import tracemalloc

import cv2
import numpy as np
import pytest

from matting_core.options import resolve_options
from matting_core.postprocess import (
    _guided_coefficients,
    default_refine_radius,
    despill,
    erode,
    feather,
    guided_filter,
    postprocess,
    refine,
    threshold,
    upsample,
)

SIZE = 64
RADIUS = 20


def disc(size: int = SIZE, radius: float = RADIUS, soft: float = 0.0, shift: int = 0):
    """float32 alpha: a disc, hard (soft=0, anti-aliased over one pixel) or with a linear ramp
    `soft` px wide; `shift` moves it right."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    dist = np.hypot(yy - size / 2, xx - size / 2 - shift)
    return np.clip((radius - dist) / max(soft, 1.0) + 0.5, 0, 1).astype(np.float32)


def paint(alpha: np.ndarray, fg, bg) -> np.ndarray:
    """uint8 image I = a*F + (1-a)*B: what a camera sees of F in front of B (colours or
    HxWx3 arrays)."""
    a = alpha[..., None]
    img = a * np.float32(fg) + (1 - a) * np.float32(bg)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def radius_of(alpha: np.ndarray) -> float:
    return float(np.sqrt(alpha.sum() / np.pi))


@pytest.mark.parametrize("size", [(64, 64), (200, 120), (33, 17)])
def test_upsample_returns_float32_of_requested_width_and_height(size):
    out = upsample(disc(32, 10), size)
    assert out.shape == (size[1], size[0])
    assert out.dtype == np.float32


def test_upsample_clips_to_unit_range():
    alpha = np.array([[-0.5, 1.5], [0.2, 0.8]], np.float32)
    out = upsample(alpha, (8, 8))
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("level", [1, 10, 128, 255])
def test_threshold_zeroes_alpha_below_level(level):
    alpha = (np.arange(256, dtype=np.float32) / 255).reshape(16, 16)
    out = threshold(alpha, level)
    below = np.round(alpha * 255) < level
    assert np.all(out[below] == 0)
    assert np.array_equal(out[~below], alpha[~below])


def test_threshold_level_zero_leaves_alpha_unchanged():
    alpha = disc(soft=6)
    assert np.array_equal(threshold(alpha, 0), alpha)


@pytest.mark.parametrize("kernel_px", [1, 2, 4])
def test_erode_moves_edge_inward_by_kernel_px(kernel_px):
    alpha = disc()
    eroded = erode(alpha, kernel_px)
    assert radius_of(eroded) == pytest.approx(RADIUS - kernel_px, abs=0.5)


def test_erode_zero_leaves_alpha_unchanged():
    alpha = disc(soft=4)
    assert np.array_equal(erode(alpha, 0), alpha)


def band_width(alpha: np.ndarray) -> int:
    """Pixels along the centre row, right of centre, whose 8-bit alpha is neither 0 nor 255."""
    row = np.round(alpha[SIZE // 2, SIZE // 2 :] * 255)
    return int(((row > 0) & (row < 255)).sum())


@pytest.mark.parametrize("radius_px", [2, 4, 8])
def test_feather_widens_edge_band_to_about_twice_its_radius(radius_px):
    alpha = disc()
    soft = feather(alpha, radius_px)
    assert band_width(alpha) <= 1
    assert radius_px <= band_width(soft) <= 2 * radius_px + 1


@pytest.mark.parametrize("radius_px", [2, 4, 8])
def test_feather_keeps_centre_opaque_and_far_background_clear(radius_px):
    soft = feather(disc(), radius_px)
    assert soft[SIZE // 2, SIZE // 2] == pytest.approx(1.0, abs=1e-5)
    assert soft[0, 0] == 0.0
    assert radius_of(soft) == pytest.approx(RADIUS, abs=0.5)  # softens, does not shrink


def test_feather_zero_leaves_alpha_unchanged():
    alpha = disc()
    assert np.array_equal(feather(alpha, 0), alpha)


# Orange on blue differ in brightness; red on green (luma 76 vs 76) only in colour.
@pytest.mark.parametrize(
    ("fg", "bg"),
    [((230, 140, 40), (30, 60, 200)), ((255, 0, 0), (0, 130, 0))],
    ids=["luminance-edge", "equal-luminance-colour-edge"],
)
@pytest.mark.parametrize("radius", [2, 4, 8])
def test_refine_moves_blurry_offset_alpha_edge_onto_the_image_edge(fg, bg, radius):
    truth = disc()
    image = paint(truth, fg, bg)
    guess = cv2.GaussianBlur(disc(shift=2), (0, 0), 2.5)  # an upsampled, misplaced edge
    refined = refine(guess, image, radius=radius)

    def misplaced(alpha):  # pixels on the wrong side of the edge
        return int(((alpha > 0.5) != (truth > 0.5)).sum())

    assert misplaced(refined) < 0.5 * misplaced(guess)
    assert np.abs(refined - truth).mean() <= np.abs(guess - truth).mean()


def test_refine_returns_float32_alpha_in_unit_range():
    image = paint(disc(), (250, 250, 250), (0, 0, 0))
    out = refine(disc(soft=8), image)
    assert out.dtype == np.float32 and out.shape == (SIZE, SIZE)
    assert out.min() >= 0.0 and out.max() <= 1.0


def striped_scene(size: int = 256):
    """A magenta disc on 6-px green and orange stripes, its true alpha, and a model-like guess:
    blurred and 3 px off."""
    truth = disc(size, 60)
    stripes = (np.arange(size) // 6) % 2
    backdrop = np.where(stripes[None, :, None] == 0, (40, 160, 60), (200, 120, 40)) * np.ones((size, 1, 1))
    guess = cv2.GaussianBlur(disc(size, 60, shift=3), (0, 0), 3)
    return paint(truth, (230, 60, 200), backdrop), truth, guess


def distance_from_unsure(alpha: np.ndarray) -> np.ndarray:
    unsure = ((alpha > 0.02) & (alpha < 0.98)).astype(np.uint8)
    return cv2.distanceTransform(1 - unsure, cv2.DIST_L2, 5)


@pytest.mark.parametrize("radius", [8, 12])
def test_refine_leaves_alpha_alone_where_the_model_was_sure(radius):
    image, _, guess = striped_scene()
    far = distance_from_unsure(guess) > 1.5 * radius
    assert np.abs(guided_filter(guess, image, radius) - guess)[far].max() > 0.01  # stripes leak in
    assert np.array_equal(refine(guess, image, radius=radius)[far], guess[far])


@pytest.mark.parametrize("radius", [8, 12])
def test_refine_is_the_guided_filter_where_the_model_was_unsure(radius):
    image, truth, guess = striped_scene()
    unsure = distance_from_unsure(guess) == 0
    refined = refine(guess, image, radius=radius)
    assert np.allclose(refined[unsure], guided_filter(guess, image, radius)[unsure], atol=1e-6)
    assert np.abs(refined - truth).sum() < 0.75 * np.abs(guess - truth).sum()


def all_planes_at_once(alpha: np.ndarray, rgb: np.ndarray, radius: int, eps: float = 1e-4) -> np.ndarray:
    """The guided filter as it was written before it upsampled one plane at a time: all four
    coefficient planes and all three colour channels at full size at once."""
    h, w = alpha.shape
    s = max(1, radius // 2)
    small = (max(1, round(w / s)), max(1, round(h / s)))
    guide = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    p = cv2.resize(alpha, small, interpolation=cv2.INTER_AREA)
    coef = _guided_coefficients(guide, p, max(1, round(radius / s)), eps)
    coef[..., :3] *= np.float32(1 / 255)
    a0, a1, a2, q = (cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in cv2.split(coef))
    for a, channel in zip((a0, a1, a2), cv2.split(rgb), strict=True):
        cv2.add(q, cv2.multiply(a, channel, dst=a, dtype=cv2.CV_32F), dst=q)
    return np.clip(q, 0.0, 1.0, out=q)


def noisy_photo(h: int, w: int):
    """A random uint8 photo and a smooth alpha with every level from 0 to 1 in it."""
    rng = np.random.default_rng(7)
    rgb = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)
    alpha = cv2.resize(rng.random((max(2, h // 12), max(2, w // 12)), dtype=np.float32), (w, h))
    return rgb, alpha


@pytest.mark.parametrize(("h", "w", "radius"), [(256, 256, 8), (333, 517, 5), (1080, 1920, 24), (61, 47, 2)])
def test_guided_filter_gives_the_same_bits_as_upsampling_every_plane_at_once(h, w, radius):
    rgb, alpha = noisy_photo(h, w)
    assert np.array_equal(guided_filter(alpha, rgb, radius), all_planes_at_once(alpha, rgb, radius))


def test_refine_holds_at_most_three_full_size_float_planes_at_once():
    # A prefork cpu worker child must stay under 150 MB (bench/worker_memory.py); at 1920x1080 a
    # float plane is 8 MB. Upsampling all four coefficient planes with the band made first held
    # ~5.8 planes beyond the input; one plane at a time, the band after the filter, ~2.3.
    rgb, alpha = noisy_photo(1080, 1920)
    plane = alpha.nbytes
    tracemalloc.start()
    try:
        refined = refine(alpha, rgb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refined.shape == alpha.shape
    assert peak < 3 * plane, f"refine held {peak / plane:.1f} full-size planes at its peak"


@pytest.mark.parametrize(
    ("shape", "radius"), [((64, 64), 2), ((1080, 1920), 24), ((4000, 3000), 50)]
)
def test_default_refine_radius_grows_with_image_size(shape, radius):
    assert default_refine_radius(shape) == radius


def green_excess_on_white(rgb: np.ndarray, alpha: np.ndarray) -> float:
    """Mean green above the true composite of a pure-red subject onto white, over the edge."""
    a = alpha[..., None]
    shown = a * rgb.astype(np.float32) + (1 - a) * 255
    expected = (1 - alpha) * 255
    edge = (alpha > 0) & (alpha < 1)
    return float((shown[..., 1] - expected)[edge].mean())


def test_despill_removes_green_fringe_from_red_subject_on_green_screen():
    alpha = disc(soft=6)
    image = paint(alpha, (255, 0, 0), (0, 255, 0))
    spilled = green_excess_on_white(image, alpha)
    cleaned = green_excess_on_white(despill(image, alpha), alpha)
    assert spilled > 20
    assert abs(cleaned) < 0.05 * spilled


def test_despill_leaves_opaque_and_transparent_pixels_unchanged():
    alpha = disc(soft=6)
    image = paint(alpha, (255, 0, 0), (0, 255, 0))
    out = despill(image, alpha)
    solid = (alpha == 0) | (alpha == 1)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out[solid], image[solid])


def test_despill_follows_a_background_that_changes_across_the_image():
    # Two red discs, one on green and one on blue, the seam 28 px from either.
    alpha = np.maximum(disc(192, 20, soft=6, shift=-48), disc(192, 20, soft=6, shift=48))
    backdrop = np.zeros((192, 192, 3), np.uint8)
    backdrop[:, :96] = (0, 255, 0)
    backdrop[:, 96:] = (0, 0, 255)
    out = despill(paint(alpha, (255, 0, 0), backdrop), alpha)
    a = alpha[..., None]
    on_white = a * out + (1 - a) * 255
    expected = a * np.float32((255, 0, 0)) + (1 - a) * 255
    assert np.abs(on_white - expected).max() < 6
    # Below a=0.25 the 8-bit rounding of I is amplified by 1/a; there F barely shows anyway.
    visible = (alpha >= 0.25) & (alpha < 1)
    assert np.abs(out[visible].astype(int) - (255, 0, 0)).max() <= 8


def test_postprocess_with_raw_options_equals_plain_upsample():
    small = disc(32, 10, soft=3)
    image = paint(disc(), (200, 50, 50), (20, 20, 20))
    out = postprocess(small, image, resolve_options(raw=True))
    assert np.array_equal(out, upsample(small, (SIZE, SIZE)))


@pytest.mark.parametrize("preset", [None, "id-photo", "ecommerce", "avatar"])
def test_postprocess_returns_full_size_alpha_for_every_preset(preset):
    image = paint(disc(), (200, 50, 50), (20, 20, 20))
    out = postprocess(disc(32, 10, soft=3), image, resolve_options(preset))
    assert out.shape == (SIZE, SIZE) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out[SIZE // 2, SIZE // 2] > 0.99 and out[0, 0] == 0.0
