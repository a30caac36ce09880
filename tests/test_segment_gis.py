"""``socioseg segment`` on a georeferenced satellite raster: the GIS outputs a user opens in QGIS
(mask.tif on the input grid, entities.geojson/.gpkg with segment-area's attributes), listed in
result.json and in the printed lines; a PNG input writes what it always did."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from socioseg.cli import inference, main
from socioseg.region.gis_outputs import QUERY_COLORS, SEGMENT_FIELDS
from socioseg.types import Box, ParsedAnswer, Prediction, StageResult, Target

rasterio = pytest.importorskip("rasterio", reason="segment's GIS outputs need socioseg[gis]")
pyogrio = pytest.importorskip("pyogrio", reason="GeoPackage tests need socioseg[gis]")
from rasterio.transform import Affine  # noqa: E402

CRS, GSD, X0, Y0 = "EPSG:32650", 0.5, 440_000.0, 4_420_000.0
RED = (255, 0, 0)
BAR = (300, 200, 700, 260)  # x0 y0 x1 y1: 400 x 60 px = 6000 m2
SPECK = (100, 100, 105, 106)  # 30 px = 7.5 m2, under the default --min-area-m2 of 100
TRIANGLE = (100, 300, 300, 500)  # its hypotenuse a pixel staircase
QUERY = "Park and greenspace"  # a socio-function name: its level is known from the text
# RedFinder draws no stage-2 feedback images, so these are all a PNG input gets from it.
PNG_OUTPUTS = {"mask.png", "stage1_mask.png", "overlay.png", "result.json"}
GIS_OUTPUTS = {"mask.tif", "entities.geojson", "entities.gpkg"}


def _scene() -> np.ndarray:
    rgb = np.full((600, 800, 3), 90, dtype=np.uint8)
    for x0, y0, x1, y1 in (BAR, SPECK):
        rgb[y0:y1, x0:x1] = RED
    x0, y0, x1, y1 = TRIANGLE
    rows, cols = np.mgrid[y0:y1, x0:x1]
    rgb[y0:y1, x0:x1][cols - x0 <= rows - y0] = RED  # below the diagonal
    return rgb


def _geotiff(path, rgb=None, gsd=GSD, x0=X0):
    """The scene as a GIS user's GeoTIFF: tiled, deflate, UTM 50N at 0.5 m."""
    rgb = _scene() if rgb is None else rgb
    profile = {"driver": "GTiff", "width": rgb.shape[1], "height": rgb.shape[0], "count": 3,
               "dtype": "uint8", "tiled": True, "blockxsize": 256, "blockysize": 256,
               "compress": "deflate", "crs": CRS,
               "transform": Affine(gsd, 0, x0, 0, -gsd, Y0)}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    return path


class RedFinder:
    """Stands in for the models: the final mask is the pure red pixels. Stage 1 reports one
    box with SAM score 0.5 and log-prob -1; stage 2 (the final stage) one box around all red
    pixels with SAM score 0.875 and answer log-prob -0.25."""

    def segment(self, sat, map_, query):
        mask = np.all(np.asarray(sat) == RED, axis=-1)
        ys, xs = np.nonzero(mask)
        box = Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
        targets = (Target(box),)
        stages = [
            StageResult(name, "p", "r", ParsedAnswer("[]", targets), targets, mask, (score,), lp)
            for name, score, lp in (("stage1", 0.5, -1.0), ("stage2", 0.875, -0.25))
        ]
        size = sat.size
        return Prediction(query, "two-stage", mask, stages[0], stages[1], size, size, "stage2")


@pytest.fixture
def red_finder(monkeypatch):
    monkeypatch.setattr(inference, "load_reasoner", lambda args: RedFinder())


def _segment(sat, out, *extra, map_=None) -> int:
    map_ = sat if map_ is None else map_
    args = ["segment", "--sat", str(sat), "--map", str(map_), "--query", QUERY, "--out", str(out)]
    return main([*args, "--vlm", "org/vlm-3b", "--sam", "org/sam2-large", *extra])


def _layer(gpkg):
    meta, _, wkb, columns = pyogrio.raw.read(gpkg, layer="q1_Park_and_greenspace")
    rows = [dict(zip(meta["fields"], values, strict=True)) for values in zip(*columns, strict=True)]
    return meta, wkb, rows


