"""The batch zip: safe entry names, unique names, and a streamed, reproducible archive."""

import io
import json
import os
import time
import tracemalloc
import unicodedata
import zipfile

import pytest

from tasks.storage import KeyNotFound, LocalStorage, MiB
from tasks.zipper import MANIFEST, MAX_NAME_BYTES, build_zip, safe_name, unique_names

MANIFEST_BODY = {"job": "j1", "summary": {"total": 3, "done": 3}, "files": [{"input": "café ☕.jpg"}]}


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("photo.jpg", "photo.jpg"),
        ("../../etc/passwd.jpg", "passwd.jpg"),
        ("/etc/shadow.png", "shadow.png"),
        ("C:\\x\\y.png", "y.png"),
        ("C:y.png", "y.png"),
        ("\\\\server\\share\\z.png", "z.png"),
        ("dir/", "image"),
        ("a\x00b\nc\x7f.png", "a_b_c_.png"),
        ('ab:c*d?e"f<g>h|i.png', "ab_c_d_e_f_g_h_i.png"),
        ("invoice\u202egnp.exe", "invoice_gnp.exe"),
        ("x\u200by\u2028.png", "x_y_.png"),
        (".bashrc", "bashrc"),
        ("..hidden.png", "hidden.png"),
        (". . x.png", "x.png"),
        ("photo.png...", "photo.png"),
        ("photo.png  ", "photo.png"),
        ("photo. . .", "photo"),
        ("", "image"),
        ("...", "image"),
        ("  ", "image"),
        ("../..", "image"),
        ("CON.png", "_CON.png"),
        ("con.tar.gz", "_con.tar.gz"),
        ("Nul", "_Nul"),
        ("LPT9.jpg", "_LPT9.jpg"),
        ("COM1.webp", "_COM1.webp"),
        ("CONSOLE.png", "CONSOLE.png"),
        ("icon.png", "icon.png"),
    ],
)
def test_safe_name_keeps_only_a_plain_visible_file_name(name, safe):
    assert safe_name(name) == safe


def test_safe_name_joins_decomposed_accents():
    nfd, nfc = "cafe\u0301.png", "caf\u00e9.png"
    assert safe_name(nfd) == safe_name(nfc) == nfc
    assert unicodedata.is_normalized("NFC", safe_name("Ame\u0301lie\u0300.jpg"))


@pytest.mark.parametrize(("char", "kept"), [("a", 146), ("é", 73), ("日", 48), ("😀", 36)])
def test_safe_name_shortens_long_names_on_a_character_boundary_keeping_the_extension(char, kept):
    safe = safe_name(char * 300 + ".png")
    assert len(safe.encode()) <= MAX_NAME_BYTES
    assert safe == char * kept + ".png"


def test_safe_name_treats_a_very_long_extension_as_part_of_the_name():
    safe = safe_name("notes.this-is-not-an-extension-at-all" + "x" * 200)
    assert len(safe.encode()) == MAX_NAME_BYTES
    assert safe.startswith("notes.this-is-not")


def test_safe_name_never_ends_with_a_dot_after_shortening():
    # 149 letters, a dot, then an "extension" too long to keep: the cut lands right after the dot.
    safe = safe_name("a" * 149 + "." + "b" * 20)
    assert len(safe.encode()) <= MAX_NAME_BYTES
    assert not safe.endswith((".", " "))


def test_unique_names_suffixes_case_insensitive_duplicates_in_order():
    names = ["a.png", "A.PNG", "b.png", "a.png", "a.PNG"]
    assert unique_names(names) == ["a.png", "A-2.PNG", "b.png", "a-3.png", "a-4.PNG"]


def test_unique_names_skips_suffixes_already_taken():
    assert unique_names(["a-2.png", "a.png", "a.png"]) == ["a-2.png", "a.png", "a-3.png"]


@pytest.mark.parametrize("name", ["manifest.json", "Manifest.JSON"])
def test_unique_names_never_produces_the_manifest_name(name):
    unique = unique_names([name, name])
    assert all(n.casefold() != MANIFEST for n in unique)
    assert len({n.casefold() for n in unique}) == 2


def test_unique_names_keeps_thousands_of_equal_names_unique_and_short():
    long = "x" * 146 + ".png"
    unique = unique_names(["photo.jpg"] * 3000 + [long] * 3000)
    assert len({n.casefold() for n in unique}) == 6000
    assert unique[:3] == ["photo.jpg", "photo-2.jpg", "photo-3.jpg"] and unique[2999] == "photo-3000.jpg"
    assert all(len(n.encode()) <= MAX_NAME_BYTES and n.endswith(".png") for n in unique[3000:])


def test_unique_names_is_linear_in_equal_names():
    started = time.perf_counter()
    unique_names(["photo.jpg"] * 20_000)
    assert time.perf_counter() - started < 1.0  # quadratic probing would take minutes


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
