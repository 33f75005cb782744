"""`make bench`: `cutout batch` against `rembg p`, whole processes, start-up included.

Twenty 1920×1080 JPEGs (bench/batch_speed.py's, from tests/data) into RGBA PNGs with each
model: `cutout batch IN -o OUT [--model u2netp]` against `rembg p -m u2net|u2netp IN OUT`.
Every run is a fresh process into an empty folder, the two tools alternated, three times
(--repeats); the median wall time gives images/s, and a 1-image run of each gives the
start-up. Peak RSS and CPU seconds are each process's own (wait4's rusage).

rembg lives in its own virtualenv under $CUTOUT_HOME/bench, installed once per machine, and
reads the same ONNX files through U2NET_HOME. It must not download: a preflight checks the
files against the md5 the installed rembg pins and fails on any download it would start,
and the timed runs see a dead proxy, so a mismatch is an error, never a hang. `-m u2net` is
always passed: rembg 2.0.86's own default is bria-rmbg, a remote model billed per image.
Writes bench/results/vs_rembg.json.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

from PIL import Image

from bench.batch_speed import SIZE, make_inputs
from bench.machine import cpu_name
from matting_core.weights import cutout_home

ROOT = Path(__file__).resolve().parent.parent
REMBG_SPEC = "rembg[cpu,cli]==2.0.86"  # pinned: its md5 pins and model lookup are checked below
MODELS = ("u2net", "u2netp")
RUN_TIMEOUT_S = 900
DEAD_PROXY = "http://127.0.0.1:9"  # connection refused at once: a download fails, never hangs

# Run in rembg's venv: each model's file as rembg resolves it, its md5 and the md5 rembg pins.
# pooch's HTTP downloader is replaced first, so a download rembg would start is an error.
PREFLIGHT = """
import hashlib, importlib.metadata as md, inspect, json, re, sys
import pooch.downloaders
def refuse(self, url, *args, **kwargs):
    raise SystemExit(f"rembg would download {url}")
pooch.downloaders.HTTPDownloader.__call__ = refuse
from rembg.sessions import sessions
found = {}
for name in sys.argv[1:]:
    cls = sessions[name]
    pin = re.search(r"md5:([0-9a-f]{32})", inspect.getsource(cls.download_models))
    path = cls.download_models()
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    found[name] = {"path": path, "md5": digest.hexdigest(), "pinned_md5": pin and pin.group(1)}
versions = {p: md.version(p) for p in ("rembg", "onnxruntime", "numpy", "pillow")}
print(json.dumps({"models": found, "versions": versions}))
"""


def rembg_python(home: Path) -> Path:
    """The rembg virtualenv's python, created and installed on the first run on this machine."""
    where = home / "bench" / "rembg-venv"
    stamp, python = where / "cutout-bench-spec", where / "bin" / "python"
    if stamp.exists() and stamp.read_text() == REMBG_SPEC and python.exists():
        return python
    print(f"installing {REMBG_SPEC} into {where} (once per machine; a few minutes)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", REMBG_SPEC], check=True)
    stamp.write_text(REMBG_SPEC)
    return python


def rembg_env(home: Path, python: Path) -> tuple[dict, dict]:
    """rembg's environment, its models linked in from $CUTOUT_HOME/weights and verified."""
    models = home / "bench" / "u2net-home"
    models.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        link, target = models / f"{name}.onnx", home / "weights" / f"{name}.onnx"
        if not target.exists():
            sys.exit(f"vs_rembg: {target} is missing; run `make weights` (cutout weights)")
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MODEL_CHECKSUM_DISABLED", "NO_PROXY", "no_proxy", "REMBG_HOME")}
    env.update(U2NET_HOME=str(models), HTTP_PROXY=DEAD_PROXY, HTTPS_PROXY=DEAD_PROXY,
               http_proxy=DEAD_PROXY, https_proxy=DEAD_PROXY)
    done = subprocess.run([str(python), "-c", PREFLIGHT, *MODELS], env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)
    if done.returncode != 0:
        sys.exit(f"vs_rembg: rembg's preflight failed:\n{done.stderr.strip()[-2000:]}")
    info = json.loads(done.stdout)
    for name, got in info["models"].items():
        ours = (home / "weights" / f"{name}.onnx").resolve()
        if got["md5"] != got["pinned_md5"] or Path(got["path"]).resolve() != ours:
            sys.exit(f"vs_rembg: rembg {info['versions']['rembg']} pins md5 {got['pinned_md5']} for "
                     f"{name} and would read {got['path']} (md5 {got['md5']}), not {ours}; "
                     "a different file would be timed, or downloaded. Check REMBG_SPEC and `cutout weights`.")
    return env, info


