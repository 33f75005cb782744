"""Encode stage: uint8 pixels -> file bytes. Encoding dominates the CPU cost of a request,
so every setting here is chosen for speed first and size second.

Measured on this 2-core box, one 1920x1080 RGBA cut-out (astronaut.jpg upscaled, right half
alpha 0 with its colour zeroed, as compose writes it), best of 5:

    PNG   Pillow level 6 (default)          330-415 ms  0.84 MB
          Pillow level 1                    102-112 ms  1.06 MB
          Pillow level 1, Z_FILTERED        107-110 ms  1.06 MB
          Pillow level 1, Z_RLE             104-129 ms  0.91 MB   <- chosen
          Pillow level 1, Z_HUFFMAN_ONLY    123-138 ms  1.48 MB
          Pillow level 0 (stored)            63 ms      8.30 MB
          cv2 level 1, RLE                   95-98 ms   0.91 MB
    WebP  lossless method 0, quality 0       66-78 ms   0.64 MB   <- chosen (lossless)
          lossless method 1-4, quality 0    390-420 ms  0.49 MB
          lossless method 0, quality 80     290 ms      0.65 MB
          lossy q90 method 0                 62-75 ms   0.077 MB
          lossy q90 method 2                107-129 ms  0.060 MB  <- chosen (lossy)
          lossy q90 method 4                248 ms      0.060 MB
    JPEG  q92, optimize off                   7 ms      0.137 MB  (optimize on: 12 ms, -6%)

A photo tiled at native resolution (more texture) ranks the PNG options the same way
(level 6: 286 ms 1.43 MB; level 1: 121 ms 1.60 MB; level 1 Z_RLE: 108 ms 1.51 MB).
Z_RLE only looks back one byte, which is what PNG's row filters leave behind anyway, so it is
as fast as level 1 and 15% smaller. cv2 is within noise of Pillow and cannot embed an ICC
profile, so Pillow does everything. Lossy WebP takes method 2: on the textured image it was no
slower than method 0 (108 vs 127 ms) and 12-22% smaller.
"""

import io
import zlib

import numpy as np
from PIL import Image

ENCODERS = ("png", "jpg", "webp")
JPEG_QUALITY = 92
_PNG = {"compress_level": 1, "compress_type": zlib.Z_RLE}
# In lossless mode WebP's "quality" is encoder effort, not fidelity; exact keeps the colour of
# transparent pixels, so decode(encode(x)) == x (compose has zeroed them already).
_WEBP_LOSSLESS = {"lossless": True, "quality": 0, "method": 0, "exact": True}
_WEBP_LOSSY_METHOD = 2


def _check_pixels(pixels: np.ndarray) -> None:
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(
            f"pixels are {pixels.dtype} {pixels.shape}; expected uint8 HxWx3 (RGB) or HxWx4 (RGBA)"
        )


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def encode(
    pixels: np.ndarray,
    fmt: str,
    *,
    quality: int | None = None,
    icc_profile: bytes | None = None,
) -> bytes:
    """uint8 RGB/RGBA pixels -> PNG, JPEG or WebP bytes, carrying the source's ICC profile.

    quality: JPEG 1-100 (None = 92); WebP 1-100 lossy (None = lossless); ignored for PNG."""
    _check_pixels(pixels)
    if fmt not in ENCODERS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(ENCODERS)}")
    image = Image.fromarray(pixels)
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "png":
        return _save(image, "PNG", **_PNG, **extra)
    if fmt == "jpg":
        if image.mode == "RGBA":
            raise ValueError(
                "JPEG cannot store transparency; compose onto a bg_color first, or use png/webp"
            )
        q = JPEG_QUALITY if quality is None else quality
        return _save(image, "JPEG", quality=q, optimize=False, **extra)
    if quality is None:
        return _save(image, "WEBP", **_WEBP_LOSSLESS, **extra)
    return _save(image, "WEBP", quality=quality, method=_WEBP_LOSSY_METHOD, **extra)


def encode_mask(alpha: np.ndarray) -> bytes:
    """float32 HxW alpha -> greyscale PNG of round(alpha * 255). Z_RLE suits a mask best: the
    benchmark's 1920x1080 mask took 7 ms 11 kB at level 1, 7 ms 4 kB with Z_RLE, 10 ms 4 kB
    at level 6."""
    grey = np.clip(alpha * 255 + 0.5, 0, 255).astype(np.uint8)
    return _save(Image.fromarray(grey), "PNG", **_PNG)
