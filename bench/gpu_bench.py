"""Every GPU measurement in one go (run by bench/gpu.sh on a GPU host): results in bench/results/gpu.json.

1. inference alone at 320×320, for each model: eager fp32, eager fp16 + channels_last (batch 64,
   256), compiled fp16 (batch 64, with its compile time); and fp16's agreement with fp32 on the
   test photos (mean |Δalpha| and IoU, the tolerance the service promises). A model whose
   weights were not carried (u2net's 176 MB exceed what travels to a leased GPU host) is timed
   with random weights, which cost the same, and its agreement is not measured;
2. JPEG draft decode of 1920×1080 photos to model size on all cores;
3. the CLI pipeline (`cutout batch` code, in process) on 1920×1080 JPEG -> RGBA PNG;
4. the cluster (`cutout serve`: Redis, gpu and cpu workers, gunicorn) through its API, with GPU
   memory and utilisation sampled by nvidia-smi while it runs.

`--quick` runs small counts on whatever device there is, to check the script itself.
"""

import argparse
import json
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.batch_speed import make_inputs
from bench.machine import cpu_name
from cutout_cli.batch import BatchConfig, run_batch
from cutout_cli.inputs import gather
from cutout_cli.outputs import Output
from matting_core import decode
from matting_core.model import MattingModel, get_model, usable_cores
from matting_core.options import Options
from matting_core.preprocess import normalize, to_batch
from matting_core.registry import DEFAULT_MODEL, get_spec, model_names
from matting_core.weights import cutout_home, state_path

ROOT = Path(__file__).resolve().parent.parent


def _weights(name: str) -> dict | None:
    """The real weights if they are here, else random ones (speed only), said in the result."""
    spec = get_spec(name)
    return None if state_path(spec, cutout_home()).exists() else spec.build().state_dict()


def inference(name: str, device: str, precision: str, batch: int, seconds: float, compile: bool = False) -> dict:
    state = _weights(name)
    model = MattingModel(get_spec(name), device=device, precision=precision, compile=compile, state_dict=state)
    x = np.random.default_rng(0).standard_normal((batch, 3, 320, 320), dtype=np.float32)
    started = time.perf_counter()
    model.predict(x)  # load (and compile)
    first = time.perf_counter() - started
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict(x)
        runs += 1
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return {"model": name, "weights": "random" if state else "published", "device": device,
            "precision": model.precision, "batch": batch, "compiled": compile,
            "first_call_s": round(first, 1), "images_per_second": round(runs * batch / elapsed, 1)}


def agreement(name: str, device: str, precision: str) -> dict:
    """16-bit vs fp32 on the four test photos: the service promises mean <= 2/255, IoU >= 0.98."""
    from tests.conftest import PHOTOS, rgb_of

    spec = get_spec(name)
    x = to_batch([normalize(rgb_of(p), spec.input_size, spec.mean, spec.std) for p in PHOTOS])
    ref = get_model(name, device=device, precision="fp32").predict(x)
    low = get_model(name, device=device, precision=precision).predict(x)
    both = [((a > 0.5) & (b > 0.5)).sum() / max(((a > 0.5) | (b > 0.5)).sum(), 1)
            for a, b in zip(low, ref, strict=True)]
    return {"model": name, "precision": precision, "photos": list(PHOTOS),
            "mean_abs_diff": [round(float(v), 5) for v in np.abs(low - ref).mean(axis=(1, 2))],
            "iou": [round(float(v), 4) for v in both]}


def _draft(path: str) -> int:
    data = Path(path).read_bytes()
    return decode.decode_for_model(data, path, min_side=320).shape[0]


def draft_decode(paths: list[Path], repeats: int) -> dict:
    work = [str(p) for p in paths] * repeats
    with ProcessPoolExecutor(usable_cores()) as pool:
        list(pool.map(_draft, work[: usable_cores()]))  # start the workers
        started = time.perf_counter()
        list(pool.map(_draft, work, chunksize=8))
    return {"images": len(work), "images_per_second": round(len(work) / (time.perf_counter() - started), 1)}