def test_geotiff_input_writes_mask_tif_and_entities_listed_in_result_json(
    red_finder, tmp_path, capsys
):
    import shapely

    out = tmp_path / "out"
    assert _segment(_geotiff(tmp_path / "sat.tif"), out) == 0
    assert {p.name for p in out.iterdir()} == PNG_OUTPUTS | GIS_OUTPUTS
    red = np.all(_scene() == RED, axis=-1)
    with rasterio.open(out / "mask.tif") as ds:  # the input's grid, CRS and a colour table
        assert (ds.width, ds.height, ds.count) == (800, 600, 1)
        assert ds.crs == rasterio.crs.CRS.from_string(CRS)
        assert ds.transform == Affine(GSD, 0, X0, 0, -GSD, Y0)
        assert ds.nodata == 0 and ds.descriptions == (QUERY,)
        assert ds.colormap(1)[255] == (*QUERY_COLORS[0], 255) and ds.colormap(1)[0][3] == 0
        assert (ds.read(1) == red * 255).all()
    assert (np.asarray(Image.open(out / "mask.png")) == red * 255).all()  # still written

    meta, wkb, rows = _layer(out / "entities.gpkg")
    assert meta["crs"] == CRS and list(meta["fields"]) == list(SEGMENT_FIELDS)
    assert len(rows) == 2  # the bar and the triangle; the 7.5 m2 speck is dropped
    bar, triangle = sorted(rows, key=lambda r: -r["area_px"])
    assert (bar["query"], bar["level"]) == (QUERY, "socio-function")
    assert (bar["sam_score"], bar["answer_logprob"]) == (0.875, -0.25)  # the final stage's
    assert (bar["vlm"], bar["sam"]) == ("org/vlm-3b", "org/sam2-large")
    assert bar["area_px"] == 400 * 60 and bar["area_m2"] == 400 * 60 * GSD**2
    assert triangle["area_px"] == 200 * 201 // 2 and triangle["area_m2"] == triangle["area_px"] / 4
    polygons = sorted(shapely.from_wkb(wkb), key=lambda p: -p.area)
    left, top = X0 + BAR[0] * GSD, Y0 - BAR[1] * GSD
    expected = (left, Y0 - BAR[3] * GSD, X0 + BAR[2] * GSD, top)
    assert polygons[0].bounds == pytest.approx(expected, abs=GSD / 2)
    assert len(polygons[1].exterior.coords) <= 8  # simplified to the pixel size by default

    collection = json.loads((out / "entities.geojson").read_text())
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32650"
    assert sorted(f["properties"]["area_m2"] for f in collection["features"]) == sorted(
        r["area_m2"] for r in rows
    )

    result = json.loads((out / "result.json").read_text())
    gis = result["gis"]
    assert gis["files"] == {
        "mask_tif": "mask.tif",
        "entities_geojson": "entities.geojson",
        "entities_gpkg": "entities.gpkg",
    }
    assert (gis["crs"], gis["gsd_m"], gis["entities"], gis["level"]) == (
        CRS,
        GSD,
        2,
        "socio-function",
    )
    assert gis["transform"] == [GSD, 0, X0, 0, -GSD, Y0] and gis["min_area_m2"] == 100
    printed = capsys.readouterr().out.splitlines()
    wrote = [line.removeprefix("wrote ") for line in printed if line.startswith("wrote ")]
    assert {p.rsplit("/", 1)[1] for p in wrote} == {p.name for p in out.iterdir()}
    assert wrote[-1].endswith("result.json")  # the record comes last
    assert "entities: 2; polygons in EPSG:32650" in printed


def test_vector_options_as_in_segment_area(red_finder, tmp_path):
    import shapely
    from pyproj import Transformer

    sat = _geotiff(tmp_path / "sat.tif")
    out = tmp_path / "out"
    assert (
        _segment(sat, out, "--simplify", "0", "--min-area-m2", "5", "--dst-crs", "EPSG:4326") == 0
    )
    meta, wkb, rows = _layer(out / "entities.gpkg")
    assert meta["crs"] == "EPSG:4326" and len(rows) == 3  # the speck is kept
    speck = min(range(3), key=lambda i: rows[i]["area_px"])
    assert rows[speck]["area_m2"] == 30 * GSD**2
    lon, lat = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(
        X0 + SPECK[0] * GSD, Y0 - SPECK[3] * GSD
    )
    assert shapely.from_wkb(wkb[speck]).bounds[:2] == pytest.approx((lon, lat), abs=1e-5)
    triangle = max(shapely.from_wkb(wkb), key=lambda p: len(p.exterior.coords))
    assert len(triangle.exterior.coords) > 300  # --simplify 0 keeps the stair-steps
    result = json.loads((out / "result.json").read_text())["gis"]
    assert result["vector_crs"] == "EPSG:4326" and result["simplify_m"] == 0


