"""Fetching a user-given image URL without letting it reach inside the network (SSRF).

The host is resolved first and every address checked: only public (globally
routable) addresses pass, so loopback, private, link-local (cloud metadata at
169.254.169.254), shared, multicast and reserved ones are refused, also when
hidden behind a DNS name or an IPv4-mapped IPv6 address. The connection then
goes to the checked address itself (no second lookup an attacker's DNS could
answer differently), redirects are followed by hand and checked the same way,
and size and time are capped.
"""

import ipaddress
import socket
import time
from pathlib import PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

import urllib3

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
    addresses = {info[4][0] for info in infos}
    for address in sorted(addresses):
        if f"{address}:{port}" not in allow and not _public(ipaddress.ip_address(address)):
            raise FetchError(f"image_url host {host!r} resolves to {address}, a private or reserved address; "
                             "only public addresses can be fetched, so upload the file instead")
    return sorted(addresses)[0]


def _open(url: str, timeout: float, allow: tuple[str, ...]):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"image_url {url!r} must be an http:// or https:// URL")
    if parts.username or parts.password:
        raise FetchError("image_url must not carry a user name or password")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = _resolve(parts.hostname, port, allow)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    settings = {"timeout": urllib3.Timeout(connect=timeout, read=timeout), "retries": False, "maxsize": 1}
    if parts.scheme == "https":
        # Connect to the checked address but verify the certificate for the name the user gave.
        pool = urllib3.HTTPSConnectionPool(address, port, server_hostname=parts.hostname,
                                           assert_hostname=parts.hostname, **settings)
    else:
        pool = urllib3.HTTPConnectionPool(address, port, **settings)
    try:
        return pool.urlopen("GET", path, headers={"Host": host_header, "User-Agent": "cutout"}, redirect=False,
                            preload_content=False)
    except urllib3.exceptions.HTTPError as err:
        raise FetchError(f"image_url {url!r} could not be fetched ({type(err).__name__})") from None


def fetch_image(url: str, *, max_bytes: int, timeout: float, allow: tuple[str, ...] = ()) -> tuple[str, bytes]:
    """(a file name, the body) of `url`. `allow` lists "address:port" exceptions (tests only)."""
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        response = _open(url, timeout, tuple(allow))
        if response.status in _REDIRECTS and response.headers.get("Location"):
            response.release_conn()
            url = urljoin(url, response.headers["Location"])
            continue
        break
    else:
        raise FetchError(f"image_url redirected more than {MAX_REDIRECTS} times; give the final URL")
    try:
        if response.status != 200:
            raise FetchError(f"image_url {url!r} answered HTTP {response.status}")
        if int(response.headers.get("Content-Length") or 0) > max_bytes:
            raise FetchError(f"image_url {url!r} is larger than the {max_bytes // 2**20} MB limit")
        body = bytearray()
        for chunk in response.stream(_CHUNK):
            body += chunk
            if len(body) > max_bytes:
                raise FetchError(f"image_url {url!r} is larger than the {max_bytes // 2**20} MB limit")
            if time.monotonic() > deadline:
                raise FetchError(f"image_url {url!r} took longer than {timeout:g} s to download")
    except urllib3.exceptions.HTTPError as err:
        raise FetchError(f"image_url {url!r} could not be read ({type(err).__name__})") from None
    finally:
        response.release_conn()
    name = PurePosixPath(unquote(urlsplit(url).path)).name or "image"
    return name, bytes(body)