def cli_pipeline(name: str, folder: Path, device: str, out: Path) -> dict:
    model = MattingModel(get_spec(name), device=device, state_dict=_weights(name)).load()
    batch = 64 if model.device.type == "cuda" else 1
    cfg = BatchConfig(batch_size=batch, workers=usable_cores(), max_pixels=50_000_000)
    sources = gather([str(folder)])
    started = time.perf_counter()
    items = run_batch(sources, model, Options(), Output(out), cfg, progress=False)
    seconds = time.perf_counter() - started
    return {"model": name, "images": len(items), "batch_size": batch, "workers": cfg.workers,
            "precision": model.precision,
            "images_per_second": round(len(items) / seconds, 2),
            "failed": sum(i.status != "done" for i in items)}


class GpuSampler:
    """nvidia-smi every half second: memory used and utilisation, max and mean."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5)
                util, mem = (float(v) for v in out.stdout.splitlines()[0].split(","))
                self.samples.append((util, mem))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return  # no nvidia-smi: nothing to sample

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join(5)

    def summary(self) -> dict:
        if not self.samples:
            return {}
        util = [u for u, _ in self.samples]
        return {"gpu_util_mean_pct": round(sum(util) / len(util), 1), "gpu_util_max_pct": max(util),
                "gpu_memory_max_mib": max(m for _, m in self.samples)}


def cluster(files: list[tuple[str, bytes]], count: int, home: Path, device: str) -> dict:
    from bench.cluster_speed import follow, job_stats, submit
    from bench.served import Served

    # The service needs real weights: the default model's if they travelled, else u2netp's.
    model = DEFAULT_MODEL if _weights(DEFAULT_MODEL) is None else "u2netp"
    served = Served(home, {"CUTOUT_DEVICE": device, "CUTOUT_LOG_FORMAT": "json", "CUTOUT_DEFAULT_MODEL": model,
                           "CUTOUT_MODELS": model}).wait_ready(600)
    try:
        key = served.demo()["api_key"]
        warm, _ = submit(served, key, files[:8])
        follow(served, key, warm, 8, "warm-up")
        batch = [(f"{i:05d}-{files[i % len(files)][0]}", files[i % len(files)][1]) for i in range(count)]
        with GpuSampler() as gpu:
            job, started = submit(served, key, batch)
            seen = follow(served, key, job, count, "cluster")
        seconds = max(seen.values()) - started
        return {"model": model, "images": count, "images_per_second": round(count / seconds, 1), **gpu.summary(),
                **job_stats(served, key, job, started, seen)}
    finally:
        served.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small counts on any device (checks the script)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    seconds, count = (2, 8) if args.quick else (15, 1000)
    result = {"bench": "gpu", "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
              "machine": {"gpu": torch.cuda.get_device_name(0) if cuda else None, "cpus": usable_cores(),
                          "processor": cpu_name(), "torch": torch.__version__}}
    runs = [("eager_fp32_b64", "fp32", 64, False), ("eager_fp16_b64", "fp16", 64, False),
            ("eager_fp16_b256", "fp16", 256, False), ("compiled_fp16_b64", "fp16", 64, True)]
    if not cuda:  # the CPU has neither fp16 kernels worth timing nor minutes to spare
        runs = [("eager_fp32_b4", "fp32", 4, False)]
    models = model_names()
    result["inference"] = {f"{model}_{name}": inference(model, device, precision, batch, seconds, compile)
                           for model in models for name, precision, batch, compile in runs}
    if cuda:
        result["agreement"] = [agreement(m, device, "fp16") for m in models if _weights(m) is None]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        paths = make_inputs(folder, 20 if args.quick else 200)
        result["draft_decode"] = draft_decode(paths, 2 if args.quick else 50)
        result["cli"] = [cli_pipeline(m, folder, device, Path(tmp) / f"cli-out-{m}") for m in models]
        files = [(p.name, p.read_bytes()) for p in paths]
        result["cluster"] = cluster(files, count, Path(tmp) / "home", device)
    out = ROOT / "bench" / "results" / ("gpu-quick.json" if args.quick else "gpu.json")
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
