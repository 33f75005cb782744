import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
import torch

from matting_core.errors import DeviceUnavailableError
from matting_core.model import MattingModel, get_model, resolve_device
from matting_core.preprocess import normalize, to_batch
from matting_core.registry import get_spec
from matting_core.weights import cutout_home, source_path
from tests.conftest import PHOTOS, rgb_of


def _batch(model, *names):
    return to_batch([normalize(rgb_of(n), 320, model.spec.mean, model.spec.std) for n in names])


@pytest.fixture(scope="module")
def onnx_session():
    path = source_path(get_spec("u2netp"), cutout_home())
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_torch_module_reproduces_onnxruntime(model, onnx_session, name):
    x = _batch(model, name)
    reference = onnx_session.run(None, {onnx_session.get_inputs()[0].name: x})[0][:, 0]
    with torch.inference_mode():
        ours = model._net(torch.from_numpy(x))[:, 0].numpy()
    assert np.abs(ours - reference).max() < 1e-4


def test_predict_normalises_each_image_to_the_full_range(model):
    alpha = model.predict(_batch(model, "astronaut", "coffee"))
    assert alpha.shape == (2, 320, 320) and alpha.dtype == np.float32
    assert alpha.min(axis=(1, 2)) == pytest.approx([0, 0]) and alpha.max(axis=(1, 2)) == pytest.approx([1, 1])


def test_batched_prediction_equals_one_at_a_time(model):
    together = model.predict(_batch(model, "astronaut", "chelsea"))
    apart = np.stack([model.predict(_batch(model, n))[0] for n in ("astronaut", "chelsea")])
    assert np.abs(together - apart).max() < 1e-4


def test_predict_names_the_fix_for_a_wrongly_shaped_batch(model):
    with pytest.raises(ValueError, match="preprocess.normalize"):
        model.predict(np.zeros((1, 320, 320, 3), np.float32))


def test_load_is_idempotent(model):
    net = model._net
    assert model.load()._net is net


def test_injected_weights_are_used_instead_of_the_cache():
    spec = get_spec("u2netp")
    state = {k: torch.zeros_like(v) for k, v in spec.build().state_dict().items()}
    injected = MattingModel(spec, device="cpu", state_dict=state).load()
    assert all(float(p.detach().abs().sum()) == 0 for p in injected._net.parameters())


def test_get_model_lists_valid_names_for_an_unknown_one():
    with pytest.raises(ValueError, match="choose one of u2net, u2netp"):
        get_model("u2net-huge")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_cuda_without_a_gpu_refuses_instead_of_falling_back():
    with pytest.raises(DeviceUnavailableError, match="--device cpu"):
        resolve_device("cuda")


def test_auto_device_uses_cpu_without_a_gpu():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device("tpu")


def _iou(a, b):
    return float(((a > 0.5) & (b > 0.5)).sum() / ((a > 0.5) | (b > 0.5)).sum())


@pytest.fixture(scope="module")
def reference_and_bf16(model):
    batch = _batch(model, *PHOTOS)
    bf16 = get_model("u2netp", device="cpu", precision="bf16").load()
    return model.predict(batch), bf16.predict(batch)


@pytest.mark.parametrize("index", range(len(PHOTOS)))
def test_bf16_with_fp32_islands_stays_within_tolerance_of_fp32(reference_and_bf16, index):
    # Measured: mean |diff| 0.0003-0.0025, max 0.04-0.06, IoU 0.976-0.9998 per photo; fp16 on
    # CUDA was accepted at mean 0.002, max 0.21.
    reference, bf16 = (a[index] for a in reference_and_bf16)
    diff = np.abs(bf16 - reference)
    assert diff.mean() < 0.003 and diff.max() < 0.1
    assert _iou(bf16, reference) > 0.97


def test_bf16_with_fp32_islands_is_within_tolerance_on_average(reference_and_bf16):
    reference, bf16 = reference_and_bf16
    assert np.abs(bf16 - reference).mean() < 0.002


def test_the_fp32_island_is_what_keeps_bf16_accurate(model, reference_and_bf16):
    reference, with_island = reference_and_bf16
    plain = MattingModel(get_spec("u2netp"), device="cpu", precision="bf16")
    plain.spec = dataclasses.replace(plain.spec, fp32_modules=())
    without_island = plain.load().predict(_batch(model, *PHOTOS))
    assert np.abs(without_island - reference).mean() > 4 * np.abs(with_island - reference).mean()


@pytest.mark.parametrize("precision, expected", [("fp32", "fp32"), ("bf16", "bf16")])
def test_explicit_precision_is_used_as_asked(precision, expected):
    assert get_model("u2netp", device="cpu", precision=precision).precision == expected


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16"):
        get_model("u2netp", device="cpu", precision="int4")


def test_batches_pad_to_the_next_bucket():
    from matting_core.model import bucket

    assert [bucket(n) for n in (1, 2, 3, 5, 64, 65, 256, 300)] == [1, 2, 4, 8, 64, 128, 256, 300]


def test_a_padded_batch_gives_each_image_the_alpha_it_gets_alone(model, photo_bytes):
    from matting_core import decode, preprocess
    from matting_core.model import get_model

    spec = model.spec
    inputs = [preprocess.normalize(decode.decode_for_model(photo_bytes[name], name, min_side=320), 320,
                                   spec.mean, spec.std) for name in ("coffee", "chelsea", "rocket")]
    padded = get_model("u2netp", device="cpu", precision="fp32").load()
    padded.compiled = True  # the padding path of a compiled model, run eagerly: 3 images go in as 4
    together = padded.predict(preprocess.to_batch(inputs))
    assert together.shape == (3, 320, 320)
    for x, alpha in zip(inputs, together, strict=True):
        assert np.abs(model.predict(x[None])[0] - alpha).max() < 1e-4


def test_warm_up_runs_the_model_before_the_first_image():
    from matting_core.model import get_model

    assert get_model("u2netp", device="cpu", precision="fp32").warm_up(8) == [1]  # eager: one call loads it
