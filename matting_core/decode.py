"""Decode image bytes from storage into upright uint8 RGB plus optional alpha.

Bad input only ever raises the domain errors: ImageTooLargeError when the
header declares more pixels than the cap (checked before any pixel decodes),
UnsupportedImageError for anything unreadable. Each message names the file,
the reason and the fix.
"""

import functools
import io
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, TiffImagePlugin, UnidentifiedImageError, features

from matting_core.errors import ImageTooLargeError, UnsupportedImageError

DEFAULT_MAX_PIXELS = 50_000_000
SUPPORTED = "JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC/AVIF"

# An explicit allow-list: Pillow would otherwise also parse PSD, EPS (through
# Ghostscript), ICO, TGA and dozens of rarely used, rarely fuzzed formats.
_BASE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
# What Pillow raises on malformed data (its fuzz tests accept the same set);
# the libavif and libheif bindings raise RuntimeError.
_BAD_DATA = (OSError, SyntaxError, ValueError, EOFError, RuntimeError, OverflowError, struct.error)
_ORIENTATION = 0x0112
_SWAPS_SIDES = {5, 6, 7, 8}

_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "a PDF"),
    (b"8BPS", "a Photoshop PSD"),
    (b"%!PS", "PostScript/EPS"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)
_READABLE = {"JPEG", "PNG", "GIF", "BMP", "TIFF", "WebP", "HEIC", "AVIF"}
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_MARKUP = ((b"<!doctype html", "HTML"), (b"<html", "HTML"), (b"<svg", "SVG"), (b"<?xml", "XML"))


@dataclass(frozen=True, eq=False)  # eq on arrays is ambiguous; compare fields explicitly
class Decoded:
    rgb: np.ndarray  # uint8 HxWx3, upright, the source's own colour space
    alpha: np.ndarray | None  # uint8 HxW when the source has transparency
    icc_profile: bytes | None  # the source's RGB profile, to embed in the output