def run(cmd: list[str], env: dict, out: Path, expected: int) -> dict:
    """One whole process: wall and CPU seconds, its peak RSS, and the PNGs it wrote into `out`."""
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        code, usage = _wait4(proc, RUN_TIMEOUT_S)
        seconds = time.perf_counter() - start
        log.seek(0)
        tail = log.read()[-2000:].decode(errors="replace")
    pngs = sorted(out.rglob("*.png"))
    if code != 0 or len(pngs) != expected:  # rembg p prints a failed image's error and goes on
        raise RuntimeError(f"{' '.join(cmd)} exited {code} with {len(pngs)} of {expected} PNGs:\n{tail}")
    with Image.open(pngs[0]) as first:
        mode = first.mode
    return {"seconds": round(seconds, 3), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "outputs": len(pngs),
            "output_mb": round(sum(p.stat().st_size for p in pngs) / 2**20, 2), "mode": mode}


def _wait4(proc: subprocess.Popen, timeout: float):
    """The exit code and the child's own rusage (ru_maxrss: its peak RSS); polled, so a hang times out."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"{' '.join(proc.args)} still running after {timeout} s")
        time.sleep(0.005)


def measure(model: str, tools: dict, inputs: dict[str, list[Path]], repeats: int, tmp: Path) -> dict:
    """Each tool on one image (a warm-up, then the start-up) and on all of them, alternated."""
    runs: dict = {tool: {"one": [], "all": []} for tool in tools}
    for tool, (make_cmd, env) in tools.items():  # warm-up: first-run caches (numba, .pyc, pages)
        warm = tmp / f"{model}-{tool}-warm"
        run(make_cmd(inputs["one"][0].parent, warm), env, warm, expected=1)
        shutil.rmtree(warm)
    for r in range(repeats):
        for tool in (list(tools) if r % 2 == 0 else list(reversed(tools))):
            make_cmd, env = tools[tool]
            for kind in ("one", "all"):
                out = tmp / f"{model}-{tool}-{kind}-{r}"
                result = run(make_cmd(inputs[kind][0].parent, out), env, out, expected=len(inputs[kind]))
                if (out / "manifest.json").exists():  # cutout's: the model, device and precision it ran
                    result["model"] = json.loads((out / "manifest.json").read_text())["model"]
                runs[tool][kind].append(result)
                shutil.rmtree(out)
                print(f"  {model:7} {tool:7} {kind:3} #{r + 1}: {result['seconds']:.2f} s", flush=True)
    return {tool: _summary(kinds, len(inputs["all"])) for tool, kinds in runs.items()}


def _summary(kinds: dict, count: int) -> dict:
    batch, one = kinds["all"], kinds["one"]
    seconds = statistics.median(r["seconds"] for r in batch)
    last = batch[-1]
    return {"images_per_second": round(count / seconds, 3), "seconds_median": seconds,
            "seconds": [r["seconds"] for r in batch], "cpu_seconds": [r["cpu_seconds"] for r in batch],
            "startup_one_image_seconds": statistics.median(r["seconds"] for r in one),
            "one_image_seconds": [r["seconds"] for r in one],
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in batch),
            "peak_rss_mb_one_image": statistics.median(r["peak_rss_mb"] for r in one),
            "outputs": last["outputs"], "output_mb": last["output_mb"], "mode": last["mode"],
            **({"model": last["model"]} if "model" in last else {})}


GOALS = {"u2net": 1.5, "u2netp": 2.0}  # the targets: cutout's images/s over rembg's


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.vs_rembg", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each command (default 3)")
    parser.add_argument("--images", type=int, default=20, help="images per batch run (default 20)")
    args = parser.parse_args(argv)
    home = cutout_home()
    python = rembg_python(home)
    rembg_environ, preflight = rembg_env(home, python)
    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory(prefix="vs-rembg-") as tmp:
        (Path(tmp) / "all").mkdir()
        (Path(tmp) / "one").mkdir()
        inputs = {"all": make_inputs(Path(tmp) / "all", args.images)}
        inputs["one"] = [Path(shutil.copy(inputs["all"][0], Path(tmp) / "one"))]
        for model in MODELS:
            tools = _tools(model, home, python.with_name("rembg"), rembg_environ)
            results[model] = measure(model, tools, inputs, args.repeats, Path(tmp))
            speedup = results[model]["cutout"]["images_per_second"] / results[model]["rembg"]["images_per_second"]
            results[model].update(speedup=round(speedup, 2), goal=GOALS[model], met=speedup >= GOALS[model])
    report = {
        "bench": "vs_rembg", "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "images": args.images, "size": list(SIZE), "repeats": args.repeats,
        "output": "RGBA PNG, each tool's default options",
        "commands": {"cutout": "cutout batch IN -o OUT [--model u2netp]", "rembg": "rembg p -m u2net|u2netp IN OUT"},
        "machine": {"processor": cpu_name(), "cores": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "versions": {"cutout_torch": importlib.metadata.version("torch"), "rembg_spec": REMBG_SPEC,
                     **{f"rembg_{k}": v for k, v in preflight["versions"].items()}},
        "rembg_models": preflight["models"],
        "results": results,
    }
    out = ROOT / "bench" / "results" / "vs_rembg.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"-> {out.relative_to(ROOT)}")


def _tools(model: str, home: Path, rembg: Path, rembg_environ: dict) -> dict:
    """Each tool's command line for (input folder, output folder), and its environment."""
    here = Path(sys.executable).with_name("cutout")
    cutout = [str(here)] if here.exists() else [sys.executable, "-m", "cutout_cli"]
    flag = [] if model == "u2net" else ["--model", model]  # u2net is cutout's default: run it as is
    return {"cutout": (lambda src, out: [*cutout, "batch", str(src), "-o", str(out), *flag],
                       dict(os.environ, CUTOUT_HOME=str(home))),
            "rembg": (lambda src, out: [str(rembg), "p", "-m", model, str(src), str(out)], rembg_environ)}


def print_table(report: dict) -> None:
    machine = report["machine"]
    print(f"\n{report['images']} x {report['size'][0]}x{report['size'][1]} JPEG -> RGBA PNG, median of "
          f"{report['repeats']}, {machine['processor']} ({machine['cores']} cores)")
    print(f"{'':22}{'img/s':>7}{'wall s':>8}{'1-image s':>11}{'peak RSS MB':>13}{'1-image RSS':>13}{'PNG MB':>8}")
    for model, res in report["results"].items():
        for tool, label in (("cutout", "cutout batch"), ("rembg", "rembg p")):
            r = res[tool]
            print(f"{label + ' ' + model:22}{r['images_per_second']:7.2f}{r['seconds_median']:8.2f}"
                  f"{r['startup_one_image_seconds']:11.2f}{r['peak_rss_mb']:13.0f}"
                  f"{r['peak_rss_mb_one_image']:13.0f}{r['output_mb']:8.1f}")
        verdict = "met" if res["met"] else "not met"
        print(f"{'  cutout / rembg':22}{res['speedup']:6.2f}x  goal {res['goal']}x: {verdict}")


if __name__ == "__main__":
    main()
