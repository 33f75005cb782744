"""Endpoints other tools already speak: the original WebUI's batch call and remove.bg's API.

Both run through the same jobs and workers as /api/v1, waiting for the result.
"""

import base64
import io
import re

from flask import Blueprint, Response, current_app, g, jsonify, request, url_for
from PIL import Image

from tasks.submit import create_job
from web import fetch, forms, quota, schemas, uploads
from web.api import check_active_jobs, release_active_job, requested_model, single_result, submit
from web.auth import api_user_required
from web.errors import ApiError
from web.extensions import limiter, services
from web.waiting import wait_for_job

bp = Blueprint("compat", __name__)


@bp.post("/api/batch-process")
@api_user_required
@limiter.limit(lambda: current_app.config["SUBMIT_RATE_LIMIT"])
def batch_process():
    """The WebUI's call: images + format, bg_color, alpha_threshold, feather_edge, erode_kernel, model; waits."""
    job, total = submit()
    record = wait_for_job(services().jobs, job, current_app.config["SYNC_TIMEOUT"])
    if record is None:
        raise ApiError(504, "timeout", f"still working; follow {url_for('api.status', job=job)}")
    return jsonify({"status": "completed" if record["status"] == "done" else "failed", "count": record["done"],
                    "failed": record["failed"], "job_id": job,
                    "download_url": url_for("api.download", job=job)})


def _removebg_options():
    form = request.form
    if (form.get("format") or "").lower() == "zip":
        raise ApiError(400, "unsupported_format", "format=zip is not offered; use png, jpg, webp or auto")
    fields = forms.validated(schemas.RemoveBgForm, form, ("size", "format", "bg_color", "channels", "crop"),
                             {"size": "invalid_size", "channels": "invalid_channels"})
    bg = fields.bg_color
    fmt = fields.format or "auto"
    # remove.bg's "auto": JPG once the result sits on an opaque colour, else PNG (a translucent one keeps its alpha).
    opaque = bg and bg not in schemas.COLOR_WORDS and not re.fullmatch(schemas.TRANSLUCENT, bg)
    fmt = ("jpg" if opaque else "png") if fmt == "auto" else fmt
    values = {"format": fmt, "crop": fields.crop or False, "mask": fields.channels == "alpha"}
    return forms.parse(values | ({"bg_color": bg} if bg else {}))


def _removebg_sources() -> list[str]:
    """The sources sent, each checked as the document states it (web/schemas.py RemoveBgForm), first the one used."""
    sent = schemas.present(schemas.RemoveBgForm.SOURCES, set(request.files) | set(request.form))
    if not sent:
        raise ApiError(400, "missing_source", "send one of image_file, image_file_b64 or image_url")
    for source in sent:
        if (source == "image_file") != (source in request.files):
            kind = "a file part (with a filename)" if source == "image_file" else "a text field, not a file"
            raise ApiError(400, f"invalid_{source}", f"{source} must be {kind}")
    if "image_file_b64" in sent and not re.fullmatch(schemas.BASE64, request.form["image_file_b64"] or "-"):
        raise ApiError(400, "invalid_b64", "image_file_b64 is not valid base64 (A-Z, a-z, 0-9, + and /, padded "
                                           "with = to a multiple of 4 characters)")
    if "image_url" in sent and not re.match(schemas.URL, request.form["image_url"]):
        raise ApiError(400, "invalid_image_url", "image_url must be an http:// or https:// URL")
    return sent


def _removebg_image() -> tuple[str, bytes]:
    source = _removebg_sources()[0]
    if source == "image_file":
        f = request.files["image_file"]
        data = f.stream.read(current_app.config["MAX_FILE_BYTES"] + 1)
        name = uploads.label(f.filename)
    elif source == "image_file_b64":
        data = base64.b64decode(request.form["image_file_b64"], validate=True)
        name = "image_file_b64"
    else:
        url = request.form["image_url"]
        try:
            name, data = fetch.fetch_image(url, max_bytes=current_app.config["FETCH_MAX_BYTES"],
                                           timeout=current_app.config["FETCH_TIMEOUT"],
                                           allow=current_app.config.get("FETCH_ALLOW", ()))
        except fetch.InvalidURL as err:  # malformed: the client's URL to fix, not the server's fault
            raise ApiError(400, "invalid_image_url", str(err)) from None
        except fetch.FetchError as err:
            raise ApiError(400, "image_url_refused", str(err)) from None
    if len(data) > current_app.config["MAX_FILE_BYTES"]:
        raise ApiError(400, "file_too_large", f"{name} is larger than the "
                                                   f"{current_app.config['MAX_FILE_BYTES'] // 2**20} MB limit")
    return name, data


@bp.post("/v1.0/removebg")
@api_user_required
@limiter.limit(lambda: current_app.config["SUBMIT_RATE_LIMIT"])
def removebg():
    """remove.bg-compatible: the cutout in the body, its size in X-Width / X-Height."""
    check_active_jobs()  # before the body is read (web/api.py submit)
    options = _removebg_options()
    model = requested_model()
    name, data = _removebg_image()
    store = g.job_slot.recording(services().jobs)  # the job's record takes over its place (web/active_jobs.py)
    job = quota.store_within(len(data), lambda: create_job(services().storage, store, g.user,
                                                           [(name, data)], options, model=model))
    release_active_job()
    result: Response = single_result(job)
    body = result.get_data()
    with Image.open(io.BytesIO(body)) as im:
        width, height = im.size
    headers = {"X-Width": str(width), "X-Height": str(height), "X-Type": "other", "X-Credits-Charged": "0"}
    if request.accept_mimetypes.best == "application/json":
        return jsonify({"data": {"result_b64": base64.b64encode(body).decode(), "width": width,
                                 "height": height}}), 200, headers
    result.headers.update(headers)
    return result
