"""The WebUI's /api/batch-process and remove.bg's /v1.0/removebg on the real stack: Redis, workers, the model.

Tests that need a finished cutout take the `workers` fixture; the rest are refused before
anything is enqueued and run without them.
"""

import base64
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DATA
from tests.web.conftest import make_app
from tests.web.loopback import LoopbackServer, body
from web.extensions import limiter

NOT_AN_IMAGE = b"shopping list: milk, eggs"


def photo(name: str) -> bytes:
    return (DATA / f"{name}.jpg").read_bytes()


def size_of(name: str) -> tuple[int, int]:
    with Image.open(DATA / f"{name}.jpg") as im:
        return im.size


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def share_of_colour(im: Image.Image, rgb: tuple[int, int, int], tolerance: int = 6) -> float:
    """The fraction of pixels within `tolerance` of `rgb` on every channel."""
    pixels = np.asarray(im.convert("RGB")).astype(int)
    return float((np.abs(pixels - rgb) <= tolerance).all(axis=-1).mean())


@pytest.fixture
def alice(users) -> dict:
    return users["alice"]["headers"]


def removebg(client, headers: dict, **fields):
    files = {k: (io.BytesIO(v), f"{k}.jpg") if isinstance(v, bytes) else v for k, v in fields.items()}
    return client.post("/v1.0/removebg", data=files, headers=headers, content_type="multipart/form-data")


def removebg_error(response) -> dict:
    """The one error of a remove.bg-shaped error body."""
    [error] = response.get_json()["errors"]
    assert set(error) == {"title", "code", "detail"}
    return error


# --- /api/batch-process ----------------------------------------------------------------------------


def batch(client, headers: dict, files: list[tuple[str, bytes]], **fields):
    data = {"images": [(io.BytesIO(b), name) for name, b in files], **fields}
    return client.post("/api/batch-process", data=data, headers=headers, content_type="multipart/form-data")


def zip_members(client, headers: dict, url: str) -> dict[str, bytes]:
    response = client.get(url, headers=headers)
    assert response.status_code == 200
    assert response.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.get_data())) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_batch_process_returns_a_zip_of_the_outputs_in_the_format_asked(client, alice, workers):
    files = [("coffee.jpg", photo("coffee")), ("notes.jpg", NOT_AN_IMAGE), ("chelsea.jpg", photo("chelsea"))]
    response = batch(client, alice, files, format="jpg", bg_color="#ffffff", alpha_threshold="20",
                     feather_edge="false", erode_kernel="2")
    assert response.status_code == 200
    answer = response.get_json()
    assert (answer["status"], answer["count"], answer["failed"]) == ("completed", 2, 1)  # the text file only
    members = zip_members(client, alice, answer["download_url"])
    outputs = sorted(name for name in members if name != "manifest.json")
    assert outputs == ["chelsea.jpg", "coffee.jpg"]
    [failed] = [f for f in json.loads(members["manifest.json"])["files"] if f["status"] == "failed"]
    assert failed["input"] == "notes.jpg" and failed["error"]  # the reason travels with the zip
    for name in outputs:
        im = decode(members[name])
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", size_of(name.removesuffix(".jpg")))
    # The form's options reached the job as given.
    options = client.get(f"/api/v1/jobs/{answer['job_id']}", headers=alice).get_json()["options"]
    assert options | {"format": "jpg", "bg_color": "#ffffff", "alpha_threshold": 20, "feather_edge": False,
                      "erode_kernel": 2} == options


@pytest.mark.parametrize(("fmt", "pil_format", "mode"), [("png", "PNG", "RGBA"), ("webp", "WEBP", "RGBA")])
def test_batch_process_writes_transparent_outputs_without_bg_color(client, alice, workers, fmt, pil_format, mode):
    answer = batch(client, alice, [("rocket.jpg", photo("rocket"))], format=fmt).get_json()
    assert (answer["status"], answer["count"], answer["failed"]) == ("completed", 1, 0)
    members = zip_members(client, alice, answer["download_url"])
    im = decode(members[f"rocket.{fmt}"])
    assert (im.format, im.mode, im.size) == (pil_format, mode, size_of("rocket"))
    assert im.getchannel("A").getextrema() == (0, 255)  # a cutout: some pixels gone, some kept


