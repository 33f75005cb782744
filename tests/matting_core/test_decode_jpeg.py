"""decode_full's libjpeg-turbo path for colour JPEGs gives exactly Pillow's pixels, upright."""

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from matting_core.decode import decode_full
from tests.matting_core.images import encode


def photo_like(width: int = 67, height: int = 45) -> Image.Image:
    """Smooth gradients plus noise: chroma subsampling and the IDCT both have work to do."""
    rng = np.random.default_rng(7)
    x, y = np.meshgrid(np.linspace(0, 255, width), np.linspace(0, 255, height))
    base = np.dstack([x, y, 255 - x]) + rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def pillow_reference(data: bytes) -> np.ndarray:
    """What decode_full returned before the libjpeg-turbo path: Pillow's decode, upright."""
    im = Image.open(io.BytesIO(data))
    return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


@pytest.mark.parametrize(
    "params",
    [{"subsampling": 0}, {"subsampling": 1}, {"subsampling": 2}, {"progressive": True},
     {"quality": 30}, {"quality": 100, "subsampling": 0}],
    ids=["4:4:4", "4:2:2", "4:2:0", "progressive", "q30", "q100"],
)
def test_colour_jpeg_decodes_to_exactly_pillows_pixels(params):
    data = encode(photo_like(), "JPEG", **params)
    rgb = decode_full(data, "x.jpg").rgb
    assert rgb.flags.writeable and rgb.flags.c_contiguous
    assert np.array_equal(rgb, pillow_reference(data))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_exif_transpose(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo_like(), "JPEG", exif=exif)
    rgb = decode_full(data, "x.jpg").rgb
    assert rgb.flags.c_contiguous
    assert np.array_equal(rgb, pillow_reference(data))


def test_multi_picture_jpeg_decodes_its_first_frame_as_pillow_does():
    data = encode(photo_like(), "MPO", quality=90)
    assert np.array_equal(decode_full(data, "x.jpg").rgb, pillow_reference(data))


def test_jpeg_libjpeg_only_warns_about_still_decodes_as_pillow_does():
    data = encode(photo_like(), "JPEG", quality=90)
    scan = data.index(b"\xff\xda")  # junk before the scan: "extraneous bytes before marker"
    warned = data[:scan] + b"\x00\x01\x02" + data[scan:]
    assert np.array_equal(decode_full(warned, "x.jpg").rgb, pillow_reference(warned))
