"""Web-map tiles from an untrusted server and an untrusted template (a server on 127.0.0.1)."""

from __future__ import annotations

import http.server
import io
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from socioseg.cli import main
from socioseg.data.synth.paint import MAP_BACKGROUND

rasterio = pytest.importorskip("rasterio", reason="map tests need socioseg[gis]")

from tests.region_fixtures import HEIGHT, WIDTH, write_raster  # noqa: E402

SECRET = "SECRET-123"


def _png(rgb_or_rgba: np.ndarray) -> bytes:
    body = io.BytesIO()
    Image.fromarray(rgb_or_rgba).save(body, "PNG")
    return body.getvalue()


def _bomb_png(side: int = 60000) -> bytes:
    """A PNG whose header declares ``side`` x ``side`` pixels (its data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))


class _Server:
    """A threaded HTTP server on 127.0.0.1; ``answer(handler)`` writes each response.

    ``seen`` holds every request path and Host header; ``release`` unblocks slow answers.
    """

    def __init__(self, answer):
        self.answer, self.seen, self.release = answer, [], threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.seen.append((self.path, self.headers.get("Host")))
                server.answer(self, server)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _send(handler, body: bytes, status: int = 200, headers=()):
    handler.send_response(status)
    for key, value in headers:
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _white(handler, server):
    _send(handler, _png(np.full((256, 256, 3), 255, dtype=np.uint8)))


@pytest.fixture
def sat(tmp_path):
    return write_raster(tmp_path / "sat.tif", np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8))


def _map(sat, tmp_path, url, *extra):
    out = tmp_path / "m.tif"
    args = ["map", "--like", str(sat), "--tiles", url, "--out", str(out)]
    return main([*args, "--tile-cache", str(tmp_path / "cache"), *extra]), out


def test_api_key_and_credentials_reach_no_file_tag_or_message(sat, tmp_path, capsys):
    with _Server(_white) as server:
        url = f"http://user:pw@127.0.0.1:{server.port}/{{z}}/{{x}}/{{y}}.png?key={SECRET}"
        code, out = _map(sat, tmp_path, url)
        assert code == 0
        assert all(f"key={SECRET}" in path for path, _ in server.seen)  # the key is sent
    with rasterio.open(out) as ds:
        tags = ds.tags()
    assert f"127.0.0.1:{server.port}/{{z}}/{{x}}/{{y}}.png" in tags["SOURCE"]
    captured = capsys.readouterr()
    for text in [*tags.values(), captured.out, captured.err]:
        assert SECRET not in text and "pw" not in text
    # An error message keeps the host and path, not the key.
    url = f"http://127.0.0.1:1/{{z}}/{{x}}/{{y}}.png?key={SECRET}"
    code, _ = _map(sat, tmp_path, url, "--overwrite")
    err = capsys.readouterr().err
    assert code == 2 and "127.0.0.1:1/" in err and SECRET not in err


def test_a_redirect_to_another_host_is_refused_and_same_host_followed(sat, tmp_path, capsys):
    def answer(handler, server):
        if handler.path.startswith("/away/"):
            _send(handler, b"", 302, [("Location", "http://other.invalid/tile.png")])
        elif handler.path.startswith("/moved/"):
            _send(handler, b"", 302, [("Location", "/" + handler.path.split("/", 2)[2])])
        else:
            _white(handler, server)

    with _Server(answer) as server:
        code, _ = _map(sat, tmp_path, server.base + "/away/{z}/{x}/{y}.png")
        assert code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "another host (other.invalid)" in err[0]
        code, _ = _map(sat, tmp_path, server.base + "/moved/{z}/{x}/{y}.png")
        assert code == 0
        assert {host for _, host in server.seen} == {f"127.0.0.1:{server.port}"}


@pytest.mark.parametrize("how", ["silent", "trickled-headers", "trickled-body"])
def test_a_tile_that_never_finishes_is_dropped_at_the_deadline(
    sat, tmp_path, capsys, monkeypatch, how
):
    import socioseg.region.tile_fetch as tile_fetch

    monkeypatch.setattr(tile_fetch, "DEADLINE_S", 0.5)

    def answer(handler, server):  # until released (or ~20 s), the server never finishes
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        if how == "trickled-body":
            handler.wfile.write(b"Content-Length: 100000\r\n\r\n")
        handler.wfile.flush()
        if how == "silent":
            server.release.wait()
            return
        for _ in range(400):  # a header line or a body byte every 50 ms: each read gets some
            if server.release.wait(0.05):
                return
            try:
                handler.wfile.write(b"X-Slow: 1\r\n" if how == "trickled-headers" else b"\x89")
                handler.wfile.flush()
            except OSError:  # the client hung up
                return

    with _Server(answer) as server:
        code, out = _map(sat, tmp_path, server.base + "/{z}/{x}/{y}.png")
        server.release.set()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "did not arrive within 0.5 s" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("kind", ["bomb", "size", "garbage"])
def test_a_bad_tile_never_enters_the_cache(sat, tmp_path, capsys, kind):
    bodies = {
        "bomb": _bomb_png(),
        "size": _png(np.zeros((100, 256, 3), dtype=np.uint8)),
        "garbage": b"<html>rate limited</html>",
    }
    state = {"good": False}

    def answer(handler, server):
        if state["good"]:
            _white(handler, server)
        else:
            _send(handler, bodies[kind])

    with _Server(answer) as server:
        code, _ = _map(sat, tmp_path, server.base + "/{z}/{x}/{y}.png")
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "(as served)" in err[0]
        assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
        first = len(server.seen)
        state["good"] = True  # the server recovers: the rerun fetches instead of failing
        assert _map(sat, tmp_path, server.base + "/{z}/{x}/{y}.png")[0] == 0
        assert len(server.seen) > first


def test_a_corrupt_cached_tile_is_dropped_and_fetched_again(sat, tmp_path, capsys):
    with _Server(_white) as server:
        url = server.base + "/{z}/{x}/{y}.png"
        assert _map(sat, tmp_path, url)[0] == 0
        cached = sorted(p for p in (tmp_path / "cache").rglob("*.tile"))
        cached[0].write_bytes(b"half a png")
        first = len(server.seen)
        assert _map(sat, tmp_path, url, "--overwrite")[0] == 0
        assert len(server.seen) == first + 1
        assert cached[0].read_bytes().startswith(b"\x89PNG")


def test_placeholders_quadkey_tms_and_unknown(sat, tmp_path, capsys):
    from socioseg.region.tile_fetch import fill_template, quadkey

    # Bing's documented example: tile (3, 5) at level 3 has quadkey "213".
    assert quadkey(3, 3, 5) == "213" and quadkey(0, 0, 0) == ""
    assert fill_template("h/{z}/{x}/{-y}/{q}{r}", 3, 3, 5) == "h/3/3/2/213"
    with _Server(_white) as server:
        assert _map(sat, tmp_path, server.base + "/q/{q}.png")[0] == 0
        assert _map(sat, tmp_path, server.base + "/tms/{z}/{x}/{-y}.png", "--overwrite")[0] == 0
        paths = [p for p, _ in server.seen]
    quads = {p.split("/")[2].removesuffix(".png") for p in paths if p.startswith("/q/")}
    tms = {tuple(map(int, p.removesuffix(".png").split("/")[2:])) for p in paths if "/tms/" in p}
    # The same tiles, named two ways: row -y = 2^z - 1 - y, and the quadkey of (z, x, y).
    assert quads == {quadkey(z, x, 2**z - 1 - y) for z, x, y in tms} and len(quads) > 1
    for url, message in (
        ("http://h/{z}/{x}/{y}.png?key={apikey}", "unknown placeholder {apikey}"),
        ("http://h/{z}/{x}/{y}.png\r\nX-Evil: 1", "control character at position"),
    ):
        assert _map(sat, tmp_path, url, "--overwrite")[0] == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]


def test_transparent_tiles_lie_on_the_map_background(sat, tmp_path):
    rgba = np.zeros((256, 256, 4), dtype=np.uint8)
    rgba[:, :128] = (200, 0, 0, 255)  # left half opaque red, right half transparent
    with _Server(lambda handler, server: _send(handler, _png(rgba))) as server:
        code, out = _map(sat, tmp_path, server.base + "/{z}/{x}/{y}.png")
    assert code == 0
    with rasterio.open(out) as ds:
        pixels = ds.read().transpose(1, 2, 0).reshape(-1, 3)
    colours = {tuple(int(v) for v in p) for p in np.unique(pixels, axis=0)}
    assert tuple(MAP_BACKGROUND) in colours and (200, 0, 0) in colours
    assert (0, 0, 0) not in colours


def test_tile_cache_that_is_a_file_is_one_line(sat, tmp_path, capsys):
    (tmp_path / "cache").write_text("not a folder")
    assert _map(sat, tmp_path, "http://127.0.0.1:1/{z}/{x}/{y}.png")[0] == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tile-cache" in err[0] and "is a file" in err[0]


@pytest.mark.parametrize(
    "crs, transform, message",
    [
        ("EPSG:4326", (1e-5, 0, 10.0, 0, -1e-5, 89.9995), "reaches latitude 89.99"),
        ("EPSG:4326", (1e-5, 0, 179.999, 0, -1e-5, 10.0), "crosses the antimeridian"),
        ("EPSG:32660", (10.0, 0, 829_000.0, 0, -10.0, 1_000_000.0), "crosses the antimeridian"),
    ],
)
def test_rasters_tiles_do_not_cover_are_refused(tmp_path, capsys, crs, transform, message):
    from rasterio.transform import Affine

    raster = write_raster(
        tmp_path / "far.tif", np.zeros((200, 200, 3), dtype=np.uint8), crs, Affine(*transform)
    )
    with _Server(_white) as server:
        assert _map(raster, tmp_path, server.base + "/{z}/{x}/{y}.png")[0] == 2
        assert server.seen == []  # refused before any request
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
