"""decode: supported formats become upright uint8 RGB; bad input raises only domain errors."""

import io
import struct
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, features

from matting_core import decode
from matting_core.decode import decode_for_model, decode_full, image_size
from matting_core.errors import CutoutError, ImageTooLargeError, UnsupportedImageError

DECODERS = [decode_full, decode_for_model, image_size]
RED, BLUE = (200, 30, 60), (20, 40, 220)
# format: colour tolerance on a flat patch (lossy formats drift a little)
FORMATS = {"JPEG": 8, "MPO": 8, "PNG": 0, "WEBP": 8, "BMP": 0, "TIFF": 0, "GIF": 2}
FORMATS |= {"HEIF": 10, "AVIF": 10}


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    if fmt == "HEIF":
        pytest.importorskip("pillow_heif").register_heif_opener()
    if fmt == "AVIF" and not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    if fmt == "MPO":  # a camera's multi-picture JPEG; one frame would be written as plain JPEG
        params |= {"save_all": True, "append_images": [im]}
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def two_halves(left, right, size=(64, 48), mode="RGB") -> Image.Image:
    im = Image.new(mode, size, right)
    im.paste(left, (0, 0, size[0] // 2, size[1]))
    return im


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A 1-bit greyscale PNG; without idat, a header that declares the size and nothing else."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunks = [(b"IHDR", ihdr)] + ([(b"IDAT", idat)] if idat else []) + [(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(png_chunk(kind, body) for kind, body in chunks)


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    # A valid 20000x20000 black image: 400 MP of zero rows deflate to ~50 kB.
    return png(20000, 20000, zlib.compress(bytes(20000 * (1 + 20000 // 8))))


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


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda f: f.__name__)
def test_pixel_cap_is_checked_from_the_header_before_decoding(decoder, bomb_png):
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as error:
        decoder(bomb_png, "photo.png")
    assert time.perf_counter() - started < 1.0  # decoding 400 MP would take seconds
    assert str(error.value) == (
        "photo.png: 400.0 MP is over the 50.0 MP limit; "
        "downscale the image or raise CUTOUT_MAX_PIXELS"
    )


# Pillow warns above 89.5 MP and raises above 179 MP; neither may leak out. The
# headers have no pixel data, so reaching the decoder would fail differently.
@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("side", [8_000, 10_000, 20_000])
@pytest.mark.parametrize("decoder", DECODERS, ids=lambda f: f.__name__)
def test_header_over_the_cap_raises_too_large_without_pillow_warnings(decoder, side):
    with pytest.raises(ImageTooLargeError, match=rf"big\.png: {side**2 / 1e6:.1f} MP"):
        decoder(png(side, side), "big.png")


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda f: f.__name__)
def test_pixel_cap_is_configurable(decoder):
    data = encode(Image.new("RGB", (20, 20), RED), "PNG")
    with pytest.raises(ImageTooLargeError, match="over the 0.0 MP limit"):
        decoder(data, "x", max_pixels=100)
    decoder(data, "x", max_pixels=400)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP"])
def test_one_pixel_image_decodes(fmt):
    data = encode(Image.new("RGB", (1, 1), RED), fmt)
    assert decode_full(data, "x").rgb.shape == decode_for_model(data, "x").shape == (1, 1, 3)
    assert image_size(data, "x") == (1, 1)


def damaged(fmt: str, cut: slice | None = None, flip: int | None = None) -> bytes:
    data = bytearray(encode(two_halves(RED, BLUE), fmt))
    if flip is not None:
        data[flip] ^= 0xFF
    return bytes(data[cut] if cut else data)


def idat_crc_offset() -> int:
    data = damaged("PNG")
    start = data.index(b"IDAT")
    return start + 4 + struct.unpack(">I", data[start - 4 : start])[0]


GARBAGE = {
    "empty": b"",
    "one-byte": b"\x00",
    "zeros": bytes(1000),
    "random": np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(),
    "text": b"hello, this is not an image\n",
    "html": b"<!DOCTYPE html><html><body>Not found</body></html>",
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>',
    "xml": b'<?xml version="1.0"?><note/>',
    "json": b'{"error": "forbidden"}',
    "pdf": b"%PDF-1.7\n1 0 obj << >> endobj\n%%EOF\n",
    "zip": b"PK\x03\x04" + bytes(100),
    "psd": b"8BPS\x00\x01" + bytes(100),
    "heic-header": b"\x00\x00\x00\x18ftypheic" + bytes(100),
    "jpeg-magic-only": b"\xff\xd8\xff",
    "jpeg-header-only": damaged("JPEG", slice(0, 40)),
    "png-signature-only": b"\x89PNG\r\n\x1a\n",
    "png-bad-ihdr-crc": damaged("PNG", flip=30),
    "webp-truncated": damaged("WEBP", slice(0, -40)),
    "tiff-header-only": damaged("TIFF", slice(0, 8)),
    "bmp-header-only": damaged("BMP", slice(0, 20)),
}
# The header is intact, so the size reads although the pixels do not.
DAMAGED_PIXELS = {
    "jpeg-truncated": damaged("JPEG", slice(0, -40)),
    "png-truncated": damaged("PNG", slice(0, -40)),
    "png-bad-idat-crc": damaged("PNG", flip=idat_crc_offset()),
    "gif-truncated": damaged("GIF", slice(0, -40)),
    "tiff-truncated": damaged("TIFF", slice(0, -400)),
    "bmp-truncated": damaged("BMP", slice(0, -400)),
}


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow, on the TIFF header
@pytest.mark.parametrize("data", GARBAGE.values(), ids=GARBAGE.keys())
@pytest.mark.parametrize("decoder", DECODERS, ids=lambda f: f.__name__)
def test_garbage_raises_unsupported_image_naming_the_file(decoder, data):
    with pytest.raises(UnsupportedImageError, match=r"^upload\.jpg: "):
        decoder(data, "upload.jpg")


@pytest.mark.parametrize("data", DAMAGED_PIXELS.values(), ids=DAMAGED_PIXELS.keys())
@pytest.mark.parametrize("decoder", [decode_full, decode_for_model], ids=lambda f: f.__name__)
def test_damaged_pixels_raise_unsupported_image_instead_of_padding(decoder, data):
    with pytest.raises(UnsupportedImageError, match=r"^upload\.jpg: the \w+ data is damaged"):
        decoder(data, "upload.jpg")


@pytest.mark.parametrize("data", DAMAGED_PIXELS.values(), ids=DAMAGED_PIXELS.keys())
def test_image_size_reads_only_the_header(data):
    assert image_size(data, "x") == (64, 48)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "the file is empty (0 bytes); upload the image again"),
        ("html", "not a supported image (looks like HTML); supported: JPEG, PNG, WebP"),
        ("svg", "(looks like SVG)"),
        ("pdf", "(looks like a PDF)"),
        ("text", "(looks like text)"),
        ("random", "(unrecognised data)"),
        ("jpeg-truncated", "the JPEG data is damaged or truncated (image file is truncated"),
        ("png-bad-ihdr-crc", "the PNG data is damaged or truncated; re-export the image"),
        ("png-bad-idat-crc", "the PNG data is damaged or truncated (a chunk's CRC"),
    ],
)
def test_unsupported_message_says_why_and_what_to_do(kind, message):
    with pytest.raises(UnsupportedImageError) as error:
        decode_full((GARBAGE | DAMAGED_PIXELS)[kind], "upload.jpg")
    assert message in str(error.value)


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "PCX", "ICO", "SGI", "QOI", "DDS", "PDF"])
def test_formats_outside_the_allow_list_are_refused(fmt):
    with pytest.raises(UnsupportedImageError, match="not a supported image"):
        decode_full(encode(Image.new("RGB", (16, 16), RED), fmt), "x.jpg")


