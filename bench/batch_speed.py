"""`make bench`: cutout batch against a plain per-image loop on twenty 1920×1080 JPEGs.

The baseline is what a straightforward script does (rembg's recipe): full decode,
Lanczos resize, fp32 NCHW batch 1, Lanczos upsample of the uint8 mask, composite,
Pillow PNG at its default level. Both use the same weights in the same run.
Results go to bench/results/batch_speed.json.
"""

import io
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from bench.machine import cpu_name
from cutout_cli.batch import BatchConfig, run_batch
from cutout_cli.inputs import gather
from cutout_cli.outputs import Output
from matting_core.model import get_model, torch_threads, usable_cores
from matting_core.options import Options
from matting_core.preprocess import normalize
from matting_core.weights import cutout_home, load_state_dict

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "tests" / "data").glob("*.jpg"))
COUNT, SIZE = 20, (1920, 1080)


def make_inputs(folder: Path, count: int = COUNT) -> list[Path]:
    paths = []
    for i in range(count):
        im = Image.open(PHOTOS[i % len(PHOTOS)]).convert("RGB")
        im = ImageOps.fit(im, SIZE, Image.BICUBIC)
        im = ImageOps.mirror(im) if i % 2 else im  # distinct files, same content statistics
        path = folder / f"photo-{i:02d}.jpg"
        im.save(path, quality=90)
        paths.append(path)
    return paths


def baseline(paths: list[Path], net: torch.nn.Module, spec) -> dict:
    stages: dict[str, list[float]] = {k: [] for k in ("decode", "preprocess", "infer", "upsample", "compose", "encode")}
    start = time.perf_counter()
    for path in paths:
        t = time.perf_counter()
        im = Image.open(path).convert("RGB")
        t = _tick(stages["decode"], t)
        x = torch.from_numpy(normalize(np.asarray(im), spec.input_size, spec.mean, spec.std)[None])
        t = _tick(stages["preprocess"], t)
        with torch.inference_mode():
            pred = net(x)[0, 0].numpy()
        pred = (pred - pred.min()) / (pred.max() - pred.min())
        t = _tick(stages["infer"], t)
        mask = Image.fromarray((pred * 255).astype("uint8"), "L").resize(im.size, Image.LANCZOS)
        t = _tick(stages["upsample"], t)
        cut = Image.composite(im.convert("RGBA"), Image.new("RGBA", im.size, 0), mask)
        t = _tick(stages["compose"], t)
        cut.save(io.BytesIO(), "PNG")
        _tick(stages["encode"], t)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_second": len(paths) / seconds,
            "stage_ms": {k: round(statistics.mean(v), 1) for k, v in stages.items()}}


def _tick(bucket: list[float], since: float) -> float:
    now = time.perf_counter()
    bucket.append((now - since) * 1000)
    return now


def ours(folder: Path, out: Path, model) -> dict:
    cfg = BatchConfig(batch_size=1, workers=usable_cores(), max_pixels=50_000_000)
    baseline_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads("cpu", usable_cores(), cfg.workers))
    start = time.perf_counter()
    items = run_batch(gather([str(folder)]), model, Options(), Output(out), cfg, progress=False)
    seconds = time.perf_counter() - start
    torch.set_num_threads(baseline_threads)
    assert all(i.status == "done" for i in items), [i.error for i in items if i.error]
    names = sorted({k for i in items for k in i.timings.ms})
    return {"seconds": seconds, "images_per_second": len(items) / seconds,
            "stage_ms": {k: round(statistics.mean(i.timings.ms.get(k, 0) for i in items), 1) for k in names},
            "batch_size": cfg.batch_size, "workers": cfg.workers, "precision": model.precision}


def main() -> None:
    model = get_model("u2netp", device="cpu").load()
    plain = model.spec.build()
    plain.load_state_dict(load_state_dict(model.spec, cutout_home()))
    plain.eval()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        paths = make_inputs(folder)
        warm = normalize(np.zeros((320, 320, 3), np.uint8), 320, model.spec.mean, model.spec.std)[None]
        model.predict(warm)
        with torch.inference_mode():
            plain(torch.from_numpy(warm))
        base = baseline(paths, plain, model.spec)
        fast = ours(folder, Path(tmp) / "out", model)
        fp32 = ours(folder, Path(tmp) / "out-fp32", get_model("u2netp", device="cpu", precision="fp32").load())
    result = {
        "bench": "batch_speed", "images": COUNT, "size": list(SIZE), "output": "RGBA PNG, default options",
        "machine": {"cpus": usable_cores(), "processor": cpu_name(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "baseline": base, "cutout_batch": fast, "cutout_batch_fp32": fp32,
        "speedup": round(fast["images_per_second"] / base["images_per_second"], 2),
        "speedup_fp32": round(fp32["images_per_second"] / base["images_per_second"], 2),
    }
    out = ROOT / "bench" / "results" / "batch_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
