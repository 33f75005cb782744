"""REST API v1: jobs, their progress, items and zip; retry, recompose, delete; one-image remove."""

import json
import mimetypes
import time

from flask import (
    Blueprint,
    Response,
    after_this_request,
    current_app,
    g,
    jsonify,
    redirect,
    request,
    send_file,
    url_for,
)

from tasks import keys
from tasks.storage import KeyNotFound, LocalStorage
from tasks.submit import create_job, recompose, retry_job
from web import active_jobs, forms, paging, quota, sniff, streams, uploads
from web.auth import api_user_required
from web.errors import ApiError
from web.extensions import limiter, services
from web.waiting import wait_for_job

bp = Blueprint("api", __name__, url_prefix="/api/v1")
VARIANTS = ("output", "alpha", "input")
ACTIVE = ("queued", "running")


def query(name: str, default: str | None = None) -> str | None:
    """The query parameter `name` (forms.once: a repeated one is a 400), else `default`."""
    value = forms.once(request.args, name, "parameter")
    return default if value is None else value


def own_job(job: str) -> dict:
    """The caller's job, or 404 whether it is someone else's or nobody's (never confirm an id)."""
    record = services().jobs.job(job) if keys.valid_job_id(job) else None
    if record is None or record["owner"] != g.user:
        raise ApiError(404, "job_not_found", f"no job {job} among yours; GET /api/v1/jobs lists them")
    return record


def check_active_jobs() -> None:
    """Take one of the caller's MAX_ACTIVE_JOBS places (429 if none is free) until the job is recorded.

    Atomic (web/active_jobs.py): simultaneous submits never pass the cap together. The place is
    given back by release_active_job() once the job is recorded, and in any case when the request ends.
    """
    if g.get("job_slot"):  # taken already by this request (before it read its body)
        return
    store = services().jobs
    slot = active_jobs.JobSlot.acquire(store.r, g.user, current_app.config["MAX_ACTIVE_JOBS"], store._k(""), ACTIVE)
    g.job_slot = slot

    @after_this_request
    def _release(response):
        slot.release()
        return response


def release_active_job() -> None:
    """The job is recorded (it counts itself now) or the submit failed: its place is no longer held."""
    if g.get("job_slot"):
        g.job_slot.release()


def submit(options=None, fields=uploads.IMAGE_FIELDS) -> tuple[str, int]:
    """Store the request's uploads and enqueue them as a job for the caller; returns (job, total)."""
    # The place first: reading the form spools the whole body to disk, and one user's requests
    # sent at once must not each do that before the cap refuses them.
    check_active_jobs()
    forms.files_only(request.form, (*fields, "archive"))
    options = options or forms.parse(request.form)
    model = requested_model()
    upload = uploads.from_request(fields)
    store = g.job_slot.recording(services().jobs)  # the job's record takes over its place (web/active_jobs.py)
    job = quota.store_within(upload.stored, lambda: create_job(services().storage, store, g.user,
                                                               upload.files, options, upload.rejected, model))
    release_active_job()
    return job, len(upload.files)


def requested_model() -> str:
    """The request's `model` field, else the service's default (CUTOUT_DEFAULT_MODEL); 400 if unknown."""
    return forms.model(request.form, services().settings.default_model)


def job_view(record: dict) -> dict:
    """The job, with a page of its items (`items_limit`, `items_cursor`; `items_next` links the rest)."""
    job, store = record["id"], services().jobs
    count = paging.limit(query("items_limit"), "items_limit", paging.ITEMS_LIMIT, paging.ITEMS_MAX)
    indices, next_cursor = paging.items(record["total"], count, query("items_cursor"))
    raw = store.r.hmget(store._k(job, "items"), [str(i) for i in indices]) if indices else []
    items = {i: json.loads(value) for i, value in zip(indices, raw, strict=True) if value}
    view = {
        "job_id": job, "status": record["status"], "total": record["total"], "done": record["done"],
        "failed": record["failed"], "created": record["created"], "model": record["model"],
        "options": record["options"], "error": record.get("error") or None,
        "events_url": url_for("api.events", job=job),
        "download_url": url_for("api.download", job=job) if record["status"] == "done" else None,
        "items": [_item_view(job, i, item) for i, item in items.items()],
        "items_next_cursor": next_cursor,
        "items_next": next_cursor and url_for("api.status", job=job, items_limit=count, items_cursor=next_cursor),
    }
    return view


