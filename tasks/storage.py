"""Storage by key: the only place image bytes live (tasks pass keys, never pixels).

Two backends behind one small interface: a local directory (embedded mode) and S3 or
any S3-compatible store (cluster mode). Writes are whole-object overwrites, so a
redelivered task that writes the same key again is harmless.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import BinaryIO, Protocol

# boto3 itself is imported on first S3 use (s3_client, put_stream): with local storage a
# prefork cpu worker and its children hold ~10 MB less (bench/worker_memory.py). The
# exceptions module is ~0.1 MB and TRANSIENT_ERRORS needs it for every backend.
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
)

# Errors worth a retry with backoff: the store or the network, never the request.
# ClientError is left out on purpose: throttling and 5xx are already retried inside
# botocore (standard mode), and what is left (NoSuchBucket, AccessDenied) needs a fix.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    EndpointConnectionError,
    ConnectionClosedError,
    ReadTimeoutError,
    ConnectTimeoutError,
    # The store went away while a body was being read (urllib3's IncompleteRead, wrapped): the
    # request itself was fine, so it is read again like any other outage.
    ResponseStreamingError,
    OSError,
)

MiB = 1024 * 1024
# Parts of 8 MiB, two in flight: a 20 MiB zip takes 3 parts and at most ~24 MiB of
# buffers; S3 refuses parts under 5 MiB (except the last).
_TRANSFER = {"multipart_threshold": 8 * MiB, "multipart_chunksize": 8 * MiB, "max_concurrency": 2}
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class KeyNotFound(KeyError):
    """No object is stored under this key."""


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int: ...
    def get(self, key: str) -> bytes: ...
    def open(self, key: str) -> BinaryIO: ...
    def exists(self, key: str) -> bool: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def delete(self, key: str) -> None: ...
    def prefixes(self, parent: str) -> Iterator[str]: ...
    def newest(self, prefix: str) -> float | None:
        """No earlier than when the newest object under `prefix` was written (epoch s); None if none."""
        ...
    def url(self, key: str, expires: int = 3600, endpoint_url: str | None = None) -> str | None: ...


def _check_prefix(prefix: str) -> None:
    # An empty prefix would mean "everything"; no caller should ever want that.
    if not prefix:
        raise ValueError("delete_prefix needs a non-empty prefix (it would delete every object)")


class LocalStorage:
    """Keys are relative paths under `root`; the web app serves these files itself."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not isinstance(key, str) or not key:
            raise ValueError("storage key must be a non-empty string")
        if key.startswith("/") or "\\" in key or _CONTROL.search(key):
            raise ValueError(f"storage key {key!r} must be relative, with '/' separators and no control characters")
        if any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"storage key {key!r} has an empty, '.' or '..' segment")
        return self.root.joinpath(*key.split("/"))

    def put(self, key: str, data: bytes) -> None:
        self.put_stream(key, (data,))

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temp file in the same directory, then os.replace: readers see the old object
        # or the new one, never half of one. No fsync: in embedded mode a power cut
        # loses the job's state in Redis as well, so durability buys nothing here.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        written = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    written += len(chunk)
            os.replace(tmp, path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return written

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> int:
        _check_prefix(prefix)
        # A prefix is a string prefix, as on S3 ("jobs/ab" also matches "jobs/abc/..."),
        # so walk the deepest directory it names and compare whole keys.
        parent = prefix.rpartition("/")[0]
        base = self._path(parent) if parent else self.root
        deleted = 0
        for dirpath, _dirs, files in os.walk(base, topdown=False):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            head = "" if rel == "." else f"{rel}/"
            for name in files:
                if f"{head}{name}".startswith(prefix):
                    # Gone since the walk listed it: a writer's temp file renamed into place,
                    # or a task removing what it wrote for a deleted job. Either way it is gone.
                    with suppress(FileNotFoundError):
                        os.unlink(os.path.join(dirpath, name))
                        deleted += 1
            if head and head.startswith(prefix):
                with suppress(OSError):  # not empty: it holds another prefix's keys
                    os.rmdir(dirpath)
        return deleted

    def delete(self, key: str) -> None:
        """Delete one object; a missing one is no error (deleting twice is harmless)."""
        with suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def prefixes(self, parent: str) -> Iterator[str]:
        """The 'directories' right under `parent` (e.g. "jobs/" -> "jobs/<id>/"), as S3 lists them."""
        base = self._path(parent.rstrip("/"))
        with suppress(FileNotFoundError):
            for entry in os.scandir(base):
                if entry.is_dir(follow_symlinks=False):
                    yield f"{parent}{entry.name}/"

    def newest(self, prefix: str) -> float | None:
        """When the newest object under the directory `prefix` was written (epoch s); None if it holds none."""
        times = []
        for d, _dirs, files in os.walk(self._path(prefix.rstrip("/"))):
            for name in files:
                with suppress(FileNotFoundError):  # renamed or removed since the walk listed it
                    times.append(os.stat(os.path.join(d, name)).st_mtime)
        return max(times, default=None)

    def url(self, key: str, expires: int = 3600, endpoint_url: str | None = None) -> str | None:
        self._path(key)
        return None


def s3_client(endpoint_url: str | None = None, region: str | None = None):
    """A new S3 client for this endpoint and region (S3Storage keeps one per endpoint it uses).

    Clients are thread-safe, sessions are not: each client gets a session of its own.
    Credentials come from the standard AWS chain (env, files, role).
    """
    import boto3
    from botocore.config import Config

    options = {"addressing_style": "path"} if endpoint_url else None  # MinIO, moto
    # Botocore's own retries (throttling, 5xx, a refused connection) only bridge a blip:
    # they sleep inside the task. A longer outage is the task's retry with countdowns
    # (work.RETRY_COUNTDOWNS), which frees the worker and fits under the soft time limit.
    config = Config(retries={"mode": "standard", "max_attempts": 3}, signature_version="s3v4", s3=options)
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


class _ChunkReader(io.RawIOBase):
    """A read-only file over an iterator of chunks, so boto3 can pull what we push."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = memoryview(b"")
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # Fill the whole buffer unless the iterator ends: s3transfer sizes each part
        # with a single read(), and short parts would fall under S3's 5 MiB minimum.
        out = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(out):
            if not self._pending:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._pending = memoryview(chunk).cast("B")
                continue
            n = min(len(out) - filled, len(self._pending))
            out[filled : filled + n] = self._pending[:n]
            self._pending = self._pending[n:]
            filled += n
        self.total += filled
        return filled


class S3Storage:
    """Objects in one bucket. Botocore errors other than "missing" propagate for the task to retry."""

    def __init__(self, bucket: str, endpoint_url: str | None = None, region: str | None = None, client=None):
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self._injected = client
        # One client per endpoint, made on first use. A process's storage belongs to its Resources
        # (tasks/resources.py), which a prefork child builds again: no client crosses a fork.
        self._clients: dict[str | None, object] = {}
        self._clients_lock = threading.Lock()  # threads of one worker arrive at once

    def _client(self, endpoint_url: str | None):
        with self._clients_lock:
            if endpoint_url not in self._clients:
                self._clients[endpoint_url] = s3_client(endpoint_url, self.region)
            return self._clients[endpoint_url]

    @property
    def _s3(self):
        return self._injected or self._client(self.endpoint_url)

    def put(self, key: str, data: bytes) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        from boto3.s3.transfer import TransferConfig

        reader = _ChunkReader(chunks)
        self._s3.upload_fileobj(reader, self.bucket, key, Config=TransferConfig(**_TRANSFER))
        return reader.total

    def get(self, key: str) -> bytes:
        with closing(self.open(key)) as body:
            return body.read()

    def open(self, key: str) -> BinaryIO:
        try:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as e:
            if _is_missing(e):
                raise KeyNotFound(key) from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if not _is_missing(e):
                raise
            # HEAD answers a bare 404 for a missing bucket too; a wrong bucket must not
            # look like a missing object, so ask once more in a way that tells them apart.
            self._s3.head_bucket(Bucket=self.bucket)
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        _check_prefix(prefix)
        deleted = 0
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        for page in pages:  # a page holds at most 1000 keys, delete_objects' limit
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if not objects:
                continue
            reply = self._s3.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
            errors = reply.get("Errors", [])
            if errors:
                # OSError so the task retries: deleting again is harmless.
                first = errors[0]
                raise OSError(f"could not delete {len(errors)} objects under {prefix!r}, e.g. {first}")
            deleted += len(objects)
        return deleted

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=key)  # S3 answers 204 for a missing key too

    def prefixes(self, parent: str) -> Iterator[str]:
        # Delimiter: S3 rolls each job's objects up into one CommonPrefix, so listing 10,000 jobs
        # reads ~10 pages, not every object of every job.
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=parent, Delimiter="/")
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"]

    def newest(self, prefix: str) -> float | None:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        times = [o["LastModified"].timestamp() for page in pages for o in page.get("Contents", [])]
        # A listing's LastModified is cut to whole seconds: the write may have come up to 1 s later,
        # and the sweep must not take an object written just now for an old one.
        return max(times) + 1 if times else None

    def url(self, key: str, expires: int = 3600, endpoint_url: str | None = None) -> str | None:
        """A presigned GET; `endpoint_url`: the address its holder reaches the store at, if not the
        one this process uses (CUTOUT_S3_PUBLIC_ENDPOINT_URL). SigV4 signs the host, so the link is
        signed by a client of that endpoint, not rewritten afterwards."""
        params = {"Bucket": self.bucket, "Key": key}
        client = self._client(endpoint_url) if endpoint_url else self._s3
        return client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires)


def _is_missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in _MISSING_CODES


def make_storage(
    kind: str, *, home: Path, bucket: str | None, endpoint_url: str | None, region: str | None
) -> Storage:
    if kind == "local":
        return LocalStorage(Path(home) / "storage")
    if kind == "s3":
        if not bucket:
            raise ValueError("S3 storage needs a bucket: set CUTOUT_S3_BUCKET")
        return S3Storage(bucket, endpoint_url=endpoint_url, region=region)
    raise ValueError(f"unknown storage kind {kind!r}; choose one of: local, s3")
