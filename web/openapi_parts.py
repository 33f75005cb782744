"""The pieces the OpenAPI document (web/openapi.py) is built from: the schemas rendered from the
models the server validates with (web/schemas.py, web/schemas_responses.py), and the shapes every
path repeats (errors, forms, paging, links). web/openapi_paths.py puts them together per route."""

import copy

from pydantic.json_schema import models_json_schema

from matting_core.registry import model_choices
from web import schemas, schemas_responses, streams

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
