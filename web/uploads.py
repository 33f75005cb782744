"""The files of one upload: `images` (repeatable) and `archive` (.zip), checked against the limits.

A file that breaks a per-file rule (too large, an unsafe or nested archive entry)
becomes a rejected item with its reason while the rest run; breaking a
per-request rule (too many files, a zip bomb) refuses the request with 413.
What a request stores is capped in all (MAX_INFLATED_BYTES), counted as archive
members actually inflate and checked before each chunk is written, so nothing
past the cap reaches a spool file or storage, whatever the zip headers claim.
Uploaded names are only labels: they never reach a filesystem path.
"""

import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import BinaryIO

from flask import Request as FlaskRequest
from flask import current_app, request

from tasks.storage import MiB
from web.errors import ApiError

IMAGE_FIELDS = ("images", "images[]")  # "images[]" is what PHP-style clients send
ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst"}
MAX_NAME_CHARS = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Above this size a request's files go to disk as they arrive; below it they may stay in memory.
SPOOL_REQUEST_BYTES = 8 * MiB
# Photos are compressed already (JPEG, PNG, WebP, HEIC deflate ~1:1, even BMP/TIFF photos a few
# times); zeros deflate ~1000:1. A member past 100:1 is a bomb, not a photo: its whole request is
# refused (like a zip over MAX_ARCHIVE_BYTES), because what else it carries came from the same hand.
MAX_RATIO = 100
# Below this much inflated the ratio is not judged: a small flat icon may deflate far past 100:1.
RATIO_FLOOR = 1 * MiB
ZIP_READ_BYTES = 64 * 1024


class Request(FlaskRequest):
    """Werkzeug keeps each uploaded file under 500 KB in memory, so a request of many photos
    sat whole in the web process (measured: a 1,000-photo upload took a worker to 325 MB).
    In a request over SPOOL_REQUEST_BYTES every file is written to a temporary file instead,
    so what one request holds in memory is bounded whatever its size."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        if total_content_length is None or total_content_length > SPOOL_REQUEST_BYTES:
            return tempfile.TemporaryFile("rb+")
        return super()._get_file_stream(total_content_length, content_type, filename, content_length)


@dataclass
class Upload:
    files: list[tuple[str, bytes | BinaryIO]] = field(default_factory=list)  # bytes, or a stream to copy
    rejected: dict[int, str] = field(default_factory=dict)  # item index -> reason
    stored: int = 0  # bytes of the accepted files: what storing them will write

    def count(self, n: int, name: str) -> None:
        """Take `n` more bytes of `name` into the request's total, or refuse it before they are written."""
        cap = current_app.config["MAX_INFLATED_BYTES"]
        if self.stored + n > cap:
            raise ApiError(413, "request_too_large",
                           f"this request's files come to more than {megabytes(cap)} once unpacked (the limit per "
                           f"request, CUTOUT_MAX_INFLATED_MB): {megabytes(self.stored)} before {name}, which adds "
                           f"at least {megabytes(n)}; send the files in several requests")
        self.stored += n

    def add(self, name: str, data: bytes | BinaryIO) -> None:
        self.files.append((name, data))

    def reject(self, name: str, reason: str) -> None:
        self.rejected[len(self.files)] = reason
        self.files.append((name, b""))


def label(name: str | None) -> str:
    """A printable name of bounded length (what the user called the file; never a path we open)."""
    name = _CONTROL.sub("_", name or "").strip() or "unnamed"
    return name[:MAX_NAME_CHARS]


def megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB"


def _read_capped(stream, name: str, upload: Upload, compressed=lambda: None, chunk_bytes: int = MiB) -> None:
    """A stream of unknown size (an archive member: its header's size may lie), copied to a
    temporary file in chunks. Each chunk is checked before it is written: past the per-file cap
    the file is rejected; past the request's total, or inflating over MAX_RATIO times the
    compressed bytes read so far (`compressed()`), the request is refused."""
    cap, size, counted = current_app.config["MAX_FILE_BYTES"], 0, 0
    # Closed when the request's Upload is dropped, like werkzeug's own spooled files.
    spool = tempfile.TemporaryFile("rb+")
    try:
        while chunk := stream.read(chunk_bytes):
            size += len(chunk)
            if size > cap:
                upload.reject(name, f"{name}: larger than the {megabytes(cap)} limit per file; resize or compress it")
                return
            _check_ratio(name, size, compressed())
            upload.count(len(chunk), name)
            counted += len(chunk)
            spool.write(chunk)
        spool.seek(0)
        upload.add(name, spool)
        spool = None
    finally:
        if spool is not None:  # refused, rejected or broken midway: its bytes are not stored after all
            spool.close()
            upload.stored -= counted


def _check_ratio(name: str, inflated: int, compressed: int | None, when: str = "so far") -> None:
    if compressed is not None and inflated > max(MAX_RATIO * compressed, RATIO_FLOOR):
        raise ApiError(413, "zip_bomb", f"{name} inflates more than {inflated // max(compressed, 1)}:1 "
                                        f"({megabytes(inflated)} from {compressed} bytes {when}), over the "
                                        f"{MAX_RATIO}:1 no photo comes near: a zip bomb; take it out of the archive")


