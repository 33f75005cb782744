"""The whole core on real photos: agreement with the reference recipe, golden alphas, formats."""

import io

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageCms

from matting_core import compose, decode, pipeline, postprocess, preprocess
from matting_core.errors import ImageTooLargeError, UnsupportedImageError
from matting_core.model import get_model
from matting_core.options import Options, resolve_options
from matting_core.registry import model_names
from matting_core.weights import cutout_home, source_path
from tests.conftest import DATA, PHOTOS


def _alpha_small(model, data, name="photo.jpg"):
    return model.predict(preprocess.to_batch([pipeline.prepare(data, name, model.spec)]))[0]


def _open(result: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result)))


def _rembg_alpha(session, data: bytes) -> np.ndarray:
    """rembg's recipe, with onnxruntime on the published export: the reference to agree with."""
    image = Image.open(io.BytesIO(data))
    small = np.asarray(image.convert("RGB").resize((320, 320), Image.LANCZOS)) / 255.0
    small = small / small.max()
    x = (small - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
    pred = session.run(None, {session.get_inputs()[0].name: x.transpose(2, 0, 1)[None].astype(np.float32)})[0][0, 0]
    pred = (pred - pred.min()) / (pred.max() - pred.min())
    mask = Image.fromarray((pred * 255).astype("uint8"), "L").resize(image.size, Image.LANCZOS)
    return np.asarray(mask, np.float32) / 255


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a > 0.5) & (b > 0.5)).sum() / ((a > 0.5) | (b > 0.5)).sum())


@pytest.fixture(scope="module", params=model_names())
def model_and_session(request):
    model = get_model(request.param, device="cpu", precision="fp32").load()
    path = source_path(model.spec, cutout_home())
    return model, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", PHOTOS)
def test_raw_alpha_agrees_with_the_reference_recipe(model_and_session, photo_bytes, name):
    model, session = model_and_session
    data = photo_bytes[name]
    raw = resolve_options(raw=True, mask=True)
    ours = _open(pipeline.finish(data, name, _alpha_small(model, data), raw)).astype(np.float32) / 255
    reference = _rembg_alpha(session, data)
    # Measured: mean 0.0005-0.0028 (bilinear vs Lanczos upsampling, float32 vs float64); IoU
    # >= 0.997, except rocket, whose subject is 2% of the frame: 0.986 (u2net), 0.994 (u2netp).
    assert np.abs(ours - reference).mean() < 0.005
    assert _iou(ours, reference) > 0.98


@pytest.mark.parametrize("name", PHOTOS)
def test_default_cutout_matches_the_golden_alpha(model, photo_bytes, name):
    data = photo_bytes[name]
    rgba = _open(pipeline.finish(data, name, _alpha_small(model, data), Options()))
    golden = np.asarray(Image.open(DATA / "golden" / f"{name}.png"), np.float32) / 255
    alpha = rgba[..., 3].astype(np.float32) / 255
    assert rgba.shape[:2] == golden.shape
    assert np.abs(alpha - golden).mean() < 0.01 and _iou(alpha, golden) > 0.99
    # Visible pixels keep the photo's own colour; invisible ones are zeroed.
    source = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    visible = rgba[..., 3] > 0
    assert visible.any() and np.abs(rgba[visible, :3].astype(int) - source[visible]).max() <= 1
    assert (rgba[rgba[..., 3] == 0, :3] == 0).all()


def test_exif_rotated_photo_gives_an_upright_cutout(model, photo_bytes):
    upright = Image.open(io.BytesIO(photo_bytes["coffee"]))  # 600 wide, 400 high
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a sideways camera writes
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif)
    rotated = buf.getvalue()
    out = _open(pipeline.finish(rotated, "sideways.jpg", _alpha_small(model, rotated), Options(mask=True)))
    reference = _open(pipeline.finish(photo_bytes["coffee"], "coffee.jpg",
                                      _alpha_small(model, photo_bytes["coffee"]), Options(mask=True)))
    assert out.shape == (400, 600)
    assert _iou(out / 255, reference / 255) > 0.97


