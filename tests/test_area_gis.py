"""segment-area outputs as GIS users open them: GeoPackage, colour table, overview, polygons."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from socioseg.cli import main
from socioseg.region.area import segment_area
from socioseg.region.gis_outputs import QUERY_COLORS
from socioseg.types import Box, ParsedAnswer, Prediction, StageResult, Target

rasterio = pytest.importorskip("rasterio", reason="segment-area GIS tests need socioseg[gis]")
pyogrio = pytest.importorskip("pyogrio", reason="GeoPackage tests need socioseg[gis]")
from rasterio.transform import Affine  # noqa: E402

CRS, GSD, X0, Y0 = "EPSG:32650", 0.5, 440_000.0, 4_420_000.0
RED, BLUE = (255, 0, 0), (0, 0, 255)
BAR = (300, 200, 700, 260)  # red, x0 y0 x1 y1
SPECK = (100, 100, 105, 106)  # red, 30 px = 7.5 m2: a sliver
TRIANGLE = (100, 300, 300, 500)  # blue, its hypotenuse a pixel staircase
MODELS = {"vlm": "Qwen/Qwen2.5-VL-3B-Instruct", "sam": "facebook/sam2-hiera-large-hf"}


def _scene():
    rgb = np.full((600, 800, 3), 90, dtype=np.uint8)
    rgb[BAR[1] : BAR[3], BAR[0] : BAR[2]] = RED
    rgb[SPECK[1] : SPECK[3], SPECK[0] : SPECK[2]] = RED
    x0, y0, x1, y1 = TRIANGLE
    rows, cols = np.mgrid[y0:y1, x0:x1]
    rgb[y0:y1, x0:x1][cols - x0 <= rows - y0] = BLUE  # below the diagonal
    return rgb


def _sat(tmp_path):
    profile = {"driver": "GTiff", "width": 800, "height": 600, "count": 3, "dtype": "uint8"}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "sat.tif"
    transform = Affine(GSD, 0, X0, 0, -GSD, Y0)
    with rasterio.open(path, "w", **profile, crs=CRS, transform=transform) as dst:
        dst.write(_scene().transpose(2, 0, 1))
    return path


class ColourReasoner:
    """Finds the pure red ("red ...") or blue ("blue ...") pixels; one box, SAM score 0.875,
    answer log-prob -0.25, as a real model reports them."""

    def segment_batch(self, items, mode="two-stage"):
        out = []
        for sat, _map, query in items:
            rgb = np.asarray(sat)
            mask = np.all(rgb == (RED if query.startswith("red") else BLUE), axis=-1)
            ys, xs = np.nonzero(mask)
            targets = ()
            if len(xs):
                targets = (
                    Target(
                        Box(*(float(v) for v in (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)))
                    ),
                )
            stage = StageResult(
                "stage1", "p", "r", ParsedAnswer("[]", targets), targets, mask,
                (0.875,) * len(targets), -0.25,
            )  # fmt: skip
            h, w = mask.shape
            out.append(Prediction(query, mode, mask, stage, None, (w, h), (w, h), "stage1"))
        return out


def _run(tmp_path, **kwargs):
    sat = _sat(tmp_path)
    options = dict(tile=256, overlap=32, progress=False, levels=["socio-class", "socio-name"])
    return segment_area(
        ColourReasoner(), sat, sat, ["red things", "blue things"], tmp_path / "out",
        models=MODELS, **{**options, **kwargs},
    )  # fmt: skip


def test_geopackage_layers_attributes_and_crs(tmp_path):
    summary = _run(tmp_path)
    gpkg = tmp_path / "out" / "entities.gpkg"
    assert summary.gpkg_path == str(gpkg)
    layers = pyogrio.list_layers(gpkg)
    assert [name for name, _ in layers] == ["q1_red_things", "q2_blue_things"]
    assert all(kind == "Polygon" for _, kind in layers)
    meta, _, wkb, columns = pyogrio.raw.read(gpkg, layer="q1_red_things")
    assert meta["crs"] == CRS
    rows = [dict(zip(meta["fields"], values, strict=True)) for values in zip(*columns, strict=True)]
    assert len(rows) == 1  # the 7.5 m2 speck is under the default 100 m2
    (bar,) = rows
    assert (bar["query"], bar["level"]) == ("red things", "socio-class")
    assert (bar["sam_score"], bar["answer_logprob"]) == (0.875, -0.25)
    assert (bar["vlm"], bar["sam"]) == (MODELS["vlm"], MODELS["sam"])
    assert bar["area_m2"] == (BAR[2] - BAR[0]) * (BAR[3] - BAR[1]) * GSD**2
    assert set(bar["tiles"].split(",")) >= {"r0_c1", "r0_c2"}
    import shapely

    polygon = shapely.from_wkb(wkb[0])
    left, top = X0 + BAR[0] * GSD, Y0 - BAR[1] * GSD
    assert polygon.bounds == pytest.approx(
        (left, Y0 - BAR[3] * GSD, X0 + BAR[2] * GSD, top), abs=GSD / 2
    )
    meta, _, _, columns = pyogrio.raw.read(gpkg, layer="q2_blue_things")
    assert len(columns[0]) == 1 and columns[2][0] == "socio-name"


def test_mask_colour_table_nodata_and_overview(tmp_path):
    summary = _run(tmp_path)
    with rasterio.open(summary.mask_path) as ds:
        assert ds.nodata == 0 and ds.count == 2
        assert ds.colormap(1)[255] == (*QUERY_COLORS[0], 255) and ds.colormap(1)[0][3] == 0
        assert ds.descriptions == ("red things", "blue things")
    overview = np.asarray(Image.open(summary.overview_path).convert("RGB")).astype(int)
    assert overview.shape[1] == 800 and overview.shape[0] > 600  # the legend below
    sat = _scene().astype(int)
    inside = overview[230, 500] - sat[230, 500]  # the bar: tinted towards query 1's colour
    assert np.dot(inside, np.array(QUERY_COLORS[0]) - sat[230, 500]) > 0
    # A 256-colour PNG: colours within a few levels of what was drawn.
    assert np.abs(overview[50, 50] - sat[50, 50]).max() <= 8  # nothing found there
    edge = overview[BAR[1], 500]  # the outline is drawn opaque in the query's colour
    assert np.abs(edge - QUERY_COLORS[0]).max() <= 8
    legend = overview[600:]
    for color in QUERY_COLORS[:2]:  # one swatch per query
        assert (np.abs(legend - color).max(axis=-1) <= 8).sum() > 100


def _blue_polygon(tmp_path, **kwargs):
    _run(tmp_path, **kwargs)
    collection = json.loads((tmp_path / "out" / "entities.geojson").read_text())
    (feature,) = [f for f in collection["features"] if f["properties"]["query"] == "blue things"]
    return collection, feature


def test_polygons_are_simplified_to_the_pixel_size(tmp_path):
    import shapely
    from shapely.geometry import shape

    _, stairs = _blue_polygon(tmp_path / "a", simplify=0)
    _, smooth = _blue_polygon(tmp_path / "b")
    stairs, smooth = shape(stairs["geometry"]), shape(smooth["geometry"])
    assert len(stairs.exterior.coords) > 300  # two corners per row of the staircase
    assert len(smooth.exterior.coords) <= 8
    assert shapely.hausdorff_distance(stairs, smooth) <= GSD * 1.01  # within one pixel
    assert smooth.area == pytest.approx(stairs.area, rel=0.01)


def test_min_area_in_square_metres_and_dst_crs(tmp_path):
    from pyproj import Transformer

    summary = _run(tmp_path, min_area_m2=5, dst_crs="EPSG:4326")
    collection = json.loads((tmp_path / "out" / "entities.geojson").read_text())
    assert collection["crs"]["properties"]["name"].endswith("EPSG::4326")
    assert summary.vector_crs == "EPSG:4326" and summary.entities == 3  # the speck is kept
    speck = min(collection["features"], key=lambda f: f["properties"]["area_px"])
    assert speck["properties"]["area_m2"] == 30 * GSD**2
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(
        X0 + SPECK[0] * GSD, Y0 - SPECK[3] * GSD
    )
    xy = np.asarray(speck["geometry"]["coordinates"][0])
    assert xy[:, 0].min() == pytest.approx(lon, abs=1e-5)
    assert xy[:, 1].min() == pytest.approx(lat, abs=1e-5)
    meta = pyogrio.read_info(tmp_path / "out" / "entities.gpkg", layer="q1_red_things")
    assert meta["crs"] == "EPSG:4326" and meta["features"] == 2


def test_bad_vector_options_are_one_line_errors(tmp_path, capsys):
    sat = str(_sat(tmp_path))
    base = ["segment-area", "--sat", sat, "--map", sat, "--query", "q", "--out"]
    assert main([*base, str(tmp_path / "a"), "--dst-crs", "EPSG:nonsense"]) == 2
    assert main([*base, str(tmp_path / "b"), "--simplify", "-1"]) == 2
    plain = tmp_path / "plain.png"
    Image.fromarray(_scene()).save(plain)
    args = ["--sat", str(plain), "--map", str(plain), "--query", "q", "--dst-crs", "EPSG:4326"]
    assert main(["segment-area", *args, "--out", str(tmp_path / "c")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "--dst-crs" in errors[0] and "--simplify" in errors[1]
    assert "has no CRS" in errors[2]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
