"""Who is asking: an API key (`Authorization: Bearer KEY` or `X-Api-Key: KEY`) or a portal session.

A request that authenticates with its session cookie and changes something must
carry the CSRF token too (a form field or the X-CSRFToken header); one that
brings its own key cannot be forged by another site, so it needs none.
"""

import functools
from urllib.parse import urlsplit

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import validate_csrf
from wtforms.validators import ValidationError

from web.errors import ApiError
from web.extensions import services

bp = Blueprint("auth", __name__)


def api_key_from_request() -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("X-Api-Key") or None


def load_user() -> None:
    """before_request: g.user is the caller's name or None; g.by_key tells how they proved it."""
    g.user, g.by_key = None, False
    key = api_key_from_request()
    if key:
        g.user, g.by_key = services().users.user_for_key(key), True
        return
    name = session.get("user")
    if name and services().users.exists(name):
        g.user = name


def api_user_required(view):
    """401 without a user; CSRF checked on session-authenticated writes."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            message = ("the API key is not valid (revoked or mistyped); ask for a new one"
                       if api_key_from_request() else
                       "sign in, or send an API key as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'")
            raise ApiError(401, "unauthorized", message, {"WWW-Authenticate": 'Bearer realm="cutout"'})
        if not g.by_key and request.method not in ("GET", "HEAD", "OPTIONS"):
            try:
                validate_csrf(request.headers.get("X-CSRFToken") or request.form.get("csrf_token"))
            except ValidationError as err:
                raise ApiError(400, "csrf_failed", f"{err.args[0]}; reload the page and try again") from None
        return view(*args, **kwargs)
    return wrapped


def login_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)
    return wrapped


def _safe_next(target: str | None) -> str:
    # Only paths on this site: "//evil.example" or "https://evil.example" would be an open redirect.
    parts = urlsplit(target or "")
    if not target or parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("portal.upload")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        name, password = request.form.get("username", ""), request.form.get("password", "")
        if services().users.check_password(name, password):
            session.clear()  # a fresh session on login (no fixation)
            session["user"] = name
            session.permanent = True
            return redirect(_safe_next(request.args.get("next")))
        flash("That user name and password do not match.")
        return render_template("login.html", username=name), 401
    return render_template("login.html", username="")


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("auth.login"))


def init_app(app) -> None:
    app.before_request(load_user)
    app.register_blueprint(bp)
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", 14 * 24 * 3600)
