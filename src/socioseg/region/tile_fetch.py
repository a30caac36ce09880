"""One web-map tile over HTTP, checked before anyone keeps it; URL templates and their secrets.

A tile server is untrusted, and so is a URL template:

- Templates: the placeholders ``{z}``, ``{x}``, ``{y}``, ``{-y}`` (TMS rows, counted from the
  south), ``{q}`` (a Bing-style quadkey, which holds z, x and y), ``{s}`` (a subdomain) and
  ``{r}`` (a retina suffix, left empty) are filled in; any other ``{...}`` is refused, as is a
  control character or a space anywhere in the template.
- Secrets: an API key in the query string or a ``user:password@`` never reaches a file, a tag
  or a message: :func:`public_url` keeps scheme, host, port and path only.
- Requests: a redirect is followed only to the same host (scheme and port may change); the
  whole tile, headers and body, must arrive within :data:`DEADLINE_S` (each read also times
  out), and the body is bounded by :data:`MAX_TILE_BYTES`.
- Tiles: :func:`decode_tile` accepts a :data:`TILE_PX`-square image only, refusing a larger
  one from its header, before decompressing anything (a PNG that declares 60000 x 60000
  pixels costs nothing); transparency is composited on the map background.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from socioseg.region.raster import AreaError

TILE_PX = 256
MAX_TILE_BYTES = 4 * 1024 * 1024
DEADLINE_S = 60.0  # seconds one tile may take, headers and body
READ_TIMEOUT_S = 30.0  # seconds one socket read may wait
CHUNK = 64 * 1024
USER_AGENT = "socioseg/0.1 (+https://pypi.org/project/socioseg/; map tiles for one raster)"
PLACEHOLDERS = ("{z}", "{x}", "{y}", "{-y}", "{q}", "{s}", "{r}")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


def public_url(url: str) -> str:
    """``url`` without credentials, query string or fragment: scheme, host, port and path."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def check_template(url: str) -> None:
    """One-line errors for a template that cannot name tiles (see the module docstring)."""
    shown = public_url(url)
    bad = next(
        (i for i, ch in enumerate(url) if ch.isspace() or ord(ch) < 32 or ord(ch) == 127), None
    )
    if bad is not None:
        raise AreaError(
            f"--tiles {shown}: the template holds a space or control character at position "
            f"{bad}; remove it"
        )
    if urllib.parse.urlsplit(url).scheme not in ("http", "https") or not public_url(url):
        raise AreaError(f"--tiles {shown}: give an http(s) URL template")
    unknown = sorted({p for p in _PLACEHOLDER.findall(url) if p not in PLACEHOLDERS})
    if unknown:
        raise AreaError(
            f"--tiles {shown}: unknown placeholder {', '.join(unknown)}; socioseg fills "
            f"{' '.join(PLACEHOLDERS)}: put any other value (an API key, a style) into the URL"
        )
    if "{q}" not in url:
        missing = [k for k in ("{x}", "{z}") if k not in url]
        if "{y}" not in url and "{-y}" not in url:
            missing.append("{y} (or {-y})")
        if missing:
            raise AreaError(
                f"--tiles {shown}: the template lacks {', '.join(missing)} (or give {{q}})"
            )


def quadkey(z: int, x: int, y: int) -> str:
    """The Bing Maps quadkey of tile ``z/x/y``: one digit per zoom level, ``''`` at zoom 0."""
    digits = []
    for level in range(z, 0, -1):
        mask = 1 << (level - 1)
        digits.append(str((1 if x & mask else 0) + (2 if y & mask else 0)))
    return "".join(digits)


def fill_template(url: str, z: int, x: int, y: int) -> str:
    """The URL of tile ``z/x/y`` (``{s}`` takes subdomain ``a``, ``{r}`` no retina suffix)."""
    values = {
        "{z}": z,
        "{x}": x,
        "{y}": y,
        "{-y}": 2**z - 1 - y,
        "{q}": quadkey(z, x, y),
        "{s}": "a",
        "{r}": "",
    }
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(0), m.group(0))), url)