def test_batch_process_without_images_is_400(client, alice):
    response = client.post("/api/batch-process", data={"format": "png"}, headers=alice)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "no_images"


def test_batch_process_with_a_bad_option_is_400_naming_it(client, alice):
    response = batch(client, alice, [("coffee.jpg", photo("coffee"))], erode_kernel="lots")
    assert response.status_code == 400
    assert "erode_kernel" in response.get_json()["error"]["message"]


# --- /v1.0/removebg: the image and its options --------------------------------------------------


def test_removebg_image_file_gives_a_transparent_png_with_its_size_in_headers(client, alice, workers):
    response = removebg(client, alice, image_file=photo("coffee"))
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    im = decode(response.get_data())
    assert (im.format, im.mode, im.size) == ("PNG", "RGBA", size_of("coffee"))
    assert (response.headers["X-Width"], response.headers["X-Height"]) == tuple(map(str, im.size))
    assert im.getchannel("A").getextrema() == (0, 255)


def test_removebg_image_file_b64_with_size_preview(client, alice, workers):
    b64 = base64.b64encode(photo("chelsea")).decode()
    response = removebg(client, alice, image_file_b64=b64, size="preview")
    assert response.status_code == 200
    im = decode(response.get_data())
    assert im.size == size_of("chelsea")
    assert (response.headers["X-Width"], response.headers["X-Height"]) == tuple(map(str, im.size))


@pytest.mark.parametrize(("bg_color", "rgb"), [("81d4fa", (0x81, 0xD4, 0xFA)), ("red", (255, 0, 0))])
def test_removebg_auto_format_with_bg_color_is_a_jpg_on_that_colour(client, alice, workers, bg_color, rgb):
    response = removebg(client, alice, image_file=photo("rocket"), format="auto", bg_color=bg_color)
    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    im = decode(response.get_data())
    assert (im.format, im.mode, im.size) == ("JPEG", "RGB", size_of("rocket"))
    assert share_of_colour(im, rgb) > 0.2  # the removed background is now this colour


def test_removebg_format_png_with_bg_color_stays_png(client, alice, workers):
    response = removebg(client, alice, image_file=photo("rocket"), format="png", bg_color="white")
    im = decode(response.get_data())
    assert (response.mimetype, im.format) == ("image/png", "PNG")
    assert share_of_colour(im, (255, 255, 255)) > 0.2


def test_removebg_format_jpg_gives_a_jpeg(client, alice, workers):
    response = removebg(client, alice, image_file=photo("coffee"), format="jpg")
    im = decode(response.get_data())
    assert (response.mimetype, im.format, im.size) == ("image/jpeg", "JPEG", size_of("coffee"))


def test_removebg_channels_alpha_gives_a_grey_mask(client, alice, workers):
    response = removebg(client, alice, image_file=photo("coffee"), channels="alpha")
    assert response.status_code == 200
    im = decode(response.get_data())
    assert (im.mode, im.size) == ("L", size_of("coffee"))
    assert im.getextrema() == (0, 255)


def test_removebg_crop_gives_a_smaller_image_than_the_input(client, alice, workers):
    response = removebg(client, alice, image_file=photo("rocket"), crop="true")
    assert response.status_code == 200
    im = decode(response.get_data())
    width, height = size_of("rocket")
    assert im.width <= width and im.height <= height and im.width * im.height < width * height
    assert (response.headers["X-Width"], response.headers["X-Height"]) == (str(im.width), str(im.height))


