"""The portal's pages: upload, one job, my jobs. Data comes from the API by fetch() and SSE."""

from dataclasses import asdict

from flask import Blueprint, g, render_template

from matting_core.options import PRESETS, Options
from matting_core.registry import get_spec, model_names
from web.api import own_job
from web.auth import login_required
from web.errors import ApiError
from web.extensions import services

bp = Blueprint("portal", __name__)


def _option_context() -> dict:
    # The option controls fill themselves from these (a preset = the defaults, then its own values).
    return {"presets": PRESETS, "defaults": asdict(Options())}


def _model_context() -> dict:
    # The model is chosen on upload only: a preset does not change it and a recompose cannot.
    return {"models": [(name, get_spec(name).hint) for name in model_names()],
            "default_model": services().settings.default_model}


@bp.get("/")
@login_required
def upload():
    return render_template("upload.html", **_option_context(), **_model_context())


@bp.get("/jobs")
@login_required
def jobs():
    return render_template("jobs.html")


@bp.get("/jobs/<job>")
@login_required
def job(job):
    try:
        own_job(job)
    except ApiError:
        return render_template("not_found.html", what=f"job {job}"), 404
    hints = {name: get_spec(name).hint for name in model_names()}
    return render_template("job.html", job_id=job, user=g.user, model_hints=hints, **_option_context())