def test_png_input_writes_what_it_always_did(red_finder, tmp_path, capsys):
    sat = tmp_path / "sat.png"
    Image.fromarray(_scene()).save(sat)
    out = tmp_path / "out"
    assert _segment(sat, out) == 0
    assert {p.name for p in out.iterdir()} == PNG_OUTPUTS
    assert "gis" not in json.loads((out / "result.json").read_text())
    assert "entities:" not in capsys.readouterr().out


def test_dst_crs_without_a_crs_is_one_line_before_the_models_load(tmp_path, monkeypatch, capsys):
    def no_models(args):
        raise AssertionError("the models must not load")

    monkeypatch.setattr(inference, "load_reasoner", no_models)
    sat = tmp_path / "sat.png"
    Image.fromarray(_scene()).save(sat)
    assert _segment(sat, tmp_path / "a", "--dst-crs", "EPSG:4326") == 2
    assert _segment(_geotiff(tmp_path / "sat.tif"), tmp_path / "b", "--dst-crs", "nonsense") == 2
    assert _segment(_geotiff(tmp_path / "sat.tif"), tmp_path / "c", "--simplify", "-1") == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and "has no CRS" in errors[0] and "--dst-crs" in errors[0]
    assert "not a CRS" in errors[1] and "--simplify" in errors[2]


def test_a_georeferenced_map_must_cover_the_satellite_image(tmp_path, monkeypatch, capsys):
    """A map GeoTIFF at another resolution over the same area is fine (segment resizes it);
    one shifted by 10 m, or in another CRS, is a one-line error before the models load."""
    calls = []
    monkeypatch.setattr(inference, "load_reasoner", lambda args: calls.append(1) or RedFinder())
    sat = _geotiff(tmp_path / "sat.tif")
    half = _scene()[::2, ::2]
    coarse = _geotiff(tmp_path / "coarse.tif", half, gsd=2 * GSD)
    shifted = _geotiff(tmp_path / "shifted.tif", half, gsd=2 * GSD, x0=X0 + 10)
    other = tmp_path / "other.tif"
    with rasterio.open(coarse) as src:
        profile = {**src.profile, "crs": "EPSG:32651"}
        with rasterio.open(other, "w", **profile) as dst:
            dst.write(src.read())
    assert _segment(sat, tmp_path / "a", map_=coarse) == 0 and calls == [1]
    assert _segment(sat, tmp_path / "b", map_=shifted) == 2
    assert _segment(sat, tmp_path / "c", map_=other) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and "cover different extents" in errors[0]
    assert "EPSG:32651" in errors[1] and calls == [1]


def test_without_rasterio_a_geotiff_gets_the_png_outputs_and_a_note(
    red_finder, tmp_path, monkeypatch, capsys
):
    sat = _geotiff(tmp_path / "sat.tif")
    monkeypatch.setitem(sys.modules, "rasterio", None)  # as if socioseg[gis] were not installed
    assert _segment(sat, tmp_path / "out") == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == PNG_OUTPUTS
    err = capsys.readouterr().err
    assert "may be georeferenced" in err and "socioseg[gis]" in err


def test_tiny_models_give_the_same_mask_on_the_geotiff_and_the_png(tiny_models, tmp_path):
    """The real command with tiny models: a GeoTIFF input is read as the same pixels as its
    PNG, so both runs answer alike; only the georeferenced one writes the GIS files."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "sat.png")
    _geotiff(tmp_path / "sat.tif", rgb)
    models = ["--vlm", str(tiny_models[0]), "--sam", str(tiny_models[1])]
    options = ["--greedy", "--max-new-tokens", "8", "--min-pixels", "3136", *models]
    for name in ("png", "tif"):
        sat = str(tmp_path / f"sat.{name}")
        argv = ["segment", "--sat", sat, "--map", sat, "--query", "School"]
        assert main([*argv, "--out", str(tmp_path / name), *options]) == 0
    png_result = json.loads((tmp_path / "png" / "result.json").read_text())
    tif_result = json.loads((tmp_path / "tif" / "result.json").read_text())
    assert tif_result["stage1"]["response"] == png_result["stage1"]["response"]
    mask = np.asarray(Image.open(tmp_path / "png" / "mask.png"))
    with rasterio.open(tmp_path / "tif" / "mask.tif") as ds:
        assert ds.crs == rasterio.crs.CRS.from_string(CRS) and ds.shape == (96, 128)
        assert (ds.read(1) == mask).all()
    layers = pyogrio.list_layers(tmp_path / "tif" / "entities.gpkg")
    assert [name for name, _ in layers] == ["q1_School"]
    assert not (tmp_path / "png" / "mask.tif").exists()
