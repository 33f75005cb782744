"""`python -m bench.matting_quality`: what each postprocessing step does to the alpha.

Both models run once per image of bench/matting_data.py's generated set (a known alpha);
then every configuration below turns that alpha into the full-resolution one the service
would write (8-bit, as in the PNG) and is scored with bench/matting_metrics.py against the
truth. Prints a table; writes bench/results/matting.json with means overall and per kind of
foreground. Rows marked * are candidates the options cannot select: they measure why the
refine step works as it does.
"""

import json
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

import numpy as np
import torch

from bench.machine import cpu_name
from bench.matting_data import CATEGORIES, SIZE, Sample, dataset
from bench.matting_metrics import all_measures
from matting_core import decode, pipeline, postprocess, preprocess
from matting_core.model import get_model, usable_cores
from matting_core.options import RAW, Options

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("u2net", "u2netp")
MEASURES = ("sad", "mse", "grad", "conn", "iou")
LOWER_IS_BETTER = {"sad": True, "mse": True, "grad": True, "conn": True, "iou": False}

Step = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (model's small alpha, rgb) -> alpha


def _options(**on) -> Step:
    opts = replace(Options(), **{**RAW, **on})
    return lambda small, rgb: postprocess.postprocess(small, rgb, opts)


def _model_px(rgb: np.ndarray, n: float) -> int:
    """n model pixels in image pixels, as postprocess.default_refine_radius counts them."""
    return max(2, round(n * max(rgb.shape[:2]) / 320))


def _guided(model_px: float, then: dict | None = None) -> Step:
    """The guided filter over the whole frame (the refine step before 2026-12), radius in
    model pixels, followed by the option steps in `then`."""
    rest = replace(Options(), **{**RAW, **(then or {})})

    def step(small, rgb):
        alpha = postprocess.upsample(small, (rgb.shape[1], rgb.shape[0]))
        alpha = postprocess.guided_filter(alpha, rgb, _model_px(rgb, model_px))
        return postprocess.edge_steps(alpha, rest)
    return step


def _refine_at(model_px: float) -> Step:
    def step(small, rgb):
        alpha = postprocess.upsample(small, (rgb.shape[1], rgb.shape[0]))
        return postprocess.refine(alpha, rgb, radius=_model_px(rgb, model_px))
    return step


OLD_STEPS = {"alpha_threshold": 10, "erode_kernel": 1, "feather_edge": True, "feather_radius": 2}
CONFIGS: dict[str, Step] = {
    "raw (every step off)": _options(),
    "refine": _options(refine=True),
    "threshold 10": _options(alpha_threshold=10),
    "erode 1": _options(erode_kernel=1),
    "feather 2": _options(feather_edge=True, feather_radius=2),
    "old defaults (old refine, threshold 10, erode 1, feather 2)": _guided(2, OLD_STEPS),
    "defaults": lambda small, rgb: postprocess.postprocess(small, rgb, Options()),
    "* old refine: whole frame, 2 model px": _guided(2),
    "* guided filter, whole frame, 4 model px": _guided(4),
    "* refine, 2 model px": _refine_at(2),
    "* refine, 3 model px": _refine_at(3),
    "* refine, 5 model px": _refine_at(5),
    "refine + threshold 3": _options(refine=True, alpha_threshold=3),
    "refine + threshold 10": _options(refine=True, alpha_threshold=10),
    "refine + erode 1": _options(refine=True, erode_kernel=1),
    "refine + feather 1": _options(refine=True, feather_edge=True, feather_radius=1),
    "refine + feather 2": _options(refine=True, feather_edge=True, feather_radius=2),
}


def predict_all(samples: list[Sample], name: str) -> list[np.ndarray]:
    """The model's 320x320 alpha for each sample, as the CLI runs it: one model thread per
    core, each single-threaded."""
    model = get_model(name, device="cpu").load()
    torch.set_num_threads(1)

    def one(s: Sample) -> np.ndarray:
        return model.predict(preprocess.to_batch([pipeline.prepare(s.jpeg, f"{s.name}.jpg", model.spec)]))[0]
    with ThreadPoolExecutor(usable_cores()) as pool:
        return list(pool.map(one, samples))


def score(sample: Sample, rgb: np.ndarray, small: np.ndarray) -> dict[str, dict[str, float]]:
    """Every configuration's measures on one sample."""
    out = {}
    for label, step in CONFIGS.items():
        alpha = np.round(step(small, rgb) * 255) / 255  # what the 8-bit output holds
        out[label] = all_measures(alpha, sample.truth)
    return out


def summarise(samples: list[Sample], scores: list[dict]) -> dict:
    """config -> {"all": means, category: means}."""
    result = {}
    for label in CONFIGS:
        groups = {"all": scores, **{c: [x for s, x in zip(samples, scores, strict=True) if s.category == c]
                                    for c in CATEGORIES}}
        result[label] = {g: {m: float(np.mean([x[label][m] for x in xs])) for m in MEASURES}
                         for g, xs in groups.items() if xs}
    return result


def run_model(samples: list[Sample], rgbs: list[np.ndarray], name: str) -> dict:
    smalls = predict_all(samples, name)
    with ThreadPoolExecutor(usable_cores()) as pool:
        scores = list(pool.map(score, samples, rgbs, smalls))
    return summarise(samples, scores)


def no_worse(results: dict, label: str) -> dict[str, bool]:
    """Per model: is `label` at least as good as raw on every measure (overall means)?"""
    verdict = {}
    for model, table in results.items():
        raw, cfg = table["raw (every step off)"]["all"], table[label]["all"]
        verdict[model] = all((cfg[m] <= raw[m]) if LOWER_IS_BETTER[m] else (cfg[m] >= raw[m]) for m in MEASURES)
    return verdict


def table(results: dict) -> str:
    head = "| configuration | " + " | ".join(
        f"{m} SAD | {m} MSE×10³ | {m} Grad | {m} Conn | {m} IoU" for m in results) + " |"
    lines = [head, "| --- |" + " ---: |" * (5 * len(results))]
    for label in CONFIGS:
        cells = []
        for model in results:
            r = results[model][label]["all"]
            cells += [f"{r['sad']:.2f}", f"{r['mse'] * 1e3:.2f}", f"{r['grad']:.2f}", f"{r['conn']:.2f}",
                      f"{r['iou']:.4f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    start = time.perf_counter()
    samples = dataset()
    rgbs = [decode.decode_full(s.jpeg, f"{s.name}.jpg").rgb for s in samples]
    results = {name: run_model(samples, rgbs, name) for name in MODELS}
    report = {
        "bench": "matting_quality", "date": date.today().isoformat(), "images": len(samples),
        "size": list(SIZE), "categories": {c: sum(s.category == c for s in samples) for c in CATEGORIES},
        "measures": "whole image; SAD, Grad and Conn are sums /1000; MSE per pixel; IoU at alpha 0.5",
        "defaults": asdict(Options()), "defaults_no_worse_than_raw": no_worse(results, "defaults"),
        "machine": {"cores": usable_cores(), "processor": cpu_name(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "seconds": round(time.perf_counter() - start, 1), "results": results,
    }
    out = ROOT / "bench" / "results" / "matting.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(table(results))
    print(f"\ndefaults no worse than raw on every measure: {report['defaults_no_worse_than_raw']}")
    print(f"{len(samples)} images, {report['seconds']} s; {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
