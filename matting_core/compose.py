"""Compose stage: foreground colour + float32 alpha -> uint8 pixels ready to encode."""

import re

import cv2
import numpy as np
from PIL import ImageColor

_HEX = re.compile(r"[0-9a-fA-F]{3,4}|[0-9a-fA-F]{6}|[0-9a-fA-F]{8}")


def parse_color(text: str) -> tuple[int, int, int, int]:
    """'#rrggbb', '#rrggbbaa', '#rgb', 'rrggbb' (no '#') or a CSS name -> (r, g, b, a)."""
    spec = text.strip()
    if _HEX.fullmatch(spec):
        spec = "#" + spec  # a bare hex string, as typed into a form or a shell
    try:
        rgba = ImageColor.getrgb(spec)
    except ValueError:
        raise ValueError(
            f"bg_color {text!r} is not a colour; use #rrggbb, #rrggbbaa or a CSS name like 'white'"
        ) from None
    return (*rgba[:3], rgba[3] if len(rgba) == 4 else 255)


def combine_alpha(alpha: np.ndarray, source_alpha: np.ndarray | None) -> np.ndarray:
    """Multiply the prediction by the input file's own transparency (uint8 HxW, or None):
    pixels the source already hid stay hidden whatever the model thought of them."""
    if source_alpha is None:
        return alpha
    if source_alpha.shape != alpha.shape:
        raise ValueError(
            f"source alpha is {source_alpha.shape}, prediction is {alpha.shape}; "
            "upsample the prediction to the image size first"
        )
    return alpha * (source_alpha.astype(np.float32) * np.float32(1 / 255))


def _to_uint8(x: np.ndarray) -> np.ndarray:
    # Round half up; plain astype would truncate and darken every blended pixel by up to 1.
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _transparent(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGBA with the colour zeroed where alpha rounds to 0, built in one uint8 array.

    Zeroing changes nothing a viewer sees (a pixel with alpha 0 shows no colour), but the
    removed background would otherwise still sit in the file (anyone can drop the alpha and
    see it), and runs of zeros compress far better. ~3 ms at 1920x1080 on one core with warm
    memory, against 15 ms for a masked copy then split and merge, 98 ms for numpy masks; in
    the pipeline the first touch of the new 8 MB array's pages costs as much again."""
    a8 = cv2.convertScaleAbs(alpha, alpha=255.0)  # rounds to nearest, saturates
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    # The mask by numpy (0.3 ms at 1080p): cv2.compare takes a 1x1 image for a scalar and refuses it.
    hidden = np.equal(a8, 0).view(np.uint8)
    cv2.bitwise_xor(out, out, dst=out, mask=hidden)  # x ^ x = 0 where hidden
    cv2.mixChannels([a8], [out], [0, 3])  # alpha into the 4th channel, in place
    return out


def _over_opaque(rgb: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    # blendLinear computes a*F + (1-a)*B per pixel in one pass: 17 ms instead of 118 ms.
    background = np.empty_like(rgb)
    background[:] = bg
    return cv2.blendLinear(rgb, background, alpha, 1.0 - alpha)


def _over_translucent(rgb: np.ndarray, alpha: np.ndarray, bg: np.ndarray, bg_a: float):
    """Porter-Duff 'over' onto a colour that is itself partly transparent."""
    a = alpha[..., None]
    out_a = a + (1.0 - a) * bg_a
    premultiplied = a * rgb.astype(np.float32) + ((1.0 - a) * bg_a) * bg
    colour = premultiplied / np.maximum(out_a, np.float32(1e-6))
    return _transparent(_to_uint8(colour), out_a[..., 0])


def compose(rgb: np.ndarray, alpha: np.ndarray, bg: tuple[int, int, int, int] | None) -> np.ndarray:
    """uint8 HxWx3 foreground + float32 HxW alpha -> uint8 pixels.

    bg None -> RGBA cut-out; an opaque bg -> RGB flattened onto it; a bg with alpha < 255
    -> RGBA, the cut-out laid over that translucent colour."""
    alpha = np.clip(alpha.astype(np.float32, copy=False), 0.0, 1.0)
    if bg is None:
        return _transparent(rgb, alpha)
    colour = np.asarray(bg[:3], dtype=np.float32)
    if bg[3] >= 255:
        return _over_opaque(rgb, alpha, colour)
    return _over_translucent(rgb, alpha, colour, bg[3] / 255)
