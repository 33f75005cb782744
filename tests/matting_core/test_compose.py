import numpy as np
import pytest

from matting_core.compose import combine_alpha, compose, parse_color

FG = (200, 100, 0)
# Alphas whose blends are exact in binary, so expected values can be written down.
ALPHAS = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)


def flat(colour, shape=ALPHAS.shape) -> np.ndarray:
    return np.full((*shape, 3), colour, np.uint8)


@pytest.mark.parametrize(
    ("text", "rgba"),
    [
        ("#ff8000", (255, 128, 0, 255)),
        ("#FF8000", (255, 128, 0, 255)),
        ("#ff800080", (255, 128, 0, 128)),
        ("#f80", (255, 136, 0, 255)),
        ("ff8000", (255, 128, 0, 255)),
        ("ff800080", (255, 128, 0, 128)),
        ("f80", (255, 136, 0, 255)),
        ("white", (255, 255, 255, 255)),
        ("RebeccaPurple", (102, 51, 153, 255)),
        (" black ", (0, 0, 0, 255)),
    ],
)
def test_parse_color_accepts_hex_with_or_without_hash_and_css_names(text, rgba):
    assert parse_color(text) == rgba


@pytest.mark.parametrize("text", ["blurple", "", "#12", "#gggggg", "ff80000", "#ff80008000"])
def test_parse_color_rejects_bad_input_naming_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r"is not a colour; use #rrggbb, #rrggbbaa or a CSS name"):
        parse_color(text)


def test_parse_color_error_quotes_the_bad_value():
    with pytest.raises(ValueError, match="bg_color 'blurple'"):
        parse_color("blurple")


def test_compose_without_bg_returns_rgba_with_rounded_alpha():
    alpha = np.array([[0.0, 0.1, 0.5, 0.998, 1.0]], np.float32)
    out = compose(flat(FG, alpha.shape), alpha, None)
    assert out.shape == (1, 5, 4) and out.dtype == np.uint8
    assert out[..., 3].tolist() == [[0, 26, 128, 254, 255]]


@pytest.mark.parametrize("alpha_value", [0.0, 0.001])
def test_compose_without_bg_zeroes_colour_where_alpha_rounds_to_zero(alpha_value):
    alpha = np.full((2, 2), alpha_value, np.float32)
    out = compose(flat(FG, alpha.shape), alpha, None)
    assert np.all(out == 0)


def test_compose_without_bg_keeps_colour_where_anything_shows():
    out = compose(flat(FG), ALPHAS, None)
    assert np.all(out[0, 1:, :3] == FG)


def test_compose_on_opaque_colour_returns_the_rounded_rgb_blend():
    out = compose(flat(FG), ALPHAS, (0, 0, 255, 255))
    assert out.shape == (1, 4, 3) and out.dtype == np.uint8
    # a*F + (1-a)*bg, rounded (an exact .5 may go either way): blue at a=0.25 is 191.25 -> 191,
    # at a=0.5 127.5; truncation would give 191 and 127 but also darken every other blend.
    assert out[0, [0, 1, 3]].tolist() == [[0, 0, 255], [50, 25, 191], [200, 100, 0]]
    assert out[0, 2].tolist() in ([100, 50, 127], [100, 50, 128])


@pytest.mark.parametrize("bg", [None, (0, 0, 255, 128), (10, 20, 30, 0), (0, 0, 0, 254)])
def test_compose_returns_rgba_unless_bg_is_opaque(bg):
    assert compose(flat(FG), ALPHAS, bg).shape == (1, 4, 4)


def test_compose_on_translucent_colour_lays_cutout_over_it():
    bg = (0, 0, 255, 128)
    out = compose(flat(FG), ALPHAS, bg).astype(float)
    a, bg_a = ALPHAS[0], 128 / 255
    out_a = a + (1 - a) * bg_a
    colour = (a[:, None] * FG + ((1 - a) * bg_a)[:, None] * np.array(bg[:3])) / out_a[:, None]
    assert np.abs(out[0, :, 3] - out_a * 255).max() <= 0.5
    assert np.abs(out[0, :, :3] - colour).max() <= 0.5
    assert out[0, 0].tolist() == [0, 0, 255, 128]  # nothing of the cut-out: just the colour
    assert out[0, 3].tolist() == [*FG, 255]  # opaque cut-out: just the foreground


def test_compose_on_fully_transparent_colour_equals_plain_cutout():
    assert np.array_equal(compose(flat(FG), ALPHAS, (9, 9, 9, 0)), compose(flat(FG), ALPHAS, None))


def test_combine_alpha_without_source_alpha_keeps_prediction():
    assert combine_alpha(ALPHAS, None) is ALPHAS


@pytest.mark.parametrize(("source", "factor"), [(0, 0.0), (255, 1.0), (51, 0.2)])
def test_combine_alpha_multiplies_prediction_by_source_transparency(source, factor):
    out = combine_alpha(ALPHAS, np.full(ALPHAS.shape, source, np.uint8))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ALPHAS * factor, atol=1e-6)


def test_combine_alpha_rejects_source_alpha_of_another_size():
    with pytest.raises(ValueError, match="upsample the prediction"):
        combine_alpha(ALPHAS, np.zeros((2, 2), np.uint8))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1)])
@pytest.mark.parametrize("bg", [None, (255, 255, 255, 255), (10, 20, 30, 128)])
def test_one_pixel_and_one_line_images_compose_like_any_other(shape, bg):
    # A 1x1 array is what OpenCV's compare takes for a scalar: a one-pixel upload once failed here.
    rgb = np.full((*shape, 3), 200, np.uint8)
    alpha = np.linspace(0, 1, shape[0] * shape[1], dtype=np.float32).reshape(shape)
    out = compose(rgb, alpha, bg)
    assert out.shape == (*shape, 3 if bg == (255, 255, 255, 255) else 4)
    if bg is None:
        assert out.reshape(-1, 4)[0].tolist() == [0, 0, 0, 0]  # alpha 0: colour zeroed too
        if alpha.size > 1:
            assert out.reshape(-1, 4)[-1].tolist() == [200, 200, 200, 255]