def test_heic_without_pillow_heif_says_how_to_install_it(monkeypatch):
    data = encode(Image.new("RGB", (16, 16), RED), "HEIF")
    monkeypatch.setattr(decode, "_heif_available", lambda: False)
    with pytest.raises(UnsupportedImageError, match="pip install pillow-heif"):
        decode_full(data, "IMG_0001.HEIC")


@pytest.mark.filterwarnings("ignore")  # Pillow warns about some corrupt metadata
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
@pytest.mark.parametrize("decoder", DECODERS, ids=lambda f: f.__name__)
def test_corrupted_bytes_raise_only_domain_errors(decoder, fmt, seed):
    rng = np.random.default_rng(seed)
    data = bytearray(encode(two_halves(RED, BLUE, size=(40, 30)), fmt))
    for at in rng.integers(0, len(data), 1 + seed % 4):
        data[at] = rng.integers(0, 256)
    data = data[: rng.integers(len(data) // 2, len(data) + 1)]
    try:
        decoder(bytes(data), "x")
    except CutoutError:
        pass  # any other exception fails the test


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


def test_pillow_hard_limit_still_applies_above_a_higher_cap(bomb_png):
    # Pillow refuses over 2 * MAX_IMAGE_PIXELS itself; that global is left alone.
    with pytest.raises(ImageTooLargeError, match=r"400\.0 MP is over the 179\.0 MP limit"):
        image_size(bomb_png, "photo.png", max_pixels=10**9)