def test_removebg_answers_json_when_asked(client, alice, workers):
    response = client.post("/v1.0/removebg", data={"image_file": (io.BytesIO(photo("coffee")), "coffee.jpg")},
                           headers={**alice, "Accept": "application/json"})
    assert response.status_code == 200
    data = response.get_json()["data"]
    im = decode(base64.b64decode(data["result_b64"]))
    assert (im.format, im.size) == ("PNG", size_of("coffee"))
    assert (data["width"], data["height"]) == im.size
    assert (response.headers["X-Width"], response.headers["X-Height"]) == tuple(map(str, im.size))


def test_removebg_corrupt_image_is_422(client, alice, workers):
    response = removebg(client, alice, image_file=photo("coffee")[:3000])
    assert response.status_code == 422
    error = removebg_error(response)
    assert error["code"] == "image_failed"
    assert error["detail"]


# --- /v1.0/removebg: image_url -------------------------------------------------------------------


@pytest.fixture
def photo_server():
    server = LoopbackServer({"/photos/coffee.jpg": body(photo("coffee"))})
    yield server
    server.close()


@pytest.fixture
def url_client(web_env, photo_server):
    """A client of an app allowed to fetch from photo_server (loopback is refused otherwise), and alice's key."""
    app = make_app(web_env, FETCH_ALLOW=photo_server.allow)
    _, key = app.extensions["cutout"].users.add("alice")
    yield app.test_client(), {"X-Api-Key": key}
    limiter.reset()


def test_removebg_image_url_fetches_and_cuts_out_the_photo(url_client, photo_server, workers):
    client, headers = url_client
    response = removebg(client, headers, image_url=photo_server.url("/photos/coffee.jpg"))
    assert response.status_code == 200
    im = decode(response.get_data())
    assert (im.format, im.size) == ("PNG", size_of("coffee"))
    assert [r["path"] for r in photo_server.requests] == ["/photos/coffee.jpg"]


def test_removebg_image_url_that_answers_404_is_400_with_the_status(url_client, photo_server):
    client, headers = url_client
    response = removebg(client, headers, image_url=photo_server.url("/photos/missing.jpg"))
    assert response.status_code == 400
    error = removebg_error(response)
    assert error["code"] == "image_url_refused"
    assert "HTTP 404" in error["detail"]


def test_removebg_image_url_to_loopback_is_refused_without_allow(client, alice, photo_server):
    response = removebg(client, alice, image_url=photo_server.url("/photos/coffee.jpg"))
    assert response.status_code == 400
    error = removebg_error(response)
    assert error["code"] == "image_url_refused"
    assert "127.0.0.1" in error["detail"] and "upload the file instead" in error["detail"]
    assert photo_server.requests == []


@pytest.mark.parametrize("url", ["http://[64:ff9b::a9fe:a9fe]/latest/meta-data/", "http://[64:ff9b:1::7f00:1]/x.jpg",
                                 "http://[2002:7f00:1::]/x.jpg", "http://[::7f00:1]/x.jpg",
                                 "http://[::ffff:0:7f00:1]/x.jpg"],
                         ids=["nat64", "local-use nat64", "6to4", "ipv4-compatible", "siit"])
def test_removebg_image_url_with_internal_ipv4_inside_ipv6_is_400(client, alice, url):
    response = removebg(client, alice, image_url=url)
    assert response.status_code == 400
    error = removebg_error(response)
    assert error["code"] == "image_url_refused" and "which carries " in error["detail"]


@pytest.mark.parametrize(("url", "says"), [
    ("http://example.com:99999/x.jpg", "Port out of range"),
    ("http://example.com:abc/x.jpg", "Port could not be cast"),
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://exa\r\nmple.com/x.jpg", "control or space character"),
    ("http://" + "a" * 300 + ".example.com/x.jpg", "not a valid host name"),
    ("http:///x.jpg", "has no host"),
    ("gopher://example.com/x", "must be an http:// or https:// URL"),
], ids=["port too large", "port not a number", "unclosed bracket", "CR LF", "300-char label", "empty host",
        "scheme"])
