"""The batch zip's contents: one entry per finished item under a safe, unique name, plus manifest.json."""

from pathlib import PurePosixPath

from matting_core.registry import get_spec
from tasks import keys
from tasks.jobs import JobStore
from tasks.storage import Storage
from tasks.zipper import build_zip, safe_name, unique_names


def manifest(store: JobStore, job: str) -> tuple[dict, list[tuple[str, str]]]:
    """The manifest and the (storage key, name in zip) of every finished item, in input order.

    The model is the job's, its weights' hash from the static registry (no torch here).
    """
    record, items = store.job(job), store.items(job)
    spec = get_spec(record["model"])
    done = [(i, it) for i, it in items.items() if it["state"] == "done"]
    # safe_name again on the whole: the new extension may push a name cut to the limit past it.
    wanted = [safe_name(f"{PurePosixPath(safe_name(it['name'])).stem}.{it['output_key'].rsplit('.', 1)[1]}")
              for _, it in done]
    names = dict(zip((i for i, _ in done), unique_names(wanted), strict=True))
    files = [{"input": it["name"], "output": names.get(i), "status": it["state"], "error": it.get("error"),
              "batch_size": it.get("batch_size"), "timings_ms": it.get("timings", {})}
             for i, it in items.items()]
    body = {
        "job": job,
        "options": record["options"],
        "model": {"name": spec.name, "weights_sha256": spec.sha256},
        "summary": {"total": record["total"], "done": len(done),
                    "failed": sum(it["state"] == "failed" for it in items.values())},
        "files": files,
    }
    return body, [(items[i]["output_key"], names[i]) for i, _ in done]


def write_zip(storage: Storage, store: JobStore, job: str) -> str:
    body, entries = manifest(store, job)
    key = keys.zip_key(job)
    build_zip(storage, key, entries, body)
    return key
