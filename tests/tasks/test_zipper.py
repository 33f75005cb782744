"""The batch zip: a streamed, reproducible archive (its entries' names: tests/matting_core/test_manifest.py)."""

import io
import json
import os
import time
import tracemalloc
import zipfile

import pytest

from tasks.storage import KeyNotFound, LocalStorage, MiB
from tasks.zipper import MANIFEST, build_zip

MANIFEST_BODY = {"job": "j1", "summary": {"total": 3, "done": 3}, "files": [{"input": "café ☕.jpg"}]}
OBJECTS = {
    "jobs/j1/out/0.png": os.urandom(3000),
    "jobs/j1/out/1.webp": b"",
    "jobs/j1/out/2.jpg": os.urandom(70_000),
}
ENTRIES = [("jobs/j1/out/0.png", "zebra.png"), ("jobs/j1/out/1.webp", "café ☕.webp"), ("jobs/j1/out/2.jpg", "a.jpg")]


@pytest.fixture
def filled(storage):
    for key, data in OBJECTS.items():
        storage.put(key, data)
    return storage


def read_zip(storage, key: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(storage.get(key)))


def test_build_zip_stores_every_entry_in_order_then_the_manifest(filled):
    size = build_zip(filled, "jobs/j1/cutout.zip", ENTRIES, MANIFEST_BODY)
    assert size == len(filled.get("jobs/j1/cutout.zip"))
    with read_zip(filled, "jobs/j1/cutout.zip") as zf:
        assert zf.namelist() == [name for _, name in ENTRIES] + [MANIFEST]
        assert zf.testzip() is None
        for key, name in ENTRIES:
            assert zf.read(name) == OBJECTS[key]
        assert json.loads(zf.read(MANIFEST).decode("utf-8")) == MANIFEST_BODY


def test_build_zip_stores_entries_uncompressed_dated_1980(filled):
    build_zip(filled, "jobs/j1/cutout.zip", ENTRIES, MANIFEST_BODY)
    with read_zip(filled, "jobs/j1/cutout.zip") as zf:
        infos = zf.infolist()
    assert [info.compress_type for info in infos] == [zipfile.ZIP_STORED] * 4
    assert [info.date_time for info in infos] == [(1980, 1, 1, 0, 0, 0)] * 4


def test_build_zip_stamps_1980_in_the_local_headers_too(filled):
    build_zip(filled, "jobs/j1/cutout.zip", ENTRIES, MANIFEST_BODY)
    raw = filled.get("jobs/j1/cutout.zip")
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        offsets = [info.header_offset for info in zf.infolist()]
    dos_1980 = bytes([0, 0, 0x21, 0])  # time 00:00:00, date 1980-01-01
    assert [raw[at + 10 : at + 14] for at in offsets] == [dos_1980] * 4


def test_build_zip_twice_gives_identical_bytes_even_as_the_clock_moves(filled, monkeypatch):
    build_zip(filled, "first.zip", ENTRIES, MANIFEST_BODY)
    later = time.localtime(time.time() + 3 * 86400 + 7)
    monkeypatch.setattr(time, "localtime", lambda *_: later)
    build_zip(filled, "second.zip", ENTRIES, MANIFEST_BODY)
    assert filled.get("first.zip") == filled.get("second.zip")


def test_build_zip_with_no_entries_holds_only_the_manifest(storage):
    build_zip(storage, "z.zip", [], {"files": []})
    with read_zip(storage, "z.zip") as zf:
        assert zf.namelist() == [MANIFEST]


@pytest.mark.parametrize("missing_at", [0, 2])
def test_build_zip_with_a_missing_object_raises_and_stores_no_zip(filled, missing_at):
    entries = list(ENTRIES)
    entries.insert(missing_at, ("jobs/j1/out/9.png", "gone.png"))
    with pytest.raises(KeyNotFound):
        build_zip(filled, "jobs/j1/cutout.zip", entries, MANIFEST_BODY)
    assert not filled.exists("jobs/j1/cutout.zip")


def test_build_zip_missing_object_after_the_multipart_threshold_stores_no_zip(storage):
    storage.put("big", os.urandom(9 * MiB))
    with pytest.raises(KeyNotFound):
        build_zip(storage, "out.zip", [("big", "big.png"), ("gone", "gone.png")], {})
    assert not storage.exists("out.zip")


@pytest.mark.parametrize("names", [["a.png", "A.PNG"], ["a.png", "manifest.json"], ["MANIFEST.json"]])
def test_build_zip_refuses_duplicate_names_before_writing(filled, names):
    entries = [("jobs/j1/out/0.png", name) for name in names]
    with pytest.raises(ValueError, match="use unique_names"):
        build_zip(filled, "jobs/j1/cutout.zip", entries, MANIFEST_BODY)
    assert not filled.exists("jobs/j1/cutout.zip")


def test_build_zip_streams_with_flat_memory(tmp_path):
    storage = LocalStorage(tmp_path / "storage")
    count, each = 40, 2 * MiB
    block = os.urandom(each)
    entries = []
    for i in range(count):
        storage.put(f"jobs/j/out/{i}.png", i.to_bytes(4, "big") + block[4:])
        entries.append((f"jobs/j/out/{i}.png", f"{i}.png"))
    tracemalloc.start()
    try:
        size = build_zip(storage, "jobs/j/cutout.zip", entries, {"files": list(range(count))})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > count * each
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB while zipping {count * each // MiB} MiB"
    with zipfile.ZipFile(storage.root / "jobs" / "j" / "cutout.zip") as zf:
        assert zf.testzip() is None
        assert zf.read("39.png")[:4] == (39).to_bytes(4, "big")
