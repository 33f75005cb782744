import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageOps

from matting_core.encode import encode, encode_mask
from tests.conftest import DATA

H, W = 24, 40
PIL_FORMAT = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}


@pytest.fixture(scope="module")
def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gradient_rgb() -> np.ndarray:
    """Smooth colours, so JPEG's error stays small and comparable."""
    yy, xx = np.mgrid[:H, :W]
    return np.dstack([xx * 6, yy * 10, 255 - xx * 3]).astype(np.uint8)


def cutout_rgba() -> np.ndarray:
    """A compose-style cut-out: alpha from 0 to 255, colour zeroed where alpha is 0."""
    alpha = np.clip(np.mgrid[:H, :W][1] * 8 - 40, 0, 255).astype(np.uint8)
    out = np.dstack([gradient_rgb(), alpha])
    out[alpha == 0, :3] = 0
    return out


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("pixels", "fmt", "mode"),
    [
        (gradient_rgb(), "png", "RGB"),
        (cutout_rgba(), "png", "RGBA"),
        (gradient_rgb(), "webp", "RGB"),
        (cutout_rgba(), "webp", "RGBA"),
    ],
)
def test_lossless_formats_round_trip_pixels_exactly(pixels, fmt, mode):
    image = decode(encode(pixels, fmt))
    assert image.format == PIL_FORMAT[fmt] and image.mode == mode
    assert np.array_equal(np.asarray(image), pixels)


@pytest.mark.parametrize("quality", [None, 75])
def test_jpg_round_trip_is_close(quality):
    pixels = gradient_rgb()
    image = decode(encode(pixels, "jpg", quality=quality))
    assert image.format == "JPEG" and image.mode == "RGB"
    assert np.abs(np.asarray(image).astype(int) - pixels).mean() < 3


def test_jpg_quality_defaults_to_92():
    pixels = gradient_rgb()
    assert encode(pixels, "jpg") == encode(pixels, "jpg", quality=92)


def test_webp_with_quality_is_lossy_and_keeps_alpha():
    pixels = cutout_rgba()
    image = decode(encode(pixels, "webp", quality=80))
    assert image.mode == "RGBA"
    decoded = np.asarray(image).astype(int)
    assert np.array_equal(decoded[..., 3], pixels[..., 3])  # WebP's alpha stays lossless
    shown = pixels[..., 3] == 255
    assert np.abs(decoded[shown, :3] - pixels[shown, :3]).mean() < 4


@pytest.mark.parametrize(
    ("pixels", "fmt", "quality"),
    [
        (cutout_rgba(), "png", None),
        (gradient_rgb(), "jpg", None),
        (cutout_rgba(), "webp", None),
        (cutout_rgba(), "webp", 80),
    ],
    ids=["png", "jpg", "webp-lossless", "webp-lossy"],
)
def test_icc_profile_is_embedded(pixels, fmt, quality, srgb_icc):
    data = encode(pixels, fmt, quality=quality, icc_profile=srgb_icc)
    assert decode(data).info.get("icc_profile") == srgb_icc


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_no_icc_profile_is_written_when_none_given(fmt):
    assert not decode(encode(gradient_rgb(), fmt)).info.get("icc_profile")


def test_rgba_to_jpg_raises_asking_for_a_background():
    with pytest.raises(ValueError, match="compose onto a bg_color first"):
        encode(cutout_rgba(), "jpg")


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.float32)],
)
def test_encode_rejects_pixels_that_are_not_uint8_rgb_or_rgba(pixels):
    with pytest.raises(ValueError, match="expected uint8 HxWx3"):
        encode(pixels, "png")


def test_encode_rejects_unknown_format():
    with pytest.raises(ValueError, match="not one of png, jpg, webp"):
        encode(gradient_rgb(), "gif")


def test_encode_mask_writes_greyscale_png_of_rounded_alpha():
    alpha = np.array([[0.0, 0.1, 0.5, 1.0]], np.float32)
    image = decode(encode_mask(alpha))
    assert image.format == "PNG" and image.mode == "L"
    assert np.asarray(image).tolist() == [[0, 26, 128, 255]]


def photo_cutout() -> np.ndarray:
    """A real cut-out at 1080p: a test photo with its golden alpha, colour zeroed where alpha is 0."""
    rgb = ImageOps.fit(Image.open(DATA / "astronaut.jpg").convert("RGB"), (1920, 1080), Image.BICUBIC)
    alpha = ImageOps.fit(Image.open(DATA / "golden" / "astronaut.png"), (1920, 1080), Image.BICUBIC)
    out = np.dstack([np.asarray(rgb), np.asarray(alpha)])
    out[out[..., 3] == 0, :3] = 0
    return out


@pytest.mark.parametrize("channels", [3, 4])
def test_png_is_read_back_exactly_by_libpng_too(channels):
    pixels = np.ascontiguousarray(photo_cutout()[..., :channels])
    back = cv2.imdecode(np.frombuffer(encode(pixels, "png"), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA))


def test_png_of_a_photo_cutout_is_lossless_and_no_bigger_than_libpngs_paeth_plus_30_percent(srgb_icc):
    pixels = photo_cutout()
    data = encode(pixels, "png", icc_profile=srgb_icc)
    image = decode(data)
    assert np.array_equal(np.asarray(image), pixels) and image.info["icc_profile"] == srgb_icc
    # The writer before ISA-L: libpng at level 1, Z_RLE, a fixed Paeth filter.
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
              cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]
    libpng = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA), params)[1]
    assert len(data) - len(srgb_icc) <= 1.3 * libpng.size


def test_png_of_a_single_row_and_a_single_column_round_trips():
    for shape in [(1, 7, 4), (7, 1, 3)]:
        pixels = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
        assert np.array_equal(np.asarray(decode(encode(pixels, "png"))), pixels)


def test_mask_png_round_trips_a_full_size_alpha():
    alpha = np.asarray(Image.open(DATA / "golden" / "coffee.png"), np.float32) / 255
    assert np.array_equal(np.asarray(decode(encode_mask(alpha))), np.round(alpha * 255).astype(np.uint8))
