"""socioseg map: OSM rendering on a projected grid, XYZ tiles from a local server, GCJ-02."""

from __future__ import annotations

import http.server
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from socioseg.cli import main
from socioseg.data.synth.paint import MAP_FILL, ROAD_FILL
from socioseg.region.gcj02 import gcj02_to_wgs84, wgs84_to_gcj02

rasterio = pytest.importorskip("rasterio", reason="map tests need socioseg[gis]")
osmium = pytest.importorskip("osmium", reason="OSM tests need socioseg[gis]")

from tests.region_fixtures import (  # noqa: E402
    CAFE,
    CRS,
    HEIGHT,
    PARK,
    ROAD,
    SCHOOL,
    WIDTH,
    lonlat_of_pixel,
    transform,
    write_osm,
    write_raster,
)


def _geod_m(lon1, lat1, lon2, lat2) -> np.ndarray:
    from pyproj import Geod

    return np.abs(Geod(ellps="WGS84").inv(lon1, lat1, lon2, lat2)[2])


def _read(path):
    """``(H x W x 3 pixels, facts)``; facts holds the CRS, transform and tags."""
    with rasterio.open(path) as ds:
        facts = {"crs": ds.crs, "transform": ds.transform, "tags": ds.tags()}
        return ds.read().transpose(1, 2, 0), facts


@pytest.fixture
def sat(tmp_path):
    return write_raster(tmp_path / "sat.tif", np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8))


def _pbf(xml_path):
    pbf = xml_path.with_suffix(".osm.pbf")
    with osmium.SimpleWriter(str(pbf)) as writer:
        for obj in osmium.FileProcessor(str(xml_path)):
            writer.add(obj)
    return pbf


@pytest.mark.parametrize("fmt", ["xml", "pbf"])
def test_osm_map_lands_on_the_raster_grid(sat, tmp_path, capsys, fmt):
    osm = write_osm(tmp_path / "city.osm")
    if fmt == "pbf":
        osm = _pbf(osm)
    assert (
        main(["map", "--like", str(sat), "--osm", str(osm), "--out", str(tmp_path / "m.tif")]) == 0
    )
    out = capsys.readouterr().out
    assert "OpenStreetMap contributors" in out
    assert "labels: 3 of 3 named places shown (2 of 2 query-target areas)" in out
    rgb, ds = _read(tmp_path / "m.tif")
    assert ds["crs"].to_string() == CRS and ds["transform"].almost_equals(transform())
    assert rgb.shape == (HEIGHT, WIDTH, 3)
    assert "OpenStreetMap" in ds["tags"]["ATTRIBUTION"]

    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5  # pixel centres
    (x0, y0), (x1, y1) = ROAD
    length = np.hypot(x1 - x0, y1 - y0)
    distance = np.abs((x1 - x0) * (y0 - rows) - (x0 - cols) * (y1 - y0)) / length
    road = np.all(rgb == ROAD_FILL[True], axis=-1)
    half_width = 12.0 / 0.5 / 2  # a primary road is 12 m wide
    assert road.sum() > 300 and distance[road].max() <= half_width + 1
    for t in np.linspace(0.05, 0.95, 30):  # every pixel on the centre line is road
        x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
        assert road[int(y), int(x)]

    park = np.all(rgb == MAP_FILL["park"], axis=-1)
    (px0, py0), (px1, py1) = PARK[0], PARK[2]
    inside = (cols > px0) & (cols < px1) & (rows > py0) & (rows < py1)
    assert park.sum() > 0.8 * inside.sum()  # the park's name and pin cover the rest
    near_park = (cols > px0 - 1) & (cols < px1 + 1) & (rows > py0 - 1) & (rows < py1 + 1)
    assert not (park & ~near_park).any()  # inside, give or take Pillow's rounding of edges

    school = np.all(rgb == MAP_FILL["campus"], axis=-1)
    (sx0, sy0), (sx1, sy1) = SCHOOL[0], SCHOOL[2]
    near_school = (cols > sx0 - 1) & (cols < sx1 + 1) & (rows > sy0 - 1) & (rows < sy1 + 1)
    assert school.sum() > 0.8 * (sx1 - sx0) * (sy1 - sy0) and not (school & ~near_school).any()

    # A cafe is no SocioSeg class: a minor POI, grey like the synthetic maps' minor POIs.
    pin = np.all(rgb == (150, 150, 150), axis=-1)
    ys, xs = np.nonzero(pin)
    assert abs(xs.mean() + 0.5 - CAFE[0]) <= 1 and abs(ys.mean() + 0.5 - CAFE[1]) <= 1
    near = np.abs(rgb.astype(int) - (110, 110, 110)).sum(-1) < 40
    ys, xs = np.nonzero(near)
    assert len(xs) > 20  # the label is drawn right of its pin, on its row
    assert CAFE[0] < xs.min() < CAFE[0] + 15 and np.abs(ys + 0.5 - CAFE[1]).max() < 10


