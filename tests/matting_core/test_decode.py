"""decode: supported formats become upright uint8 RGB with alpha and ICC kept."""

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from matting_core import decode
from matting_core.decode import decode_for_model, decode_full, image_size
from tests.matting_core.images import BLUE, FORMATS, RED, encode, two_halves


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_decodes_to_rgb_with_the_right_shape_and_colour(fmt):
    decoded = decode_full(encode(two_halves(RED, BLUE), fmt), f"x.{fmt}")
    assert decoded.rgb.shape == (48, 64, 3) and decoded.rgb.dtype == np.uint8
    assert decoded.rgb.flags.writeable and decoded.rgb.flags.c_contiguous
    assert decoded.alpha is None
    tolerance = FORMATS[fmt] + 1
    assert np.abs(decoded.rgb[8:40, 4:24].mean((0, 1)) - RED).max() < tolerance
    assert np.abs(decoded.rgb[8:40, 40:60].mean((0, 1)) - BLUE).max() < tolerance


@pytest.mark.parametrize("fmt", FORMATS)
def test_small_image_decodes_at_full_size_for_the_model(fmt):
    data = encode(two_halves(RED, BLUE), fmt)
    assert decode_for_model(data, "x").shape == (48, 64, 3)
    assert image_size(data, "x") == (64, 48)


CORNERS = {
    "top-left": (slice(0, 6), slice(0, 6)),
    "top-right": (slice(0, 6), slice(-6, None)),
    "bottom-left": (slice(-6, None), slice(0, 6)),
    "bottom-right": (slice(-6, None), slice(-6, None)),
}
# Where the stored top-left ends up once displayed, and the displayed (width, height).
ORIENTATIONS = {1: ("top-left", (80, 40)), 3: ("bottom-right", (80, 40))}
ORIENTATIONS |= {6: ("top-right", (40, 80)), 8: ("bottom-left", (40, 80))}


def oriented(fmt: str, orientation: int) -> bytes:
    im = Image.new("RGB", (80, 40), (90, 90, 90))
    im.paste((255, 255, 255), (0, 0, 12, 12))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, fmt, exif=exif)


# HEIF is left out: libheif applies the container's irot/imir itself and, as the
# HEIF spec says, the EXIF tag is ignored (pillow-heif resets it to 1).
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "AVIF"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("decoder", [decode_full, decode_for_model], ids=lambda f: f.__name__)
def test_exif_orientation_is_applied(fmt, orientation, decoder):
    result = decoder(oriented(fmt, orientation), "x")
    rgb = result.rgb if isinstance(result, decode.Decoded) else result
    corner, (width, height) = ORIENTATIONS[orientation]
    assert rgb.shape == (height, width, 3)
    for name, where in CORNERS.items():
        assert (rgb[where].mean() > 200) == (name == corner), name


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "AVIF"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_image_size_is_the_upright_size(fmt, orientation):
    assert image_size(oriented(fmt, orientation), "x") == ORIENTATIONS[orientation][1]


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])  # Pillow writes Adobe-inverted CMYK JPEGs
def test_cmyk_decodes_to_rgb(fmt):
    rgb = decode_full(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), fmt), "x").rgb
    assert np.abs(rgb.mean((0, 1)) - (255, 0, 0)).max() < 3


SAMPLE_ORDER = {"I;16": "<u2", "I;16B": ">u2"}


def sixteen_bit(fmt: str, mode: str) -> bytes:
    samples = np.array([[0, 32768, 65535]], np.uint16)
    if mode == "RGB":  # Pillow cannot write 16-bit RGB; OpenCV can
        return cv2.imencode(".png", np.repeat(samples[..., None], 3, axis=2))[1].tobytes()
    return encode(Image.frombytes(mode, (3, 1), samples.astype(SAMPLE_ORDER[mode]).tobytes()), fmt)


