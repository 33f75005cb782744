"""The zip's download on S3 storage: a presigned link only where the client can follow it.

A store at an address of its own (compose's http://minio:9000) is one a browser outside can't
resolve: without CUTOUT_S3_PUBLIC_ENDPOINT_URL the app streams the zip itself; with it, the
link is signed for that address. Real moto_server over HTTP, real Redis.
"""

import os
import urllib.request
import uuid

import pytest

from tasks import keys
from tests.tasks.conftest import REGION, s3_bucket, s3_server  # noqa: F401 (fixtures)
from tests.web.conftest import make_app, two_users
from web.extensions import limiter


@pytest.fixture
def s3_env(web_env, s3_server, s3_bucket) -> dict:  # noqa: F811 (fixtures by name)
    return {**web_env, "CUTOUT_STORAGE": "s3", "CUTOUT_S3_BUCKET": s3_bucket, "CUTOUT_S3_ENDPOINT_URL": s3_server,
            "CUTOUT_S3_REGION": REGION}


def done_job(app, owner: str) -> tuple[str, bytes]:
    """A finished job of `owner` whose zip is stored: what package leaves behind."""
    services = app.extensions["cutout"]
    job = uuid.uuid4().hex
    data = os.urandom(300_000)
    services.storage.put(keys.zip_key(job), data)
    services.jobs.create(job, owner, ["a.jpg"], {})
    services.jobs.set_status(job, "done", zip_key=keys.zip_key(job))
    return job, data


@pytest.fixture
def serve(s3_env):
    made = []

    def start(public: str = ""):
        app = make_app({**s3_env, "CUTOUT_S3_PUBLIC_ENDPOINT_URL": public})
        made.append(app)
        return app

    yield start
    limiter.reset()


def test_zip_streams_through_the_app_when_the_store_has_only_an_internal_address(serve):
    app = serve()
    users = two_users(app)
    job, data = done_job(app, "alice")
    r = app.test_client().get(f"/api/v1/jobs/{job}/download", headers=users["alice"]["headers"])
    assert r.status_code == 200 and r.mimetype == "application/zip"
    assert r.get_data() == data


def test_zip_is_a_presigned_link_for_the_public_endpoint_when_one_is_set(serve, s3_env):
    public = s3_env["CUTOUT_S3_ENDPOINT_URL"].replace("127.0.0.1", "localhost")  # the same server, another name
    app = serve(public)
    users = two_users(app)
    job, data = done_job(app, "alice")
    r = app.test_client().get(f"/api/v1/jobs/{job}/download", headers=users["alice"]["headers"])
    assert r.status_code == 302 and r.location.startswith(f"{public}/{s3_env['CUTOUT_S3_BUCKET']}/")
    with urllib.request.urlopen(r.location, timeout=10) as reply:
        assert reply.read() == data
