"""JSON errors that say what to change: {"error": {"code", "message"}}."""

import math
import time

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    if request.path.startswith("/v1.0/"):
        # remove.bg's shape, which its SDKs parse, for every error on its endpoint (401, 413, 429 too).
        body = {"errors": [{"title": message, "code": code, "detail": message}]}
    else:
        body = {"error": {"code": code, "message": message}}
    response = jsonify(body)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/v1.0/")) or request.accept_mimetypes.best == "application/json"


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return error_response(err.status, err.code, err.message, err.headers)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        if not _wants_json():
            return err
        messages = {
            404: "no such resource; check the URL and the job id",
            405: f"{request.method} is not allowed here; see /api/v1/openapi.json",
            413: "the upload is too large; send fewer or smaller files per request",
        }
        code = (err.name or "error").lower().replace(" ", "_")
        return error_response(err.code or 500, code, messages.get(err.code, err.description or code),
                              _headers(err))


def _headers(err: HTTPException) -> dict:
    """The headers a JSON error keeps: Allow on a 405, Retry-After on a 429. Never werkzeug's
    Content-Type: it is text/html, and once copied over the JSON it served 429s as HTML."""
    kept = {name: value for name, value in err.get_headers() if name.lower() == "allow"}
    if err.code == 429:
        kept["Retry-After"] = str(_retry_after())
    return kept


def _retry_after() -> int:
    # Seconds until the limit that refused the request resets. (The limiter's own header is renamed in
    # web/__init__.py, so that Retry-After appears on 429s only, as HTTP means it.)
    from web.extensions import limiter

    limit = limiter.current_limit
    return max(1, math.ceil(limit.reset_at - time.time())) if limit else 60
