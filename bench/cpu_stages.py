"""`make bench`: the CPU side of finish, per stage, in core-ms per 1920x1080 image.

Twenty 1920x1080 JPEGs made from the test photos (each with an sRGB ICC profile, as a
phone's photo carries one) and their golden alphas, fitted the same way and reduced to the
model's 320x320: no model runs, so the numbers are the CPU work alone. One thread (OpenCV's
pool set to 1) pinned to one core, so wall time is core time; each image is finished
ROUNDS times, and the median over all of them is reported per stage.

"before" is the finish path as it was before the ISA-L writer and simplejpeg, kept here and not in the product:
Pillow decode, compose through a masked copy then split and merge, libpng through cv2 at
level 1 with Z_RLE and a fixed Paeth filter, the guided filter allocating a new array per
step. "after" is pipeline.finish itself, with the Timings object tasks/work.py's finish
passes, so its stages are the manifest's. Both outputs are decoded with Pillow and must
hold the same pixels and the same ICC profile. Results go to bench/results/cpu_stages.json.
"""

import io
import os
import platform
import statistics
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageCms, ImageOps

from bench.machine import cpu_name, save_result
from matting_core import decode, pipeline, postprocess
from matting_core.options import Options, resolve_options

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
COUNT, ROUNDS, SIZE = 20, 3, (1920, 1080)
STAGES = ("decode", "refine", "compose", "encode")
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def make_inputs(count: int = COUNT) -> list[tuple[bytes, np.ndarray]]:
    """(JPEG bytes, float32 320x320 alpha) pairs; odd ones mirrored, so no two files are equal."""
    inputs = []
    for i in range(count):
        name = PHOTOS[i % len(PHOTOS)]
        photo = ImageOps.fit(Image.open(DATA / f"{name}.jpg").convert("RGB"), SIZE, Image.BICUBIC)
        alpha = ImageOps.fit(Image.open(DATA / "golden" / f"{name}.png"), SIZE, Image.BICUBIC)
        if i % 2:
            photo, alpha = ImageOps.mirror(photo), ImageOps.mirror(alpha)
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=90, icc_profile=SRGB)
        small = cv2.resize(np.asarray(alpha, np.float32) / 255, (320, 320), interpolation=cv2.INTER_AREA)
        inputs.append((buf.getvalue(), small))
    return inputs


# --- the path before (libpng, Pillow) ----------------------------------------------------------
_OLD_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH]


def _old_decode(data: bytes, name: str) -> decode.Decoded:
    with decode._open(data, name, decode.DEFAULT_MAX_PIXELS) as im:
        icc = decode._rgb_icc_profile(im)
        decode._load_upright(im, data, name, decode.DEFAULT_MAX_PIXELS)
        rgb, alpha = decode._to_rgb_alpha(im, name)
    return decode.Decoded(rgb=rgb, alpha=alpha, icc_profile=icc)


def _old_compose(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a8 = cv2.convertScaleAbs(np.clip(alpha, 0.0, 1.0), alpha=255.0)
    visible = cv2.bitwise_and(rgb, rgb, mask=a8)
    return cv2.merge([*cv2.split(visible), a8])


def _old_encode(pixels: np.ndarray, icc: bytes | None) -> bytes:
    png = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGBA2BGRA), _OLD_PNG)[1].tobytes()
    if not icc:
        return png
    body = b"icc\x00\x00" + zlib.compress(icc)
    chunk = struct.pack(">I", len(body)) + b"iCCP" + body + struct.pack(">I", zlib.crc32(b"iCCP" + body))
    return png[:33] + chunk + png[33:]


