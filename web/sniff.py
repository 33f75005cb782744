"""What a stored file is served back as: an image type read from its bytes, never from its name.

An upload's name is the user's to choose ("holiday.html", "notes.js"), and so are its bytes: a
JPEG may carry `<script>` in a comment. So an input goes out as the image type its magic bytes
say (or application/octet-stream), under a name with that type's extension, and every item
response is an attachment with `nosniff` and a sandboxing CSP: a browser that opens one anyway
renders no page and runs no script in the app's origin.
"""

from __future__ import annotations

import io
from pathlib import PurePosixPath
from typing import BinaryIO

from matting_core.manifest import output_name, safe_name

SNIFF_BYTES = 64  # enough for every signature below, the HEIF ftyp box's first brands included
OCTET_STREAM = "application/octet-stream"
# On every item, input, alpha and zip response (see web.api._serve).
SERVED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # "sandbox": opened as a document, it gets a unique origin, no scripts, no forms, no plugins.
    "Content-Security-Policy": "sandbox; default-src 'none'",
}
# The formats the decoder reads (matting_core.decode.SUPPORTED), with their types and extensions.
_BY_EXT = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp", "bmp": "image/bmp",
           "tif": "image/tiff", "heic": "image/heic", "avif": "image/avif"}
_SIGNATURES = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
               (b"II*\x00", "tif"), (b"MM\x00*", "tif"))
_BMP_HEADER_SIZES = {12, 40, 52, 56, 64, 108, 124}  # "BM" alone is too common a start for text
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"}
_AVIF_BRANDS = {b"avif", b"avis"}


def image_ext(head: bytes) -> str | None:
    """The extension ("jpg", "png", ...) of the supported image format `head` starts, or None."""
    for magic, ext in _SIGNATURES:
        if head.startswith(magic):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in _BMP_HEADER_SIZES:
        return "bmp"
    if head[4:8] == b"ftyp":
        box = head[8:min(len(head), int.from_bytes(head[:4], "big"))]
        brands = {box[k:k + 4] for k in range(0, len(box) - 3, 4)}  # major, minor version, compatible ones
        if head[8:12] in _AVIF_BRANDS or (head[8:12] in (b"mif1", b"msf1") and brands & _AVIF_BRANDS):
            return "avif"
        if brands & (_HEIC_BRANDS | {b"mif1", b"msf1"}):
            return "heic"
    return None


def mimetype(ext: str) -> str:
    """The type of an image extension (outputs: png, jpg, webp); anything else is plain bytes."""
    return _BY_EXT.get(ext.lower().replace("jpeg", "jpg"), OCTET_STREAM)


def stem(name: str) -> str:
    """The uploaded name without folders or extension, safe to offer as a file name (as in the zip)."""
    return PurePosixPath(safe_name(name)).stem or "image"


def download_name(name: str, ext: str, suffix: str = "") -> str:
    """The name the batch zip gives `name`'s output (manifest.output_name, as tasks/packaging.py
    names entries), with `suffix` after the stem: "Cat.JPG", "png", "-alpha" -> "Cat-alpha.png"."""
    if suffix:
        # Any extension will do, output_name replaces it; one is there so a dot in the stem stays.
        name = f"{stem(name)}{suffix}.{ext}"
    return output_name(name, ext)


class Rewound:
    """A stream whose first bytes were read to sniff it, read again from the start (S3 bodies cannot seek)."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head, self._rest = head, rest

    def read(self, size: int = -1) -> bytes:
        if not self._head:
            return self._rest.read(size)
        if size is None or size < 0:
            data, self._head = self._head + self._rest.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data

    def close(self) -> None:
        self._rest.close()


def sniffed(stream: BinaryIO) -> tuple[str | None, BinaryIO]:
    """(the image extension of the stream's bytes or None, the stream from its start again)."""
    head = stream.read(SNIFF_BYTES)
    try:
        # Via the end: a seek within what a buffered file already read moves only its buffer, not
        # the descriptor, and gunicorn's sendfile() starts at the descriptor's offset (measured:
        # the body came back without its first 8 KB).
        stream.seek(0, io.SEEK_END)
        stream.seek(0)
    except (AttributeError, OSError):
        return image_ext(head), Rewound(head, stream)
    return image_ext(head), stream
