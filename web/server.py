"""gunicorn's gevent worker with the limits a slow or greedy client meets before the app sees it.

Every connection, SSE stream and synchronous wait is a greenlet, not a thread, so a client that
sends slowly or listens long holds no worker. On top of gunicorn's gevent worker:

- the whole request head within CUTOUT_HEADER_TIMEOUT seconds (and, between keep-alive requests,
  the idle wait before the next head): gunicorn reads each head inside `timeout_ctx()`;
- a body that sends nothing for CUTOUT_BODY_TIMEOUT seconds ends its request with 408;
- at most CUTOUT_MAX_CONNECTIONS_PER_IP connections open from one address across all workers of
  this server; past it a connection gets a short 429 and is closed before anything is parsed.
  0 turns the cap off: behind a proxy every connection comes from the proxy's address, and the
  proxy caps per client instead (README, "Guarantees").

Imported by gunicorn's master (web.gunicorn_conf), so it imports only gunicorn and gevent: the app's
libraries load in each worker after gevent has patched the standard library.
"""

import ctypes
import multiprocessing
import zlib
from dataclasses import dataclass

import gevent
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker
from werkzeug.exceptions import RequestTimeout


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    per_ip: int = 128

    @classmethod
    def of(cls, settings) -> "Limits":
        """The limits of a tasks.settings.Settings (not imported here: see the module's docstring)."""
        return cls(header_timeout=settings.header_timeout, body_timeout=settings.body_timeout,
                   per_ip=settings.max_connections_per_ip)


_limits = Limits()


def use(settings) -> None:
    """Set once in gunicorn's master (web.gunicorn_conf), before the first fork: every worker inherits them."""
    global _limits
    _limits = Limits.of(settings)


class ConnectionTable:
    """Open connections per client address, in memory the master shares with the workers it forks.

    One row per worker, written only by that worker (its greenlets never switch between the read
    and the write, so no lock); a check sums the address's column over all rows. The master gives
    each new worker a free row and clears a dead worker's. Addresses are hashed into buckets: two
    addresses in one bucket share its cap (16,384 buckets: rare, and only ever stricter).
    """

    ROWS, BUCKETS = 64, 16_384

    def __init__(self):
        self.counts = multiprocessing.RawArray(ctypes.c_int32, self.ROWS * self.BUCKETS)

    def bucket(self, address: str) -> int:
        return zlib.crc32(address.encode()) % self.BUCKETS

    def open(self, address: str) -> int:
        """Connections open from `address` now, in every worker."""
        b = self.bucket(address)
        return sum(self.counts[row * self.BUCKETS + b] for row in range(self.ROWS))

    def add(self, row: int, address: str, delta: int) -> None:
        self.counts[row * self.BUCKETS + self.bucket(address)] += delta

    def clear(self, row: int) -> None:
        ctypes.memset(ctypes.addressof(self.counts) + row * self.BUCKETS * 4, 0, self.BUCKETS * 4)


_table: ConnectionTable | None = None


def table() -> ConnectionTable:
    global _table
    if _table is None:  # in the master, before the first fork (pre_fork), so every worker shares it
        _table = ConnectionTable()
    return _table


def assign_row(server, worker) -> None:
    """gunicorn pre_fork hook (master): a row no live worker holds, cleared of an earlier owner's counts."""
    taken = {getattr(w, "connection_row", None) for w in server.WORKERS.values()}
    row = next(r for r in range(ConnectionTable.ROWS) if r not in taken)
    table().clear(row)
    worker.connection_row = row


def release_row(worker) -> None:
    """gunicorn child_exit hook (master): a dead worker's connections are closed; stop counting them."""
    row = getattr(worker, "connection_row", None)
    if row is not None:
        table().clear(row)


class _TimedInput:
    """wsgi.input whose socket timeout (a body that stopped arriving) becomes a 408 for the client."""

    def __init__(self, stream, seconds: float):
        self.stream, self.seconds = stream, seconds

    def _call(self, name, *args):
        try:
            return getattr(self.stream, name)(*args)
        except TimeoutError:
            raise RequestTimeout(f"the request body stopped arriving: nothing for {self.seconds:g} s "
                                 "(CUTOUT_BODY_TIMEOUT); check the connection and send it again") from None

    def read(self, *args):
        return self._call("read", *args)

    def readline(self, *args):
        return self._call("readline", *args)

    def readlines(self, *args):
        return self._call("readlines", *args)

    def __iter__(self):
        return iter(self.readline, b"")


def _refusal(limit: int) -> bytes:
    body = (b'{"error": {"code": "too_many_connections", "message": "this address has %d connections open, the '
            b'most one address may hold (CUTOUT_MAX_CONNECTIONS_PER_IP); close some and retry"}}' % limit)
    return (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


class Worker(GeventWorker):
    """gunicorn -k web.server.Worker (set by web.gunicorn_conf)."""

    def init_process(self):
        self.limits = _limits
        self.table = table()
        super().init_process()

    def load_wsgi(self):
        super().load_wsgi()
        app, seconds = self.wsgi, self.limits.body_timeout

        def wsgi(environ, start_response):
            environ["wsgi.input"] = _TimedInput(environ["wsgi.input"], seconds)
            return app(environ, start_response)

        self.wsgi = wsgi

    def timeout_ctx(self):
        # base_async.handle reads each request head inside this block: silent when it expires,
        # the connection just closes (gunicorn uses its keepalive setting here; ours is longer).
        return gevent.Timeout(self.limits.header_timeout, False)

    def handle(self, listener, client, addr):
        # A Unix socket has no client address (its peer is a local proxy): only TCP peers are capped.
        address = addr[0] if isinstance(addr, tuple) and self.limits.per_ip else None
        row = getattr(self, "connection_row", 0)
        if address is not None and self.table.open(address) >= self.limits.per_ip:
            self._refuse(client)
            return
        if address is not None:
            self.table.add(row, address, 1)
        try:
            # An idle socket raises instead of waiting forever: reads of the body, and writes to a
            # client that stopped reading. (GeventWorker.handle would set no timeout at all.)
            client.settimeout(self.limits.body_timeout)
            AsyncWorker.handle(self, listener, client, addr)
        finally:
            if address is not None:
                self.table.add(row, address, -1)

    def _refuse(self, client) -> None:
        try:
            client.settimeout(0)  # never wait on this client: the reply fits the empty send buffer
            client.send(_refusal(self.limits.per_ip))
        except OSError:
            pass  # gone already; nothing to tell it
        finally:
            client.close()


def off_the_hub(func, *args):
    """`func(*args)` in gevent's threadpool where gevent runs this process (the web workers), else here.

    For CPU-bound calls that release the GIL (scrypt): on the hub they would stop every other
    connection of the worker for their whole duration (0.3 s a login); in a thread they do not.
    """
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        return func(*args)
    return gevent.get_hub().threadpool.apply(func, args)
