"""The files of one upload: `images` (repeatable) and `archive` (.zip), checked against the limits.

A file that breaks a per-file rule (too large, an unsafe or nested archive entry)
becomes a rejected item with its reason while the rest run; breaking a
per-request rule (too many files, a zip bomb) refuses the request with 413.
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


def _read_capped(stream, name: str, upload: Upload) -> None:
    """A stream of unknown size (an archive member: its header's size may lie), copied to a
    temporary file in chunks and rejected once it runs past the per-file cap."""
    cap, size = current_app.config["MAX_FILE_BYTES"], 0
    # Closed when the request's Upload is dropped, like werkzeug's own spooled files.
    spool = tempfile.TemporaryFile("rb+")
    while chunk := stream.read(MiB):
        size += len(chunk)
        if size > cap:
            spool.close()
            upload.reject(name, f"{name}: larger than the {megabytes(cap)} limit per file; resize or compress it")
            return
        spool.write(chunk)
    spool.seek(0)
    upload.add(name, spool)


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
        upload.add(name, stream)


def _check_count(upload: Upload) -> None:
    cap = current_app.config["MAX_FILES"]
    if len(upload.files) > cap:
        raise ApiError(413, "too_many_files", f"more than {cap} files in one request; split the batch")


def _unsafe_member(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts


def _add_archive(storage, upload: Upload) -> None:
    zip_name = label(storage.filename or "archive.zip")
    try:
        archive = zipfile.ZipFile(storage.stream)
    except (zipfile.BadZipFile, OSError) as err:
        upload.reject(zip_name, f"{zip_name}: not a readable .zip archive ({err}); re-create it")
        return
    # Backslashes count as separators (zips made on Windows), so "..\\x.jpg" is an unsafe path, not a dot-file.
    members = [m for m in archive.infolist() if not m.is_dir() and "__MACOSX/" not in m.filename
               and not PurePosixPath(m.filename.replace("\\", "/")).name.startswith(".")]
    claimed, cap = sum(m.file_size for m in members), current_app.config["MAX_ARCHIVE_BYTES"]
    if claimed > cap:
        raise ApiError(413, "archive_too_large", f"{zip_name} inflates to {megabytes(claimed)}, over the "
                                                 f"{megabytes(cap)} limit for one archive; split it into several")
    for member in members:
        name = label(f"{zip_name}!{member.filename}")
        if _unsafe_member(member.filename):
            upload.reject(name, f"{name}: unsafe path inside the archive (absolute or '..'); rename the entry")
        elif PurePosixPath(member.filename.lower()).suffix in ARCHIVE_SUFFIXES:
            upload.reject(name, f"{name}: archives inside archives are not unpacked; upload it on its own")
        elif member.file_size > current_app.config["MAX_FILE_BYTES"]:
            upload.reject(name, f"{name}: larger than the {megabytes(current_app.config['MAX_FILE_BYTES'])} limit "
                                "per file; resize or compress it")
        else:
            try:
                with archive.open(member) as stream:
                    _read_capped(stream, name, upload)
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
