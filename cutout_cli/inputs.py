"""Turn the command line's INPUTs (files, folders, .zip archives) into named byte sources."""

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif",
                  ".heic", ".heif", ".avif"}
# A zip member larger than this once inflated is refused (zip bombs).
MAX_MEMBER_BYTES = 256 * 1024 * 1024


class InputError(Exception):
    """An INPUT argument that cannot be read at all (missing path, broken archive)."""


@dataclass(frozen=True)
class Source:
    name: str  # what the user knows it as: a path, or archive.zip!member
    file_name: str  # its own name, without folders: the output is named after it (matting_core.manifest)
    read: Callable[[], bytes]


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def _file_source(path: Path, display: str) -> Source:
    return Source(display, path.name, path.read_bytes)


def _zip_sources(path: Path) -> Iterator[Source]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"{path}: not a readable zip archive ({err})") from None
    for info in archive.infolist():
        if info.is_dir() or not _is_image_name(info.filename) or "__MACOSX" in info.filename:
            continue
        # Only the member's base name is ever used, so '../' entries cannot escape the output.
        file_name = PurePosixPath(info.filename.replace("\\", "/")).name
        yield Source(f"{path}!{info.filename}", file_name, _member_reader(archive, info))


def _member_reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        if info.file_size > MAX_MEMBER_BYTES:
            raise InputError(f"{info.filename}: inflates to {info.file_size} bytes, over the "
                             f"{MAX_MEMBER_BYTES} byte limit for one archive member")
        with archive.open(info) as f:
            # file_size is the archive's own claim; read one byte past the cap to catch a lie.
            data = f.read(MAX_MEMBER_BYTES + 1)
        if len(data) > MAX_MEMBER_BYTES:
            raise InputError(f"{info.filename}: inflates past the {MAX_MEMBER_BYTES} byte limit")
        return data
    return read


def gather(inputs: list[str]) -> list[Source]:
    """Explicit files are taken whatever their name; folders (recursive) and zips give their images."""
    sources: list[Source] = []
    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file() and _is_image_name(p.name)):
                sources.append(_file_source(child, str(child)))
        elif path.is_file() and path.suffix.lower() == ".zip":
            sources.extend(_zip_sources(path))
        elif path.is_file():
            sources.append(_file_source(path, str(path)))
        else:
            raise InputError(f"{arg}: no such file or folder")
    return sources
