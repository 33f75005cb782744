"""The stages joined: model input from file bytes, and file bytes from a predicted alpha.

`prepare` and `finish` are what a GPU-side and a CPU-side worker (or the
CLI's thread pool) call; between them sits MattingModel.predict on a batch.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from matting_core import compose, decode, encode, postprocess, preprocess
from matting_core.options import Options
from matting_core.registry import ModelSpec

WHITE = (255, 255, 255, 255)


@dataclass
class Timings:
    """Milliseconds per stage for one image."""

    ms: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000


def prepare(data: bytes, name: str, spec: ModelSpec, *, max_pixels: int = decode.DEFAULT_MAX_PIXELS,
            timings: Timings | None = None) -> np.ndarray:
    """File bytes -> the model's float32 3×S×S input, decoded at reduced size where the format allows."""
    timings = timings or Timings()
    with timings.stage("decode_small"):
        rgb = decode.decode_for_model(data, name, min_side=spec.input_size, max_pixels=max_pixels)
    with timings.stage("preprocess"):
        return preprocess.normalize(rgb, spec.input_size, spec.mean, spec.std)


def background(opts: Options) -> tuple[int, int, int, int] | None:
    """The colour to compose on: the chosen one, white for jpg, else none (transparent)."""
    if opts.bg_color is not None:
        return compose.parse_color(opts.bg_color)
    return WHITE if opts.format == "jpg" else None


def finish(data: bytes, name: str, alpha_small: np.ndarray, opts: Options, *,
           max_pixels: int = decode.DEFAULT_MAX_PIXELS, timings: Timings | None = None) -> bytes:
    """File bytes and the model's small alpha -> the encoded cutout (or mask) at full resolution."""
    timings = timings or Timings()
    with timings.stage("decode"):
        image = decode.decode_full(data, name, max_pixels=max_pixels)
    with timings.stage("refine"):
        alpha = postprocess.postprocess(alpha_small, image.rgb, opts)
        alpha = compose.combine_alpha(alpha, image.alpha)
    rgb = image.rgb
    if opts.crop:
        rgb, alpha = crop_to_subject(rgb, alpha)
    if opts.mask:
        with timings.stage("encode"):
            return encode.encode_mask(alpha)
    with timings.stage("compose"):
        rgb = postprocess.despill(rgb, alpha) if opts.despill else rgb
        pixels = compose.compose(rgb, alpha, background(opts))
    with timings.stage("encode"):
        return encode.encode(pixels, opts.format, quality=opts.quality, icc_profile=image.icc_profile)


def crop_to_subject(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bounding box of every pixel with any opacity; an image with none is left whole."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return rgb, alpha
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return rgb[box], alpha[box]