def _item_view(job: str, i: int, item: dict) -> dict:
    def link(variant):
        return url_for("api.item", job=job, i=i, variant=variant)
    return {"index": i, "name": item["name"], "state": item["state"], "error": item.get("error"),
            "batch_size": item.get("batch_size"), "timings_ms": item.get("timings"),
            "input_url": None if item.get("rejected") else link("input"),
            "alpha_url": link("alpha") if item["state"] in ("finishing", "done") else None,
            "output_url": link("output") if item["state"] == "done" else None}


@bp.post("/jobs")
@api_user_required
@limiter.limit(lambda: current_app.config["SUBMIT_RATE_LIMIT"])
def create():
    job, total = submit()
    body = {"job_id": job, "status_url": url_for("api.status", job=job), "events_url": url_for("api.events", job=job),
            "total": total}
    return jsonify(body), 202, {"Location": body["status_url"]}


@bp.get("/jobs")
@api_user_required
def list_jobs():
    """The caller's jobs, newest first, a page at a time (`limit`, `cursor`; `next` links the next page)."""
    store = services().jobs
    count = paging.limit(query("limit"), "limit", paging.JOBS_LIMIT, paging.JOBS_MAX)
    ids, next_cursor = paging.jobs(store.r, f"cutout:jobs:{g.user}", count, query("cursor"))
    records = [r for r in (store.job(job) for job in ids) if r]
    return jsonify({"jobs": [{k: r[k] for k in ("id", "status", "total", "done", "failed", "created", "model")}
                             | {"job_id": r["id"], "status_url": url_for("api.status", job=r["id"])}
                             for r in records],
                    "next_cursor": next_cursor,
                    "next": next_cursor and url_for("api.list_jobs", limit=count, cursor=next_cursor)})


@bp.get("/jobs/<job>")
@api_user_required
def status(job):
    return jsonify(job_view(own_job(job)))


@bp.get("/jobs/<job>/events")
@api_user_required
def events(job):
    """Server-Sent Events: a snapshot, then one `progress` event per change, until the job ends.

    A stream lasts STREAM_SECONDS at most; the browser then reconnects by itself with the
    Last-Event-ID it saw and gets every event after it (no snapshot: it already has one).
    A user holds MAX_STREAMS_PER_USER streams at most (web/streams.py).
    """
    store = services().jobs
    resume = streams.position(request.headers.get("Last-Event-ID"), "Last-Event-ID")
    asked = streams.position(query("after"), "after")  # checked even when Last-Event-ID wins
    # The stream position first, then the record: an event landing in between is then sent,
    # not lost between a stale snapshot and a stream that starts after it.
    after = resume or asked or store.last_event_id(job)
    record = own_job(job)
    slot = streams.StreamSlot.acquire(store.r, g.user, current_app.config["MAX_STREAMS_PER_USER"])
    deadline = time.monotonic() + current_app.config["STREAM_SECONDS"]

    def stream():
        yield f"retry: {streams.RECONNECT_MS}\n\n"
        if not resume:
            snapshot = {k: record[k] for k in ("status", "total", "done", "failed")}
            # With its position as id: a stream that ends before any progress still resumes from here.
            yield f"event: snapshot\nid: {after}\ndata: {json.dumps(snapshot)}\n\n"
            if record["status"] not in ACTIVE:
                return
        last = after
        while (left := deadline - time.monotonic()) > 0:
            slot.renew()
            batch = store.events(job, last, block_ms=max(1, int(min(left, 10) * 1000)))
            if not batch:
                if store.status(job) not in ACTIVE:
                    return  # resumed after the job's last event had been sent: nothing more will come
                yield ": keep-alive\n\n"  # proxies close idle connections; a vanished client shows here
                continue
            for last, event in batch:
                yield f"id: {last}\nevent: progress\ndata: {json.dumps(_typed(event))}\n\n"
                if event.get("status") in ("done", "failed") and "i" not in event:
                    return

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    # No request context inside: the generator uses only what it closed over, so it holds none open.
    response = Response(stream(), mimetype="text/event-stream", headers=headers)
    response.call_on_close(slot.release)  # however it ends: the job done, the lifetime, the client gone
    return response


