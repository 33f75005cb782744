"""The portal's pages: upload, one job, my jobs. Data comes from the API by fetch() and SSE."""

from flask import Blueprint, g, render_template

from web.api import own_job
from web.auth import login_required
from web.errors import ApiError

bp = Blueprint("portal", __name__)


@bp.get("/")
@login_required
def upload():
    return render_template("upload.html")


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
    return render_template("job.html", job_id=job, user=g.user)
