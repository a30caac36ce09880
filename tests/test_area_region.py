"""segment-area at region scale: resolution, several queries, confidences, torchrun, map sources."""

from __future__ import annotations

import json

import numpy as np
import pytest

from socioseg.region.area import AreaError, segment_area
from socioseg.types import Box, ParsedAnswer, Prediction, StageResult, Target
from tests.distributed import run_processes

rasterio = pytest.importorskip("rasterio", reason="segment-area GIS tests need socioseg[gis]")
from rasterio.transform import Affine  # noqa: E402

CRS = "EPSG:32650"
RED, BLUE = (255, 0, 0), (0, 0, 255)
BAR = (300, 200, 700, 260)  # x0, y0, x1, y1: red, crosses tiles
SQUARE = (100, 420, 180, 500)  # blue


def _scene(width=800, height=600):
    rgb = np.full((height, width, 3), 90, dtype=np.uint8)
    rgb[BAR[1] : BAR[3], BAR[0] : BAR[2]] = RED
    rgb[SQUARE[1] : SQUARE[3], SQUARE[0] : SQUARE[2]] = BLUE
    return rgb


def _write(path, rgb, gsd=0.5, crs=CRS):
    height, width, _ = rgb.shape
    transform = Affine(gsd, 0, 500_000.0, 0, -gsd, 3_000_000.0)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile, crs=crs, transform=transform) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    return path


class ColourReasoner:
    """Segments pure red ("red ...") or blue ("blue ...") pixels; one box per tile with a
    SAM score and an answer log-prob, as a real model reports them. Records input sizes."""

    def __init__(self):
        self.sizes = []

    def segment_batch(self, items, mode="two-stage"):
        out = []
        for sat, _map, query in items:
            rgb = np.asarray(sat).astype(int)
            self.sizes.append(sat.size)
            channel = 0 if query.startswith("red") else 2
            mask = (rgb[..., channel] > 200) & (rgb[..., 1] < 50) & (rgb[..., 2 - channel] < 50)
            ys, xs = np.nonzero(mask)
            targets = ()
            if len(xs):
                targets = (
                    Target(
                        Box(*(float(v) for v in (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)))
                    ),
                )
            parsed = ParsedAnswer("[]", targets)
            stage = StageResult(
                "stage1", "p", "r", parsed, targets, mask, (0.875,) * len(targets), -0.25
            )
            h, w = mask.shape
            out.append(Prediction(query, mode, mask, stage, None, (w, h), (w, h), "stage1"))
        return out


def _outputs(out):
    with rasterio.open(out / "mask.tif") as ds:
        masks, descriptions = ds.read() == 255, ds.descriptions
    features = json.loads((out / "entities.geojson").read_text())["features"]
    return masks, descriptions, features


def _run(sat, map_, out, **kwargs):
    options = dict(tile=256, overlap=32, batch_size=3, progress=False, gsd=0.5)
    return segment_area(
        ColourReasoner(), sat, map_, ["red things", "blue things"], out, **{**options, **kwargs}
    )


def test_several_queries_with_levels_and_confidences(tmp_path):
    sat = _write(tmp_path / "sat.tif", _scene())
    summary = _run(sat, sat, tmp_path / "out", levels=["socio-class", "socio-name"])
    masks, descriptions, features = _outputs(tmp_path / "out")
    assert descriptions == ("red things", "blue things") and summary.scale == 1.0
    rgb = _scene()
    assert np.array_equal(masks[0], np.all(rgb == RED, -1))
    assert np.array_equal(masks[1], np.all(rgb == BLUE, -1))
    by_query = {f["properties"]["query"]: f["properties"] for f in features}
    assert by_query["red things"]["level"] == "socio-class"
    assert by_query["blue things"]["level"] == "socio-name"
    assert by_query["red things"]["sam_iou"] == 0.875
    assert by_query["red things"]["answer_logprob"] == -0.25
    assert len(features) == 2 and summary.tiles_total == 2 * 12


def test_tiles_are_resampled_to_the_model_resolution(tmp_path):
    fine = np.repeat(np.repeat(_scene(400, 300), 2, axis=0), 2, axis=1)  # the scene at 0.25 m
    sat = _write(tmp_path / "sat.tif", fine, gsd=0.25)
    reasoner = ColourReasoner()
    summary = segment_area(
        reasoner, sat, sat, "red things", tmp_path / "out", tile=256, overlap=32, gsd=0.5,
        progress=False,
    )  # fmt: skip
    assert summary.scale == 0.5 and summary.gsd == 0.25 and not summary.notes
    assert set(reasoner.sizes) == {(256, 256)}  # 512-px windows read at half size
    with rasterio.open(summary.mask_path) as ds:
        assert ds.shape == (600, 800)  # written back on the input grid
        mask = ds.read(1) == 255
    truth = np.all(fine == RED, -1)
    import cv2

    kernel = np.ones((5, 5), np.uint8)  # resampling may move an edge by a pixel or two
    edge = cv2.dilate(truth.astype(np.uint8), kernel) > cv2.erode(truth.astype(np.uint8), kernel)
    assert mask.sum() > 0.9 * truth.sum() and not ((mask != truth) & ~edge).any()
    coarse = _write(tmp_path / "coarse.tif", _scene(200, 150), gsd=2.0)
    far = segment_area(
        ColourReasoner(), coarse, coarse, "red", tmp_path / "c", gsd=0.5, progress=False
    )
    assert far.scale == 4.0 and "far from the model's 0.5 m/px" in far.notes[0]


