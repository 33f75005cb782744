"""`make bench`: the batch zip, zipstream-ng (tasks/zipper.py's build_zip) against stream-zip.

Issue 14 asked whether stream-zip, which takes each member's `modified_at`, should replace
zipstream-ng plus the re-stamping of its headers. The zip's members are STORED (PNG/JPEG/WebP
are already compressed) and their size and CRC are unknown until read; stream-zip writes a
STORED member only with its size and CRC in the local header, so it either buffers the whole
member (NO_COMPRESSION_64) or needs them up front (NO_COMPRESSION_64(size, crc): a first read
of every object for the CRC). Its streamed alternative is deflate; level 0 (stored blocks
inside deflate) is measured as the cheapest of those.

A LocalStorage in a temporary folder holds MEMBERS small objects and a few LARGE ones of
random bytes (incompressible, like the outputs); each variant zips them ROUNDS times in a
fresh process (so peak RSS is its own), reporting the median wall time, throughput, the peak
of Python allocations (tracemalloc, one more run) and the peak RSS above the process's start.
Every zip is opened and CRC-checked. Results go to bench/results/zip.json. stream-zip is not a
dependency of cutout (this comparison is why): `pip install stream-zip==0.0.84` to run its variants.
"""

import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
import zipfile
import zlib
from datetime import datetime
from pathlib import Path

from bench.machine import cpu_name, save_result
from tasks.storage import LocalStorage, MiB

MEMBERS, MEMBER_BYTES = 1000, 256 * 1024  # a 1,000-image batch of ~1080p cut-outs
LARGE, LARGE_BYTES = 3, 64 * MiB  # a few very large outputs (50 MP PNGs)
ROUNDS = 5
_CHUNK = 1 * MiB
_1980 = datetime(1980, 1, 1)


def _chunks(storage, key):
    with storage.open(key) as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _manifest(manifest):
    return json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")


def zipstream_ng(storage, zip_key, entries, manifest):
    from tasks.zipper import build_zip

    return build_zip(storage, zip_key, entries, manifest)


def _stream_zip(storage, zip_key, members):
    from stream_zip import stream_zip

    return storage.put_stream(zip_key, stream_zip(members, chunk_size=_CHUNK, extended_timestamps=False))


def stream_zip_buffered(storage, zip_key, entries, manifest):
    """NO_COMPRESSION_64: stream-zip reads each member whole before writing its header."""
    from stream_zip import NO_COMPRESSION_64

    members = ((name, _1980, 0o600, NO_COMPRESSION_64, _chunks(storage, key)) for key, name in entries)
    tail = [("manifest.json", _1980, 0o600, NO_COMPRESSION_64, (_manifest(manifest),))]
    return _stream_zip(storage, zip_key, [*members, *tail])


def _size_and_crc(storage, key):
    size, crc = 0, 0
    for chunk in _chunks(storage, key):
        size, crc = size + len(chunk), zlib.crc32(chunk, crc)
    return size, crc


def stream_zip_crc_first(storage, zip_key, entries, manifest):
    """NO_COMPRESSION_64(size, crc): every object read twice, once for its CRC, once into the zip."""
    from stream_zip import NO_COMPRESSION_64

    def members():
        for key, name in entries:
            yield name, _1980, 0o600, NO_COMPRESSION_64(*_size_and_crc(storage, key)), _chunks(storage, key)
        yield "manifest.json", _1980, 0o600, NO_COMPRESSION_64, (_manifest(manifest),)

    return _stream_zip(storage, zip_key, members())


def stream_zip_deflate0(storage, zip_key, entries, manifest):
    """ZIP_64 with zlib level 0: streamed, one read, members DEFLATED (stored blocks) instead of STORED."""
    from stream_zip import ZIP_64, stream_zip

    level0 = lambda: zlib.compressobj(0, zlib.DEFLATED, -zlib.MAX_WBITS)  # noqa: E731
    members = [(name, _1980, 0o600, ZIP_64, _chunks(storage, key)) for key, name in entries]
    members.append(("manifest.json", _1980, 0o600, ZIP_64, (_manifest(manifest),)))
    chunks = stream_zip(members, chunk_size=_CHUNK, get_compressobj=level0, extended_timestamps=False)
    return storage.put_stream(zip_key, chunks)


