"""web.fetch.fetch_image against real HTTP servers on loopback.

Loopback is itself refused, so a fetch that should succeed names its test server in
`allow`; every refusal test checks the server it pointed at never saw a request.
"""

import ipaddress
import time

import pytest

from tests.web.loopback import LoopbackServer, body, redirect, send
from web.fetch import MAX_REDIRECTS, FetchError, InvalidURL, _public, fetch_image

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8  # the bytes only travel; nobody decodes them
TIMEOUT = 0.5  # s; the slow servers below take several times longer than this
SLACK = 1.0  # s a refusal may take beyond the timeout


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture
def target():
    """A second server that redirects point at; it is never in `allow`."""
    srv = LoopbackServer({"/secret": body(b"internal", "text/plain")})
    yield srv
    srv.close()


def fetch(url: str, server: LoopbackServer | None = None, **kwargs):
    kwargs.setdefault("max_bytes", 1_000_000)
    kwargs.setdefault("timeout", TIMEOUT)
    return fetch_image(url, allow=server.allow if server else (), **kwargs)


def drip(data: bytes, interval: float = 0.1):
    """A route writing `data` raw (status line and all) one byte at a time: a slowloris server."""
    def route(handler):
        handler.close_connection = True
        for byte in data:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(interval)
    return route


def drip_body(length: int, interval: float, seconds: float):
    def route(handler):
        send(handler, 200, b"", {"Content-Length": str(length)})
        handler.close_connection = True
        for _ in range(int(seconds / interval)):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(interval)
    return route


def stall(seconds: float):
    def route(handler):
        handler.close_connection = True
        time.sleep(seconds)
    return route


# --- what passes -------------------------------------------------------------------------------


def test_fetch_returns_the_file_name_from_the_path_and_the_body(server):
    server.routes["/photos/cat.jpg"] = body(JPEG)
    assert fetch(server.url("/photos/cat.jpg"), server) == ("cat.jpg", JPEG)
    assert [r["path"] for r in server.requests] == ["/photos/cat.jpg"]


def test_fetch_keeps_the_query_and_unquotes_the_name(server):
    server.routes["/a%20b.png"] = body(JPEG)
    name, data = fetch(server.url("/a%20b.png?size=big"), server)
    assert (name, data) == ("a b.png", JPEG)
    assert server.requests[0]["path"] == "/a%20b.png?size=big"


def test_fetch_of_a_bare_host_names_the_file_image(server):
    server.routes["/"] = body(JPEG)
    assert fetch(server.url("/"), server) == ("image", JPEG)


def test_fetch_sends_the_host_the_user_gave(server):
    server.routes["/x.jpg"] = body(JPEG)
    fetch(f"http://localhost:{server.port}/x.jpg", server)
    assert server.requests[0]["headers"]["Host"] == f"localhost:{server.port}"


def test_fetch_of_an_ipv6_literal_sends_a_bracketed_host():
    srv = LoopbackServer({"/x.jpg": body(JPEG)}, host="::1")
    try:
        assert fetch(srv.url("/x.jpg"), srv) == ("x.jpg", JPEG)
        assert srv.requests[0]["headers"]["Host"] == f"[::1]:{srv.port}"
    finally:
        srv.close()


def test_a_body_of_exactly_max_bytes_passes(server):
    server.routes["/x.jpg"] = body(JPEG)
    assert fetch(server.url("/x.jpg"), server, max_bytes=len(JPEG))[1] == JPEG


# --- addresses refused before any connection ---------------------------------------------------

LOOPBACK_URLS = {
    "ipv4 loopback": ("http://127.0.0.1:{port}/x.jpg", "127.0.0.1"),
    "a name resolving to loopback": ("http://localhost:{port}/x.jpg", "127.0.0.1"),
    "ipv6 loopback": ("http://[::1]:{port}/x.jpg", "::1"),
    "ipv4-mapped ipv6 loopback": ("http://[::ffff:127.0.0.1]:{port}/x.jpg", "::ffff:127.0.0.1"),
}