def _old_guided_filter(alpha: np.ndarray, rgb: np.ndarray, radius: int, eps: float = 1e-4) -> np.ndarray:
    h, w = alpha.shape
    s = max(1, radius // 2)
    small = (max(1, round(w / s)), max(1, round(h / s)))
    guide = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    p = cv2.resize(alpha, small, interpolation=cv2.INTER_AREA)
    coef = postprocess._guided_coefficients(guide, p, max(1, round(radius / s)), eps)
    coef[..., :3] *= np.float32(1 / 255)
    a0, a1, a2, q = (cv2.resize(c, (w, h), interpolation=cv2.INTER_LINEAR) for c in cv2.split(coef))
    for a, channel in zip((a0, a1, a2), cv2.split(rgb), strict=True):
        q = cv2.add(q, cv2.multiply(a, channel, dtype=cv2.CV_32F))  # a fresh array per step
    return np.clip(q, 0.0, 1.0, out=q)


def _old_postprocess(alpha_small: np.ndarray, rgb: np.ndarray, opts: Options) -> np.ndarray:
    alpha = postprocess.upsample(alpha_small, (rgb.shape[1], rgb.shape[0]))
    if opts.refine:
        r = postprocess.default_refine_radius(alpha.shape)
        band = postprocess.unsure_band(alpha, max(1, r // 2))
        q = _old_guided_filter(alpha, rgb, r)
        alpha = cv2.add(alpha, cv2.multiply(band, cv2.subtract(q, alpha)))
    return postprocess.edge_steps(alpha, opts)


def before(data: bytes, name: str, alpha_small: np.ndarray, opts: Options, timings: pipeline.Timings) -> bytes:
    """pipeline.finish as it was for a transparent PNG (the only output this bench compares)."""
    with timings.stage("decode"):
        image = _old_decode(data, name)
    with timings.stage("refine"):
        alpha = _old_postprocess(alpha_small, image.rgb, opts)
    with timings.stage("compose"):
        pixels = _old_compose(image.rgb, alpha)
    with timings.stage("encode"):
        return _old_encode(pixels, image.icc_profile)


def after(data: bytes, name: str, alpha_small: np.ndarray, opts: Options, timings: pipeline.Timings) -> bytes:
    return pipeline.finish(data, name, alpha_small, opts, timings=timings)


# --- measuring ---------------------------------------------------------------------------
def measure(finish, inputs, opts: Options) -> tuple[dict, list[bytes]]:
    samples: dict[str, list[float]] = {k: [] for k in (*STAGES, "total", "core")}
    outputs = []
    data, alpha = inputs[0]
    finish(data, "warm.jpg", alpha, opts, pipeline.Timings())  # first-call costs (imports, tables)
    for _ in range(ROUNDS):
        outputs = []
        for i, (data, alpha) in enumerate(inputs):
            timings = pipeline.Timings()
            cpu = time.thread_time()
            outputs.append(finish(data, f"photo-{i:02d}.jpg", alpha, opts, timings))
            samples["core"].append((time.thread_time() - cpu) * 1000)
            for k in STAGES:
                samples[k].append(timings.ms.get(k, 0.0))
            samples["total"].append(sum(timings.ms.get(k, 0.0) for k in STAGES))
    medians = {k: round(statistics.median(v), 1) for k, v in samples.items()}
    medians["bytes_mean"] = round(statistics.mean(len(o) for o in outputs))
    return medians, outputs


def _pixels_and_icc(png: bytes) -> tuple[np.ndarray, bytes | None]:
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        return np.asarray(im), im.info.get("icc_profile")


def same_pixels(old: list[bytes], new: list[bytes]) -> bool:
    pairs = ((_pixels_and_icc(a), _pixels_and_icc(b)) for a, b in zip(old, new, strict=True))
    return all(np.array_equal(a[0], b[0]) and a[1] == b[1] == SRGB for a, b in pairs)


def _pin_to_one_core() -> int | None:
    if not hasattr(os, "sched_setaffinity"):
        return None
    core = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    return core


def main() -> None:
    cores = os.cpu_count()
    core = _pin_to_one_core()
    cv2.setNumThreads(1)
    load_start = os.getloadavg()
    inputs = make_inputs()
    runs = {}
    for label, opts in (("default", Options()), ("ecommerce", resolve_options("ecommerce"))):
        old, old_out = measure(before, inputs, opts)
        new, new_out = measure(after, inputs, opts)
        runs[label] = {"before": old, "after": new, "same_pixels_and_icc": same_pixels(old_out, new_out),
                       "size_after_vs_before": round(new["bytes_mean"] / old["bytes_mean"] - 1, 3)}
    result = {
        "bench": "cpu_stages", "images": COUNT, "rounds": ROUNDS, "size": list(SIZE),
        "output": "RGBA PNG (transparent background), sRGB ICC profile carried",
        "unit": "ms per image, median over images x rounds; one thread on one core, so ms = core-ms",
        "stages": list(STAGES),
        "machine": {"processor": cpu_name(), "cpus": cores, "pinned_core": core,
                    "python": platform.python_version(), "opencv": cv2.__version__,
                    "load_average_start": [round(x, 2) for x in load_start],
                    "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        **runs,
    }
    save_result("cpu_stages", result)


if __name__ == "__main__":
    main()
