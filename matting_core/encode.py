"""Encode stage: uint8 pixels -> file bytes. Encoding dominates the CPU cost of a request,
so every setting here is chosen for speed first and size second.

PNG, measured by bench/cpu_stages.py-style runs on the 2-core AVX-512 EPYC box, one core
(taskset), eight 1920x1080 RGBA cut-outs of the test photos with their golden alphas,
colour zeroed under alpha 0 as compose writes it; median ms, mean size against the
previous writer (cv2/libpng level 1, Z_RLE, fixed Paeth filter: 72 ms, 1.21 MB):

    Up filter + ISA-L level 1 (isal)        15 ms   +1%   <- chosen
    Up filter + ISA-L level 0               12 ms  +20%
    Sub filter + ISA-L level 1              13 ms  +18%
    fpng (fpng package)                     11 ms  +22%   single release (0.1.0), a risk
    Up filter + libdeflate level 1 (deflate) 34 ms  -6%
    Up filter + zlib-ng level 2             32 ms   -1%
    Up filter + zlib level 1, Z_RLE         44 ms  +23%
    Paeth (libpng) + ISA-L level 1          71 ms   +4%   libpng's Paeth pass alone ~55 ms
    Pillow level 1 (adaptive filters)      104 ms  +10%
    WebP lossless, method 0                 83 ms  -27%

Every one of them decoded in Pillow to the same pixels with the ICC profile kept. The Up
filter is one vectorised subtraction of the row above (a few ms); with the background's
zeroed colour it leaves long zero runs, and ISA-L's level 1 finds them nearly as well as
libpng's Paeth + zlib did, in a fifth of the time. The container (signature, IHDR, iCCP,
IDAT, IEND) is written here; the compressed stream is ISA-L's zlib format.

    WebP  lossless method 0, quality 0       66-78 ms  0.64 MB   <- chosen (lossless)
          lossless method 1-4, quality 0   390-420 ms  0.49 MB
          lossy q90 method 0                 62-75 ms  0.077 MB
          lossy q90 method 2                107-129 ms  0.060 MB  <- chosen (lossy)
          lossy q90 method 4                   248 ms  0.060 MB
    JPEG  q92, optimize off                      7 ms  0.137 MB  (optimize on: 12 ms, -6%)

(WebP and JPEG: one astronaut.jpg cut-out with a soft disc alpha, mean of 3.) Lossy WebP
takes method 2: on a textured photo it was no slower than method 0 and 12-22% smaller.
"""

import io
import struct
import zlib

import cv2
import numpy as np
from isal import isal_zlib
from PIL import Image

ENCODERS = ("png", "jpg", "webp")
JPEG_QUALITY = 92
# ISA-L levels 1 and 2 gave the same size and time on the bench photos; 0 was 20% larger.
_PNG_LEVEL = 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2, 4: 6}  # grey, RGB, RGBA; 8 bits per sample
_FILTER_UP = 2
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
    if fmt == "png":
        return _png(pixels, icc_profile)
    image = Image.fromarray(pixels)
    extra = {"icc_profile": icc_profile} if icc_profile else {}
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
    """float32 HxW alpha -> greyscale PNG of round(alpha * 255)."""
    return _png(cv2.convertScaleAbs(alpha, alpha=255.0), None)  # rounds to nearest, saturates


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _up_filtered(pixels: np.ndarray) -> np.ndarray:
    """The PNG scanlines, each a filter-type byte then the row minus the row above, mod 256
    (filter 2, Up; the first row's "row above" is zeros, as the PNG spec defines)."""
    height = pixels.shape[0]
    flat = pixels.reshape(height, -1)
    rows = np.empty((height, 1 + flat.shape[1]), np.uint8)
    rows[:, 0] = _FILTER_UP
    rows[0, 1:] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # uint8 wraps: exactly PNG's mod 256
    return rows


def _png(pixels: np.ndarray, icc_profile: bytes | None) -> bytes:
    """uint8 grey (HxW), RGB or RGBA -> PNG bytes, with an iCCP chunk when a profile is given."""
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    parts = [_PNG_SIGNATURE, _chunk(b"IHDR", header)]
    if icc_profile:  # iCCP must precede IDAT; no sRGB/gAMA chunk is written to conflict with it
        parts.append(_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc_profile)))  # name, NUL, deflate
    idat = isal_zlib.compress(_up_filtered(np.ascontiguousarray(pixels)), _PNG_LEVEL)
    parts += [_chunk(b"IDAT", idat), _chunk(b"IEND", b"")]
    return b"".join(parts)
