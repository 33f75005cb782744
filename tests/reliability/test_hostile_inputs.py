"""One batch of hostile and odd uploads through the real API and real workers.

Every good-but-odd image must come back as an RGBA PNG of the right (upright) size; every bad
file must fail alone with an error that names it and says what is wrong; the job must still
finish, its zip must be safe to unpack anywhere, and no worker process may die on the way.
"""

import io
import json
import re
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from tests.matting_core.images import png
from tests.web.test_api import error_of, small_jpeg, wait_done, zip_of
from web.uploads import label

SIZE = (96, 64)
LONG_NAME = "長" * 148 + "x" * 148 + ".jpg"  # 300 characters, 744 bytes of UTF-8
CONTROL_NAME = "bell\x07esc\x1b[31mred\x7f.jpg"  # newlines and quotes cannot survive a multipart header


def encoded(im: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def photo(mode: str = "RGB") -> Image.Image:
    return Image.open(io.BytesIO(small_jpeg("chelsea", SIZE))).convert(mode)


def half_transparent(mode: str) -> Image.Image:
    """`mode` ("P" or "LA") with its left half fully transparent."""
    if mode == "P":
        im = photo().quantize(255)
        im.putpalette(im.getpalette() + [0, 255, 0])  # a 256th colour, index 255, used only where transparent
        im.paste(255, (0, 0, SIZE[0] // 2, SIZE[1]))
        im.info["transparency"] = 255
        return im
    im = photo("LA")
    alpha = Image.new("L", SIZE, 255)
    alpha.paste(0, (0, 0, SIZE[0] // 2, SIZE[1]))
    im.putalpha(alpha)
    return im


def animated_gif() -> bytes:
    frames = [photo().quantize(64), Image.new("P", SIZE, 3)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": stored 96×64, shown 64×96
    return encoded(photo(), "JPEG", exif=exif.tobytes())


def sixteen_bit_png() -> bytes:
    ramp = np.linspace(0, 65535, SIZE[0] * SIZE[1]).astype(np.uint16).reshape(SIZE[1], SIZE[0])
    im = Image.fromarray(ramp)
    assert im.mode == "I;16"
    return encoded(im, "PNG")


def bad_crc_png() -> bytes:
    data = bytearray(encoded(photo(), "PNG"))
    end = data.index(b"IEND") - 4  # the 4 CRC bytes of the chunk before IEND (the last IDAT)
    data[end - 4:end] = bytes(b ^ 0xFF for b in data[end - 4:end])
    return bytes(data)


def png_bomb() -> bytes:
    """20,000×20,000 1-bit grey: 400 MP in ~50 kB; decoding it would take ~400 MB."""
    rows = bytes(1 + 20_000 // 8) * 20_000  # filter byte + 2500 zero bytes per row
    return png(20_000, 20_000, zlib.compress(rows, 9))


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def odd_but_good() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """name -> (bytes, expected output size)."""
    jpeg = small_jpeg("coffee", SIZE)
    good = {
        "one-pixel.png": (encoded(Image.new("RGB", (1, 1), (200, 30, 60)), "PNG"), (1, 1)),
        "sixteen-bit.png": (sixteen_bit_png(), SIZE),
        "cmyk.jpg": (encoded(photo("CMYK"), "JPEG"), SIZE),
        "grey.png": (encoded(photo("L"), "PNG"), SIZE),
        "palette-transparent.png": (encoded(half_transparent("P"), "PNG"), SIZE),
        "la.png": (encoded(half_transparent("LA"), "PNG"), SIZE),
        "animated.gif": (animated_gif(), SIZE),
        "rotated.jpg": (rotated_jpeg(), SIZE[::-1]),
        "icc.jpg": (encoded(photo(), "JPEG", icc_profile=SRGB), SIZE),
        "photo.webp": (encoded(photo(), "WEBP"), SIZE),
        "café 東京.jpg": (jpeg, SIZE),
        LONG_NAME: (jpeg, SIZE),
        "../../etc/passwd.jpg": (jpeg, SIZE),
        CONTROL_NAME: (jpeg, SIZE),
    }
    try:
        import pillow_heif
    except ImportError:
        return good
    pillow_heif.register_heif_opener()
    return good | {"photo.heic": (encoded(photo(), "HEIF"), SIZE)}


BAD = {  # name -> (bytes, what the error must say besides the name)
    "empty.jpg": (b"", "empty (0 bytes)"),
    "truncated.jpg": (small_jpeg()[:1500], "damaged or truncated"),
    "bad-crc.png": (bad_crc_png(), "CRC does not match"),
    "notes.jpg": (b"shopping list: milk, eggs, flour\n", "not a supported image (looks like text)"),
    "page.jpg": (b"<!DOCTYPE html><html><body>hi</body></html>", "not a supported image (looks like HTML)"),
    "drawing.jpg": (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "(looks like SVG)"),
    "scan.jpg": (b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF", "not a supported image (looks like a PDF)"),
    "bomb.png": (png_bomb(), "400.0 MP is over the 50.0 MP limit"),
}
ARCHIVE_BAD = {  # zip entry -> what the error says
    "../../etc/passwd.jpg": "unsafe path inside the archive",
    "/abs/root.jpg": "unsafe path inside the archive",
    "shots/../../../escape.jpg": "unsafe path inside the archive",
    "inner.zip": "archives inside archives are not unpacked",
}


def pool_children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def upload(client, headers, good: dict) -> dict:
    named = [(name, data) for name, (data, _) in good.items()]
    named += [("dup.jpg", small_jpeg("coffee", SIZE)), ("dup.jpg", small_jpeg("rocket", SIZE))]
    named += [(name, data) for name, (data, _) in BAD.items()]
    archive = zip_of({"ok/inside.jpg": small_jpeg("astronaut", SIZE), "inner.zip": b"PK\x05\x06" + bytes(18)}
                     | {entry: small_jpeg() for entry in ARCHIVE_BAD if entry != "inner.zip"})
    form = {"images": [(io.BytesIO(data), name) for name, data in named],
            "archive": (io.BytesIO(archive), "batch.zip")}
    r = client.post("/api/v1/jobs", data=form, headers=headers, content_type="multipart/form-data")
    assert r.status_code == 202, r.get_data(as_text=True)
    assert r.get_json()["total"] == len(named) + 1 + len(ARCHIVE_BAD)
    return r.get_json()


def test_a_hostile_batch_fails_only_its_bad_files_and_every_worker_survives(client, users, workers, web_env):
    headers = users["alice"]["headers"]
    good = odd_but_good()
    children = pool_children(workers["cpu"].proc.pid)
    assert len(children) == 2  # the prefork pool's -c 2

    job = upload(client, headers, good)["job_id"]
    status = wait_done(client, headers, job, timeout=240)
    items = {item["name"]: item for item in status["items"]}

    for name, (_, size) in good.items():
        assert_cutout(client, headers, items[label(name)], size)
    for name in ("dup.jpg", "batch.zip!ok/inside.jpg"):
        assert [it["state"] for it in status["items"] if it["name"] == name] in (["done"], ["done", "done"])
    for name, (_, reason) in BAD.items():
        assert items[name]["state"] == "failed", name
        assert name in items[name]["error"] and reason in items[name]["error"], items[name]["error"]
    for entry, reason in ARCHIVE_BAD.items():
        item = items[f"batch.zip!{entry}"]
        assert item["state"] == "failed" and f"batch.zip!{entry}" in item["error"] and reason in item["error"]

    failed = len(BAD) + len(ARCHIVE_BAD)
    assert (status["status"], status["done"], status["failed"]) == ("done", status["total"] - failed, failed)
    assert_safe_zip(client, headers, status)
    assert workers["gpu"].proc.poll() is None and workers["cpu"].proc.poll() is None
    assert pool_children(workers["cpu"].proc.pid) == children  # no pool child died and was replaced
    home = Path(web_env["CUTOUT_HOME"])  # "../../etc/passwd" from anywhere under it lands in it or just above
    assert [p for p in home.rglob("*") if "passwd" in str(p)] == [] and list(home.parent.glob("etc")) == []


def assert_cutout(client, headers, item: dict, size: tuple[int, int]) -> None:
    assert item["state"] == "done", (item["name"], item["error"])
    out = Image.open(io.BytesIO(client.get(item["output_url"], headers=headers).data))
    assert (out.format, out.mode, out.size) == ("PNG", "RGBA", size), item["name"]
    if item["name"] in ("palette-transparent.png", "la.png"):
        # The source's transparent half stays transparent whatever the model thought of it.
        assert out.getchannel("A").crop((0, 0, SIZE[0] // 2, SIZE[1])).getextrema() == (0, 0), item["name"]
    if item["name"] == "icc.jpg":
        assert out.info.get("icc_profile") == SRGB


def assert_safe_zip(client, headers, status: dict) -> None:
    download = client.get(status["download_url"], headers=headers)
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(download.data)) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
        outputs = {f["output"]: f["input"] for f in manifest["files"] if f["status"] == "done"}
        done = {it["name"] for it in status["items"] if it["state"] == "done"}
        assert sorted(names) == sorted([*outputs, "manifest.json"])
        assert len(outputs) == status["done"] and set(outputs.values()) == done
        assert len({n.casefold() for n in names}) == len(names)
        for name in names:
            assert "/" not in name and "\\" not in name and ".." not in name, name
            assert not re.search(r"[\x00-\x1f\x7f]", name) and len(name.encode()) <= 150
        assert {"café 東京.png", "dup.png", "dup-2.png", "passwd.png", "inside.png"} <= set(names)
        by_input = {v: k for k, v in outputs.items()}
        for item in status["items"]:
            if item["state"] == "done" and item["name"] != "dup.jpg":
                assert zf.read(by_input[item["name"]]) == client.get(item["output_url"], headers=headers).data


@pytest.mark.parametrize(("name", "fmt"), [("x" * 296 + ".jpg", "png"), ("y" * 146 + ".tif", "webp")],
                         ids=["300 characters", "extension grows"])
def test_a_long_name_becomes_a_zip_entry_of_at_most_150_bytes(client, users, workers, name, fmt):
    headers = users["alice"]["headers"]
    form = {"images": (io.BytesIO(small_jpeg("coffee", SIZE)), name), "format": fmt}
    job = client.post("/api/v1/jobs", data=form, headers=headers).get_json()["job_id"]
    status = wait_done(client, headers, job)
    with zipfile.ZipFile(io.BytesIO(client.get(status["download_url"], headers=headers).data)) as zf:
        [entry] = [n for n in zf.namelist() if n != "manifest.json"]
    assert entry.endswith(f".{fmt}") and len(entry.encode()) <= 150, len(entry.encode())


def test_a_backslash_dotdot_zip_entry_fails_alone_instead_of_vanishing(client, users):
    archive = zip_of({"..\\..\\windows.jpg": small_jpeg(), "ok.jpg": small_jpeg()})
    headers = users["alice"]["headers"]
    r = client.post("/api/v1/jobs", data={"archive": (io.BytesIO(archive), "win.zip")}, headers=headers)
    items = {it["name"]: it for it in client.get(r.get_json()["status_url"], headers=headers).get_json()["items"]}
    assert r.get_json()["total"] == 2, list(items)
    assert "unsafe path inside the archive" in items["win.zip!..\\..\\windows.jpg"]["error"]


def claimed_size_zip(claimed: int) -> bytes:
    """A zip whose one member claims `claimed` bytes once inflated, in a few hundred bytes on the wire."""
    data = bytearray(zip_of({"huge.png": b"\x89PNG" + bytes(1000)}))
    central = data.rindex(b"PK\x01\x02")
    data[central + 24:central + 28] = claimed.to_bytes(4, "little")  # uncompressed size in the central directory
    return bytes(data)


def deflate_bomb(members: int, each: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for n in range(members):
            with zf.open(f"zeros-{n}.png", "w") as member:
                for _ in range(each // 2**20):
                    member.write(bytes(2**20))
    return out.getvalue()


@pytest.mark.parametrize(("make", "cap"), [
    (lambda: deflate_bomb(members=8, each=32 * 2**20), 128 * 2**20),  # 256 MB of zeros in ~250 kB
    (lambda: claimed_size_zip(0xF000_0000), None),  # a header claiming 3.75 GB against the default 2 GB cap
], ids=["deflate bomb", "lying header"])
def test_a_zip_bomb_is_413_at_once_and_creates_no_job(app, client, users, make, cap):
    if cap:
        app.config["MAX_ARCHIVE_BYTES"] = cap
    bomb = make()
    assert len(bomb) < 1_000_000
    headers = users["alice"]["headers"]
    started = time.monotonic()
    form = {"archive": (io.BytesIO(bomb), "bomb.zip"), "images": (io.BytesIO(small_jpeg()), "ok.jpg")}
    r = client.post("/api/v1/jobs", data=form, headers=headers)
    assert r.status_code == 413 and "bomb.zip inflates to" in error_of(r)["message"]
    assert time.monotonic() - started < 2  # refused from the directory, nothing inflated
    assert client.get("/api/v1/jobs", headers=headers).get_json()["jobs"] == []
