"""GET /api/v1/openapi.json: the API described for clients and generators (OpenAPI 3.1).

Rendered, not written: request bodies from the models the server validates with (web/schemas.py)
and answers from web/schemas_responses.py. What is written here is which route answers which
status; tests/reliability/test_contract.py fuzzes a real server against the result.
"""

import copy

from flask import Blueprint, jsonify
from pydantic.json_schema import models_json_schema

from matting_core.registry import model_choices
from web import schemas, schemas_responses, streams
from web.auth import api_user_required
from web.extensions import services

bp = Blueprint("openapi", __name__)
_REF = "#/components/schemas/{model}"
_FORMS = {"JobForm": schemas.JobForm, "RemoveForm": schemas.RemoveForm, "BatchForm": schemas.BatchForm,
          "RecomposeBody": schemas.RecomposeBody, "RemoveBgForm": schemas.RemoveBgForm}
_MEANING = {
    400: "invalid input; the message names the field and what it accepts",
    401: "no or invalid credentials (WWW-Authenticate says how to send them)",
    404: "no such job among yours (another user's job id answers the same)",
    409: "the job or item is not in a state that allows this; the message says which",
    413: "upload too large (request_too_large, archive_too_large, zip_bomb, too_many_files) or past your storage "
         "quota (quota_exceeded: used, limit and needed in the message; delete finished jobs)",
    422: "the image could not be processed (the message says why)",
    429: "too many requests, running jobs or open streams; wait Retry-After seconds",
    504: "still working after CUTOUT_SYNC_TIMEOUT; follow the job (Location)",
}
_RETRY_AFTER = {"Retry-After": {"required": True, "description": "seconds to wait", "schema": {"type": "string",
                                                                                             "pattern": "^[0-9]+$"}}}
_BINARY = schemas.BINARY
# On every item and zip response (web/sniff.py): a stored file is data, never a page.
_SERVED_HEADERS = {"Content-Disposition": {"schema": {"type": "string", "pattern": "^attachment; filename="}},
                   "X-Content-Type-Options": {"schema": {"type": "string", "const": "nosniff"}},
                   "Content-Security-Policy": {"schema": {"type": "string", "const": "sandbox; default-src 'none'"}}}
_IMAGE = {f"image/{kind}": {"schema": _BINARY} for kind in ("png", "jpeg", "webp")}
_JOB = [{"name": "job", "in": "path", "required": True, "schema": {"type": "string"}}]
# Each event as an EventSource sees it (OpenAPI 3.1 has no event schema of its own: `schema` is one event,
# its JSON `data` described by contentSchema, as OpenAPI 3.2 does it).
_EVENTS = {"oneOf": [
    {"type": "object", "required": ["event", "data"], "description": f"`{name}`: {what}",
     "properties": {"event": {"const": name}, "id": {"type": "string", "pattern": f"^{streams.POSITION}$"},
                    "data": {"type": "string", "contentMediaType": "application/json",
                             "contentSchema": {"$ref": _REF.format(model=model)}}}}
    for name, model, what in (("snapshot", "Snapshot", "first, unless resuming; its id is where the stream starts"),
                              ("progress", "Progress", "an item changed state, or (no `i`) the job ended"))]}


def _clean(schema, names: bool = False):
    """pydantic's titles and `default: null` say nothing a client can use; drop them (`names`: a map of
    property names, where "title" is a field's name). The colour schema is named once in components:
    its ~150 colour names would otherwise fill every form."""
    if isinstance(schema, dict):
        if names:
            return {k: _clean(v) for k, v in schema.items()}
        schema = {k: v for k, v in schema.items() if k != "title" and not (k == "default" and v is None)}
        if schema == schemas.COLOR_SCHEMA:
            return {"$ref": _REF.format(model="Color")}
        return {k: _clean(v, names=k in ("properties", "$defs")) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_clean(v) for v in schema]
    return schema