def test_shared_painter_still_draws_the_shipped_synthetic_maps():
    """The painter functions the OSM renderer shares draw synth's maps pixel for pixel."""
    from PIL import Image

    from socioseg.data.examples import examples
    from socioseg.data.synth import sample_with_targets

    for folder in examples()[:3]:  # written before the painter was shared; seed 2026
        assert not folder.name.startswith("synth-random-")
        index = int(folder.name.split("-")[1])
        sample, _ = sample_with_targets(np.random.default_rng([2026, index]), index, 768)
        shipped = np.asarray(Image.open(folder / "map.png").convert("RGB"))
        assert np.array_equal(shipped, np.asarray(sample.map)), folder.name


def test_name_tag_chooses_the_label_language(tmp_path):
    from socioseg.region.osm import read_osm

    osm = write_osm(tmp_path / "city.osm")
    names = {p[2] for p in read_osm(osm, "name:en").pois}
    assert "Corner Coffee" in names and "Riverside Park" in names  # falls back to name
    assert "Corner Cafe" in {p[2] for p in read_osm(osm).pois}


def test_font_option_changes_only_the_labels(sat, tmp_path, capsys):
    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    osm = write_osm(tmp_path / "city.osm")
    base = ["map", "--like", str(sat), "--osm", str(osm), "--out"]
    assert main([*base, str(tmp_path / "bad.tif"), "--font", str(osm)]) == 2
    assert "--font" in capsys.readouterr().err
    if not font.is_file():
        pytest.skip("DejaVu fonts are not installed")
    assert main([*base, str(tmp_path / "a.tif")]) == 0
    assert main([*base, str(tmp_path / "b.tif"), "--font", str(font)]) == 0
    changed = np.any(_read(tmp_path / "a.tif")[0] != _read(tmp_path / "b.tif")[0], axis=-1)
    rows = np.nonzero(changed.any(axis=1))[0]
    label_rows = [CAFE[1], (PARK[0][1] + PARK[2][1]) / 2]  # pins sit on their label's row
    assert len(rows) and all(min(abs(r - y) for y in label_rows) < 12 for r in rows)


def test_osm_errors_are_one_line(sat, tmp_path, capsys):
    (tmp_path / "bad.osm").write_text("this is not xml")
    out = str(tmp_path / "m.tif")
    assert main(["map", "--like", str(sat), "--osm", str(tmp_path / "bad.osm"), "--out", out]) == 2
    assert main(["map", "--like", str(sat), "--out", out]) == 2
    plain = tmp_path / "plain.png"
    plain.write_bytes(b"")
    assert main(["map", "--like", str(tmp_path / "nope.tif"), "--osm", "x", "--out", out]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("socioseg map: error:") for e in errors)


# --- XYZ tiles from a local server --------------------------------------------------------------

ZOOM = 18
MARKS = [(100.0, 80.0), (300.0, 220.0), (210.0, 150.0)]  # grid pixel-corner coordinates
RADIUS = 4  # tile pixels


