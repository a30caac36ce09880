"""Hostile OSM files: invalid locations, huge tags, a folder, roads reaching far outside."""

from __future__ import annotations

import numpy as np
import pytest

from socioseg.cli import main

rasterio = pytest.importorskip("rasterio", reason="map tests need socioseg[gis]")
osmium = pytest.importorskip("osmium", reason="OSM tests need socioseg[gis]")

from tests.region_fixtures import (  # noqa: E402
    HEIGHT,
    ROAD,
    WIDTH,
    lonlat_of_pixel,
    write_osm,
    write_raster,
)


@pytest.fixture
def sat(tmp_path):
    return write_raster(tmp_path / "sat.tif", np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8))


def _with_nodes(path, nodes: str, keep_city=True):
    """The fixture city (or an empty file) with ``nodes`` (XML) added before its content."""
    if keep_city:
        text = write_osm(path).read_text()
    else:
        text = '<?xml version="1.0"?>\n<osm version="0.6" generator="test">\n</osm>\n'
    head, rest = text.split("\n", 2)[:2], text.split("\n", 2)[2]
    path.write_text("\n".join([*head, nodes, rest]))
    return path


def _map(sat, osm, out):
    return main(["map", "--like", str(sat), "--osm", str(osm), "--out", str(out)])


def test_nodes_with_invalid_locations_are_skipped_and_counted(sat, tmp_path, capsys):
    bad = '<node id="900" version="1" lat="140" lon="10"><tag k="name" v="Nowhere"/></node>'
    osm = _with_nodes(tmp_path / "city.osm", bad)
    assert _map(sat, osm, tmp_path / "m.tif") == 0
    err = capsys.readouterr().err.strip().splitlines()
    clean = write_osm(tmp_path / "clean.osm")
    nodes = sum(1 for o in osmium.FileProcessor(str(clean)) if o.is_node()) + 1
    assert err == [f"note: city.osm: skipped 1 of {nodes} nodes with an invalid location"]
    assert _map(sat, clean, tmp_path / "c.tif") == 0
    with rasterio.open(tmp_path / "m.tif") as a, rasterio.open(tmp_path / "c.tif") as b:
        assert np.array_equal(a.read(), b.read())  # the bad node changed nothing else


@pytest.mark.parametrize(
    "case, message",
    [
        ("none-valid", "none of its 2 nodes has a valid location"),
        ("nan", "wrong format for coordinate"),
        ("long-tag", "tag value is too long"),
        ("folder", "is a folder; give an OSM file"),
    ],
)
def test_hostile_osm_files_are_one_line(sat, tmp_path, capsys, case, message):
    path = tmp_path / "bad.osm"
    if case == "none-valid":
        nodes = '<node id="1" version="1" lat="140" lon="10"/>'
        nodes += '<node id="2" version="1" lat="0" lon="200"/>'
        _with_nodes(path, nodes, keep_city=False)
    elif case == "nan":
        _with_nodes(path, '<node id="900" version="1" lat="NaN" lon="10"/>')
    elif case == "long-tag":
        lon, lat = lonlat_of_pixel(10, 10)
        tag = f'<tag k="name" v="{"a" * 200_000}"/>'
        _with_nodes(path, f'<node id="900" version="1" lat="{lat}" lon="{lon}">{tag}</node>')
    else:
        path.mkdir()
    assert _map(sat, path, tmp_path / "m.tif") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and len(err[0]) < 400
    assert not (tmp_path / "m.tif").exists()


def test_a_road_reaching_far_outside_isclip_line_and_draws_the_same(sat, tmp_path):
    from socioseg.region.osm import clip_line

    (c0, r0), (c1, r1) = ROAD
    inside = [lonlat_of_pixel(c, r) for c, r in ROAD]
    # The same straight road, continued 200 km east in 5,000 nodes.
    far = [lonlat_of_pixel(c1 + k * (c1 - c0), r1 + k * (r1 - r0)) for k in range(1, 5001)]
    bbox = (inside[0][0] - 0.001, inside[1][1] - 0.001, inside[1][0] + 0.001, inside[0][1] + 0.001)
    parts = clip_line(np.array(inside + far), bbox)
    assert len(parts) == 1 and len(parts[0]) <= 4
    assert (parts[0][:, 0] <= bbox[2] + 1e-12).all()

    def road_file(points, name):
        nodes = "".join(
            f'<node id="{i}" version="1" lat="{lat:.9f}" lon="{lon:.9f}"/>'
            for i, (lon, lat) in enumerate(points, start=1)
        )
        refs = "".join(f'<nd ref="{i}"/>' for i in range(1, len(points) + 1))
        way = f'<way id="1" version="1">{refs}<tag k="highway" v="primary"/></way>'
        path = tmp_path / name
        path.write_text(f'<?xml version="1.0"?><osm version="0.6">{nodes}{way}</osm>')
        return path

    long_road = road_file(inside + far, "long.osm")
    short_road = road_file([*inside, far[0]], "short.osm")  # ends just outside the raster
    assert _map(sat, long_road, tmp_path / "long.tif") == 0
    assert _map(sat, short_road, tmp_path / "short.tif") == 0
    with rasterio.open(tmp_path / "long.tif") as a, rasterio.open(tmp_path / "short.tif") as b:
        assert np.array_equal(a.read(), b.read())


def test_segment_area_reports_skipped_osm_nodes(sat, tmp_path):
    from socioseg.region.area import segment_area
    from socioseg.region.mapping import MapSource
    from tests.test_area_region import ColourReasoner

    bad = '<node id="900" version="1" lat="140" lon="10"><tag k="name" v="Nowhere"/></node>'
    osm = _with_nodes(tmp_path / "city.osm", bad)
    for _ in range(2):  # the run that made the map, and a rerun reusing it
        summary = segment_area(
            ColourReasoner(), sat, MapSource(osm=osm), "red", tmp_path / "out", tile=256,
            overlap=32, progress=False, gsd=0.5,
        )  # fmt: skip
        assert [n for n in summary.notes if "invalid location" in n] == [
            next(n for n in summary.notes if n.startswith("city.osm: skipped 1 of"))
        ]
