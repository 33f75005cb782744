"""The model a job runs, through the web: chosen per request (or the service's default), kept by a
recompose, shown in job views and the upload form, documented; real Redis and real workers.

The stack's own default is u2netp (tests/web/conftest.py); `with_default_u2net` is an app whose
default is the service's, u2net, to run it end to end.
"""

import io
import json
import subprocess
import sys
import zipfile

import pytest

from matting_core.registry import get_spec
from tests.web.conftest import FAST, make_app, two_users
from tests.web.test_api import error_of, post_job, small_jpeg, wait_done
from tests.web.test_users import csrf_token, log_in
from web.extensions import limiter

CHOICES = ("u2net (best quality)", "u2netp (fastest)")
# Every endpoint that starts a job, with the field its one image goes in.
CREATING = [("/api/v1/jobs", "images"), ("/api/v1/remove", "image"), ("/api/batch-process", "images"),
            ("/v1.0/removebg", "image_file")]


@pytest.fixture
def with_default_u2net(web_env, settings_with):
    """A client of an app whose default model is the service's own (u2net), and its users (as `users`)."""
    app = make_app(web_env, CUTOUT_SETTINGS=settings_with(default_model="u2net"))
    yield app.test_client(), two_users(app)
    limiter.reset()


def message_of(response) -> str:
    """The error message in either shape: {"error": ...}, or remove.bg's {"errors": [...]}."""
    body = response.get_json()
    return body["errors"][0]["detail"] if "errors" in body else error_of(response)["message"]


def manifest_model(client, headers, status: dict) -> dict:
    with zipfile.ZipFile(io.BytesIO(client.get(status["download_url"], headers=headers).data)) as zf:
        return json.loads(zf.read("manifest.json"))["model"]


def model_entry(name: str) -> dict:
    return {"name": name, "weights_sha256": get_spec(name).sha256}


# --- without workers: refused, shown, documented ------------------------------------------------------

def test_the_web_app_and_the_cpu_worker_name_models_without_importing_torch():
    code = ("import sys, web.api, web.compat, web.openapi, web.portal, tasks.work, tasks.packaging; "
            "print(sorted(m for m in ('torch', 'matting_core.model') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


@pytest.mark.parametrize(("path", "field"), CREATING)
def test_an_unknown_model_is_a_400_naming_the_choices_on_every_endpoint_that_starts_a_job(client, users, path,
                                                                                        field):
    headers = users["alice"]["headers"]
    r = client.post(path, data={field: (io.BytesIO(small_jpeg()), "a.jpg"), "model": "modnet"}, headers=headers,
                    content_type="multipart/form-data")
    assert r.status_code == 400, r.get_json()
    assert "'modnet'" in message_of(r) and all(choice in message_of(r) for choice in CHOICES)
    assert client.get("/api/v1/jobs", headers=headers).get_json()["jobs"] == []  # nothing was started


def test_the_job_view_and_my_jobs_show_the_model_asked_for_or_the_services_default(client, users):
    headers = users["alice"]["headers"]
    named = post_job(client, headers, ("a.jpg", small_jpeg()), model="U2Net").get_json()["job_id"]
    unnamed = post_job(client, headers, ("a.jpg", small_jpeg())).get_json()["job_id"]
    assert client.get(f"/api/v1/jobs/{named}", headers=headers).get_json()["model"] == "u2net"
    assert client.get(f"/api/v1/jobs/{unnamed}", headers=headers).get_json()["model"] == FAST  # this stack's
    listed = client.get("/api/v1/jobs", headers=headers).get_json()["jobs"]
    assert [(job["job_id"], job["model"]) for job in listed] == [(unnamed, FAST), (named, "u2net")]


def test_a_preset_does_not_change_the_model(client, users):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", small_jpeg()), preset="ecommerce", model="u2net").get_json()["job_id"]
    assert client.get(f"/api/v1/jobs/{job}", headers=headers).get_json()["model"] == "u2net"


def test_openapi_documents_the_model_choices_and_default_wherever_a_job_starts_and_in_the_job_view(
        with_default_u2net):
    client, users = with_default_u2net
    spec = client.get("/api/v1/openapi.json", headers=users["alice"]["headers"]).get_json()
    for path, _ in CREATING:
        schema = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        model = schema["properties"]["model"]
        assert (model["enum"], model["default"]) == (["u2net", "u2netp"], "u2net"), path
        assert "best quality" in model["description"] and "fastest" in model["description"]
    for view in ("Job", "JobSummary"):
        assert spec["components"]["schemas"][view]["properties"]["model"]["enum"] == ["u2net", "u2netp"]
    job_view = spec["paths"]["/api/v1/jobs/{job}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert job_view["schema"] == {"$ref": "#/components/schemas/Job"}


def test_the_upload_form_offers_each_model_with_its_hint_and_checks_the_default(with_default_u2net):
    client, users = with_default_u2net
    log_in(client, "bob", users["bob"]["password"])
    page = client.get("/").get_data(as_text=True)
    assert '<input type="radio" name="model" value="u2net" checked>' in page
    assert '<input type="radio" name="model" value="u2netp">' in page
    assert "best quality" in page and "fastest" in page


def test_the_upload_form_posts_its_model_with_the_session(with_default_u2net):
    # What upload.js sends: the files, the options, `model` and the CSRF header of the session.
    client, users = with_default_u2net
    log_in(client, "bob", users["bob"]["password"])
    form = {"images": [(io.BytesIO(small_jpeg()), "a.jpg")], "format": "png", "model": FAST}
    r = client.post("/api/v1/jobs", data=form, headers={"X-CSRFToken": csrf_token(client)},
                    content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    assert client.get(r.get_json()["status_url"]).get_json()["model"] == FAST


# --- with workers: the model that ran -----------------------------------------------------------------

def test_a_job_naming_no_model_runs_the_default_u2net_and_one_naming_u2netp_runs_that(with_default_u2net,
                                                                                    workers):
    client, users = with_default_u2net
    headers = users["alice"]["headers"]
    default = post_job(client, headers, ("a.jpg", small_jpeg())).get_json()["job_id"]
    fast = post_job(client, headers, ("b.jpg", small_jpeg("chelsea")), model=FAST).get_json()["job_id"]
    for job, model in [(default, "u2net"), (fast, FAST)]:
        status = wait_done(client, headers, job)
        assert (status["status"], status["done"], status["model"]) == ("done", 1, model)
        assert manifest_model(client, headers, status) == model_entry(model)


def test_recompose_keeps_the_jobs_model_and_refuses_another(client, users, workers):
    headers = users["alice"]["headers"]
    job = post_job(client, headers, ("a.jpg", small_jpeg()), model=FAST).get_json()["job_id"]
    wait_done(client, headers, job)
    r = client.post(f"/api/v1/jobs/{job}/recompose", data={"format": "jpg", "model": "u2net"}, headers=headers)
    assert r.status_code == 409 and "start a new job with model=u2net" in error_of(r)["message"]
    r = client.post(f"/api/v1/jobs/{job}/recompose", json={"format": "jpg", "model": FAST}, headers=headers)
    assert r.status_code == 202
    status = wait_done(client, headers, job)
    assert (status["model"], status["options"]["format"]) == (FAST, "jpg")
    assert manifest_model(client, headers, status) == model_entry(FAST)
