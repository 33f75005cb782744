"""GET /api/v1/openapi.json: the API described for clients and generators (OpenAPI 3.1)."""

from flask import Blueprint, jsonify

from matting_core.registry import model_choices, model_names
from web import paging
from web.auth import api_user_required
from web.extensions import services
from web.forms import FIELDS

bp = Blueprint("openapi", __name__)

_OPTION_TYPES = {"alpha_threshold": "integer", "erode_kernel": "integer", "feather_radius": "integer",
                 "quality": "integer", "feather_edge": "boolean", "refine": "boolean", "despill": "boolean",
                 "mask": "boolean", "crop": "boolean"}
OPTIONS = {name: {"type": _OPTION_TYPES.get(name, "string")} for name in FIELDS} | {
    "format": {"type": "string", "enum": ["png", "jpg", "webp"]},
    "preset": {"type": "string", "enum": ["id-photo", "ecommerce", "avatar"]},
    "bg_color": {"type": "string", "description": "#rrggbb, #rrggbbaa, rrggbb or a CSS colour name"},
}
_ERROR = {"$ref": "#/components/schemas/Error"}
_STATUSES = ["queued", "running", "done", "failed"]
_JOB_PATH = [{"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}]


def _page(limit: str, cursor: str, default: int, maximum: int, what: str) -> list[dict]:
    """Cursor paging's query parameters (web/paging.py)."""
    return [{"name": limit, "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": maximum,
                                                      "default": default}, "description": f"{what} per page"},
            {"name": cursor, "in": "query", "schema": {"type": "string"},
             "description": f"where the previous page of {what} ended: its opaque next cursor, unchanged"}]


_NEXT = {"type": ["string", "null"]}  # the next page's cursor or URL; null on the last page


def _multipart(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _json(description: str, schema: dict | None = None) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict:
    meaning = {400: "invalid input; the message says what to change", 401: "no or invalid credentials",
               404: "no such job among yours", 409: "not in a state that allows this",
               413: "upload too large (request_too_large, zip_bomb, too_many_files) or past your storage quota "
                    "(quota_exceeded: used, limit and needed in the message; delete finished jobs)",
               422: "the image could not be processed", 429: "too many requests or running jobs (Retry-After)",
               504: "still working; follow the job"}
    return {str(c): {"description": meaning[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


_FILES = {"type": "array", "items": {"type": "string", "format": "binary"}}
_BINARY = {"type": "string", "format": "binary"}
# On every item and zip response (web/sniff.py): a stored file is data, never a page.
_SERVED_HEADERS = {"Content-Disposition": {"schema": {"type": "string", "pattern": "^attachment; filename="}},
                   "X-Content-Type-Options": {"schema": {"type": "string", "const": "nosniff"}},
                   "Content-Security-Policy": {"schema": {"type": "string", "const": "sandbox; default-src 'none'"}}}
_IMAGE = {"description": "the cutout", "content": {f"image/{t}": {"schema": _BINARY} for t in ("png", "jpeg", "webp")}}

def model_schema(default: str) -> dict:
    return {"type": "string", "enum": model_names(), "default": default,
            "description": f"the model to run: {model_choices()}; a retry or a recompose keeps the job's"}


def document(default_model: str) -> dict:
    """The OpenAPI document; `model` defaults to the service's default (CUTOUT_DEFAULT_MODEL)."""
    model = {"model": model_schema(default_model)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "cutout", "version": "1", "description": "Background removal for one photo or thousands."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}},
            "schemas": _schemas(model),
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": _job_paths(model) | _waiting_paths(model) | {
            "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json("OpenAPI")}}}},
    }


def _schemas(model: dict) -> dict:
    summary = {"type": "object", "properties": {
        "job_id": {"type": "string"}, "status": {"type": "string", "enum": _STATUSES}, **model,
        "total": {"type": "integer"}, "done": {"type": "integer"}, "failed": {"type": "integer"},
        "created": {"type": "number"}, "status_url": {"type": "string"}}}
    job = {"type": "object", "properties": summary["properties"] | {
        "options": {"type": "object"}, "error": {"type": ["string", "null"]}, "items": {"type": "array"},
        "events_url": {"type": "string"}, "download_url": {"type": ["string", "null"]},
        "items_next_cursor": _NEXT, "items_next": _NEXT}}
    error = {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}}}}}
    return {"Error": error, "JobSummary": summary, "Job": job}