@pytest.mark.parametrize(("template", "address"), LOOPBACK_URLS.values(), ids=LOOPBACK_URLS.keys())
def test_loopback_is_refused_without_allow_before_connecting(server, template, address):
    server.routes["/x.jpg"] = body(JPEG)
    with pytest.raises(FetchError) as refused:
        fetch(template.format(port=server.port))
    assert address in str(refused.value)
    assert "upload the file instead" in str(refused.value)
    assert server.requests == []


PRIVATE_URLS = {
    "unspecified": ("http://0.0.0.0/x.jpg", "0.0.0.0"),
    "10/8": ("http://10.0.0.1/x.jpg", "10.0.0.1"),
    "192.168/16": ("http://192.168.1.1/x.jpg", "192.168.1.1"),
    "172.16/12": ("http://172.16.0.1/x.jpg", "172.16.0.1"),
    "cloud metadata": ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    "shared 100.64/10": ("http://100.64.0.1/x.jpg", "100.64.0.1"),
    "ipv6 unique local (aws metadata)": ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
    "ipv6 link-local": ("http://[fe80::1]/x.jpg", "fe80::1"),
    "multicast": ("http://224.0.0.1/x.jpg", "224.0.0.1"),
    "ipv4-mapped private": ("http://[::ffff:10.0.0.1]/x.jpg", "::ffff:10.0.0.1"),
}


@pytest.mark.parametrize(("url", "address"), PRIVATE_URLS.values(), ids=PRIVATE_URLS.keys())
def test_private_and_reserved_addresses_are_refused_naming_the_address(url, address):
    started = time.monotonic()
    with pytest.raises(FetchError) as refused:
        fetch(url, timeout=5)
    assert f"resolves to {address}," in str(refused.value)
    assert "upload the file instead" in str(refused.value)
    # No connection was tried: 10.0.0.1 and friends would hang until the connect timeout.
    assert time.monotonic() - started < 1


# IPv4 inside IPv6: on a network that translates or tunnels these (NAT64/DNS64, SIIT, 6to4 relays,
# Teredo, ISATAP) a connection to the outer address reaches the inner one.
WRAPPED_URLS = {  # the URL, and the IPv4 address the refusal names as carried inside
    "nat64 of cloud metadata": ("http://[64:ff9b::a9fe:a9fe]:{port}/latest/meta-data/", "169.254.169.254"),
    "nat64 of loopback": ("http://[64:ff9b::7f00:1]:{port}/x.jpg", "127.0.0.1"),
    "local-use nat64 of loopback": ("http://[64:ff9b:1::7f00:1]:{port}/x.jpg", "127.0.0.1"),
    "local-use nat64 of a public address": ("http://[64:ff9b:1::808:808]:{port}/x.jpg", "8.8.8.8"),
    "6to4 of loopback": ("http://[2002:7f00:1::]:{port}/x.jpg", "127.0.0.1"),
    "6to4 of a private address": ("http://[2002:a00:1::1]:{port}/x.jpg", "10.0.0.1"),
    "ipv4-compatible loopback": ("http://[::7f00:1]:{port}/x.jpg", "127.0.0.1"),
    "ipv4-compatible private": ("http://[::a00:1]:{port}/x.jpg", "10.0.0.1"),
    "siit-translated loopback": ("http://[::ffff:0:7f00:1]:{port}/x.jpg", "127.0.0.1"),
    "teredo with a loopback client": ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]:{port}/x.jpg", "127.0.0.1"),
    "isatap of a private address": ("http://[2a00:1450::5efe:a00:1]:{port}/x.jpg", "10.0.0.1"),
}


@pytest.mark.parametrize(("template", "inner"), WRAPPED_URLS.values(), ids=WRAPPED_URLS.keys())
def test_ipv4_wrapped_in_ipv6_is_refused_before_connecting_naming_the_inner_address(server, template, inner):
    server.routes["/x.jpg"] = body(JPEG)
    started = time.monotonic()
    with pytest.raises(FetchError) as refused:
        fetch(template.format(port=server.port), timeout=5)
    assert "resolves to " in str(refused.value) and "which carries " in str(refused.value)
    assert inner in str(refused.value).split("which carries ", 1)[1].split(")")[0]
    assert "upload the file instead" in str(refused.value)
    assert server.requests == [] and time.monotonic() - started < 1


