"""decode: bad input raises only the domain errors, with messages that name the file and the fix."""

import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from matting_core import decode
from matting_core.decode import decode_for_model, decode_full, image_size
from matting_core.errors import CutoutError, ImageTooLargeError, UnsupportedImageError
from tests.matting_core.images import BLUE, DECODERS, RED, encode, png, two_halves


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    # A valid 20000x20000 black image: 400 MP of zero rows deflate to ~50 kB.
    return png(20000, 20000, zlib.compress(bytes(20000 * (1 + 20000 // 8))))


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


def test_pillow_hard_limit_still_applies_above_a_higher_cap(bomb_png):
    # Pillow refuses over 2 * MAX_IMAGE_PIXELS itself; that global is left alone.
    with pytest.raises(ImageTooLargeError, match=r"400\.0 MP is over the 179\.0 MP limit"):
        image_size(bomb_png, "photo.png", max_pixels=10**9)
