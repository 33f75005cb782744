"""What a batch's outputs are called and what its manifest.json says: one module for the CLI
(`cutout batch`) and the service (tasks/packaging.py), so the same inputs get the same names
and both manifests follow one schema, published as docs/manifest.schema.json
(`python -m matting_core.manifest` writes it; a test checks the file against SCHEMA).

Pure: no torch, Celery or boto3; the model is named by its registry spec.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
import typing
import unicodedata
from pathlib import PurePosixPath

from matting_core.options import FORMATS, Options
from matting_core.registry import ModelSpec

MANIFEST = "manifest.json"
VERSION = 1  # raised when a field changes meaning or goes away; new fields keep it
MAX_NAME_BYTES = 150  # well under the 255-byte file name limit of common filesystems
_MAX_EXT_BYTES = 16  # a longer "extension" is part of the name ("a.very long note")
_DRIVE = re.compile(r"^[A-Za-z]:")
_FORBIDDEN = frozenset('/\\:*?"<>|')
_WINDOWS_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"{p}{n}" for p in ("COM", "LPT") for n in range(1, 10)]
)
# Format characters (Cf) include the bidi overrides that can disguise an extension.
_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


# --- names ---------------------------------------------------------------------------------------

def _split_ext(name: str) -> tuple[str, str]:
    stem, ext = os.path.splitext(name)
    if len(ext.encode()) > _MAX_EXT_BYTES:
        return name, ""
    return stem, ext


def _fit(stem: str, tail: str) -> str:
    """stem + tail in at most MAX_NAME_BYTES of UTF-8, cut on a character boundary; no trailing dot or space
    (Windows drops them on unpacking, and the name would no longer match the manifest)."""
    room = MAX_NAME_BYTES - len(tail.encode())
    return stem.encode()[:room].decode("utf-8", "ignore").rstrip(" .") + tail


def safe_name(name: str) -> str:
    """A name that unpacks as one plain, visible file on Windows, macOS and Linux."""
    name = unicodedata.normalize("NFC", name)  # macOS sends NFD; keep one spelling per name
    name = re.split(r"[/\\]", _DRIVE.sub("", name))[-1]
    name = "".join(
        "_" if ch in _FORBIDDEN or unicodedata.category(ch) in _CONTROL_CATEGORIES else ch for ch in name
    )
    # Leading dots hide the file (or make '..'); Windows drops trailing dots and spaces.
    name = re.sub(r"^[\s.]+|[\s.]+$", "", name)
    if not name:
        return "image"
    stem, ext = _split_ext(name)
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        stem = f"_{stem}"
    return _fit(stem, ext)


def output_name(input_name: str, extension: str) -> str:
    """The output of the input called `input_name` (a file name or a path: only its last part counts),
    its extension replaced: "../shots/Cat.JPG" -> "Cat.png". Not yet unique: see output_names."""
    stem = PurePosixPath(safe_name(input_name)).stem or "image"
    # safe_name again on the whole: the new extension may push a name cut to the limit past it.
    return safe_name(f"{stem}.{extension}")


def unique_names(names: list[str]) -> list[str]:
    """De-duplicate case-insensitively ("a.png", "A-2.png", ...), first come first served.

    manifest.json counts as taken: the folder or archive always has one.
    """
    taken = {MANIFEST.casefold()}
    next_suffix: dict[str, int] = {}  # so thousands of equal names stay linear
    unique = []
    for name in names:
        folded = name.casefold()
        candidate = name
        n = next_suffix.get(folded, 2)
        stem, ext = _split_ext(name)
        while candidate.casefold() in taken:
            candidate = _fit(stem, f"-{n}{ext}")
            n += 1
        next_suffix[folded] = n
        taken.add(candidate.casefold())
        unique.append(candidate)
    return unique


def output_names(input_names: list[str], extensions: list[str]) -> list[str]:
    """Every output's name, safe and unique (ignoring case) in input order, never manifest.json."""
    return unique_names([output_name(n, e) for n, e in zip(input_names, extensions, strict=True)])


# --- the manifest --------------------------------------------------------------------------------

def file_entry(input_name: str, output: str | None, status: str, error: str | None = None,
               batch_size: int | None = None, timings_ms: dict | None = None) -> dict:
    """One input's line: its output's name when done, else None and the reason."""
    return {"input": input_name, "output": output if status == "done" else None, "status": status,
            "error": error, "batch_size": batch_size, "timings_ms": timings_ms or {}}


