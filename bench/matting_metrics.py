"""The matting literature's error measures (Rhemann et al., CVPR 2009; alphamatting.com), on
float alphas in [0, 1] of equal shape, over the whole image (there is no trimap here).

SAD and the gradient and connectivity errors are sums, reported /1000 as the literature does,
so they grow with the image: compare them only between runs on the same images.
"""

import cv2
import numpy as np

GRADIENT_SIGMA = 1.4  # the benchmark's Gaussian-derivative scale


def sad(pred: np.ndarray, truth: np.ndarray) -> float:
    """Sum of absolute differences, /1000."""
    return float(np.abs(pred.astype(np.float64) - truth).sum() / 1000)


def mse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean squared difference per pixel."""
    return float(np.mean((pred.astype(np.float64) - truth) ** 2))


def iou(pred: np.ndarray, truth: np.ndarray, level: float = 0.5) -> float:
    """Intersection over union of the two masks alpha >= level; two empty masks agree fully."""
    p, t = pred >= level, truth >= level
    union = np.logical_or(p, t).sum()
    return float(np.logical_and(p, t).sum() / union) if union else 1.0


def _gauss_derivative_kernels(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """The reference code's x-derivative kernel, a Gaussian in y times its derivative in x,
    cut where the Gaussian falls below 1% of its peak's scale and scaled to unit L2 norm;
    returned as its two 1-D factors (x, y), since it is their outer product."""
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * 1e-2))))
    u = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(u**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    dg = -u * g / sigma**2
    norm = np.sqrt((g**2).sum() * (dg**2).sum())  # the L2 norm of outer(g, dg)
    return (dg / norm).astype(np.float32), g.astype(np.float32)


def _gradient_magnitude(alpha: np.ndarray, sigma: float) -> np.ndarray:
    dx, smooth = _gauss_derivative_kernels(sigma)
    a = alpha.astype(np.float32, copy=False)
    # sepFilter2D correlates; the reference convolves. The sign flip vanishes in the magnitude.
    gx = cv2.sepFilter2D(a, cv2.CV_32F, dx, smooth, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.sepFilter2D(a, cv2.CV_32F, smooth, dx, borderType=cv2.BORDER_REPLICATE)
    return cv2.magnitude(gx, gy)


def gradient_error(pred: np.ndarray, truth: np.ndarray, sigma: float = GRADIENT_SIGMA) -> float:
    """Sum of squared differences of Gaussian-derivative gradient magnitudes, /1000: how far the
    edge's sharpness and texture differ, whatever its level."""
    diff = _gradient_magnitude(pred, sigma) - _gradient_magnitude(truth, sigma)
    return float(np.square(diff, dtype=np.float64).sum() / 1000)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros(mask.shape, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def connectivity_error(pred: np.ndarray, truth: np.ndarray, step: float = 0.1) -> float:
    """Rhemann's connectivity error, /1000: penalises alpha that is cut off from the largest
    region both mattes share (specks, islands), weighted by how far it rises above where it
    loses that connection."""
    p, t = pred.astype(np.float32, copy=False), truth.astype(np.float32, copy=False)
    levels = np.arange(0, 1 + step / 2, step, dtype=np.float32)
    lost_at = np.ones(p.shape, np.float32)  # never lost: 1
    still = np.ones(p.shape, bool)
    for prev, level in zip(levels[:-1], levels[1:], strict=True):
        lost = still & ~_largest_component((p >= level) & (t >= level))
        lost_at[lost] = prev
        still &= ~lost
    dp, dt = p - lost_at, t - lost_at
    phi_p = 1 - dp * (dp >= 0.15)
    phi_t = 1 - dt * (dt >= 0.15)
    return float(np.abs(phi_p - phi_t).sum(dtype=np.float64) / 1000)


def all_measures(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {"sad": sad(pred, truth), "mse": mse(pred, truth), "grad": gradient_error(pred, truth),
            "conn": connectivity_error(pred, truth), "iou": iou(pred, truth)}