def _job_paths(model: dict) -> dict:
    jobs = {"type": "object", "properties": {"jobs": {"type": "array",
                                                       "items": {"$ref": "#/components/schemas/JobSummary"}},
                                         "next_cursor": _NEXT, "next": _NEXT}}
    return {
        "/api/v1/jobs": {
            "post": {"summary": "Start a batch job", "requestBody": _multipart(
                {"images": _FILES, "archive": _BINARY} | OPTIONS | model),
                "responses": {"202": _json("accepted: {job_id, status_url, events_url, total}")
                              } | _errors(400, 401, 413, 429)},
            "get": {"summary": "My jobs, newest first, a page at a time (follow `next`)",
                    "parameters": _page("limit", "cursor", paging.JOBS_LIMIT, paging.JOBS_MAX, "jobs"),
                    "responses": {"200": _json("{jobs: [...], next_cursor, next}", jobs)} | _errors(400, 401)},
        },
        "/api/v1/jobs/{job}": {
            "parameters": _JOB_PATH,
            "get": {"summary": "Status, model, counters and a page of items (follow `items_next`)",
                    "parameters": _page("items_limit", "items_cursor", paging.ITEMS_LIMIT, paging.ITEMS_MAX, "items"),
                    "responses": {"200": _json("the job", {"$ref": "#/components/schemas/Job"})}
                    | _errors(400, 401, 404)},
            "delete": {"summary": "Delete the job and its files", "responses": {"204": {"description": "deleted"}}
                       | _errors(401, 404)},
        },
        "/api/v1/jobs/{job}/events": {"parameters": _JOB_PATH, "get": {
            "summary": "Progress as Server-Sent Events (snapshot, then progress)",
            "description": "A stream ends after CUTOUT_STREAM_SECONDS (300 by default); reconnect with the "
                           "Last-Event-ID header (EventSource does) to get every event after it. A user holds "
                           "CUTOUT_MAX_STREAMS_PER_USER streams at most (429 past it).",
            "parameters": [
                {"name": "after", "in": "query", "schema": {"type": "string", "pattern": r"^\d+(-\d+)?$"},
                 "description": "start after this event id instead of now"},
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string", "pattern": r"^\d+(-\d+)?$"},
                 "description": "resume after this event id (no snapshot)"}],
            "responses": {"200": {"description": "text/event-stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}}}
            | _errors(400, 401, 404, 429)}},
        "/api/v1/jobs/{job}/download": {"parameters": _JOB_PATH, "get": {
            "summary": "The zip (a redirect to a presigned URL on S3)",
            "responses": {"200": {"description": "zip", "content": {"application/zip": {"schema": _BINARY}},
                                  "headers": _SERVED_HEADERS},
                          "302": {"description": "presigned URL"}} | _errors(401, 404, 409)}},
        "/api/v1/jobs/{job}/items/{i}": {
            "parameters": _JOB_PATH + [
                {"name": "i", "in": "path", "required": True, "schema": {"type": "integer"}},
                {"name": "variant", "in": "query", "schema": {"type": "string", "enum": ["output", "alpha", "input"]}}],
            "get": {"summary": "One image of the job, as an attachment",
                    "description": "The input goes out as the image type its bytes show (else "
                                   "application/octet-stream), never as its name says; a non-image that failed is "
                                   "a 404. Outputs and alpha maps carry their own format and the zip's name.",
                    "responses": {"200": {"description": "the image", "headers": _SERVED_HEADERS}}
                    | _errors(400, 401, 404, 409)}},
        "/api/v1/jobs/{job}/retry": {"parameters": _JOB_PATH, "post": {
            "summary": "Run again what failed or never finished, with the job's model",
            "responses": {"202": _json("{retried: [...]}")} | _errors(401, 404, 409)}},
        "/api/v1/jobs/{job}/recompose": {"parameters": _JOB_PATH, "post": {
            "summary": "New options from the stored alpha maps (no GPU; the model stays the job's: another is a 400)",
            "requestBody": _multipart(OPTIONS), "responses": {"202": _json("{recomposed: [...]}")}
            | _errors(400, 401, 404, 409)}},
    }


def _waiting_paths(model: dict) -> dict:
    """The endpoints that wait for their job and answer with its result."""
    return {
        "/api/v1/remove": {"post": {
            "summary": "One image in, its cutout back",
            "requestBody": _multipart({"image": _BINARY} | OPTIONS | model, ["image"]),
            "responses": {"200": _IMAGE} | _errors(400, 401, 413, 422, 429, 504)}},
        "/api/batch-process": {"post": {
            "summary": "The original WebUI's batch call; waits for the batch",
            "requestBody": _multipart({"images": _FILES} | {k: OPTIONS[k] for k in (
                "format", "bg_color", "alpha_threshold", "feather_edge", "erode_kernel")} | model, ["images"]),
            "responses": {"200": _json("{status: completed, count, download_url}")} | _errors(400, 401, 413, 504)}},
        "/v1.0/removebg": {"post": {
            "summary": "remove.bg-compatible", "requestBody": _multipart({
                "image_file": _BINARY, "image_file_b64": {"type": "string"}, "image_url": {"type": "string"},
                "size": {"type": "string"}, "format": {"type": "string", "enum": ["auto", "png", "jpg", "webp"]},
                "bg_color": {"type": "string"}, "channels": {"type": "string", "enum": ["rgba", "alpha"]},
                "crop": {"type": "boolean"}} | model),
            "responses": {"200": _IMAGE, "400": {"description": 'remove.bg errors: {"errors": [{title, code}]}'},
                          "401": {"description": "no or invalid X-Api-Key"},
                          "413": {"description": "past the storage quota (quota_exceeded)"}}}},
    }


@bp.get("/api/v1/openapi.json")
@api_user_required
def openapi():
    return jsonify(document(services().settings.default_model))
