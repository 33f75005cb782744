"""The paths of the OpenAPI document (web/openapi.py): each route, what it takes, every status it answers.

Every route under /api/ answers 401 without a user and 429 past a rate limit (CUTOUT_RATE_LIMIT on
all, CUTOUT_SUBMIT_RATE_LIMIT on the ones that start jobs); a body past CUTOUT_MAX_REQUEST_MB is a 413.
"""

from web import paging, streams
from web.openapi_parts import (
    _BINARY,
    _EVENTS,
    _IMAGE,
    _JOB,
    _SERVED_HEADERS,
    _errors,
    _form,
    _item_links,
    _json,
    _links,
    _page,
)

_POSITION = {"type": "string", "pattern": f"^{streams.POSITION}$"}


def _job_paths(default_model: str) -> dict:
    return {
        "/api/v1/jobs": {
            "post": {"operationId": "createJob", "summary": "Start a batch job: images and/or one .zip, and options",
                     "requestBody": _form("JobForm", default_model),
                     "responses": {"202": _json("accepted; follow status_url (also in Location)", "Accepted",
                                                {"Location": {"required": True, "schema": {"type": "string"}}})
                                   | {"links": _links()}} | _errors(400, 401, 413, 429)},
            "get": {"operationId": "listJobs", "summary": "My jobs, newest first, a page at a time (follow `next`)",
                    "parameters": _page("limit", "cursor", paging.JOBS_LIMIT, paging.JOBS_MAX, "jobs"),
                    "responses": {"200": _json("a page of my jobs", "JobList")} | _errors(400, 401, 429)},
        },
        "/api/v1/jobs/{job}": {
            "parameters": _JOB,
            "get": {"operationId": "getJob",
                    "summary": "Status, model, counters and a page of items (follow `items_next`)",
                    "parameters": _page("items_limit", "items_cursor", paging.ITEMS_LIMIT, paging.ITEMS_MAX, "items"),
                    "responses": {"200": _json("the job", "Job") | {"links": _item_links()}}
                    | _errors(400, 401, 404, 429)},
            "delete": {"operationId": "deleteJob", "summary": "Delete the job and its files",
                       "responses": {"204": {"description": "deleted"}} | _errors(400, 401, 404, 429)},
        },
        "/api/v1/jobs/{job}/events": {"parameters": _JOB, "get": {
            "operationId": "getJobEvents", "summary": "Progress as Server-Sent Events: a snapshot, then progress",
            "description": "Events `snapshot` (unless resuming) then `progress` until the job ends; each event's "
                           "`data` is JSON (Snapshot, Progress). A stream ends after CUTOUT_STREAM_SECONDS (300 by "
                           "default); reconnect with the Last-Event-ID header (EventSource does) to get every event "
                           "after it. A user holds CUTOUT_MAX_STREAMS_PER_USER streams at most (429 past it).",
            "parameters": [
                {"name": "after", "in": "query", "schema": _POSITION,
                 "description": "start after this event id instead of now"},
                {"name": "Last-Event-ID", "in": "header", "schema": _POSITION,
                 "description": "resume after this event id (no snapshot)"}],
            "responses": {"200": {"description": "text/event-stream: `snapshot`, then `progress` events",
                                  "content": {"text/event-stream": {"schema": _EVENTS}}}}
            | _errors(400, 401, 404, 429)}},
        "/api/v1/jobs/{job}/download": {"parameters": _JOB, "get": {
            "operationId": "downloadJob", "summary": "The zip (a redirect to a presigned URL on S3)",
            "responses": {"200": {"description": "the zip: every output and manifest.json",
                                  "content": {"application/zip": {"schema": _BINARY}}, "headers": _SERVED_HEADERS},
                          "302": {"description": "presigned URL (S3 storage), valid 10 minutes",
                                  "headers": {"Location": {"required": True, "schema": {"type": "string"}}}}}
            | _errors(401, 404, 409, 429)}},
        "/api/v1/jobs/{job}/items/{i}": {
            "parameters": _JOB + [
                {"name": "i", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                {"name": "variant", "in": "query", "schema": {"type": "string", "enum": ["output", "alpha", "input"],
                                                              "default": "output"}}],
            "get": {"operationId": "getItem", "summary": "One image of the job, as an attachment",
                    "description": "The input goes out as the image type its bytes show (else "
                                   "application/octet-stream), never as its name says; a non-image that failed is "
                                   "a 404. Outputs and alpha maps carry their own format and the zip's name.",
                    "responses": {"200": {"description": "the image", "headers": _SERVED_HEADERS, "content": {
                        "image/*": {"schema": _BINARY}, "application/octet-stream": {"schema": _BINARY}}}}
                    | _errors(400, 401, 404, 409, 429)}},
        "/api/v1/jobs/{job}/retry": {"parameters": _JOB, "post": {
            "operationId": "retryJob", "summary": "Run again what failed or never finished, with the job's model",
            "responses": {"202": _json("started again", "Retried"),
                          "200": _json("a done job with nothing to run again: left as it is", "Retried")}
            | _errors(400, 401, 404, 409, 429)}},
        "/api/v1/jobs/{job}/recompose": {"parameters": _JOB, "post": {
            "operationId": "recomposeJob",
            "summary": "New options from the stored alpha maps (no GPU); at least one option, else a 400",
            "description": "The model stays the job's (another is a 409, model_conflict). Options not sent take "
                           "their defaults.",
            "requestBody": _form("RecomposeBody", default_model, "multipart/form-data", "application/json"),
            "responses": {"202": _json("re-rendering", "Recomposed")} | _errors(400, 401, 404, 409, 413, 429)}},
    }


def _waiting_paths(default_model: str) -> dict:
    """The endpoints that wait for their job and answer with its result."""
    return {
        "/api/v1/remove": {"post": {
            "operationId": "removeOne", "summary": "One image in, its cutout back",
            "requestBody": _form("RemoveForm", default_model),
            "responses": {"200": {"description": "the cutout", "content": _IMAGE}}
            | _errors(400, 401, 413, 422, 429, 504)}},
        "/api/batch-process": {"post": {
            "operationId": "batchProcess", "summary": "The original WebUI's batch call; waits for the batch",
            "requestBody": _form("BatchForm", default_model),
            "responses": {"200": _json("the batch ended (status completed or failed)", "BatchResult")}
            | _errors(400, 401, 413, 429, 504)}},
        "/v1.0/removebg": {"post": {
            "operationId": "removeBg", "summary": "remove.bg-compatible: exactly one image source",
            "description": "Errors in remove.bg's shape. With Accept: application/json the answer is JSON.",
            "requestBody": _form("RemoveBgForm", default_model),
            "responses": {"200": {"description": "the cutout (X-Width, X-Height); JSON with Accept: application/json",
                                  "content": _IMAGE | {"application/json": {"schema": {
                                      "$ref": "#/components/schemas/RemoveBgResult"}}}}}
            | _errors(400, 401, 413, 422, 429, 504, removebg=True)}},
    }


# gunicorn answers a request line (method, path and query) over its limit_request_line itself, before the
# app sees the request: on every operation, a 414 with a short HTML page.
# gunicorn's default limit_request_line: web/gunicorn_conf.py does not set it (importing this module there
# would load Redis into the master); tests/web/test_server.py checks the server answers 414 just past it.
URI_LIMIT = 4094
_URI_TOO_LONG = {"description": f"the request line (path and query) is longer than {URI_LIMIT} bytes; answered by "
                                "the HTTP server before the app, as a short text/html page",
                 "content": {"text/html": {"schema": {"type": "string"}}}}


def paths(default_model: str) -> dict:
    found = _job_paths(default_model) | _waiting_paths(default_model) | {"/api/v1/openapi.json": {"get": {
        "operationId": "getOpenApi", "summary": "This document",
        "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {
            "schema": {"type": "object"}}}}} | _errors(401, 429)}}}
    for item in found.values():
        for method, operation in item.items():
            if method != "parameters":
                operation["responses"]["414"] = _URI_TOO_LONG
    return found