class _SameHostRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the host of the request (no lookup of another host)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new_host = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl)).hostname
        old_host = urllib.parse.urlsplit(req.full_url).hostname
        if (new_host or "").lower() != (old_host or "").lower():
            raise AreaError(
                f"GET {public_url(req.full_url)}: the server redirects to another host "
                f"({new_host}); socioseg follows redirects on the same host only: give the "
                "final tile URL with --tiles"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Watchdog:
    """Shuts the sockets of one tile's connections down when its deadline passes, so a server
    that trickles headers or body a byte at a time cannot hold a download open."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connections: list[http.client.HTTPConnection] = []
        self.expired = False

    def _make(self, cls):
        def connection(host, **kwargs):
            made = cls(host, **kwargs)
            with self.lock:
                self.connections.append(made)
            return made

        return connection

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            for made in self.connections:
                if made.sock is not None:
                    with contextlib.suppress(OSError):  # already closed
                        made.sock.shutdown(socket.SHUT_RDWR)

    def opener(self) -> urllib.request.OpenerDirector:
        """An opener whose connections this watchdog sees, following same-host redirects."""
        watch = self

        class Http(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(watch._make(http.client.HTTPConnection), req)

        class Https(urllib.request.HTTPSHandler):
            def https_open(self, req):
                connection = watch._make(http.client.HTTPSConnection)
                return self.do_open(connection, req, context=_tls_context())

        return urllib.request.build_opener(_SameHostRedirects, Http, Https)


@functools.cache
def _tls_context():
    import ssl

    return ssl.create_default_context()


def fetch(url: str, deadline_s: float | None = None) -> bytes:
    """GET ``url`` (see the module docstring); one-line :class:`AreaError` on any failure.

    A watchdog shuts the connection's socket at the deadline, so a server that trickles its
    headers or body a byte at a time is dropped then; a silent one at the next read timeout.
    """
    shown = public_url(url)
    deadline_s = DEADLINE_S if deadline_s is None else deadline_s
    ends = time.monotonic() + deadline_s
    too_slow = (
        f"GET {shown}: the tile did not arrive within {deadline_s:g} s; the server is too slow: "
        "try again later, or another --tiles"
    )
    request = _request(url)
    chunks, size = [], 0
    watch = _Watchdog()
    timer = threading.Timer(deadline_s, watch.expire)
    timer.daemon = True
    timer.start()
    try:
        with watch.opener().open(request, timeout=min(READ_TIMEOUT_S, deadline_s)) as response:
            while chunk := response.read1(CHUNK):
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_TILE_BYTES:
                    raise AreaError(
                        f"GET {shown}: a tile over {MAX_TILE_BYTES} bytes; is this a tile URL?"
                    )
                if time.monotonic() > ends:
                    raise AreaError(too_slow)
    except urllib.error.HTTPError as exc:
        raise AreaError(f"GET {shown}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if watch.expired or isinstance(reason, TimeoutError):
            raise AreaError(too_slow) from None
        raise AreaError(f"GET {shown}: {str(reason).replace(url, shown)}") from None
    finally:
        timer.cancel()
    if watch.expired:  # the sockets were shut mid-body: what arrived is not the whole tile
        raise AreaError(too_slow)
    return b"".join(chunks)


def _request(url: str) -> urllib.request.Request:
    """A GET with socioseg's User-Agent; ``user:password@`` becomes a Basic auth header."""
    import base64

    headers = {"User-Agent": USER_AGENT}
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        netloc = parts.netloc.rsplit("@", 1)[1]
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return urllib.request.Request(url, headers=headers)


def decode_tile(data: bytes, name: str, background: tuple[int, int, int]) -> np.ndarray:
    """``data`` as a ``TILE_PX`` x ``TILE_PX`` x 3 uint8 RGB array, transparency composited on
    ``background``; :class:`AreaError` naming ``name`` when it is anything else."""
    from socioseg.images import ImageError, read_image

    try:
        image = read_image(data, name, mode="RGBA", max_pixels=TILE_PX * TILE_PX)
    except ImageError as exc:
        raise AreaError(f"{exc}; not a {TILE_PX}-px map tile") from None
    if image.size != (TILE_PX, TILE_PX):
        raise AreaError(f"{name}: {image.size[0]} x {image.size[1]} px, not a {TILE_PX}-px tile")
    rgba = np.asarray(image, dtype=np.float32)
    alpha = rgba[..., 3:] / 255.0
    rgb = rgba[..., :3] * alpha + np.asarray(background, dtype=np.float32) * (1.0 - alpha)
    return np.rint(rgb).astype(np.uint8)
