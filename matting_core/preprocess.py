"""Model input, exactly as the reference U²-Net inference code (and rembg) prepare it."""

import numpy as np
from PIL import Image


def normalize(
    rgb: np.ndarray, size: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> np.ndarray:
    """uint8 H×W×3 -> float32 3×size×size: Lanczos resize, divide by the image max, mean/std."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}; decode with matting_core.decode")
    small = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)
    # Dividing by the image's own max (not 255) is what the reference code does;
    # an all-black image would divide by zero, so it stays as zeros instead.
    small /= max(float(small.max()), 1.0)
    small -= np.asarray(mean, dtype=np.float32)
    small /= np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(small.transpose(2, 0, 1))


def to_batch(inputs: list[np.ndarray]) -> np.ndarray:
    """Stack normalized 3×S×S inputs into one N×3×S×S float32 batch."""
    return np.stack(inputs).astype(np.float32, copy=False)