def decode_full(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode every pixel, upright, with alpha and the ICC profile."""
    with _open(data, name, max_pixels) as im:
        icc = _rgb_icc_profile(im)
        rgb = _turbo_rgb(im, data)
        if rgb is not None:
            return Decoded(rgb=_upright(rgb, im.getexif().get(_ORIENTATION)), alpha=None, icc_profile=icc)
        _load_upright(im, data, name, max_pixels)
        rgb, alpha = _to_rgb_alpha(im, name)
    return Decoded(rgb=rgb, alpha=alpha, icc_profile=icc)


def _turbo_rgb(im: Image.Image, data: bytes) -> np.ndarray | None:
    """A colour JPEG's pixels straight from libjpeg-turbo (simplejpeg), or None to let Pillow
    decode it. At 1920x1080: 5 ms against Pillow's 28 ms, which decodes in strips, then copies
    twice (convert, then tobytes into numpy). Same library, same slow-integer IDCT and fancy
    upsampling, so the same pixels (tests/matting_core/test_decode.py compares them).

    strict=True raises on anything libjpeg only warns about (a truncated or corrupt stream);
    such a file goes to Pillow, which decides as before whether it is readable."""
    if im.format not in ("JPEG", "MPO") or im.mode != "RGB":  # CMYK, grey: Pillow converts
        return None
    try:
        return simplejpeg.decode_jpeg(data, "RGB", strict=True)
    except ValueError:
        return None


# EXIF orientation -> the cv2 steps that show the stored pixels upright, the same transposes
# ImageOps.exif_transpose applies (2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90
# clockwise, 7 transverse, 8 rotate 90 counter-clockwise).
_FLIP_X, _FLIP_Y, _FLIP_XY = 1, 0, -1  # cv2.flip codes
_UPRIGHT: dict[int, tuple[tuple[Callable[..., np.ndarray], int | None], ...]] = {
    2: ((cv2.flip, _FLIP_X),),
    3: ((cv2.rotate, cv2.ROTATE_180),),
    4: ((cv2.flip, _FLIP_Y),),
    5: ((cv2.transpose, None),),
    6: ((cv2.rotate, cv2.ROTATE_90_CLOCKWISE),),
    7: ((cv2.transpose, None), (cv2.flip, _FLIP_XY)),
    8: ((cv2.rotate, cv2.ROTATE_90_COUNTERCLOCKWISE),),
}


def _upright(rgb: np.ndarray, orientation) -> np.ndarray:
    """The tag's raw value, looked up as exif_transpose does: anything else leaves it as stored."""
    for step, code in _UPRIGHT.get(orientation, ()):
        rgb = step(rgb) if code is None else step(rgb, code)
    return rgb


def decode_for_model(
    data: bytes, name: str, *, min_side: int = 320, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Upright uint8 HxWx3 for the model; JPEGs decode at a reduced DCT scale.

    The scale is the smallest of 1/8, 1/4, 1/2, 1 that keeps both sides
    >= min_side, so the model's resize still downsamples.
    """
    if min_side < 1:
        raise ValueError(f"min_side {min_side} must be at least 1")
    with _open(data, name, max_pixels) as im:
        if isinstance(im, JpegImagePlugin.JpegImageFile):  # MPO files from cameras too
            # libjpeg skips the fine DCT work: 1920x1080 -> 960x540 decodes ~4x faster.
            im.draft("RGB", (min_side, min_side))
        _load_upright(im, data, name, max_pixels)
        return _to_rgb_alpha(im, name)[0]


def image_size(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as displayed, read from the header without decoding pixels."""
    with _open(data, name, max_pixels) as im, _translated(data, name, max_pixels):
        # Pillow >= 12 reports a TIFF's size already upright (it rotates on
        # load); the tags keep the stored size on every version.
        if im.format == "TIFF" and isinstance(im, TiffImagePlugin.TiffImageFile):
            width, height = im.tag_v2[256], im.tag_v2[257]
        else:
            width, height = im.size
        orientation = _header_orientation(im)
    return (height, width) if orientation in _SWAPS_SIDES else (width, height)


@contextmanager
def _open(data: bytes, name: str, max_pixels: int) -> Iterator[ImageFile.ImageFile]:
    if not data:
        raise UnsupportedImageError(f"{name}: the file is empty (0 bytes); upload the image again")
    with _translated(data, name, max_pixels):
        im = Image.open(io.BytesIO(data), formats=_allowed_formats())
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise _too_large(name, width * height, max_pixels)
        yield im


@contextmanager
def _translated(data: bytes, name: str, max_pixels: int) -> Iterator[None]:
    """Map what Pillow raises on bad data to domain errors.

    Its DecompressionBombWarning is silenced because the caller's cap is the
    policy; catch_warnings is process-wide state, fine in worker processes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        except Image.DecompressionBombError as e:
            # Pillow's hard limit (2x MAX_IMAGE_PIXELS) fired before our check could.
            match = re.search(r"\((\d+) pixels\)", str(e))
            pixels = int(match[1]) if match else None
            hard_cap = 2 * (Image.MAX_IMAGE_PIXELS or 0)
            raise _too_large(name, pixels, min(max_pixels, hard_cap)) from e
        except _BAD_DATA as e:
            raise _unreadable(data, name, e) from e


def _too_large(name: str, pixels: int | None, cap: int) -> ImageTooLargeError:
    size = f"{pixels / 1e6:.1f} MP" if pixels else "the image"
    return ImageTooLargeError(
        f"{name}: {size} is over the {cap / 1e6:.1f} MP limit; "
        "downscale the image or raise CUTOUT_MAX_PIXELS"
    )


def _allowed_formats() -> tuple[str, ...]:
    avif = ("AVIF",) if _pillow_avif_available() else ()
    heif = ("HEIF",) if _heif_available() else ()
    return _BASE_FORMATS + avif + heif


@functools.cache
def _pillow_avif_available() -> bool:
    return bool(features.check_module("avif"))


@functools.cache
def _heif_available() -> bool:
    """Register pillow-heif's opener on first use, once per process."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _unreadable(data: bytes, name: str, error: Exception) -> UnsupportedImageError:
    kind = _sniff(data)
    if kind == "HEIC" and not _heif_available():
        return UnsupportedImageError(f"{name}: HEIC needs pillow-heif; pip install pillow-heif")
    if kind == "AVIF" and not _pillow_avif_available():
        return UnsupportedImageError(f"{name}: this Pillow cannot read AVIF; pip install -U pillow")
    unidentified = isinstance(error, UnidentifiedImageError)  # no allowed plugin took it
    if unidentified and kind not in _READABLE:
        looks = f"looks like {kind}" if kind else "unrecognised data"
        return UnsupportedImageError(
            f"{name}: not a supported image ({looks}); supported: {SUPPORTED}"
        )
    reason = "" if unidentified else f" ({error})"
    return UnsupportedImageError(
        f"{name}: the {kind or 'image'} data is damaged or truncated{reason}; "
        "re-export the image and upload it again"
    )


def _sniff(data: bytes) -> str | None:
    """Name what the bytes look like, for error messages only."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "HEIC" if brand in _HEIF_BRANDS else "AVIF" if brand[:3] == b"avi" else "a video"
    head = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    for marker, kind in _MARKUP:
        if marker in head:
            return kind
    if head and not any(b < 0x20 and b not in b"\t\n\r\x0c" for b in head):
        return "text"
    return None


def _header_orientation(im: Image.Image) -> int:
    # PngImageFile.getexif() decodes every pixel to look for an eXIf chunk after
    # IDAT; here only an eXIf before IDAT (where encoders put it) is honoured.
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    return int(im.getexif().get(_ORIENTATION, 1))


def _load_upright(im: Image.Image, data: bytes, name: str, max_pixels: int) -> None:
    with _translated(data, name, max_pixels):
        im.load()  # truncated data raises here: LOAD_TRUNCATED_IMAGES stays off
        if im.format == "PNG" and not _png_critical_crcs_match(data):
            # Pillow checks CRCs only of the chunks before IDAT; libpng, like
            # browsers, rejects any critical chunk whose CRC does not match.
            raise SyntaxError("a chunk's CRC does not match its data")
        ImageOps.exif_transpose(im, in_place=True)


def _png_critical_crcs_match(data: bytes) -> bool:
    view, pos = memoryview(data), 8
    while pos + 12 <= len(data) and view[pos + 4 : pos + 8] != b"IEND":
        length = int.from_bytes(view[pos : pos + 4], "big")
        end = pos + 8 + length
        critical = not view[pos + 4] & 0x20  # lower-case first letter: ancillary
        stored = int.from_bytes(view[end : end + 4], "big")
        if critical and end + 4 <= len(data) and zlib.crc32(view[pos + 4 : end]) != stored:
            return False
        pos = end + 4
    return True


def _rgb_icc_profile(im: Image.Image) -> bytes | None:
    icc = im.info.get("icc_profile")
    # Output is always RGB: a CMYK or grey profile embedded there would be wrong
    # (libpng refuses it), so only an RGB profile (header bytes 16-20) is kept.
    return icc if isinstance(icc, bytes) and icc[16:20] == b"RGB " else None


def _to_rgb_alpha(im: Image.Image, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = Image.fromarray(_scale_to_uint8(np.asarray(im)))
    try:
        if im.has_transparency_data:
            rgba = np.asarray(im.convert("RGBA"))
            return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
        return np.array(im.convert("RGB")), None
    except ValueError as e:
        raise UnsupportedImageError(
            f"{name}: pixel mode {im.mode} is not supported ({e}); "
            "save the image as 8-bit RGB and upload it again"
        ) from e


def _scale_to_uint8(samples: np.ndarray) -> np.ndarray:
    """Map 16-bit, 32-bit int and float samples onto 0-255 by scaling, not clipping.

    Pillow's convert("L") clips at 255, which turns most 16-bit images white.
    """
    values = np.nan_to_num(samples.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    # The nominal range when the samples fit it, else their own min..max: 16-bit
    # stays 16-bit when dark, floats are 0-1 by convention, 32-bit ints usually
    # carry 8- or 16-bit data.
    kind = "u2" if samples.dtype.itemsize == 2 else samples.dtype.kind
    tops = {"u2": (65535.0,), "f": (1.0,)}.get(kind, (255.0, 65535.0))
    top = next((top for top in tops if low >= 0 and high <= top), None)
    low, high = (0.0, top) if top else (low, max(high, low + 1.0))
    return np.rint((values - low) * (255.0 / (high - low))).clip(0, 255).astype(np.uint8)


def decode_mask(data: bytes, name: str) -> np.ndarray:
    """A stored alpha map (grey PNG, as encode.encode_mask writes) -> float32 HxW in [0, 1]."""
    with _open(data, name, DEFAULT_MAX_PIXELS) as im, _translated(data, name, DEFAULT_MAX_PIXELS):
        grey = np.asarray(im.convert("L"), dtype=np.float32)
    return grey * np.float32(1 / 255)
