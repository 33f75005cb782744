"""Fetching a user-given image URL without letting it reach inside the network (SSRF).

The URL is parsed strictly first: a bad port, an unclosed IPv6 bracket, a
control character, an over-long name or a scheme other than http(s) is an
InvalidURL naming the problem. The host is then resolved and every address
checked: only public (globally routable) addresses pass, so loopback, private,
link-local (cloud metadata at 169.254.169.254), shared, multicast and reserved
ones are refused, also when hidden behind a DNS name or inside an IPv6 address
that carries an IPv4 one (mapped, translated, compatible, NAT64, 6to4, Teredo,
ISATAP): both the outer and the inner address must be public. The connection then
goes to the checked address itself (no second lookup an attacker's DNS could
answer differently), redirects are followed by hand and checked the same way,
the size is capped, and one deadline covers everything: a watchdog shuts the
socket when it passes, so a server dripping a byte at a time cannot hold on.
"""

import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from pathlib import PurePosixPath
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from web.uploads import megabytes as _mb

MAX_REDIRECTS = 3
_CHUNK = 64 * 1024
_REDIRECTS = {301, 302, 303, 307, 308}
MAX_URL_CHARS = 2048  # what browsers and CDNs reliably carry; longer is no image link
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_V6 = ipaddress.IPv6Network
# IPv6 ranges that wrap an IPv4 address in their last 32 bits: on a network that translates
# them (NAT64/DNS64, SIIT) a connection to one reaches that IPv4 address. Python 3.11's
# is_global calls all of them global, so the inner address is checked by hand.
_LAST_32_BITS = (_V6("::ffff:0:0:0/96"),  # SIIT, IPv4-translated (RFC 6145)
                 _V6("::/96"),  # IPv4-compatible (deprecated, RFC 4291), :: and ::1 included
                 _V6("64:ff9b::/96"),  # NAT64 well-known prefix (RFC 6052)
                 _V6("64:ff9b:1::/48"))  # NAT64 local-use prefix (RFC 8215): never public itself
# Not globally reachable whatever they carry (the IANA registry; Python 3.11 misses them).
_NEVER_PUBLIC = (_V6("64:ff9b:1::/48"), _V6("2001::/23"), _V6("2002::/16"))


class FetchError(ValueError):
    """The URL was refused or could not be fetched; the message says which and why."""


class InvalidURL(FetchError):
    """The URL itself is malformed (bad port, bracket, character, name length, scheme)."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, in any form a translator or tunnel would unwrap."""
    inner = [ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)] if any(ip in net for net in _LAST_32_BITS) else []
    if ip.sixtofour:  # 2002:AABB:CCDD::/48 -> AA.BB.CC.DD
        inner.append(ip.sixtofour)
    if ip.teredo:  # (server, client); the client is the inverted last 32 bits
        inner.extend(ip.teredo)
    # ISATAP: an interface id of 0:5efe (or 200:5efe) followed by the IPv4 address (RFC 5214).
    if (int(ip) >> 32) & 0xFDFF_FFFF == 0x0000_5EFE:
        inner.append(ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF))
    return inner


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:  # ::ffff:a.b.c.d: the socket connects to the IPv4 address itself
            return _public(ip.ipv4_mapped)
        if any(ip in net for net in _NEVER_PUBLIC) or not all(_public(v4) for v4 in _embedded_ipv4(ip)):
            return False
    return ip.is_global and not ip.is_multicast


def _target(url: str) -> tuple[SplitResult, str, int]:
    """(the parts, the host, the port) of a well-formed http(s) URL, or InvalidURL naming what is wrong."""
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise InvalidURL(f"image_url is longer than {MAX_URL_CHARS} characters; give a shorter link")
    # urlsplit silently drops tabs and newlines; a URL with them was built to smuggle something.
    if bad := _CONTROL_OR_SPACE.search(url.strip(" ")):
        raise InvalidURL(f"image_url contains the control or space character {bad.group()!r} at position "
                         f"{bad.start()}; percent-encode it or remove it")
    try:
        parts = urlsplit(url.strip(" "))
        port = parts.port
    except ValueError as err:  # an unclosed [ or a port out of range or not a number
        raise InvalidURL(f"image_url {url!r} is malformed ({err}); check the host and the port") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidURL(f"image_url {url!r} must be an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidURL(f"image_url {url!r} has no host; it must be an http:// or https:// URL with one")
    if port == 0:
        raise InvalidURL(f"image_url {url!r} has port 0; use a port from 1 to 65535")
    host = parts.hostname
    if ":" not in host:  # a name (or IPv4): DNS allows 253 characters, 63 per label
        try:
            ascii_host = host.encode("idna").decode()
        except UnicodeError:
            raise InvalidURL(f"image_url host {host[:80]!r} is not a valid host name (a label is empty or over "
                             "63 characters); check the URL") from None
        if len(ascii_host) > 253:
            raise InvalidURL(f"image_url host is {len(ascii_host)} characters long, over the 253 a host name may "
                             "have; check the URL")
    return parts, host, port or (443 if parts.scheme == "https" else 80)


def _resolve(host: str, port: int, allow: tuple[str, ...]) -> str:
    """One checked address to connect to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):  # ValueError: a NUL; UnicodeError: an odd name
        raise FetchError(f"image_url host {host!r} does not resolve; check the URL") from None
    addresses = sorted({info[4][0] for info in infos})
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if f"{address}:{port}" not in allow and not _public(ip):
            inner = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else []
            carried = f" (which carries {', '.join(map(str, inner))})" if inner else ""
            raise FetchError(f"image_url host {host!r} resolves to {address}{carried}, a private or reserved "
                             "address; only public addresses can be fetched, so upload the file instead")
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
    parts, hostname, port = _target(url)
    if parts.username is not None or parts.password is not None:
        raise FetchError("image_url must not carry a user name or password")
    address = _resolve(hostname, port, allow)
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