def test_the_ipv4_mapped_hex_form_of_loopback_is_refused(server):
    with pytest.raises(FetchError, match="resolves to ::ffff:127.0.0.1,"):
        fetch(f"http://[::ffff:7f00:1]:{server.port}/x.jpg")
    assert server.requests == []


@pytest.mark.parametrize(("address", "public"), [
    ("64:ff9b::808:808", True),  # DNS64 of 8.8.8.8: how an IPv6-only network reaches an IPv4 image host
    ("::ffff:0:808:808", True),
    ("::ffff:8.8.8.8", True),
    ("2a00:1450::200:5efe:808:808", True),
    ("2a00:1450:4001:82a::200e", True),  # plain global IPv6
    ("2002:808:808::1", False),  # 6to4 and Teredo are never globally reachable themselves (IANA)
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", False),
    ("64:ff9b:1::808:808", False),  # local-use NAT64 prefix
    ("64:ff9b::e000:1", False),  # NAT64 of multicast 224.0.0.1
    ("::", False),
    ("::1", False),
])
def test_the_guard_decides_wrapped_addresses_by_both_the_outer_and_the_inner_address(address, public):
    assert _public(ipaddress.ip_address(address)) is public


def test_the_ipv4_mapped_form_reaches_the_loopback_server_when_allowed(server):
    # The refusals above are not for want of a route: a mapped address really connects to IPv4 loopback.
    server.routes["/x.jpg"] = body(JPEG)
    url = f"http://[::ffff:127.0.0.1]:{server.port}/x.jpg"
    with pytest.raises(FetchError, match="resolves to ::ffff:127.0.0.1,"):
        fetch(url)
    assert server.requests == []
    allowed = (f"::ffff:127.0.0.1:{server.port}",)
    assert fetch_image(url, max_bytes=10**6, timeout=TIMEOUT, allow=allowed) == ("x.jpg", JPEG)
    assert len(server.requests) == 1


def test_allow_covers_only_its_own_port(server, target):
    with pytest.raises(FetchError, match="127.0.0.1"):
        fetch(target.url("/secret"), server)
    assert target.requests == []


# --- redirects -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_allowed_path_is_followed(server, status):
    server.routes["/old"] = redirect("/new/photo.jpg", status)
    server.routes["/new/photo.jpg"] = body(JPEG)
    assert fetch(server.url("/old"), server) == ("photo.jpg", JPEG)
    assert [r["path"] for r in server.requests] == ["/old", "/new/photo.jpg"]


REDIRECT_TARGETS = {
    "loopback": ("http://127.0.0.1:{port}/secret", "127.0.0.1"),
    "scheme-relative loopback": ("//127.0.0.1:{port}/secret", "127.0.0.1"),
    "a name resolving to loopback": ("http://localhost:{port}/secret", "127.0.0.1"),
    "ipv6 loopback": ("http://[::1]:{port}/secret", "::1"),
    "private": ("http://10.0.0.1/secret", "10.0.0.1"),
    "cloud metadata": ("http://169.254.169.254/latest/meta-data/iam/", "169.254.169.254"),
}


@pytest.mark.parametrize(("location", "address"), REDIRECT_TARGETS.values(), ids=REDIRECT_TARGETS.keys())
def test_a_redirect_to_an_internal_address_is_refused(server, target, location, address):
    server.routes["/go"] = redirect(location.format(port=target.port))
    with pytest.raises(FetchError) as refused:
        fetch(server.url("/go"), server)
    assert address in str(refused.value)
    assert target.requests == []


def test_redirects_up_to_the_limit_are_followed(server):
    for n in range(MAX_REDIRECTS):
        server.routes[f"/r{n}"] = redirect(f"/r{n + 1}")
    server.routes[f"/r{MAX_REDIRECTS}"] = body(JPEG)
    assert fetch(server.url("/r0"), server) == (f"r{MAX_REDIRECTS}", JPEG)


def test_more_redirects_than_the_limit_are_refused(server):
    for n in range(MAX_REDIRECTS + 1):
        server.routes[f"/r{n}"] = redirect(f"/r{n + 1}")
    server.routes[f"/r{MAX_REDIRECTS + 1}"] = body(JPEG)
    with pytest.raises(FetchError, match=f"redirected more than {MAX_REDIRECTS} times"):
        fetch(server.url("/r0"), server)
    assert len(server.requests) == MAX_REDIRECTS + 1  # the final URL was never asked for


