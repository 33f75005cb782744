"""What the API answers, as pydantic models rendered into the OpenAPI document (web/openapi.py).

The views build these bodies as dicts; the contract test (tests/reliability/test_contract.py)
checks every answer against these schemas, so a field added to a view and not here fails it.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from matting_core.registry import model_names
from tasks.jobs import ITEM_STATES, JOB_STATES

JobStatus = Literal[JOB_STATES]
ItemState = Literal[ITEM_STATES]
ModelName = Literal[tuple(model_names())]
Link = str | None  # a URL on this service; null where there is nothing to fetch yet


class Shape(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients must ignore fields they do not know


class ErrorDetail(Shape):
    code: str = Field(description="stable, machine-readable: e.g. invalid_option, job_not_found, rate_limited")
    message: str = Field(description="what to change, for a person")


class Error(Shape):
    error: ErrorDetail


class RemoveBgError(Shape):
    title: str
    code: str
    detail: str


class RemoveBgErrors(Shape):
    """remove.bg's error shape, which its SDKs parse."""
    errors: list[RemoveBgError]


class Accepted(Shape):
    job_id: str
    status_url: str
    events_url: str
    total: int = Field(description="files taken (each image, and each member of a zip)")


class JobSummary(Shape):
    job_id: str
    id: str | None = None
    status: JobStatus
    model: ModelName
    total: int
    done: int
    failed: int
    created: float = Field(description="Unix time")
    status_url: str | None = None


class JobList(Shape):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="the next page's cursor; null on the last page")
    next: Link


class Item(Shape):
    index: int
    name: str
    state: ItemState
    error: str | None = None
    batch_size: int | None = None
    timings_ms: dict[str, float] | None = None
    input_url: Link
    alpha_url: Link
    output_url: Link


class Job(JobSummary):
    options: dict
    error: str | None
    items: list[Item]
    events_url: str
    download_url: Link = Field(description="set once the job is done")
    items_next_cursor: str | None
    items_next: Link


class Retried(Shape):
    job_id: str
    retried: list[int] = Field(description="the items run again")
    status_url: str


class Recomposed(Shape):
    job_id: str
    recomposed: list[int] = Field(description="the items re-rendered from their alpha maps")
    status_url: str


class BatchResult(Shape):
    status: Literal["completed", "failed"]
    count: int = Field(description="images done")
    failed: int
    job_id: str
    download_url: str


class RemoveBgData(Shape):
    result_b64: str = Field(description="the cutout, base64")
    width: int
    height: int


class RemoveBgResult(Shape):
    """With `Accept: application/json`, remove.bg's JSON answer."""
    data: RemoveBgData


class Snapshot(Shape):
    """The `snapshot` event's data: where the job stands when the stream starts."""
    status: JobStatus
    total: int
    done: int
    failed: int


class Progress(Shape):
    """A `progress` event's data: an item changed state (`i`, `state`, `error`) or the job ended (no `i`)."""
    status: str
    total: int
    done: int
    failed: int
    error: str = ""
    i: int | None = None
    state: ItemState | None = None


RESPONSES = (Error, RemoveBgErrors, Accepted, JobSummary, JobList, Item, Job, Retried, Recomposed, BatchResult,
             RemoveBgResult, Snapshot, Progress)