def _components() -> tuple[dict, dict]:
    """(response schemas for components, request body schemas to inline), rendered once."""
    models = [(m, "serialization") for m in schemas_responses.RESPONSES] + [(m, "validation") for m in _FORMS.values()]
    refs, defs = models_json_schema(models, ref_template=_REF)
    defs = _clean(defs["$defs"], names=True)
    forms = {name: defs.pop(name) for name in _FORMS}
    return defs | {"Color": schemas.COLOR_SCHEMA}, forms


_SCHEMAS, _FORM_SCHEMAS = _components()


def _answer(status: int, body: str | None = None) -> dict:
    shape = body or ("RemoveBgErrors" if status < 0 else "Error")
    answer = {"description": _MEANING[abs(status)], "content": {"application/json": {"schema": {"$ref": _REF.format(
        model=shape)}}}}
    if abs(status) == 429:
        answer["headers"] = _RETRY_AFTER
    return answer


def _errors(*codes: int, removebg: bool = False) -> dict:
    return {str(c): _answer(-c if removebg else c) for c in codes}


def _json(description: str, model: str, headers: dict | None = None) -> dict:
    answer = {"description": description, "content": {"application/json": {"schema": {"$ref": _REF.format(
        model=model)}}}}
    return answer | ({"headers": headers} if headers else {})


def _form(name: str, default_model: str, *media: str) -> dict:
    schema = copy.deepcopy(_FORM_SCHEMAS[name])
    if "model" in schema["properties"]:
        schema["properties"]["model"] |= {
            "default": default_model,
            "description": f"the model to run: {model_choices()}; a retry or a recompose keeps the job's"}
    return {"required": True, "content": {m: {"schema": schema} for m in media or ("multipart/form-data",)}}


def _page(limit: str, cursor: str, default: int, maximum: int, what: str) -> list[dict]:
    """Cursor paging's query parameters (web/paging.py)."""
    return [{"name": limit, "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": maximum,
                                                      "default": default}, "description": f"{what} per page"},
            {"name": cursor, "in": "query", "schema": {"type": "string"},
             "description": f"where the previous page of {what} ended: its opaque next cursor, unchanged"}]


def _item_links() -> dict:
    """From a job's view to its first item."""
    return {"getItem": {"operationId": "getItem", "parameters": {"job": "$request.path.job",
                                                                 "i": "$response.body#/items/0/index"}}}


def _links() -> dict:
    """From a new job to what can be done with it: the stateful fuzzing follows these."""
    job = {"job": "$response.body#/job_id"}
    return {op: {"operationId": op, "parameters": job} for op in
            ("getJob", "getJobEvents", "downloadJob", "retryJob", "recomposeJob", "deleteJob")} | {
        "getFirstItem": {"operationId": "getItem", "parameters": job | {"i": "0"}}}  # every job has an item 0


def document(default_model: str) -> dict:
    """The OpenAPI document; `model` defaults to the service's default (CUTOUT_DEFAULT_MODEL)."""
    from web.openapi_paths import paths

    return {
        "openapi": "3.1.0",
        "info": {"title": "cutout", "version": "1", "description": (
            "Background removal for one photo or thousands. Errors under /api/ are "
            '{"error": {"code", "message"}} (under /v1.0/, remove.bg\'s {"errors": [...]}) with a message that '
            "says what to change; a method a path does not offer is a 405 with Allow; every answer carries "
            "X-RateLimit-* headers and a 429 carries Retry-After. Form fields are strict: integers are ASCII "
            "digits, a field that is sent must be valid (an empty one is not 'unset'), and choice words "
            "(formats, presets, models, colour names, true/false) are case-insensitive.")},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}},
            "schemas": copy.deepcopy(_SCHEMAS),
            # Any path under /api/ or /v1.0/ asked with a method it does not offer (no operation of its own).
            "responses": {"MethodNotAllowed": {
                "description": "405: the path does not offer this method; Allow lists those it does",
                "headers": {"Allow": {"required": True, "schema": {"type": "string"}}},
                "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}}}},
        },
        "security": [{"bearer": []}, {"apiKey": []}],
        "paths": paths(default_model),
    }


@bp.get("/api/v1/openapi.json")
@api_user_required
def openapi():
    return jsonify(document(services().settings.default_model))