def _typed(event: dict) -> dict:
    """Stream fields come back from Redis as strings; the counters go out as numbers, like the snapshot."""
    return {k: int(v) if k in ("i", "done", "failed", "total") and str(v).isdigit() else v for k, v in event.items()}


def _serve(key: str, download_name: str, mimetype: str, redirect_ok: bool = False, stream=None,
           endpoint_url: str | None = None):
    """A stored file as an attachment that no browser renders as a page (web.sniff.SERVED_HEADERS)."""
    storage = services().storage
    if redirect_ok and not isinstance(storage, LocalStorage):
        # short-lived: a leaked link soon stops working
        return redirect(storage.url(key, expires=600, endpoint_url=endpoint_url)), 302, sniff.SERVED_HEADERS
    if stream is None:
        stream = _open(key)
    response = send_file(stream, mimetype=mimetype, as_attachment=True, download_name=download_name, max_age=0)
    response.headers.update(sniff.SERVED_HEADERS)
    return response


def _open(key: str):
    try:
        return services().storage.open(key)
    except KeyNotFound:
        raise ApiError(404, "not_stored", "that file is not stored (any more); retry the job") from None


@bp.get("/jobs/<job>/download")
@api_user_required
def download(job):
    record = own_job(job)
    if record["status"] != "done" or not record.get("zip_key"):
        raise ApiError(409, "not_ready", f"job {job} is {record['status']}; the zip exists once it is done")
    # A presigned link only where the client can follow it: AWS S3 (no endpoint of our own) or the
    # store's public address; an internal one (compose's http://minio:9000) means nothing to a
    # browser, so then the zip streams through the app.
    settings = services().settings
    public = settings.s3_public_endpoint_url
    return _serve(record["zip_key"], f"cutout-{job}.zip", "application/zip",
                  redirect_ok=bool(public) or not settings.s3_endpoint_url, endpoint_url=public)


@bp.get("/jobs/<job>/items/<int:i>")
@api_user_required
def item(job, i):
    own_job(job)
    variant = query("variant", "output")
    if variant not in VARIANTS:
        raise ApiError(400, "invalid_variant", f"variant={variant!r}: choose one of {', '.join(VARIANTS)}")
    record = services().jobs.item(job, i)
    if not record:
        raise ApiError(404, "item_not_found", f"job {job} has no item {i}")
    # Images stream through the app, even from S3: the portal's preview reads their pixels in a
    # canvas, which a redirect to the bucket's origin would taint.
    if variant == "input":
        return _serve_input(job, i, record)
    if variant == "output":
        if record["state"] != "done":
            raise ApiError(409, "not_ready", f"item {i} is {record['state']}; its output exists once it is done")
        ext = record["output_key"].rsplit(".", 1)[-1]  # the format the worker encoded (png, jpg, webp)
        return _serve(record["output_key"], sniff.download_name(record["name"], ext), sniff.mimetype(ext))
    return _serve(keys.alpha_key(job, i), sniff.download_name(record["name"], "png", "-alpha"), "image/png")


def _serve_input(job: str, i: int, record: dict):
    """The upload as the image type its bytes show, never as what its name claims; a non-image that
    failed (or was never stored) is not served at all."""
    if record.get("rejected"):
        raise ApiError(404, "not_stored", f"item {i} was refused on upload ({record.get('error')}); nothing is stored")
    try:
        stream = services().storage.open(keys.input_key(job, i))
    except KeyNotFound:  # a failed item's upload is deleted at once (tasks/work.py); others expire with the job
        reason = f"it failed ({record.get('error')})" if record["state"] == "failed" else "it is gone (expired)"
        raise ApiError(404, "not_stored", f"item {i}'s upload is not stored: {reason}") from None
    ext, stream = sniff.sniffed(stream)
    if ext is None and record["state"] == "failed":
        stream.close()
        raise ApiError(404, "not_an_image", f"item {i} ({uploads.label(record['name'])}) is not an image the "
                                            "service reads, so it is not served back; upload a JPEG, PNG or WebP")
    name = sniff.download_name(record["name"], ext or "bin")
    return _serve(keys.input_key(job, i), name, sniff.mimetype(ext) if ext else sniff.OCTET_STREAM, stream=stream)