@pytest.mark.parametrize(
    ("fmt", "mode"), [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I;16B"), ("PNG", "RGB")]
)
def test_sixteen_bit_samples_are_scaled_not_clipped(fmt, mode):
    assert decode_full(sixteen_bit(fmt, mode), "x").rgb[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("mode", "samples", "expected"),
    [
        ("F", [0.0, 0.5, 1.0], [0, 128, 255]),  # 0-1 floats
        ("F", [-3.0, 0.0, 3.0], [0, 128, 255]),  # any other range is stretched
        ("I", [0, 100, 200], [0, 100, 200]),  # already 8-bit
        ("I", [0, 32768, 65535], [0, 128, 255]),  # 16-bit data in 32 bits
    ],
)
def test_32_bit_samples_are_scaled_to_8_bits(mode, samples, expected):
    dtype = np.float32 if mode == "F" else np.int32
    im = Image.fromarray(np.array([samples], dtype))
    assert decode_full(encode(im, "TIFF"), "x").rgb[0, :, 1].tolist() == expected


@pytest.mark.parametrize(
    ("im", "fmt", "expected"),
    [
        (Image.new("L", (4, 4), 77), "PNG", (77, 77, 77)),
        (Image.new("1", (4, 4), 1), "PNG", (255, 255, 255)),
        (Image.new("RGB", (16, 16), RED).convert("YCbCr"), "JPEG", RED),
        (Image.new("LAB", (4, 4), (136, 208, 195)), "TIFF", (250, 3, 11)),
    ],
    ids=["L", "1", "YCbCr", "LAB"],
)
def test_other_modes_decode_to_rgb(im, fmt, expected):
    assert np.abs(decode_full(encode(im, fmt), "x").rgb.mean((0, 1)) - expected).max() < 3


# mode: (clear, opaque) values; the file's transparency setting makes the first clear.
HALVES = {
    "RGBA": ((0, 0, 0, 0), (255, 255, 255, 255)),
    "LA": ((0, 0), (255, 255)),
    "P": (0, 1),
    "L": (0, 255),
    "RGB": ((0, 0, 0), (255, 255, 255)),
}


@pytest.mark.parametrize(
    ("mode", "fmt", "params"),
    [
        ("RGBA", "PNG", {}),
        ("RGBA", "WEBP", {"lossless": True}),
        ("RGBA", "TIFF", {}),
        ("LA", "PNG", {}),
        ("P", "PNG", {"transparency": 0}),
        ("P", "GIF", {"transparency": 0}),
        ("L", "PNG", {"transparency": 0}),  # tRNS on greyscale
        ("RGB", "PNG", {"transparency": (0, 0, 0)}),  # tRNS on truecolour
    ],
)
def test_source_transparency_becomes_alpha(mode, fmt, params):
    alpha = decode_full(encode(two_halves(*HALVES[mode], mode=mode), fmt, **params), "x").alpha
    assert alpha is not None and alpha.shape == (48, 64)
    assert (alpha[:, :32] == 0).all() and (alpha[:, 32:] == 255).all()


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_decodes_its_first_frame(fmt):
    frames = [Image.new("RGB", (32, 32), colour) for colour in (RED, BLUE, (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    rgb = decode_full(buf.getvalue(), "anim").rgb
    assert np.abs(rgb.mean((0, 1)) - RED).max() < 10


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_rgb_icc_profile_is_kept_unchanged(fmt):
    data = encode(Image.new("RGB", (8, 8), RED), fmt, icc_profile=SRGB)
    assert decode_full(data, "x").icc_profile == SRGB


def test_non_rgb_icc_profile_is_not_carried_into_rgb_output():
    cmyk_profile = SRGB[:16] + b"CMYK" + SRGB[20:]
    data = encode(Image.new("CMYK", (8, 8)), "JPEG", icc_profile=cmyk_profile)
    assert decode_full(data, "x").icc_profile is None



def gradient(width: int, height: int) -> Image.Image:
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    return Image.fromarray(np.dstack([x, y, 255 - x]).astype(np.uint8))


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])
@pytest.mark.parametrize(
    ("min_side", "shape"),
    [(320, (540, 960, 3)), (100, (135, 240, 3)), (1080, (1080, 1920, 3)), (2000, (1080, 1920, 3))],
)
def test_jpeg_decodes_at_the_smallest_dct_scale_keeping_min_side(fmt, min_side, shape):
    data = encode(gradient(1920, 1080), fmt, quality=90)
    assert decode_for_model(data, "x", min_side=min_side).shape == shape


def test_reduced_jpeg_is_upright():
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(gradient(1920, 1080), "JPEG", exif=exif)
    assert decode_for_model(data, "x").shape == (960, 540, 3)


def test_reduced_jpeg_matches_the_downscaled_full_decode():
    data = encode(gradient(1920, 1080), "JPEG", quality=90)
    full = Image.fromarray(decode_full(data, "x").rgb).reduce(2)
    reduced = decode_for_model(data, "x").astype(int)
    assert np.abs(reduced - np.asarray(full, int)).mean() < 2


def test_min_side_must_be_positive():
    with pytest.raises(ValueError, match="min_side 0"):
        decode_for_model(encode(Image.new("RGB", (8, 8)), "JPEG"), "x", min_side=0)

