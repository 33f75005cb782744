import numpy as np
import pytest

from matting_core.preprocess import normalize, to_batch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_normalize_gives_a_chw_float_input_of_the_model_size():
    x = normalize(np.zeros((40, 60, 3), np.uint8) + 7, 320, MEAN, STD)
    assert x.shape == (3, 320, 320) and x.dtype == np.float32


def test_normalize_divides_by_the_image_max_not_255():
    # A dim image whose brightest value is 128 is stretched as the reference code does.
    rgb = np.full((8, 8, 3), 128, np.uint8)
    x = normalize(rgb, 4, MEAN, STD)
    expected = (1.0 - np.asarray(MEAN)) / np.asarray(STD)
    assert x[:, 0, 0] == pytest.approx(expected, abs=1e-5)


def test_an_all_black_image_gives_finite_input():
    x = normalize(np.zeros((8, 8, 3), np.uint8), 4, MEAN, STD)
    assert np.isfinite(x).all()
    assert x[:, 0, 0] == pytest.approx(-np.asarray(MEAN) / np.asarray(STD), abs=1e-5)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8),
                                 np.zeros((8, 8, 3), np.float32)])
def test_normalize_refuses_anything_but_uint8_rgb(bad):
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        normalize(bad, 4, MEAN, STD)


def test_to_batch_stacks_inputs_in_order():
    a, b = np.zeros((3, 4, 4), np.float32), np.ones((3, 4, 4), np.float32)
    batch = to_batch([a, b])
    assert batch.shape == (2, 3, 4, 4) and batch[1].min() == 1
