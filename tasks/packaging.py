"""The batch zip's contents: one entry per finished item under the name matting_core.manifest gives
it (the CLI's rules too), plus manifest.json."""

from matting_core import manifest as manifests
from matting_core.options import Options
from matting_core.registry import get_spec
from tasks import keys
from tasks.jobs import JobStore
from tasks.storage import Storage
from tasks.zipper import build_zip


def manifest(store: JobStore, job: str) -> tuple[dict, list[tuple[str, str]]]:
    """The manifest and the (storage key, name in zip) of every finished item, in input order.

    The model is the job's, its weights' hash from the static registry (no torch here). No clock
    goes in, so packaging the same outputs again gives the same zip.
    """
    record, items = store.job(job), store.items(job)
    if record is None:  # deleted since the package task looked; its errback finds nothing to mark
        raise LookupError(f"job {job} has no record (deleted while it was packaged)")
    done = [(i, it) for i, it in items.items() if it["state"] == "done"]
    wanted = manifests.output_names([it["name"] for _, it in done],
                                    [it["output_key"].rsplit(".", 1)[1] for _, it in done])
    names = dict(zip((i for i, _ in done), wanted, strict=True))
    files = [manifests.file_entry(it["name"], names.get(i), it["state"], it.get("error"), it.get("batch_size"),
                                  it.get("timings", {}))
             for i, it in items.items()]
    body = manifests.build(get_spec(record["model"]), Options(**record["options"]), files, job=job)
    return body, [(items[i]["output_key"], names[i]) for i, _ in done]


def write_zip(storage: Storage, store: JobStore, job: str) -> str:
    body, entries = manifest(store, job)
    key = keys.zip_key(job)
    build_zip(storage, key, entries, body)
    return key