def test_ground_resolution_of_a_geographic_raster(tmp_path):
    from pyproj import Geod

    from socioseg.region.grid import Grid

    path = tmp_path / "geo.tif"
    profile = {"driver": "GTiff", "width": 10, "height": 10, "count": 3, "dtype": "uint8"}
    step = 5e-6  # degrees
    with rasterio.open(
        path, "w", **profile, crs="EPSG:4326", transform=Affine(step, 0, 116.0, 0, -step, 40.0)
    ) as dst:
        dst.write(np.zeros((3, 10, 10), dtype=np.uint8))
    geod = Geod(ellps="WGS84")
    lat = 40.0 - 5 * step
    dx = geod.inv(116.0, lat, 116.0 + step, lat)[2]
    dy = geod.inv(116.0, lat, 116.0, lat + step)[2]
    assert Grid.of_raster(path).gsd() == pytest.approx((dx * dy) ** 0.5, rel=0.005)


def _area_worker(rank, sat, osm, out):
    from socioseg.region.mapping import MapSource

    _run(sat, MapSource(osm=osm), out)  # rank 0 makes the map, rank 1 waits for it


def test_two_processes_equal_one(tmp_path):
    from socioseg.region.mapping import MapSource
    from tests.region_fixtures import write_osm

    sat = _write(tmp_path / "sat.tif", _scene())
    osm = write_osm(tmp_path / "city.osm")
    single = _run(sat, MapSource(osm=osm), tmp_path / "one")
    run_processes(_area_worker, str(sat), osm, str(tmp_path / "two"))
    one, two = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert np.array_equal(one[0], two[0]) and one[1] == two[1]
    assert one[2] == two[2] and single.entities == len(two[2]) == 2
    rows = [
        json.loads(line)
        for r in (0, 1)
        for line in (tmp_path / "two" / f"tiles.rank{r}.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 24 and len({(r["query_index"], r["tile"]) for r in rows}) == 24
    with (
        rasterio.open(tmp_path / "one" / "map.tif") as a,
        rasterio.open(tmp_path / "two" / "map.tif") as b,
    ):
        assert np.array_equal(a.read(), b.read())
    resumed = _run(sat, MapSource(osm=osm), tmp_path / "two")  # one process resumes two ranks
    assert resumed.tiles_run == 0 and resumed.tiles_resumed == 24


def test_bad_run_files_are_one_line_errors(tmp_path):
    sat = _write(tmp_path / "sat.tif", _scene())
    out = tmp_path / "out"
    _run(sat, sat, out)
    rows = (out / "tiles.jsonl").read_text().splitlines()
    (out / "tiles.jsonl").write_text("\n".join([rows[0], "{not json", *rows[2:]]) + "\n")
    with pytest.raises(AreaError, match=r"tiles\.jsonl:2: not a JSON row") as info:
        _run(sat, sat, out)
    assert "\n" not in str(info.value)
    (out / "run.json").write_text('{"queries": ["red th')
    with pytest.raises(AreaError, match=r"run\.json: not JSON"):
        _run(sat, sat, out)
    with pytest.raises(AreaError, match="one --query-level per --query"):
        _run(sat, sat, tmp_path / "x", levels=["socio-name"])


def test_map_made_from_osm_on_the_fly(tmp_path, capsys):
    pytest.importorskip("osmium")
    from socioseg.cli import main
    from socioseg.region.mapping import MapSource
    from tests.region_fixtures import HEIGHT, WIDTH, write_osm, write_raster

    sat = write_raster(tmp_path / "sat.tif", np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8))
    osm = write_osm(tmp_path / "city.osm")
    summary = segment_area(
        ColourReasoner(), sat, MapSource(osm=osm), "red", tmp_path / "out", tile=256, overlap=32,
        progress=False,
    )  # fmt: skip
    assert summary.tiles_total == 4
    assert any(note.startswith("labels: 3 of 3 named places shown") for note in summary.notes)
    with rasterio.open(tmp_path / "out" / "map.tif") as ds:
        assert "OpenStreetMap" in ds.tags()["ATTRIBUTION"] and ds.shape == (HEIGHT, WIDTH)
    args = ["segment-area", "--sat", str(sat), "--query", "q", "--out", str(tmp_path / "o")]
    assert main([*args, "--map", str(sat), "--osm", str(osm)]) == 2
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not both" in err[0] and "give --map, or a map source" in err[1]


@pytest.mark.parametrize("reader", ["rasterio", "pillow"])
def test_truncated_png_is_refused(tmp_path, monkeypatch, reader):
    from PIL import Image

    from socioseg.region import raster as gis

    if reader == "pillow":
        monkeypatch.setattr(gis, "_rasterio", lambda: None)
    Image.fromarray(_scene(300, 200)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(AreaError, match=r"cut\.png is not a readable image .*truncated") as info:
        segment_area(
            ColourReasoner(), tmp_path / "cut.png", tmp_path / "full.png", "red", tmp_path / "o"
        )
    assert "\n" not in str(info.value)


def test_truncated_geotiff_is_a_one_line_error(tmp_path):
    sat = _write(tmp_path / "sat.tif", _scene())
    data = sat.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(AreaError, match=r"cut\.tif: pixels of window .* cannot be read") as info:
        segment_area(
            ColourReasoner(), tmp_path / "cut.tif", sat, "red", tmp_path / "o", progress=False
        )
    assert "\n" not in str(info.value)
