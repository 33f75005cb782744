"""The batch zip: every output plus manifest.json, streamed from storage into storage.

Memory stays flat whatever the batch size: each object is read in 1 MiB chunks when
the archive reaches it, and the archive is written as it is produced.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from contextlib import closing
from zipfile import ZIP_STORED

from zipstream import ZipStream

# The entries' names come from matting_core.manifest (output_names), the CLI's rules too.
from matting_core.manifest import MANIFEST
from tasks.storage import MiB, Storage

_CHUNK = 1 * MiB


def build_zip(storage: Storage, zip_key: str, entries: list[tuple[str, str]], manifest: dict) -> int:
    """Store a zip of `entries` ((storage key, name in the zip)) and manifest.json at zip_key.

    Returns the zip's size. Raises KeyNotFound if an entry's object is missing; no zip
    is stored then. Entries are STORED: outputs are PNG/JPEG/WebP, already compressed.
    """
    names = [name for _, name in entries] + [MANIFEST]
    if len({name.casefold() for name in names}) != len(names):
        raise ValueError("zip entry names must be unique (ignoring case) and not manifest.json; use unique_names")
    archive = ZipStream(compress_type=ZIP_STORED)
    for key, name in entries:
        archive.add(_object_chunks(storage, key), name)
    archive.add(json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8"), MANIFEST)
    return storage.put_stream(zip_key, _restamped(archive))


def _object_chunks(storage: Storage, key: str) -> Iterator[bytes]:
    # A generator: the object is opened only when the archive reaches it, so one
    # object is open at a time however long the batch.
    with closing(storage.open(key)) as stream:
        while chunk := stream.read(_CHUNK):
            yield chunk


# Every entry is dated 1980-01-01 00:00 (the DOS epoch) so that the same outputs give
# a byte-identical zip. zipstream-ng stamps entries added from data with the current
# time and has no parameter for it (pR0Ps/zipstream-ng#27), so the date fields of each
# header are overwritten as the archive streams past. stream-zip takes each member's date
# (issue 14) but writes a STORED member only with its size and CRC in the local header: it
# buffers the whole member (peak memory = the largest output), or needs a first read of every
# object for the CRC (1.7x the CPU, and two GETs per object on S3); its streamed deflate at
# level 0 costs 1.5x the CPU. bench/zip_speed.py, bench/results/zip.json: 1,003 members,
# 442 MiB, 0.60 s CPU and a 9.7 MiB Python peak here. zipstream-ng is pinned (setup.cfg) to
# the release whose chunks _restamped was written against; _stamp fails loudly on another.
_DOS_1980 = struct.pack("<HH", 0, (1980 - 1980) << 9 | 1 << 5 | 1)  # time, date
_LOCAL_HEADER = b"PK\x03\x04"  # date/time at bytes 10..13
_CENTRAL_HEADER = b"PK\x01\x02"  # date/time at bytes 12..15


def _stamp(header: bytes, signature: bytes, offset: int) -> bytes:
    if not header.startswith(signature):
        raise RuntimeError("zipstream-ng no longer yields each zip header as its own chunk; revisit _restamped")
    return header[:offset] + _DOS_1980 + header[offset + 4 :]


def _restamped(archive: ZipStream) -> Iterator[bytes]:
    """The archive's bytes, with fixed dates. Relies on zipstream-ng yielding each
    header as one chunk: a local header first in every file(), then one central
    header per entry in footer()."""
    while True:
        entry = archive.file()
        header = next(entry, None)
        if header is None:  # no more entries
            break
        yield _stamp(header, _LOCAL_HEADER, 10)
        yield from entry
    for chunk in archive.footer():
        yield _stamp(chunk, _CENTRAL_HEADER, 12) if chunk.startswith(_CENTRAL_HEADER) else chunk
