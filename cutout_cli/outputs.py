"""Where results go: a folder or a .zip, with unique safe names and a manifest.json."""

import json
import re
import zipfile
from pathlib import Path

_UNSAFE = re.compile(r"[\x00-\x1f/\\:*?\"<>|]+")
MAX_STEM = 120  # keeps '<stem>-NNN.webp' well inside every filesystem's 255-byte name limit


def safe_stem(stem: str) -> str:
    cleaned = _UNSAFE.sub("_", stem).strip(" .")
    return cleaned.encode()[:MAX_STEM].decode(errors="ignore") or "image"


class Output:
    """Writes results under unique names; a .zip path gives an archive, anything else a folder."""

    def __init__(self, path: Path):
        self.path = path
        self._taken: set[str] = set()
        self._zip: zipfile.ZipFile | None = None
        if path.suffix.lower() == ".zip":
            path.parent.mkdir(parents=True, exist_ok=True)
            # Cutouts are already compressed images: storing them is as small and much faster.
            self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED)
        else:
            path.mkdir(parents=True, exist_ok=True)

    def claim(self, stem: str, ext: str) -> str:
        """A name not yet used by this run: '<stem>.<ext>', then '<stem>-2.<ext>', ...

        Files left by an earlier run into the same folder are overwritten, so a rerun
        replaces its outputs instead of piling up numbered copies.
        """
        base, n = safe_stem(stem), 1
        name = f"{base}.{ext}"
        while name.lower() in self._taken:
            n += 1
            name = f"{base}-{n}.{ext}"
        self._taken.add(name.lower())
        return name

    def write(self, name: str, data: bytes) -> None:
        if self._zip is not None:
            self._zip.writestr(name, data)
        else:
            (self.path / name).write_bytes(data)

    def close(self, manifest: dict) -> None:
        body = json.dumps(manifest, indent=2, ensure_ascii=False).encode()
        if self._zip is not None:
            self._zip.writestr("manifest.json", body, compress_type=zipfile.ZIP_DEFLATED)
            self._zip.close()
        else:
            (self.path / "manifest.json").write_bytes(body)