def test_removebg_malformed_image_url_is_400_naming_the_problem(client, alice, url, says):
    response = removebg(client, alice, image_url=url)
    assert response.status_code == 400 and response.mimetype == "application/json"
    error = removebg_error(response)
    assert error["code"] == "invalid_image_url" and says in error["detail"]


# --- /v1.0/removebg: requests refused before any work ---------------------------------------------


@pytest.mark.parametrize(("fields", "code"), [
    ({}, "missing_source"),
    ({"format": "png"}, "missing_source"),
    ({"image_file_b64": "not base64 at all!"}, "invalid_b64"),
    ({"image_file_b64": base64.b64encode(b"abc").decode()[:-1]}, "invalid_b64"),
    ({"format": "zip"}, "unsupported_format"),
    ({"size": "enormous"}, "invalid_size"),
    ({"channels": "rgb"}, "invalid_channels"),
    ({"bg_color": "not-a-colour"}, "invalid_option"),
    ({"size": ["auto", "full"]}, "repeated_field"),
], ids=["no source", "options only", "invalid base64", "truncated base64", "format zip", "bad size", "bad channels",
        "bad bg_color", "size twice"])
def test_removebg_bad_requests_are_400_in_remove_bg_error_shape(client, alice, fields, code):
    if code not in ("missing_source", "invalid_b64"):
        fields = {**fields, "image_file": photo("coffee")}
    response = removebg(client, alice, **fields)
    assert response.status_code == 400
    error = removebg_error(response)
    assert error["code"] == code
    assert error["detail"] and error["title"]


@pytest.mark.parametrize(("fields", "code"), [
    ({"image_url": "ftp://example.com/a.jpg"}, "invalid_image_url"),
    ({"image_file_b64": "abc"}, "invalid_b64"),
    ({"size": "HD", "channels": "rgba", "crop": "maybe"}, "invalid_option"),
], ids=["bad url next to a file", "bad base64 next to a file", "bad crop"])
def test_removebg_checks_every_source_it_is_sent_even_the_one_it_would_not_use(client, alice, fields, code):
    # The document says: of several sources image_file wins, and each one sent must be valid.
    response = removebg(client, alice, image_file=photo("coffee"), **fields)
    assert response.status_code == 400 and removebg_error(response)["code"] == code


def test_removebg_a_source_in_the_wrong_kind_of_part_is_a_400(client, alice):
    response = client.post("/v1.0/removebg", data={"image_file": "text, not a file"}, headers=alice,
                           content_type="multipart/form-data")
    assert response.status_code == 400 and removebg_error(response)["code"] == "invalid_image_file"


def test_removebg_format_zip_says_which_formats_are_offered(client, alice):
    response = removebg(client, alice, image_file=photo("coffee"), format="zip")
    assert "use png, jpg, webp or auto" in removebg_error(response)["detail"]


def test_removebg_file_over_the_limit_is_400(web_env):
    app = make_app(web_env, MAX_FILE_BYTES=1000)
    try:
        _, key = app.extensions["cutout"].users.add("alice")
        response = removebg(app.test_client(), {"X-Api-Key": key}, image_file=photo("coffee"))
        assert response.status_code == 400
        assert removebg_error(response)["code"] == "file_too_large"
    finally:
        limiter.reset()


# --- credentials ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/batch-process", "/v1.0/removebg"])
@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "ck_not-a-key"}, {"Authorization": "Bearer nope"}],
                         ids=["no key", "unknown key", "bad bearer"])
def test_both_endpoints_refuse_without_valid_credentials(client, users, path, headers):
    data = {"images": (io.BytesIO(photo("coffee")), "coffee.jpg"),
            "image_file": (io.BytesIO(photo("coffee")), "coffee.jpg")}
    response = client.post(path, data=data, headers=headers, content_type="multipart/form-data")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_removebg_refusal_without_a_key_is_in_remove_bg_error_shape(client, users):
    response = removebg(client, {}, image_file=photo("coffee"))
    assert response.status_code == 401
    assert removebg_error(response)["code"] == "unauthorized"