def _add_file(stream, name: str, upload: Upload) -> None:
    """An uploaded file, kept as its (spooled) stream: it is copied into storage in chunks, so a
    request of many large files never sits in the web process's memory all at once."""
    cap = current_app.config["MAX_FILE_BYTES"]
    try:
        stream.seek(0, 2)
        size = stream.tell()
        stream.seek(0)
    except (AttributeError, OSError):  # not seekable: read it, within the cap
        _read_capped(stream, name, upload)
        return
    if size > cap:
        upload.reject(name, f"{name}: larger than the {megabytes(cap)} limit per file; resize or compress it")
    else:
        upload.count(size, name)
        upload.add(name, stream)


def _check_count(upload: Upload) -> None:
    cap = current_app.config["MAX_FILES"]
    if len(upload.files) > cap:
        raise ApiError(413, "too_many_files", f"more than {cap} files in one request; split the batch")


def _unsafe_member(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts


class _Counting:
    """The uploaded zip, counting the bytes zipfile reads from it: the compressed size a member
    really had, whatever its header says."""

    def __init__(self, stream):
        self._stream, self.read_bytes = stream, 0
        self.seek, self.tell, self.seekable = stream.seek, stream.tell, stream.seekable

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.read_bytes += len(data)
        return data


def _inflatable(member: zipfile.ZipInfo, name: str, upload: Upload) -> bool:
    """Whether to inflate `member`; if not, it is rejected as an item with the reason."""
    if _unsafe_member(member.filename):
        upload.reject(name, f"{name}: unsafe path inside the archive (absolute or '..'); rename the entry")
    elif PurePosixPath(member.filename.lower()).suffix in ARCHIVE_SUFFIXES:
        upload.reject(name, f"{name}: archives inside archives are not unpacked; upload it on its own")
    elif member.file_size > current_app.config["MAX_FILE_BYTES"]:
        upload.reject(name, f"{name}: larger than the {megabytes(current_app.config['MAX_FILE_BYTES'])} limit "
                            "per file; resize or compress it")
    else:
        return True
    return False


def _check_claims(zip_name: str, members: list[zipfile.ZipInfo], upload: Upload) -> None:
    """Refuse from the directory alone what honest headers already show: no byte is inflated."""
    claimed, cap = sum(m.file_size for m in members), current_app.config["MAX_ARCHIVE_BYTES"]
    if claimed > cap:
        raise ApiError(413, "archive_too_large", f"{zip_name} inflates to {megabytes(claimed)}, over the "
                                                 f"{megabytes(cap)} limit for one archive; split it into several")
    for member in members:
        _check_ratio(label(f"{zip_name}!{member.filename}"), member.file_size, member.compress_size, "by its header")
    # Members over the per-file cap are rejected unread, so only the others count towards the total.
    per_file, total = current_app.config["MAX_FILE_BYTES"], current_app.config["MAX_INFLATED_BYTES"]
    claimed = sum(m.file_size for m in members if m.file_size <= per_file)
    if upload.stored + claimed > total:
        raise ApiError(413, "request_too_large",
                       f"this request's files come to {megabytes(upload.stored + claimed)} once unpacked, over the "
                       f"{megabytes(total)} limit per request (CUTOUT_MAX_INFLATED_MB); {zip_name} alone inflates to "
                       f"{megabytes(claimed)}; send the files in several requests")


def _add_archive(storage, upload: Upload) -> None:
    zip_name = label(storage.filename or "archive.zip")
    source = _Counting(storage.stream)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as err:
        upload.reject(zip_name, f"{zip_name}: not a readable .zip archive ({err}); re-create it")
        return
    # Backslashes count as separators (zips made on Windows), so "..\\x.jpg" is an unsafe path, not a dot-file.
    members = [m for m in archive.infolist() if not m.is_dir() and "__MACOSX/" not in m.filename
               and not PurePosixPath(m.filename.replace("\\", "/")).name.startswith(".")]
    _check_claims(zip_name, members, upload)
    for member in members:
        name = label(f"{zip_name}!{member.filename}")
        if _inflatable(member, name, upload):
            try:
                with archive.open(member) as stream:
                    start = source.read_bytes
                    # Small reads: zipfile reads as many compressed bytes ahead as inflated ones are asked for,
                    # and read-ahead would count as compressed input, letting a bomb look tamer than it is.
                    _read_capped(stream, name, upload, compressed=lambda start=start: source.read_bytes - start,
                                 chunk_bytes=ZIP_READ_BYTES)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as err:
                upload.reject(name, f"{name}: could not be extracted ({err})")
        _check_count(upload)


def from_request(fields: tuple[str, ...] = IMAGE_FIELDS) -> Upload:
    upload = Upload()
    images = [f for name in fields for f in request.files.getlist(name)]
    archives = request.files.getlist("archive")
    for storage in images:
        if PurePosixPath((storage.filename or "").lower()).suffix == ".zip":
            archives.append(storage)
            continue
        _add_file(storage.stream, label(storage.filename), upload)
        _check_count(upload)
    for storage in archives:
        _add_archive(storage, upload)
    if not upload.files:
        raise ApiError(400, "no_images", "no files received: send images as multipart field 'images' "
                                         "(repeatable) and/or a .zip as 'archive'")
    return upload
