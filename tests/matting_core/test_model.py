import numpy as np
import onnxruntime as ort
import pytest
import torch

from matting_core.errors import DeviceUnavailableError
from matting_core.model import MattingModel, get_model, resolve_device
from matting_core.preprocess import normalize, to_batch
from matting_core.registry import get_spec
from matting_core.weights import cutout_home, source_path
from tests.conftest import rgb_of


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
    with pytest.raises(ValueError, match="available: u2netp"):
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