def _finished(job: str) -> dict:
    record = own_job(job)
    if record["status"] in ACTIVE:
        raise ApiError(409, "job_running", f"job {job} is still {record['status']}; wait until it is done")
    return record


@bp.post("/jobs/<job>/retry")
@api_user_required
def retry(job):
    record = _finished(job)
    todo = retry_job(services().storage, services().jobs, job)
    # A done job with nothing to re-run is left alone (still done, its zip still served): 200, not 202.
    started = bool(todo) or record["status"] != "done"
    return jsonify({"job_id": job, "retried": todo, "status_url": url_for("api.status", job=job)}), \
        202 if started else 200


@bp.post("/jobs/<job>/recompose")
@api_user_required
def recompose_job(job):
    record = _finished(job)
    values = request.get_json(silent=True)
    if values is None or values == {}:
        values = request.form
    elif not isinstance(values, dict):
        raise ApiError(400, "invalid_body", f"the JSON body is {type(values).__name__}, not an object; send the "
                                            'options as an object, e.g. {"format": "webp"}')
    if not forms.given_options(values):
        # Said once, here and in the document (web/schemas.py RecomposeBody): not "the same options again".
        raise ApiError(400, "no_options", f"send at least one option to change ({', '.join(forms.FIELDS)} or "
                                          'preset), as form fields or a JSON object, e.g. {"format": "webp"}')
    options = forms.parse(values)
    _same_model(values, record["model"])
    todo = recompose(services().storage, services().jobs, job, options)
    return jsonify({"job_id": job, "recomposed": todo, "status_url": url_for("api.status", job=job)}), 202


def _same_model(values, model: str) -> None:
    """A recompose reuses the job's alpha maps, so it cannot change the model they came from."""
    asked = forms.model(values, model)
    if asked != model:
        # 409, not 400: the request is well formed, and whether it fits depends on the job (its alpha maps' model).
        raise ApiError(409, "model_conflict", f"model={asked!r}: a recompose reuses this job's {model} alpha maps "
                                              f"and cannot change the model; start a new job with model={asked}")


@bp.delete("/jobs/<job>")
@api_user_required
def delete(job):
    own_job(job)
    # The record (and its tombstone) first: a task finishing meanwhile then sees the job is gone and
    # removes what it wrote, instead of writing into a prefix already emptied (tasks/work.py).
    services().jobs.delete(job)
    services().storage.delete_prefix(keys.job_prefix(job))
    return "", 204


@bp.post("/remove")
@api_user_required
@limiter.limit(lambda: current_app.config["SUBMIT_RATE_LIMIT"])
def remove():
    """One image in, its cutout back in the response (through the same workers, waiting for them)."""
    check_active_jobs()  # before the body is read (see submit)
    files = request.files.getlist("image") or request.files.getlist("images")
    if len(files) != 1:
        raise ApiError(400, "one_image", "send exactly one file as multipart field 'image'")
    # An archive would be unpacked into several items, and one answer holds one image. A .zip sent as the
    # image is a well-formed request whose file is not an image: 422, as for any other file that is not.
    if "archive" in request.files:
        raise ApiError(400, "one_image", "send one image, not an archive; POST /api/v1/jobs takes archives")
    if (files[0].filename or "").lower().endswith(".zip"):
        raise ApiError(422, "not_an_image", f"{uploads.label(files[0].filename)} is an archive, not one image; "
                                            "POST /api/v1/jobs takes archives")
    job, _ = submit(fields=("image", "images"))
    return single_result(job)


def single_result(job: str):
    record = wait_for_job(services().jobs, job, current_app.config["SYNC_TIMEOUT"])
    if record is None:
        status_url = url_for("api.status", job=job)
        raise ApiError(504, "timeout", f"still working after {current_app.config['SYNC_TIMEOUT']:g} s; "
                                       f"follow {status_url}", {"Location": status_url})
    [item] = services().jobs.items(job).values()
    if item["state"] != "done":
        raise ApiError(422, "image_failed", item.get("error") or "the image could not be processed")
    data = services().storage.get(item["output_key"])
    return Response(data, mimetype=mimetypes.guess_type(item["output_key"])[0], headers={"X-Job-Id": job})