def build(spec: ModelSpec, options: Options, files: list[dict], *, job: str | None = None,
          device: str | None = None, precision: str | None = None, seconds: float | None = None) -> dict:
    """The manifest. The service passes its job id and no clock (the same outputs give the same zip,
    byte for byte); the CLI passes the device, the precision and how long the run took. What a
    producer does not pass is left out, not written as null."""
    done = sum(f["status"] == "done" for f in files)
    model = {"name": spec.name, "weights_sha256": spec.sha256, "device": device, "precision": precision}
    summary = {"total": len(files), "done": done, "failed": sum(f["status"] == "failed" for f in files)}
    if seconds is not None:
        summary |= {"seconds": round(seconds, 3), "images_per_second": round(done / seconds, 3) if seconds else None}
    body = {
        "manifest_version": VERSION,
        "job": job,
        "model": {k: v for k, v in model.items() if v is not None},
        "options": dataclasses.asdict(options),
        "summary": summary,
        "files": files,
    }
    return {k: v for k, v in body.items() if v is not None}


def to_json(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")


# --- its JSON Schema -----------------------------------------------------------------------------

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _nullable(kind: str, description: str, **more) -> dict:
    return {"type": [kind, "null"], "description": description, **more}


def _object(properties: dict, description: str, optional: tuple[str, ...] = ()) -> dict:
    return {"type": "object", "description": description, "properties": properties,
            "required": [name for name in properties if name not in optional], "additionalProperties": False}


def _options_schema() -> dict:
    """From Options' own fields, so a new option cannot be left out of the schema."""
    hints = typing.get_type_hints(Options)
    properties = {}
    for field in dataclasses.fields(Options):
        kinds = [_JSON_TYPES[t] if t in _JSON_TYPES else "null" for t in typing.get_args(hints[field.name])]
        prop: dict = {"type": kinds or _JSON_TYPES[hints[field.name]]}
        if field.name == "format":
            prop["enum"] = list(FORMATS)
        properties[field.name] = prop
    return _object(properties, "Every postprocessing option the outputs were made with (matting_core/options.py).")


def _file_schema() -> dict:
    return _object({
        "input": {"type": "string", "description": "The input as the user named it: an uploaded file's name, "
                                                   "or the CLI's path (archive.zip!member for a zip's member)."},
        "output": _nullable("string", "Its output's name in the zip or folder; null when it failed."),
        "status": {"enum": ["done", "failed"]},
        "error": _nullable("string", "Why it failed, naming the file and what to do; null when done."),
        "batch_size": _nullable("integer", "Images in the model call that made its alpha; null when it "
                                           "failed before the model ran.", minimum=1),
        "timings_ms": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
                       "description": "Milliseconds per stage (read, decode, infer, refine, compose, encode, ...)."},
    }, "One input's outcome, in input order.")


SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "cutout manifest.json",
    **_object({
        "manifest_version": {"const": VERSION},
        "job": {"type": "string", "description": "The service's job id (not in the CLI's manifest)."},
        "model": _object({
            "name": {"type": "string", "description": "The registry's name (matting_core/registry.py)."},
            "weights_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                               "description": "The sha256 of the published weights the model was converted from."},
            "device": {"type": "string", "description": "Where the CLI ran it: cpu, cuda, cuda:N "
                                                        "(not in the service's manifest)."},
            "precision": {"enum": ["fp32", "bf16", "fp16"],
                          "description": "As the CLI ran it (not in the service's manifest)."},
        }, "The model that made every alpha.", optional=("device", "precision")),
        "options": _options_schema(),
        "summary": _object({
            "total": {"type": "integer", "minimum": 0},
            "done": {"type": "integer", "minimum": 0},
            "failed": {"type": "integer", "minimum": 0},
            "seconds": {"type": "number", "minimum": 0,
                        "description": "The CLI run's wall time (not in the service's manifest: no clock goes "
                                       "in, so its zip is the same bytes whenever it is packaged)."},
            "images_per_second": _nullable("number", "done / seconds, from the CLI; null when seconds is 0.",
                                           minimum=0),
        }, "Counts over `files`.", optional=("seconds", "images_per_second")),
        "files": {"type": "array", "items": _file_schema()},
    }, "What a batch made: the model, the options and each input's outcome, beside its outputs.",
        optional=("job",)),
}


if __name__ == "__main__":  # python -m matting_core.manifest > docs/manifest.schema.json
    sys.stdout.write(json.dumps(SCHEMA, indent=2, ensure_ascii=False) + "\n")