@pytest.mark.parametrize("opts, mode, fmt", [
    (Options(), "RGBA", "PNG"),
    (Options(format="jpg"), "RGB", "JPEG"),
    (Options(format="webp"), "RGBA", "WEBP"),
    (Options(format="webp", quality=80), "RGBA", "WEBP"),
    (Options(bg_color="#00ff00"), "RGB", "PNG"),
    (Options(bg_color="#00ff0080"), "RGBA", "PNG"),
    (Options(mask=True, format="jpg"), "L", "PNG"),
])
def test_each_output_kind_is_written_as_asked(model, photo_bytes, opts, mode, fmt):
    data = photo_bytes["chelsea"]
    image = Image.open(io.BytesIO(pipeline.finish(data, "chelsea.jpg", _alpha_small(model, data), opts)))
    assert (image.mode, image.format, image.size) == (mode, fmt, (451, 300))


def test_jpg_without_a_colour_is_composited_on_white(model, photo_bytes):
    data = photo_bytes["coffee"]
    alpha = _alpha_small(model, data)
    rgb = _open(pipeline.finish(data, "coffee.jpg", alpha, Options(format="jpg")))
    mask = _open(pipeline.finish(data, "coffee.jpg", alpha, Options(mask=True)))
    assert rgb[mask == 0].mean() > 250


def test_source_transparency_stays_transparent(model, photo_bytes):
    rgba = Image.open(io.BytesIO(photo_bytes["chelsea"])).convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 0).resize(rgba.size))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    data = buf.getvalue()
    out = _open(pipeline.finish(data, "clear.png", _alpha_small(model, data), Options()))
    assert out[..., 3].max() == 0


def test_preprocessing_records_stage_timings(model, photo_bytes):
    timings = pipeline.Timings()
    data = photo_bytes["rocket"]
    pipeline.prepare(data, "rocket.jpg", model.spec, timings=timings)
    pipeline.finish(data, "rocket.jpg", np.zeros((320, 320), np.float32), Options(), timings=timings)
    assert {"decode_small", "preprocess", "decode", "refine", "compose", "encode"} <= set(timings.ms)


@pytest.mark.parametrize("data, error", [
    (b"", UnsupportedImageError),
    (b"<html><body>hi</body></html>", UnsupportedImageError),
])
def test_bad_bytes_give_a_domain_error_that_names_the_file(model, data, error):
    with pytest.raises(error, match="upload.jpg"):
        pipeline.prepare(data, "upload.jpg", model.spec)


def test_the_pixel_cap_applies_before_the_model_sees_anything(model, photo_bytes):
    with pytest.raises(ImageTooLargeError, match="astronaut.jpg"):
        pipeline.prepare(photo_bytes["astronaut"], "astronaut.jpg", model.spec, max_pixels=1000)


def test_crop_cuts_the_output_to_the_subjects_bounding_box():
    rgb = np.zeros((40, 60, 3), np.uint8)
    alpha = np.zeros((40, 60), np.float32)
    alpha[10:20, 5:45] = 0.5
    cropped_rgb, cropped_alpha = pipeline.crop_to_subject(rgb, alpha)
    assert cropped_rgb.shape == (10, 40, 3) and cropped_alpha.shape == (10, 40)
    assert cropped_alpha.min() == 0.5


def test_crop_leaves_an_image_with_no_subject_whole():
    rgb, alpha = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32)
    assert pipeline.crop_to_subject(rgb, alpha)[0].shape == (8, 8, 3)


def test_default_png_holds_exactly_the_composed_pixels_and_the_photos_icc_profile():
    """Lossless end to end: what finish writes decodes (in Pillow) to compose's pixels, upright."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.open(DATA / "coffee.jpg").save(buf, "JPEG", quality=90, icc_profile=srgb, exif=exif)
    data = buf.getvalue()
    alpha_small = np.asarray(Image.open(DATA / "golden" / "coffee.png").resize((320, 320)), np.float32) / 255
    image = Image.open(io.BytesIO(pipeline.finish(data, "coffee.jpg", alpha_small, Options())))
    rgb = decode.decode_full(data, "coffee.jpg").rgb
    expected = compose.compose(rgb, postprocess.upsample(alpha_small, (rgb.shape[1], rgb.shape[0])), None)
    assert image.size == (400, 600) and image.info["icc_profile"] == srgb
    assert np.array_equal(np.asarray(image), expected)
