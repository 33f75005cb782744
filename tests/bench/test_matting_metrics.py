import numpy as np
import pytest

from bench.matting_metrics import all_measures, connectivity_error, gradient_error, iou, mse, sad

H, W = 48, 64


def step(column: int) -> np.ndarray:
    """Opaque left of `column`, clear from it on."""
    alpha = np.zeros((H, W), np.float32)
    alpha[:, :column] = 1
    return alpha


def ramp() -> np.ndarray:
    return np.tile(np.linspace(0, 0.8, W, dtype=np.float32), (H, 1))


@pytest.mark.parametrize("alpha", [step(20), ramp(), np.zeros((H, W), np.float32)], ids=["step", "ramp", "empty"])
def test_identical_alphas_score_no_error_and_full_overlap(alpha):
    assert all_measures(alpha, alpha.copy()) == {"sad": 0, "mse": 0, "grad": 0, "conn": 0, "iou": 1}


def test_an_edge_one_pixel_off_costs_one_column():
    pred, truth = step(21), step(20)
    assert sad(pred, truth) == pytest.approx(H / 1000)
    assert mse(pred, truth) == pytest.approx(1 / W)
    assert iou(pred, truth) == pytest.approx(20 / 21)
    assert gradient_error(pred, truth) > 0


def test_a_constant_offset_costs_sad_and_mse_but_no_gradient_error():
    truth = ramp()
    assert sad(truth + 0.1, truth) == pytest.approx(0.1 * H * W / 1000)
    assert mse(truth + 0.1, truth) == pytest.approx(0.01)
    assert gradient_error(truth + 0.1, truth) == pytest.approx(0, abs=1e-9)


def reference_gradient_error(pred: np.ndarray, truth: np.ndarray, sigma: float = 1.4) -> float:
    """The alphamatting.com evaluation code's recipe, written out the slow way: a full 2-D
    kernel gauss(y) * dgauss(x) with unit L2 norm, convolved with edge-replicated borders."""
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * 0.01))))
    u = np.arange(-half, half + 1)
    gauss = np.exp(-(u**2) / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))
    hx = np.array([[gauss[i] * -u[j] * gauss[j] / sigma**2 for j in range(u.size)] for i in range(u.size)])
    hx /= np.sqrt((hx**2).sum())

    def magnitude(alpha):
        padded = np.pad(alpha.astype(np.float64), half, mode="edge")
        gx, gy = np.zeros(alpha.shape), np.zeros(alpha.shape)
        for y in range(alpha.shape[0]):
            for x in range(alpha.shape[1]):
                window = padded[y : y + u.size, x : x + u.size][::-1, ::-1]  # convolution flips
                gx[y, x], gy[y, x] = (window * hx).sum(), (window * hx.T).sum()
        return np.hypot(gx, gy)

    return float(((magnitude(pred) - magnitude(truth)) ** 2).sum() / 1000)


def test_gradient_error_matches_the_reference_recipe():
    rng = np.random.default_rng(0)
    truth = step(20)
    pred = np.clip(truth + rng.normal(0, 0.2, truth.shape), 0, 1).astype(np.float32)
    assert gradient_error(pred, truth) == pytest.approx(reference_gradient_error(pred, truth), rel=1e-4)


def test_a_detached_speck_costs_its_area_in_connectivity():
    truth = step(20)
    pred = truth.copy()
    pred[10:15, 40:45] = 1  # 25 px, apart from the subject
    assert connectivity_error(pred, truth) == pytest.approx(25 / 1000)
    assert connectivity_error(truth, truth) == 0


def test_iou_of_disjoint_masks_is_zero_and_of_two_empty_masks_is_one():
    left, right = step(20), 1 - step(30)
    assert iou(left, right) == 0
    empty = np.zeros((H, W), np.float32)
    assert iou(empty, empty) == 1