def test_a_redirect_loop_ends_with_the_redirect_error(server):
    server.routes["/loop"] = redirect("/loop")
    with pytest.raises(FetchError, match="redirected more than"):
        fetch(server.url("/loop"), server)


# --- URL forms refused ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.jpg", "gopher://127.0.0.1:70/_x",
                                 "javascript:alert(1)", "x.jpg", "http:///x.jpg", ""])
def test_urls_other_than_http_and_https_are_refused(url):
    with pytest.raises(FetchError, match="must be an http:// or https:// URL"):
        fetch(url)


@pytest.mark.parametrize("userinfo", ["user:password@", "user@", ":password@"])
def test_urls_with_credentials_are_refused_before_connecting(server, userinfo):
    server.routes["/x.jpg"] = body(JPEG)
    with pytest.raises(FetchError, match="user name or password"):
        fetch(f"http://{userinfo}127.0.0.1:{server.port}/x.jpg", server)
    assert server.requests == []


MALFORMED_URLS = {
    "port too large": ("http://example.com:99999/x.jpg", "Port out of range"),
    "port not a number": ("http://example.com:abc/x.jpg", "Port could not be cast"),
    "port 0": ("http://example.com:0/x.jpg", "has port 0"),
    "unclosed ipv6 bracket": ("http://[::1/x.jpg", "Invalid IPv6 URL"),
    "unclosed ipv6 bracket, no path": ("http://[::1", "Invalid IPv6 URL"),
    "CR LF in the host": ("http://exa\r\nmple.com/x.jpg", "control or space character '\\r'"),
    "LF in the path": ("http://example.com/x.jpg\nHost: evil", "control or space character '\\n'"),
    "tab": ("http://example.com/\tx.jpg", "control or space character '\\t'"),
    "NUL": ("http://example.com\x00.evil/x.jpg", "control or space character '\\x00'"),
    "a 300-character label": ("http://" + "a" * 300 + ".example.com/x.jpg", "not a valid host name"),
    "a 64-character label": ("http://" + "a" * 64 + ".example.com/x.jpg", "not a valid host name"),
    "an empty label": ("http://a..example.com/x.jpg", "not a valid host name"),
    "a host over 253 characters": ("http://" + ".".join(["a" * 60] * 5) + "/x.jpg", "over the 253"),
    "empty host": ("http://:80/x.jpg", "has no host"),
    "empty host, no port": ("http:///x.jpg", "has no host"),
    "an over-long URL": ("http://example.com/" + "x" * 3000, "longer than 2048 characters"),
    "not http": ("file:///etc/passwd", "must be an http:// or https:// URL"),
}


@pytest.mark.parametrize(("url", "says"), MALFORMED_URLS.values(), ids=MALFORMED_URLS.keys())
def test_a_malformed_url_is_an_invalid_url_naming_the_problem(url, says):
    with pytest.raises(InvalidURL) as refused:
        fetch(url, timeout=5)
    assert says in str(refused.value)


def test_a_redirect_to_a_malformed_url_is_refused_naming_the_problem(server):
    server.routes["/go"] = redirect("http://example.com:99999/x.jpg")
    with pytest.raises(InvalidURL, match="Port out of range"):
        fetch(server.url("/go"), server)


# --- size, time and status -----------------------------------------------------------------------


def test_a_body_over_max_bytes_is_refused_by_its_content_length(server):
    server.routes["/big.jpg"] = body(JPEG)
    with pytest.raises(FetchError, match="larger than"):
        fetch(server.url("/big.jpg"), server, max_bytes=len(JPEG) - 1)


def test_the_size_refusal_names_the_limit_as_configured(server):
    server.routes["/big.jpg"] = body(b"x" * 2 * 2**20)
    with pytest.raises(FetchError, match="1.5 MB limit"):
        fetch(server.url("/big.jpg"), server, max_bytes=int(1.5 * 2**20))


