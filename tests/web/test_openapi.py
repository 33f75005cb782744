"""GET /api/v1/openapi.json says what the server does: the same ranges, choices and rules, every route,
every status; a real Redis behind a real app. The fuzzing of a real server against it is
tests/reliability/test_contract.py (make test-slow)."""

import io

import pytest
from PIL import Image

from matting_core.options import RANGES
from web import schemas

OPTIONS_OF = {"/api/v1/jobs": "images", "/api/v1/remove": "image"}


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def spec(client, users) -> dict:
    return client.get("/api/v1/openapi.json", headers=users["alice"]["headers"]).get_json()


def form_schema(spec: dict, path: str) -> dict:
    return spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]


@pytest.mark.parametrize("name", sorted(RANGES))
def test_each_integer_options_range_is_the_one_the_server_enforces(spec, client, users, name):
    low, high = RANGES[name]
    assert form_schema(spec, "/api/v1/jobs")["properties"][name] == {"type": "integer", "minimum": low,
                                                                       "maximum": high}
    headers = users["alice"]["headers"]
    for value, status in ((high, 202), (high + 1, 400), (low, 202)) + (((low - 1), 400),) * (low > 0):
        r = client.post("/api/v1/jobs", data={"images": (io.BytesIO(jpeg()), "a.jpg"), name: str(value)},
                        headers=headers, content_type="multipart/form-data")
        assert r.status_code == status, (name, value, r.get_json())


@pytest.mark.parametrize("value", [" 7 ", "\u0667", "1_0", "07", "+7", "7.0", ""])
def test_an_integer_is_ascii_digits_as_the_document_says(client, users, value):
    r = client.post("/api/v1/jobs", data={"images": (io.BytesIO(jpeg()), "a.jpg"), "erode_kernel": value},
                    headers=users["alice"]["headers"], content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_option", value


def test_the_choices_and_colour_rules_are_documented_as_validated(spec):
    props = form_schema(spec, "/api/v1/jobs")["properties"]
    assert props["format"]["enum"] == ["png", "jpg", "webp", "jpeg"]
    assert props["preset"]["enum"] == ["id-photo", "ecommerce", "avatar"]
    assert props["bg_color"] == {"$ref": "#/components/schemas/Color"}
    color = spec["components"]["schemas"]["Color"]["anyOf"]
    assert color[0]["pattern"] == f"^{schemas.HEX_COLOR}$" and {"white", "transparent"} <= set(color[1]["enum"])
    removebg = form_schema(spec, "/v1.0/removebg")["properties"]
    assert removebg["size"]["enum"] == list(schemas.REMOVEBG_SIZES)
    assert form_schema(spec, "/api/batch-process")["properties"]["images"]["minItems"] == 1


def test_which_files_a_form_needs_is_stated(spec):
    assert form_schema(spec, "/api/v1/jobs")["anyOf"] == [{"required": ["images"]}, {"required": ["archive"]}]
    assert form_schema(spec, "/api/v1/remove")["required"] == ["image"]
    assert form_schema(spec, "/v1.0/removebg")["anyOf"] == [{"required": [name]} for name in
                                                             ("image_file", "image_file_b64", "image_url")]
    recompose = spec["paths"]["/api/v1/jobs/{job}/recompose"]["post"]["requestBody"]["content"]
    assert set(recompose) == {"multipart/form-data", "application/json"}
    assert {"required": ["format"]} in recompose["application/json"]["schema"]["anyOf"]


def test_every_route_and_method_is_documented_with_401_414_and_429(app, spec):
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/api/", "/v1.0/")):
            continue
        path = rule.rule.replace("<job>", "{job}").replace("<int:i>", "{i}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            responses = spec["paths"][path][method.lower()]["responses"]
            assert {"401", "414", "429"} <= set(responses), (method, path)
            assert responses["429"]["headers"]["Retry-After"]["required"] is True


def test_removebg_documents_its_413_422_and_json_answer(spec):
    responses = spec["paths"]["/v1.0/removebg"]["post"]["responses"]
    assert {"400", "401", "413", "422", "429"} <= set(responses)
    assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/RemoveBgErrors")
    json_answer = responses["200"]["content"]["application/json"]["schema"]["$ref"]
    data = spec["components"]["schemas"][json_answer.rsplit("/", 1)[1]]["properties"]["data"]["$ref"]
    assert set(spec["components"]["schemas"][data.rsplit("/", 1)[1]]["required"]) == {"result_b64", "width", "height"}


def test_the_event_stream_names_each_event_and_its_data(spec):
    stream = spec["paths"]["/api/v1/jobs/{job}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    events = {e["properties"]["event"]["const"]: e["properties"]["data"]["contentSchema"]["$ref"]
              for e in stream["schema"]["oneOf"]}
    assert events == {"snapshot": "#/components/schemas/Snapshot", "progress": "#/components/schemas/Progress"}


def test_the_document_itself_needs_a_key(client):
    r = client.get("/api/v1/openapi.json")
    assert r.status_code == 401 and r.mimetype == "application/json"


# --- the rules the document states, held by the server ----------------------------------------------

def test_a_file_field_sent_as_text_is_a_400_not_dropped(client, users):
    r = client.post("/api/v1/jobs", data={"images": (io.BytesIO(jpeg()), "a.jpg"), "archive": "not a file"},
                    headers=users["alice"]["headers"], content_type="multipart/form-data")
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "not_a_file"


@pytest.mark.parametrize("field, status", [("image", 422), ("archive", 400)])
def test_remove_refuses_an_archive_it_would_answer_with_one_image_of(client, users, field, status):
    data = {field: (io.BytesIO(b"PK\x05\x06" + b"\0" * 18), "photos.zip")}
    if field == "archive":
        data["image"] = (io.BytesIO(jpeg()), "a.jpg")
    r = client.post("/api/v1/remove", data=data, headers=users["alice"]["headers"], content_type="multipart/form-data")
    assert r.status_code == status and "archive" in r.get_json()["error"]["message"]
    assert client.get("/api/v1/jobs", headers=users["alice"]["headers"]).get_json()["jobs"] == []


@pytest.mark.parametrize("headers, query", [({"Last-Event-ID": "1-0"}, "?after=garbage"),
                                            ({"Last-Event-ID": ""}, ""),
                                            ({}, "?after=99999999999999999999")])
def test_a_stream_position_is_checked_wherever_it_comes_from(client, users, headers, query):
    job = client.post("/api/v1/jobs", data={"images": (io.BytesIO(jpeg()), "a.jpg")},
                      headers=users["alice"]["headers"], content_type="multipart/form-data").get_json()["job_id"]
    r = client.get(f"/api/v1/jobs/{job}/events{query}", headers=users["alice"]["headers"] | headers)
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "invalid_position"