class _TileServer:
    """Serves 256-px PNG tiles: white, with red discs at given world pixels (zoom ``ZOOM``)."""

    def __init__(self, world_points):
        self.points = np.asarray(world_points)
        self.requests: list[str] = []
        self.agents: set[str] = set()
        self.active = self.most_active = 0
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.handle(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def handle(self, request):
        import io

        from PIL import Image

        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.requests.append(request.path)
            self.agents.add(request.headers.get("User-Agent", ""))
        time.sleep(0.01)  # lets concurrent requests overlap, were there more than allowed
        z, x, y = map(int, re.fullmatch(r"/(\d+)/(\d+)/(\d+)\.png", request.path).groups())
        if z != ZOOM:  # the marks exist at one zoom only
            with self.lock:
                self.active -= 1
            request.send_error(404)
            return
        rows, cols = np.mgrid[0:256, 0:256] + 0.5
        tile = np.full((256, 256, 3), 255, dtype=np.uint8)
        for px, py in self.points:
            tile[np.hypot(cols + x * 256 - px, rows + y * 256 - py) <= RADIUS] = (255, 0, 0)
        body = io.BytesIO()
        Image.fromarray(tile).save(body, "PNG")
        request.send_response(200)
        request.send_header("Content-Type", "image/png")
        request.end_headers()
        request.wfile.write(body.getvalue())
        with self.lock:
            self.active -= 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _world(lon, lat, zoom=ZOOM):
    """Web Mercator world pixels, written out independently of socioseg."""
    n = 256 * 2**zoom
    x = (lon + 180) / 360 * n
    y = (1 - np.arcsinh(np.tan(np.radians(lat))) / np.pi) / 2 * n
    return x, y


def _marks_found(rgb):
    import cv2

    red = ((rgb[..., 0] > 200) & (rgb[..., 1] < 120)).astype(np.uint8)
    count, _, _, centroids = cv2.connectedComponentsWithStats(red)
    return sorted((cx + 0.5, cy + 0.5) for cx, cy in centroids[1:count])


@pytest.mark.parametrize("gcj02", [False, True])
def test_tiles_align_cache_and_budget(sat, tmp_path, capsys, gcj02):
    points = []
    for col, row in MARKS:
        lon, lat = lonlat_of_pixel(col, row)
        if gcj02:  # the server publishes in GCJ-02, as Chinese vendors do
            lon, lat = wgs84_to_gcj02(lon, lat)
        points.append(_world(lon, lat))
    out = tmp_path / "m.tif"
    with _TileServer(points) as server:
        args = ["map", "--like", str(sat), "--tiles", server.url, "--out", str(out)]
        args += ["--tile-cache", str(tmp_path / "cache")] + (["--gcj02"] if gcj02 else [])
        assert main(args) == 0
        first = len(server.requests)
        assert 0 < first <= 12 and server.most_active <= 2
        assert all(agent.startswith("socioseg/") for agent in server.agents)
        rgb, ds = _read(out)
        found = _marks_found(rgb)
        assert len(found) == len(MARKS)
        for (fx, fy), (mx, my) in zip(found, sorted(MARKS), strict=True):
            assert abs(fx - mx) <= 1 and abs(fy - my) <= 1
        assert f"zoom {ZOOM}" in ds["tags"]["SOURCE"]

        assert main([*args, "--overwrite"]) == 0  # a rerun is served from the cache
        assert len(server.requests) == first
        assert np.array_equal(_read(out)[0], rgb)

        budget = ["--tile-budget", "2", "--tile-cache", str(tmp_path / "c2"), "--overwrite"]
        assert main([*args, *budget]) == 2
        assert len(server.requests) == first
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tile-budget" in err[0] and f"{first} tiles" in err[0]


# --- GCJ-02 -------------------------------------------------------------------------------------

# Published (WGS-84 lon, lat) -> (GCJ-02 lon, lat) pairs:
# - wandergis/coordtransform, test/app.js: "wgs84togcj02: [116.41024449916938, 39.91640428150164]"
#   for (116.404, 39.915);
# - googollee/eviltransform, go/transform_test.go (lat, lng there): Shanghai, Shenzhen, Beijing.
REFERENCE = [
    ((116.404, 39.915), (116.41024449916938, 39.91640428150164)),
    ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597)),
    ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766)),
    ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069)),
]


def test_gcj02_matches_published_points_and_round_trips():
    for (lon, lat), (glon, glat) in REFERENCE:
        assert _geod_m(*wgs84_to_gcj02(lon, lat), glon, glat) < 1.0
        assert _geod_m(*gcj02_to_wgs84(glon, glat), lon, lat) < 1.0
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(75, 134, 2000), rng.uniform(18, 53, 2000)
    glon, glat = wgs84_to_gcj02(lon, lat)
    shift = _geod_m(lon, lat, glon, glat)
    assert shift.min() > 1 and shift.max() < 1000  # the datum really moves points
    assert _geod_m(*gcj02_to_wgs84(glon, glat), lon, lat).max() < 0.5
    assert wgs84_to_gcj02(2.35, 48.85) == (2.35, 48.85)  # outside China: unchanged


def test_providers_resolve_offline_with_plain_attribution():
    from socioseg.region.raster import AreaError
    from socioseg.region.xyz import TileSource

    gaode = TileSource.from_provider("Gaode.Normal")  # SocioSeg's map style; GCJ-02
    assert gaode.tile_url(18, 5, 7).endswith("x=5&y=7&z=18") and "<" not in gaode.attribution
    assert "OpenStreetMap" in TileSource.from_provider("OpenStreetMap.Mapnik").attribution
    for name, message in (
        ("No.Such", "not an xyzservices provider"),
        ("CartoDB.Positron", "API key"),
    ):
        with pytest.raises(AreaError, match=message):
            TileSource.from_provider(name)
    with pytest.raises(AreaError, match=r"lacks \{y\} \(or \{-y\}\)"):
        TileSource("https://host/{z}/{x}.png", "t", "")
