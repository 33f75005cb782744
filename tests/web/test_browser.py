"""The portal in a real browser (Debian's Chromium through Playwright) on the real stack.

The app is served by werkzeug on a free loopback port from a background thread; Redis, the
celery workers and local storage are the session's real ones (tests/web/conftest.py).
"""

import gc
import io
import os
import re
import threading
import time
import zipfile
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from werkzeug.serving import make_server

from tasks.settings import Settings
from tests.conftest import DATA
from tests.web.conftest import FAST, make_app
from web.extensions import limiter

CHROMIUM = os.environ.get("CUTOUT_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# The README's picture, refreshed only when asked: a test run writes nothing into the repository.
README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "job-page.png"
PHOTOS = ("coffee.jpg", "chelsea.jpg", "astronaut.jpg")
# The workers run the model on the CPU (about 1 s an image on two cores), and start cold.
JOB_TIMEOUT_MS = 60_000
# The recompose panel's canvas has been drawn from the first item's input and alpha.
PREVIEW_DRAWN = "() => Number(document.getElementById('preview').dataset.renders || 0) > 0"
PIXELS = """() => {
  const canvas = document.getElementById("preview");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let digest = 0, opaque = true;
  for (let i = 0; i < data.length; i += 1) {
    digest = (digest * 31 + data[i]) >>> 0;
    if (i % 4 === 3 && data[i] !== 255) opaque = false;
  }
  return {digest, opaque, corner: Array.from(data.slice(0, 4))};
}"""

if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def live(web_env, workers):
    """(base URL, app) of the real app, served with a thread per request (SSE holds one open).

    Its default model is the service's (u2net), so a form that posted no model would show here.
    """
    app = make_app(web_env, CUTOUT_SETTINGS=Settings.from_env(web_env).replace(default_model="u2net"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="portal-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", app
    server.shutdown()
    thread.join(10)
    limiter.reset()
    # The enqueued chords' AsyncResults sit in reference cycles; freed later, after Redis has stopped,
    # each unsubscribes from a dead result backend and celery retries for ~20 s. Free them now.
    gc.collect()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    # A CSP violation or a script error shows up here, not as a failed assertion.
    assert errors == []


def sign_in(page, base: str, name: str, password: str) -> None:
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/login?next=/")
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{base}/")
    expect(page.locator(".user")).to_contain_text(name)


def finished_job_of_one_image(app, key: str) -> str:
    """A job made through the API with the user's key, waited for in Redis."""
    data = (DATA / "chelsea.jpg").read_bytes()
    response = app.test_client().post("/api/v1/jobs", headers={"X-Api-Key": key}, content_type="multipart/form-data",
                                      data={"images": [(io.BytesIO(data), "chelsea.jpg")], "model": FAST})
    assert response.status_code == 202, response.get_json()
    job = response.get_json()["job_id"]
    deadline = time.monotonic() + JOB_TIMEOUT_MS / 1000
    while app.extensions["cutout"].jobs.status(job) != "done":
        assert time.monotonic() < deadline, f"job {job} did not finish"
        time.sleep(0.2)
    return job


def test_a_batch_uploaded_in_the_portal_ends_in_a_gallery_and_a_zip(live, page, tmp_path):
    base, app = live
    password, key = app.extensions["cutout"].users.add("dana")
    sign_in(page, base, "dana", password)
    page.set_input_files("#dropzone input[type=file]", [DATA / name for name in PHOTOS])
    expect(page.locator("#files .file")).to_have_count(3, timeout=20_000)
    models = page.locator("#model-choice label")
    expect(models).to_have_text([re.compile(r"u2net\s.*best quality"), re.compile(r"u2netp\s.*fastest")])
    expect(page.locator("#model-choice input[value=u2net]")).to_be_checked()  # the service's default
    page.check(f"#model-choice input[value={FAST}]")
    page.click("#start")

    page.wait_for_url(re.compile(rf"{re.escape(base)}/jobs/[0-9a-f]{{32}}$"), timeout=10_000)
    progress = page.locator("#progress")
    expect(progress).to_have_attribute("aria-valuenow", "100", timeout=JOB_TIMEOUT_MS)
    expect(page.locator("#progress-text")).to_have_text("3 / 3 done", timeout=20_000)
    expect(page.locator("#job-meta")).to_contain_text(f"model {FAST} (fastest)")
    job = page.url.rsplit("/", 1)[1]
    assert app.test_client().get(f"/api/v1/jobs/{job}", headers={"X-Api-Key": key}).get_json()["model"] == FAST
    items = page.locator("#gallery .item")
    expect(items).to_have_count(3, timeout=20_000)
    expect(page.locator("#gallery .item-done")).to_have_count(3, timeout=20_000)
    page.wait_for_function("() => [...document.querySelectorAll('#gallery img.output')]"
                           ".every(img => img.complete && img.naturalWidth > 0)", timeout=10_000)
    for variant in ("input", "output", "alpha"):  # before / after / alpha of each
        expect(page.locator(f"#gallery img.{variant}")).to_have_count(3)

    with page.expect_download() as download_info:
        page.click("#download")
    with zipfile.ZipFile(download_info.value.path()) as archive:
        names = archive.namelist()
    assert "manifest.json" in names
    assert len([n for n in names if n.lower().endswith((".png", ".jpg", ".webp"))]) == 3, names

    page.wait_for_function(PREVIEW_DRAWN, timeout=10_000)
    page.evaluate("window.scrollTo(0, 0)")  # else the sticky header is drawn mid-page
    page.mouse.move(0, 0)  # no hover state on the README picture
    screenshot = README_SCREENSHOT if os.environ.get("CUTOUT_UPDATE_SCREENSHOT") else tmp_path / "job-page.png"
    page.screenshot(path=str(screenshot), full_page=True)

    page.goto(f"{base}/jobs")  # My jobs names the model each job ran
    expect(page.locator(f"#jobs-body a[href$='{job}']").first).to_be_visible(timeout=10_000)
    expect(page.locator("#jobs-body tr").first.locator("td").nth(2)).to_have_text(FAST)


def test_the_recompose_preview_follows_the_background_colour(live, page):
    base, app = live
    password, key = app.extensions["cutout"].users.add("erin")
    job = finished_job_of_one_image(app, key)
    sign_in(page, base, "erin", password)
    page.goto(f"{base}/jobs/{job}")
    panel = page.locator("#recompose")
    expect(panel).to_be_visible(timeout=10_000)
    page.wait_for_function(PREVIEW_DRAWN, timeout=10_000)
    transparent = page.evaluate(PIXELS)
    assert not transparent["opaque"]  # the job's default: no background

    panel.locator("input[name=transparent]").uncheck()
    panel.locator("input[name=bg_color]").fill("#ff0000")
    red = page.evaluate(PIXELS)
    panel.locator("input[name=bg_color]").fill("#0000ff")
    blue = page.evaluate(PIXELS)

    assert red["opaque"] and blue["opaque"]
    assert len({transparent["digest"], red["digest"], blue["digest"]}) == 3
    assert red["corner"][0] > 200 and blue["corner"][2] > 200  # the corner is background in chelsea.jpg


def test_my_jobs_and_a_jobs_gallery_follow_the_apis_pages(live, page):
    base, app = live
    services = app.extensions["cutout"]
    password, _ = services.users.add("frank")
    # Recorded straight into Redis (no workers needed): 101 jobs, one more than a page of My jobs,
    # the newest with 1,001 items, one more than a page of items; rejected, so no image is fetched.
    jobs = [f"{n:032x}" for n in range(101)]
    for job in jobs[:-1]:
        services.jobs.create(job, "frank", ["a.jpg"], {}, {0: "not an image"})
    names = [f"img-{n}.jpg" for n in range(1001)]
    services.jobs.create(jobs[-1], "frank", names, {}, {i: "not an image" for i in range(1001)})
    sign_in(page, base, "frank", password)

    page.goto(f"{base}/jobs")
    expect(page.locator("#jobs-body tr")).to_have_count(100, timeout=10_000)
    page.click("#jobs-more")
    expect(page.locator("#jobs-body tr")).to_have_count(101, timeout=10_000)
    expect(page.locator("#jobs-more")).to_be_hidden()
    expect(page.locator(f"#jobs-body a[href$='{jobs[0]}']").first).to_be_visible()  # the oldest, from page two

    page.goto(f"{base}/jobs/{jobs[-1]}")
    expect(page.locator("#gallery article")).to_have_count(1001, timeout=20_000)
    expect(page.locator("#gallery article").last).to_contain_text("img-1000.jpg")


def test_the_job_page_resumes_its_event_stream_with_last_event_id_when_the_server_ends_it(live, page):
    base, app = live
    services = app.extensions["cutout"]
    password, _ = services.users.add("grace")
    job = "e" * 32
    # Recorded, never enqueued; both items already refused, so the page fetches no image.
    services.jobs.create(job, "grace", ["a.jpg", "b.jpg"], {}, {0: "not an image", 1: "not an image"})
    sign_in(page, base, "grace", password)
    resumed, wsgi = [], app.wsgi_app

    def recording(environ, start_response):  # what reaches the server: the header the browser sent
        if environ["PATH_INFO"].endswith("/events") and environ.get("HTTP_LAST_EVENT_ID"):
            resumed.append(environ["HTTP_LAST_EVENT_ID"])
        return wsgi(environ, start_response)

    app.wsgi_app, app.config["STREAM_SECONDS"] = recording, 1
    try:
        started = time.monotonic()
        page.goto(f"{base}/jobs/{job}")
        expect(page.locator("#progress-text")).to_have_text("0 / 2 done", timeout=5_000)
        page.wait_for_timeout(2_500)  # the first stream has ended; EventSource reconnected 1 s later
        services.jobs.update_item(job, 0, "done")
        expect(page.locator("#progress-text")).to_have_text("1 / 2 done", timeout=4_000)
        assert time.monotonic() - started < 9.5  # before the page's 10 s status poll could have shown it
        assert resumed, "EventSource never reconnected with Last-Event-ID"
    finally:
        app.wsgi_app, app.config["STREAM_SECONDS"] = wsgi, 300