VARIANTS = {f.__name__: f for f in (zipstream_ng, stream_zip_buffered, stream_zip_crc_first, stream_zip_deflate0)}


def fill(storage) -> list[tuple[str, str]]:
    block = os.urandom(LARGE_BYTES + 1024)
    entries = []
    for i in range(MEMBERS + LARGE):
        size = LARGE_BYTES if i >= MEMBERS else MEMBER_BYTES
        key = f"jobs/j/out/{i}.png"
        storage.put(key, i.to_bytes(4, "big") + block[4 + i % 1024 : size + i % 1024])
        entries.append((key, f"{i}.png"))
    return entries


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _status_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process. Not ru_maxrss: Linux keeps that across the exec
    of a spawned child, so it reports the parent's size at fork."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(variant: str, root: str, entries, traced: bool, out) -> None:
    storage, build = LocalStorage(Path(root)), VARIANTS[variant]
    start_rss = _status_kib("VmRSS")
    if traced:
        tracemalloc.start()
    began, began_cpu = time.perf_counter(), _cpu_s()
    size = build(storage, f"zips/{variant}.zip", entries, {"files": [name for _, name in entries]})
    seconds, cpu = time.perf_counter() - began, _cpu_s() - began_cpu
    peak = tracemalloc.get_traced_memory()[1] if traced else None
    out.put({"seconds": seconds, "cpu_seconds": cpu, "size": size, "traced_peak": peak,
             "rss_peak_above_start": (_status_kib("VmHWM") - start_rss) * 1024})


def measure(variant: str, root: Path, entries, traced: bool = False) -> dict:
    ctx = multiprocessing.get_context("spawn")  # a fresh process: its peak RSS is this run's alone
    out = ctx.Queue()
    proc = ctx.Process(target=_run, args=(variant, str(root), entries, traced, out))
    proc.start()
    result = out.get()
    proc.join()
    with zipfile.ZipFile(root / "zips" / f"{variant}.zip") as zf:
        assert zf.testzip() is None and len(zf.namelist()) == len(entries) + 1, variant
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in zf.infolist()), variant
    (root / "zips" / f"{variant}.zip").unlink()
    return result


def main() -> None:
    try:
        import stream_zip  # noqa: F401
    except ImportError:
        print("stream-zip is not installed (pip install stream-zip==0.0.84): measuring zipstream-ng alone")
        for name in [v for v in VARIANTS if v.startswith("stream_zip")]:
            del VARIANTS[name]
    chosen = sys.argv[1:] or list(VARIANTS)
    with tempfile.TemporaryDirectory(prefix="zip-speed-") as tmp:
        root = Path(tmp)
        entries = fill(LocalStorage(root))
        total = MEMBERS * MEMBER_BYTES + LARGE * LARGE_BYTES
        runs = {v: [] for v in chosen}
        for _ in range(ROUNDS):  # interleaved, so a busy moment on a shared machine hits every variant
            for v in chosen:
                runs[v].append(measure(v, root, entries))
        results = {}
        for v in chosen:
            seconds = statistics.median(r["seconds"] for r in runs[v])
            cpu = statistics.median(r["cpu_seconds"] for r in runs[v])
            traced = measure(v, root, entries, traced=True)
            results[v] = {
                "seconds_median": round(seconds, 3), "seconds_all": [round(r["seconds"], 3) for r in runs[v]],
                "input_mib_per_s": round(total / MiB / seconds, 1),
                "cpu_seconds_median": round(cpu, 3),
                "zip_bytes": runs[v][0]["size"],
                "python_peak_mib": round(traced["traced_peak"] / MiB, 2),
                "rss_peak_above_start_mib": round(max(r["rss_peak_above_start"] for r in runs[v]) / MiB, 1),
            }
    result = {
        "what": f"{MEMBERS} members of {MEMBER_BYTES // 1024} KiB and {LARGE} of {LARGE_BYTES // MiB} MiB, random "
                "bytes, LocalStorage in a temp folder, STORED (or deflate level 0), median of "
                f"{ROUNDS} interleaved rounds, each in a fresh process; wall and CPU time (the machine is shared)",
        "machine": {"processor": cpu_name(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d"),
        "versions": {p: _version(p) for p in ("zipstream-ng", "stream-zip")},
        "input_mib": round(total / MiB, 1),
        "variants": results,
    }
    save_result("zip", result)


if __name__ == "__main__":
    main()