def test_a_claimed_huge_body_is_refused_without_waiting_for_it(server):
    def huge(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 * 2**30))
        handler.end_headers()
        handler.wfile.write(b"x" * 1000)
        time.sleep(3)  # the rest "arrives" after the fetch should have given up
    server.routes["/huge.jpg"] = huge
    started = time.monotonic()
    with pytest.raises(FetchError, match="larger than"):
        fetch(server.url("/huge.jpg"), server, timeout=5)
    assert time.monotonic() - started < 1


def test_a_body_over_max_bytes_without_content_length_is_refused(server):
    def close_delimited(handler):  # HTTP/1.0 style: the body ends when the connection does
        handler.close_connection = True
        handler.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n\r\n" + b"x" * 300_000)
    server.routes["/big.jpg"] = close_delimited
    with pytest.raises(FetchError, match="larger than"):
        fetch(server.url("/big.jpg"), server, max_bytes=100_000)


def test_a_chunked_body_over_max_bytes_is_refused(server):
    def chunked(handler):
        handler.send_response(200)
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for _ in range(10):
            handler.wfile.write(b"%x\r\n%s\r\n" % (50_000, b"x" * 50_000))
        handler.wfile.write(b"0\r\n\r\n")
    server.routes["/big.jpg"] = chunked
    with pytest.raises(FetchError, match="larger than"):
        fetch(server.url("/big.jpg"), server, max_bytes=100_000)


def test_a_server_that_stops_answering_is_refused_after_the_timeout(server):
    server.routes["/stuck.jpg"] = stall(5)
    started = time.monotonic()
    with pytest.raises(FetchError, match="took too long to answer"):
        fetch(server.url("/stuck.jpg"), server)
    assert time.monotonic() - started < TIMEOUT + SLACK


def test_a_body_that_stops_midway_is_refused_after_the_timeout(server):
    def half(handler):
        send(handler, 200, b"", {"Content-Length": "2000"})
        handler.wfile.write(b"x" * 1000)
        handler.wfile.flush()
        time.sleep(5)
    server.routes["/half.jpg"] = half
    started = time.monotonic()
    with pytest.raises(FetchError):
        fetch(server.url("/half.jpg"), server)
    assert time.monotonic() - started < TIMEOUT + SLACK


def test_a_body_dripped_slowly_past_the_timeout_is_refused_in_time(server):
    # Every byte arrives well within the per-read timeout, so only the overall deadline can stop it.
    server.routes["/drip.jpg"] = drip_body(1000, interval=0.1, seconds=2.5)
    started = time.monotonic()
    with pytest.raises(FetchError) as refused:
        fetch(server.url("/drip.jpg"), server)
    assert time.monotonic() - started < TIMEOUT + SLACK  # a server dripping for ever would hold it for ever
    assert "took longer than" in str(refused.value)


def test_headers_dripped_slowly_past_the_timeout_are_refused_in_time(server):
    server.routes["/drip.jpg"] = drip(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 0.06)
    started = time.monotonic()
    with pytest.raises(FetchError):
        fetch(server.url("/drip.jpg"), server)
    assert time.monotonic() - started < TIMEOUT + SLACK


@pytest.mark.parametrize("status", [404, 403, 500])
def test_an_http_error_is_reported_with_its_status(server, status):
    server.routes["/x.jpg"] = lambda h: send(h, status, b"nope", {"Content-Type": "text/plain"})
    with pytest.raises(FetchError, match=f"answered HTTP {status}"):
        fetch(server.url("/x.jpg"), server)


def test_a_missing_path_is_reported_as_404(server):
    with pytest.raises(FetchError, match="answered HTTP 404"):
        fetch(server.url("/nothing.jpg"), server)


def test_a_redirect_without_location_is_reported_with_its_status(server):
    server.routes["/x.jpg"] = lambda h: send(h, 302)
    with pytest.raises(FetchError, match="answered HTTP 302"):
        fetch(server.url("/x.jpg"), server)


def test_an_unresolvable_host_says_it_does_not_resolve():
    with pytest.raises(FetchError, match="'nonexistent.invalid' does not resolve; check the URL"):
        fetch("http://nonexistent.invalid/x.jpg")


def test_a_closed_port_is_a_fetch_error(server):
    server.close()  # nothing listens there now
    with pytest.raises(FetchError, match="could not be reached"):
        fetch(server.url("/x.jpg"), server)
