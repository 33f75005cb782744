"""A real HTTP server on a free loopback port, answering from a table of paths, for image_url tests.

Each route is a function of the request handler; the server records every request it saw,
so a test can prove that a refused URL never reached it.
"""

import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = Callable[[BaseHTTPRequestHandler], None]


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict | None = None) -> None:
    handler.send_response(status)
    headers = {"Content-Length": str(len(body)), **(headers or {})}
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def body(data: bytes, content_type: str = "image/jpeg") -> Route:
    return lambda h: send(h, 200, data, {"Content-Type": content_type})


def redirect(location: str, status: int = 302) -> Route:
    return lambda h: send(h, status, headers={"Location": location})


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a slow route's thread must not hold up the test's teardown

    def handle_error(self, request, client_address):
        # A client that gives up mid-request (what the timeout tests make it do) is expected here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class LoopbackServer:
    def __init__(self, routes: dict[str, Route] | None = None, host: str = "127.0.0.1"):
        self.routes = dict(routes or {})
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest's output clean
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, "headers": dict(self.headers)})
                route = server.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    send(self, 404, b"not here", {"Content-Type": "text/plain"})
                else:
                    try:
                        route(self)
                    except OSError:  # the client hung up mid-answer: what the slow routes expect
                        self.close_connection = True

        self.httpd = (_Server6 if ":" in host else _Server)((host, 0), Handler)
        self.host, self.port = host, self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def allow(self) -> tuple[str, ...]:
        return (f"{self.host}:{self.port}",)

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
