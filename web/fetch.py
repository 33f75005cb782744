"""Fetching a user-given image URL without letting it reach inside the network (SSRF).

The host is resolved first and every address checked: only public (globally
routable) addresses pass, so loopback, private, link-local (cloud metadata at
169.254.169.254), shared, multicast and reserved ones are refused, also when
hidden behind a DNS name or an IPv4-mapped IPv6 address. The connection then
goes to the checked address itself (no second lookup an attacker's DNS could
answer differently), redirects are followed by hand and checked the same way,
the size is capped, and one deadline covers everything: a watchdog shuts the
socket when it passes, so a server dripping a byte at a time cannot hold on.
"""

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from pathlib import PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

from web.uploads import megabytes as _mb

MAX_REDIRECTS = 3
_CHUNK = 64 * 1024
_REDIRECTS = {301, 302, 303, 307, 308}


class FetchError(ValueError):
    """The URL was refused or could not be fetched; the message says which and why."""


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _resolve(host: str, port: int, allow: tuple[str, ...]) -> str:
    """One checked address to connect to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise FetchError(f"image_url host {host!r} does not resolve; check the URL") from None
    addresses = sorted({info[4][0] for info in infos})
    for address in addresses:
        if f"{address}:{port}" not in allow and not _public(ipaddress.ip_address(address)):
            raise FetchError(f"image_url host {host!r} resolves to {address}, a private or reserved address; "
                             "only public addresses can be fetched, so upload the file instead")
    return addresses[0]


class _Watchdog:
    """Shuts the socket down at the deadline, which wakes any read blocked on it."""

    def __init__(self, sock: socket.socket, seconds: float):
        self.fired = False
        self._sock = sock
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed

    def cancel(self) -> None:
        self._timer.cancel()


def _request(url: str, deadline: float, allow: tuple[str, ...]):
    """(connection, response, watchdog) for one GET of `url`, after the address checks."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"image_url {url!r} must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise FetchError("image_url must not carry a user name or password")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = _resolve(parts.hostname, port, allow)
    left = deadline - time.monotonic()
    try:
        sock = socket.create_connection((address, port), timeout=max(0.1, left))
        if parts.scheme == "https":
            # Connected to the checked address; the certificate is verified for the name the user gave.
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
    except (OSError, ssl.SSLError) as err:
        raise FetchError(f"image_url {url!r} could not be reached ({err})") from None
    watchdog = _Watchdog(sock, deadline - time.monotonic())
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6 literals keep brackets
    conn = http.client.HTTPConnection(host, port)
    conn.sock = sock
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", path, headers={"Host": host if parts.port is None else f"{host}:{parts.port}",
                                           "User-Agent": "cutout", "Accept": "image/*"})
        return conn, conn.getresponse(), watchdog
    except (OSError, http.client.HTTPException) as err:
        watchdog.cancel()
        conn.close()
        raise _failure(url, err, watchdog, deadline) from None


def _failure(url: str, err: Exception, watchdog: _Watchdog, deadline: float) -> FetchError:
    if watchdog.fired or time.monotonic() >= deadline:
        return FetchError(f"image_url {url!r} took too long to answer; upload the file instead")
    return FetchError(f"image_url {url!r} could not be fetched ({type(err).__name__}: {err})")


def fetch_image(url: str, *, max_bytes: int, timeout: float, allow: tuple[str, ...] = ()) -> tuple[str, bytes]:
    """(a file name, the body) of `url`. `allow` lists "address:port" exceptions (tests only)."""
    deadline = time.monotonic() + timeout
    allow = tuple(allow)
    for _ in range(MAX_REDIRECTS + 1):
        conn, response, watchdog = _request(url, deadline, allow)
        if response.status in _REDIRECTS and response.getheader("Location"):
            watchdog.cancel()
            conn.close()
            url = urljoin(url, response.getheader("Location"))
            continue
        break
    else:
        raise FetchError(f"image_url redirected more than {MAX_REDIRECTS} times; give the final URL")
    try:
        if response.status != 200:
            raise FetchError(f"image_url {url!r} answered HTTP {response.status}")
        if int(response.getheader("Content-Length") or 0) > max_bytes:
            raise FetchError(f"image_url {url!r} is larger than the {_mb(max_bytes)} limit")
        body = bytearray()
        while chunk := response.read1(_CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise FetchError(f"image_url {url!r} is larger than the {_mb(max_bytes)} limit")
        if watchdog.fired:  # the shutdown ends the body early: a short read is not the whole image
            raise FetchError(f"image_url {url!r} took longer than {timeout:g} s to download")
    except (OSError, http.client.HTTPException) as err:
        raise _failure(url, err, watchdog, deadline) from None
    finally:
        watchdog.cancel()
        conn.close()
    name = PurePosixPath(unquote(urlsplit(url).path)).name or "image"
    return name, bytes(body)
