"""Postprocessing stage: the model's low-res alpha -> a full-resolution float32 alpha in [0, 1].

Every function is pure: it returns a new array (or its input unchanged for a no-op setting)
and never writes into its arguments.
"""

import cv2
import numpy as np

from matting_core.options import Options

# U2-Net-P predicts at 320x320, so one model pixel spans about max(H, W) / 320 image pixels
# and the upsampled edge is blurred over roughly two of them.
_MODEL_SIDE = 320


def upsample(alpha: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize alpha to `size` (width, height); bilinear, because the model's alpha is smooth
    and anything sharper (cubic) overshoots outside [0, 1] at edges."""
    out = cv2.resize(alpha.astype(np.float32, copy=False), size, interpolation=cv2.INTER_LINEAR)
    return np.clip(out, 0.0, 1.0, out=out)


def default_refine_radius(shape: tuple[int, ...]) -> int:
    """Guided-filter window radius: four model pixels, so a window centred anywhere in the
    upsampled alpha's blurred band (two to three model pixels wide) also reaches clear
    foreground and clear background, which the linear fit needs. On bench/matting_quality.py
    2 px (the old radius) tied 4 on SAD with higher MSE and gradient error; 3 px had the
    lowest SAD, 5 px the lowest MSE and gradient error but more haze; 4 is between.
    1920x1080 -> 24 px; never below 2."""
    return max(2, round(4 * max(shape[:2]) / _MODEL_SIDE))


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.blur(x, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def _guided_coefficients(guide: np.ndarray, p: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Per-pixel linear model p ~ a . I + b (He et al., colour guide) -> hxwx4 of (a0, a1, a2, b)
    averaged over each window. The 3x3 covariance is inverted in closed form (adjugate):
    ~10x faster than a batched np.linalg.solve."""
    i0, i1, i2 = guide[..., 0], guide[..., 1], guide[..., 2]
    # One box-filter call over all 13 products instead of 13 calls.
    products = [i0, i1, i2, p, i0 * i0, i0 * i1, i0 * i2, i1 * i1, i1 * i2, i2 * i2]
    m = _box(np.dstack(products + [i0 * p, i1 * p, i2 * p]), r)
    m0, m1, m2, mp = m[..., 0], m[..., 1], m[..., 2], m[..., 3]
    v00, v01, v02 = m[..., 4] - m0 * m0 + eps, m[..., 5] - m0 * m1, m[..., 6] - m0 * m2
    v11, v12, v22 = m[..., 7] - m1 * m1 + eps, m[..., 8] - m1 * m2, m[..., 9] - m2 * m2 + eps
    c0, c1, c2 = m[..., 10] - m0 * mp, m[..., 11] - m1 * mp, m[..., 12] - m2 * mp
    j00, j01, j02 = v11 * v22 - v12 * v12, v02 * v12 - v01 * v22, v01 * v12 - v02 * v11
    j11, j12, j22 = v00 * v22 - v02 * v02, v01 * v02 - v00 * v12, v00 * v11 - v01 * v01
    inv_det = 1.0 / (v00 * j00 + v01 * j01 + v02 * j02)
    a0 = (j00 * c0 + j01 * c1 + j02 * c2) * inv_det
    a1 = (j01 * c0 + j11 * c1 + j12 * c2) * inv_det
    a2 = (j02 * c0 + j12 * c1 + j22 * c2) * inv_det
    b = mp - a0 * m0 - a1 * m1 - a2 * m2
    return _box(np.dstack([a0, a1, a2, b]), r)


# Model alpha within this far of 0 or 1 is taken as sure (about 5/255).
_SURE = 0.02


def guided_filter(alpha: np.ndarray, rgb: np.ndarray, radius: int, eps: float = 1e-4) -> np.ndarray:
    """A fast guided filter (He & Sun 2015) of alpha with the photo as guide: coefficients at
    1/s resolution, applied at full resolution, over the whole frame.

    The guide is colour, not grey: a grey guide cannot see an edge between two colours of
    equal luminance (a red coat on green grass), and colour still runs in ~30 ms at 1920x1080
    on one core. `eps` is on a 0-1 intensity scale: 1e-4 (a std of ~2.5 grey levels) keeps
    the filter edge-following rather than smoothing."""
    h, w = alpha.shape
    s = max(1, radius // 2)  # low-res radius 2, as the paper's r=8, s=4; q still uses full-res edges
    small = (max(1, round(w / s)), max(1, round(h / s)))
    guide = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    p = cv2.resize(alpha.astype(np.float32, copy=False), small, interpolation=cv2.INTER_AREA)
    coef = _guided_coefficients(guide, p, max(1, round(radius / s)), eps)
    coef[..., :3] *= np.float32(1 / 255)  # so a multiplies the uint8 image directly
    # Contiguous planes and cv2 arithmetic: a third faster than numpy on strided channels.
    # One full-size coefficient plane and one colour channel at a time, in buffers reused for
    # each channel: q = b + a0*I0 + a1*I1 + a2*I2, added in the same order as with all four
    # planes upsampled at once (the same bits), but a cpu worker child holds 2 full-size float
    # planes here instead of 4 (8 MB each at 1920x1080), and a fresh array per step cost more
    # in page faults (first touch) than the arithmetic.
    planes = cv2.split(coef)  # small: 1/s resolution
    q = cv2.resize(planes[3], (w, h), interpolation=cv2.INTER_LINEAR)
    a, channel = np.empty_like(q), np.empty((h, w), np.uint8)
    for k in range(3):
        cv2.resize(planes[k], (w, h), dst=a, interpolation=cv2.INTER_LINEAR)
        cv2.extractChannel(rgb, k, dst=channel)
        cv2.add(q, cv2.multiply(a, channel, dst=a, dtype=cv2.CV_32F), dst=q)
    return np.clip(q, 0.0, 1.0, out=q)


def refine(
    alpha: np.ndarray, rgb: np.ndarray, radius: int | None = None, eps: float = 1e-4
) -> np.ndarray:
    """Snap an upsampled alpha to the image's own edges: the guided filter's alpha, blended
    in only near where the model was unsure (see `unsure_band`)."""
    r = default_refine_radius(alpha.shape) if radius is None else radius
    alpha = alpha.astype(np.float32, copy=False)
    # The filter first, the band after: the filter's working planes are freed before the band
    # is made, so at most three full-size float planes (alpha, q, band) are held at once.
    q = guided_filter(alpha, rgb, r, eps)
    band = unsure_band(alpha, max(1, r // 2))
    cv2.subtract(q, alpha, dst=q)  # in place, as in guided_filter: q is this function's own
    return cv2.add(alpha, cv2.multiply(band, q, dst=q), dst=q)


def unsure_band(alpha: np.ndarray, step: int) -> np.ndarray:
    """Weights in [0, 1]: 1 within about `step` px of a pixel whose alpha is neither sure 0
    nor sure 1, falling to 0 over the next `step` px. Where the model was sure, the guided
    filter mostly adds haze copied from nearby texture: filtering the whole frame raised
    SAD on bench/matting_quality.py where this band lowers it. Found on a 1/step grid, as
    the filter's coefficients are, so it costs a few ms."""
    h, w = alpha.shape
    small = (max(1, round(w / step)), max(1, round(h / step)))
    p = cv2.resize(alpha, small, interpolation=cv2.INTER_AREA)
    unsure = ((p > _SURE) & (p < 1 - _SURE)).astype(np.uint8)
    band = cv2.dilate(unsure, np.ones((3, 3), np.uint8)).astype(np.float32)
    return cv2.resize(band, (w, h), interpolation=cv2.INTER_LINEAR)


def threshold(alpha: np.ndarray, level: int) -> np.ndarray:
    """Zero alpha whose 8-bit value would be below `level` (0 = off): removes the faint haze
    the model leaves over background."""
    if level <= 0:
        return alpha
    return np.where(alpha * 255 < level, np.float32(0), alpha).astype(np.float32, copy=False)


def erode(alpha: np.ndarray, kernel_px: int) -> np.ndarray:
    """Grey erosion that moves the foreground edge `kernel_px` pixels inward (0 = off).

    The ellipse is 2*kernel_px+1 across, centred on the pixel: an even-sized kernel would
    shift the edge one way, and a size-1 kernel (the default setting) would do nothing."""
    if kernel_px <= 0:
        return alpha
    size = 2 * kernel_px + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.erode(alpha, kernel, borderType=cv2.BORDER_REPLICATE)


def feather(alpha: np.ndarray, radius_px: int) -> np.ndarray:
    """Soften the edge with a Gaussian of sigma = radius/3 (0 = off).

    At 3 sigma the tail is below half an 8-bit step, so the visible softening reaches
    `radius_px` either side of the edge; pixels further inside than that stay 1 and pixels
    further out stay 0, because the kernel sums to one."""
    if radius_px <= 0:
        return alpha
    size = 2 * radius_px + 1
    out = cv2.GaussianBlur(alpha, (size, size), radius_px / 3, borderType=cv2.BORDER_REPLICATE)
    return np.clip(out, 0.0, 1.0, out=out)


def _background_colour(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Local background colour B (HxWx3 float32) by normalized convolution over pixels with
    alpha ~ 0, computed at low resolution (~8 ms at 1920x1080) and upsampled."""
    h, w = alpha.shape
    reach = max(8, max(h, w) // 64)  # px; 30 at 1920: wider than any soft band we produce
    s = max(1, reach // 4)
    small = (max(1, round(w / s)), max(1, round(h / s)))
    colour = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA).astype(np.float32)
    a = cv2.resize(alpha, small, interpolation=cv2.INTER_AREA)
    # The 16th power leaves mixed edge pixels (whose colour still holds foreground) almost no
    # weight: a=0.1 counts 0.19, a=0.2 0.03, a=0.5 2e-5. Against the 8th power it halved the
    # composite error on the tests' red-on-green-and-blue scene; the 32nd gained little more.
    weight = (1.0 - a) ** 16
    k = max(1, round(reach / s))
    num = _box(colour * weight[..., None], k)
    den = _box(weight, k)
    # Where no background lies within reach, fall back to the whole image's background
    # colour: the prior (1e-4 of one full-weight pixel) only matters when den ~ 0.
    total = float(weight.sum())
    prior = (colour * weight[..., None]).sum((0, 1)) / total if total > 0 else colour.mean((0, 1))
    prior_w = np.float32(1e-4)
    bg = (num + prior_w * prior.astype(np.float32)) / (den + prior_w)[..., None]
    return cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)


def despill(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Remove the background's colour from edge pixels: solve I = a*F + (1-a)*B for F.

    Only pixels with 0 < a < 1 change; a = 1 gives F = I by the same formula. Dividing by a
    magnifies an error in B by (1-a)/a in F, but any composite multiplies F by a again, so
    what shows is (1-a) times B's error, never more. The clamp at a >= 0.05 only keeps F of
    nearly invisible pixels from saturating. ~40 ms at 1920x1080 on one core."""
    a = alpha.astype(np.float32, copy=False)
    edge = (a > 0) & (a < 1)
    if not edge.any():
        return rgb.copy()
    bg = _background_colour(rgb, a)[edge]
    ae = a[edge][:, None]
    fg = (rgb[edge].astype(np.float32) - (1.0 - ae) * bg) / np.maximum(ae, 0.05)
    out = rgb.copy()
    out[edge] = np.clip(fg + 0.5, 0, 255).astype(np.uint8)
    return out


def postprocess(alpha_small: np.ndarray, rgb: np.ndarray, opts: Options) -> np.ndarray:
    """upsample -> refine -> threshold -> erode -> feather, each step only if enabled."""
    alpha = upsample(alpha_small, (rgb.shape[1], rgb.shape[0]))
    if opts.refine:
        alpha = refine(alpha, rgb)
    return edge_steps(alpha, opts)


def edge_steps(alpha: np.ndarray, opts: Options) -> np.ndarray:
    """threshold -> erode -> feather, each only if enabled: the steps that need no photo (the
    portal's preview repeats them in this order, web/static/preview.js)."""
    alpha = threshold(alpha, opts.alpha_threshold)
    alpha = erode(alpha, opts.erode_kernel)
    if opts.feather_edge:
        alpha = feather(alpha, opts.feather_radius)
    return alpha
