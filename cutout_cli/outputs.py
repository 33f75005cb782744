"""Where results go: a folder or a .zip, beside a manifest.json (names and manifest: matting_core.manifest)."""

import zipfile
from pathlib import Path

from matting_core.manifest import MANIFEST, to_json


class Output:
    """Writes results under the names it is given; a .zip path gives an archive, anything else a folder.

    Files left by an earlier run into the same folder are overwritten, so a rerun replaces its
    outputs instead of piling up numbered copies.
    """

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.suffix.lower() == ".zip":
            path.parent.mkdir(parents=True, exist_ok=True)
            # Cutouts are already compressed images: storing them is as small and much faster.
            self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED)
        else:
            path.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, data: bytes) -> None:
        if self._zip is not None:
            self._zip.writestr(name, data)
        else:
            (self.path / name).write_bytes(data)

    def close(self, manifest: dict) -> None:
        body = to_json(manifest)
        if self._zip is not None:
            self._zip.writestr(MANIFEST, body, compress_type=zipfile.ZIP_DEFLATED)
            self._zip.close()
        else:
            (self.path / MANIFEST).write_bytes(body)
