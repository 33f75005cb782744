"""Test images for the decode tests, generated in memory."""

import io
import struct
import zlib

import pytest
from PIL import Image, features

from matting_core.decode import decode_for_model, decode_full, image_size

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

