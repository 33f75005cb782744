from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from matting_core.errors import DeviceUnavailableError
from matting_core.model import MattingModel, get_model, resolve_device
from matting_core.preprocess import normalize, to_batch
from matting_core.registry import get_spec, model_names
from matting_core.weights import cutout_home, source_path
from tests.conftest import PHOTOS, rgb_of


def _batch(model, *names):
    return to_batch([normalize(rgb_of(n), 320, model.spec.mean, model.spec.std) for n in names])


@pytest.fixture(scope="module", params=model_names())
def fp32_model(request):
    """Each registered model on the CPU in fp32, the reference precision."""
    return get_model(request.param, device="cpu", precision="fp32").load()


@pytest.fixture(scope="module")
def fast_model():
    """u2netp in fp32: for what MattingModel does with a batch (the same code for every model), ~4x
    quicker than the default u2net; u2net's own outputs are checked against onnxruntime above."""
    return get_model("u2netp", device="cpu", precision="fp32").load()


@pytest.fixture(scope="module")
def onnx_session(fp32_model):
    """The published ONNX export of the same model (u2net's takes ~2 s to load: once per model)."""
    path = source_path(fp32_model.spec, cutout_home())
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", PHOTOS)
def test_torch_module_reproduces_onnxruntime(fp32_model, onnx_session, name):
    session = onnx_session
    x = _batch(fp32_model, name)
    reference = session.run(None, {session.get_inputs()[0].name: x})[0][:, 0]
    with torch.inference_mode():
        ours = fp32_model._net(torch.from_numpy(x))[:, 0].numpy()
    # Measured: max 1.6e-5 to 4.7e-5 over both models and the four photos.
    assert np.abs(ours - reference).max() < 1e-4


def test_predict_normalises_each_image_to_the_full_range(fast_model):
    model = fast_model
    alpha = model.predict(_batch(model, "astronaut", "coffee"))
    assert alpha.shape == (2, 320, 320) and alpha.dtype == np.float32
    assert alpha.min(axis=(1, 2)) == pytest.approx([0, 0]) and alpha.max(axis=(1, 2)) == pytest.approx([1, 1])


def test_batched_prediction_equals_one_at_a_time(fast_model):
    model = fast_model
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_auto_device_uses_cpu_without_a_gpu():
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this host")
def test_auto_device_takes_the_gpu_when_there_is_one():
    assert resolve_device("auto").type == "cuda"


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device("tpu")


@pytest.mark.parametrize("precision, expected", [("fp32", "fp32"), ("bf16", "bf16")])
def test_explicit_precision_is_used_as_asked(precision, expected):
    assert get_model("u2netp", device="cpu", precision=precision).precision == expected


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="auto, fp32, bf16, fp16"):
        get_model("u2netp", device="cpu", precision="int4")


def test_batches_pad_to_the_next_bucket():
    from matting_core.model import bucket

    assert [bucket(n) for n in (1, 2, 3, 5, 64, 65, 256, 300)] == [1, 2, 4, 8, 64, 128, 256, 300]


def test_a_padded_batch_gives_each_image_the_alpha_it_gets_alone(fast_model, photo_bytes):
    model = fast_model
    from matting_core import decode, preprocess
    from matting_core.model import get_model

    spec = model.spec
    inputs = [preprocess.normalize(decode.decode_for_model(photo_bytes[name], name, min_side=320), 320,
                                   spec.mean, spec.std) for name in ("coffee", "chelsea", "rocket")]
    padded = get_model(spec.name, device="cpu", precision="fp32").load()
    padded.compiled = True  # the padding path of a compiled model, run eagerly: 3 images go in as 4
    together = padded.predict(preprocess.to_batch(inputs))
    assert together.shape == (3, 320, 320)
    for x, alpha in zip(inputs, together, strict=True):
        assert np.abs(model.predict(x[None])[0] - alpha).max() < 1e-4


def test_warm_up_runs_the_model_before_the_first_image():
    from matting_core.model import get_model

    assert get_model("u2netp", device="cpu", precision="fp32").warm_up(8) == [1]  # eager: one call loads it


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux's CPU flags")
def test_auto_precision_on_the_cpu_is_bf16_exactly_where_the_cpu_has_native_bf16():
    flags = set(Path("/proc/cpuinfo").read_text().split())
    native = bool(flags & {"amx_tile", "avx512_bf16"})
    assert get_model("u2netp", device="cpu").precision == ("bf16" if native else "fp32")
