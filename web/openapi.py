"""GET /api/v1/openapi.json: the API described for clients and generators (OpenAPI 3.1).

Rendered, not written: request bodies from the models the server validates with (web/schemas.py)
and answers from web/schemas_responses.py. What is written here is which route answers which
status; tests/reliability/test_contract.py fuzzes a real server against the result.
"""

import copy

from flask import Blueprint, jsonify

from web.auth import api_user_required
from web.extensions import services
from web.openapi_parts import _REF, _SCHEMAS
from web.openapi_paths import paths

bp = Blueprint("openapi", __name__)


def document(default_model: str) -> dict:
    """The OpenAPI document; `model` defaults to the service's default (CUTOUT_DEFAULT_MODEL)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "cutout", "version": "1", "description": (
            "Background removal for one photo or thousands. Errors under /api/ are "
            '{"error": {"code", "message"}} (under /v1.0/, remove.bg\'s {"errors": [...]}) with a message that '
            "says what to change; a method a path does not offer is a 405 with Allow; every answer carries "
            "X-RateLimit-* headers and a 429 carries Retry-After. Form fields are strict: integers are ASCII "
            "digits, a field that is sent must be valid (an empty one is not 'unset'), an option field or query "
            "parameter is sent once (twice is a 400; file parts repeat), and choice words "
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

