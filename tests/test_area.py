"""segment-area: tiling, stitching, resume, raster IO and errors (fake and tiny reasoners)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from socioseg.region import raster as gis
from socioseg.region.area import AreaError, segment_area, tile_grid
from socioseg.types import ParsedAnswer, Prediction, StageResult

rasterio = pytest.importorskip("rasterio", reason="segment-area GIS tests need socioseg[gis]")
from rasterio.transform import Affine  # noqa: E402

CRS = "EPSG:32650"
TRANSFORM = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 3_000_000.0)
RED = (255, 0, 0)
# A 2000 x 1500 scene: a red bar that no single 768 tile holds, and a red ring with a hole.
BAR = (800, 600, 1500, 800)  # x0, y0, x1, y1 (end-exclusive)
RING, RING_HOLE = (1600, 1100, 1900, 1400), (1700, 1200, 1800, 1300)


class RedReasoner:
    """Segments pure-red satellite pixels; counts tiles; raises once ``fail_after`` batches ran."""

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.batches = 0
        self.tiles = 0

    def segment_batch(self, items, mode="two-stage"):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.batches += 1
        self.tiles += len(items)
        return [_red_prediction(np.asarray(sat), query, mode) for sat, _map, query in items]


def _red_prediction(sat: np.ndarray, query: str, mode: str) -> Prediction:
    mask = (sat[..., 0] > 200) & (sat[..., 1] < 50) & (sat[..., 2] < 50)
    parsed = ParsedAnswer("[]", (), ("no boxes",))
    stage = StageResult("stage1", "prompt", "<answer>[]</answer>", parsed, (), mask)
    h, w = mask.shape
    return Prediction(query, mode, mask, stage, None, (w, h), (w, h), "stage1")


def _scene(width: int = 2000, height: int = 1500) -> np.ndarray:
    rgb = np.full((height, width, 3), 90, dtype=np.uint8)
    rgb[BAR[1] : BAR[3], BAR[0] : BAR[2]] = RED
    rgb[RING[1] : RING[3], RING[0] : RING[2]] = RED
    rgb[RING_HOLE[1] : RING_HOLE[3], RING_HOLE[0] : RING_HOLE[2]] = 90
    return rgb


def _write_tif(path, rgb, transform=TRANSFORM, crs=CRS, nodata=None):
    height, width, _ = rgb.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3}
    profile.update(dtype="uint8", crs=crs, transform=transform, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rgb.transpose(2, 0, 1))
    return path


@pytest.fixture
def scene(tmp_path):
    rgb = _scene()
    return _write_tif(tmp_path / "sat.tif", rgb), _write_tif(tmp_path / "map.tif", rgb)


def _shoelace(ring) -> float:
    xy = np.asarray(ring)
    return 0.5 * abs(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))


def test_tile_grid_covers_raster_with_full_tiles():
    tiles = tile_grid((2000, 1500), 768, 128)
    assert sorted({t.x for t in tiles}) == [0, 616, 1232]
    assert sorted({t.y for t in tiles}) == [0, 366, 732]
    assert all((t.width, t.height) == (768, 768) for t in tiles)
    assert tiles[0].id == "r0_c0" and tiles[-1].id == "r2_c2"
    assert [(t.width, t.height) for t in tile_grid((500, 300), 768, 128)] == [(500, 300)]
    xs = sorted({t.x for t in tile_grid((10_000, 10), 512, 100)})
    assert all(b - a <= 512 - 100 for a, b in itertools.pairwise(xs))


def test_georeferenced_outputs_and_stitching(scene, tmp_path):
    sat, map_ = scene
    factory = lambda: RedReasoner()  # noqa: E731  (loaded only after the inputs are checked)
    summary = segment_area(factory, sat, map_, "red things", tmp_path / "out", progress=False)
    assert (summary.tiles_total, summary.tiles_run, summary.tiles_resumed) == (9, 9, 0)
    assert summary.crs == CRS

    with rasterio.open(summary.mask_path) as ds:
        assert ds.crs.to_string() == CRS
        assert ds.transform.almost_equals(TRANSFORM)
        mask = ds.read(1)
    assert mask.shape == (1500, 2000)
    assert np.array_equal(mask == 255, _scene()[..., 1] == 0)
    assert summary.mask_pixels == int((mask == 255).sum())

    collection = json.loads((tmp_path / "out" / "entities.geojson").read_text())
    assert collection["crs"]["properties"]["name"].endswith("EPSG::32650")
    features = collection["features"]
    assert len(features) == summary.entities == 2
    left, top = TRANSFORM.c, TRANSFORM.f
    right, bottom = left + 2000 * TRANSFORM.a, top + 1500 * TRANSFORM.e
    for feature in features:
        for ring in feature["geometry"]["coordinates"]:
            xy = np.asarray(ring)
            assert (left <= xy[:, 0]).all() and (xy[:, 0] <= right).all()
            assert (bottom <= xy[:, 1]).all() and (xy[:, 1] <= top).all()
            assert ring[0] == ring[-1]

    bar, ring = sorted(features, key=lambda f: f["properties"]["area_px"], reverse=True)
    bar_px = (BAR[2] - BAR[0]) * (BAR[3] - BAR[1])
    assert bar["properties"]["query"] == "red things"
    assert bar["properties"]["area_px"] == bar_px
    assert bar["properties"]["area"] == pytest.approx(bar_px * 0.25)
    # No tile holds the whole bar: one polygon all the same, from the views of several tiles.
    assert {"r0_c1", "r0_c2", "r1_c1", "r1_c2"} <= set(bar["properties"]["tiles"])
    assert len(bar["geometry"]["coordinates"]) == 1
    assert _shoelace(bar["geometry"]["coordinates"][0]) == pytest.approx(bar_px * 0.25, rel=0.01)
    assert len(ring["geometry"]["coordinates"]) == 2  # outer ring + hole
    assert ring["properties"]["tiles"] == ["r1_c2", "r2_c2"]

    rows = [
        json.loads(line) for line in (tmp_path / "out" / "tiles.jsonl").read_text().splitlines()
    ]
    assert len(rows) == 9
    assert rows[0]["stage1"]["problems"] == ["no boxes"]
    assert rows[0]["stage1"]["response"] == "<answer>[]</answer>"


def test_killed_run_resumes_with_remaining_tiles(scene, tmp_path):
    sat, map_ = scene
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        segment_area(RedReasoner(fail_after=2), sat, map_, "q", out, batch_size=2, progress=False)
    first = [json.loads(line) for line in (out / "tiles.jsonl").read_text().splitlines()]
    assert [r["mask_bbox"] is None for r in first] == [True, False, False, True]  # empty ones too
    with (out / "tiles.jsonl").open("a") as f:
        f.write('{"tile": "r2_c0", "wind')  # a write cut short by the kill

    again = RedReasoner()
    summary = segment_area(again, sat, map_, "q", out, batch_size=2, progress=False)
    assert again.tiles == 5
    assert (summary.tiles_run, summary.tiles_resumed, summary.entities) == (5, 4, 2)
    assert len((out / "tiles.jsonl").read_text().splitlines()) == 9

    def no_model():
        raise AssertionError("nothing is left to run: no model should load")

    assert segment_area(no_model, sat, map_, "q", out, progress=False).tiles_resumed == 9
    with pytest.raises(AreaError, match="other settings"):
        segment_area(no_model, sat, map_, "another query", out, progress=False)


def test_nodata_tiles_are_skipped(tmp_path):
    rgb = _scene()
    rgb[:, 1232:] = 0
    sat = _write_tif(tmp_path / "sat.tif", rgb, nodata=0)
    map_ = _write_tif(tmp_path / "map.tif", _scene())
    reasoner = RedReasoner()
    summary = segment_area(reasoner, sat, map_, "q", tmp_path / "out", progress=False)
    assert summary.tiles_nodata == 3 and reasoner.tiles == 6


@pytest.mark.parametrize("reader", ["rasterio", "pillow"])
def test_plain_png_inputs_give_pixel_outputs(tmp_path, monkeypatch, reader):
    rgb = _scene(1000, 900)
    Image.fromarray(rgb).save(tmp_path / "sat.png")
    Image.fromarray(rgb).quantize(8).save(tmp_path / "map.png")  # a palette image
    if reader == "pillow":
        monkeypatch.setattr(gis, "_rasterio", lambda: None)  # as without socioseg[gis]
    summary = segment_area(
        RedReasoner(), tmp_path / "sat.png", tmp_path / "map.png", "q", tmp_path / "out",
        tile=512, overlap=64, progress=False,
    )  # fmt: skip
    assert summary.mask_path.endswith("mask.png") and summary.crs is None
    assert np.array_equal(np.asarray(Image.open(summary.mask_path)) == 255, rgb[..., 1] == 0)
    collection = json.loads(Path(summary.geojson_path).read_text())
    assert "crs" not in collection
    bar = max(collection["features"], key=lambda f: f["properties"]["area_px"])
    xy = np.asarray(bar["geometry"]["coordinates"][0])
    assert xy[:, 0].min() == pytest.approx(BAR[0], abs=0.5)
    assert xy[:, 1].max() == pytest.approx(BAR[3], abs=0.5)
    with gis.RasterSource(tmp_path / "map.png") as map_:
        assert np.array_equal(np.asarray(map_.read(0, 0, 1000, 900)), rgb)
    if reader == "pillow":
        (tmp_path / "x.tif").write_bytes(b"II*\x00")
        with pytest.raises(AreaError, match=r"socioseg\[gis\]"):
            segment_area(
                RedReasoner(), tmp_path / "x.tif", tmp_path / "map.png", "q", tmp_path / "o"
            )


def _one_line_error(tmp_path, sat, map_, match, query="q", **kwargs):
    with pytest.raises(AreaError, match=match) as info:
        segment_area(RedReasoner(), sat, map_, query, tmp_path / "out", progress=False, **kwargs)
    assert "\n" not in str(info.value)


def test_input_errors_are_one_line(scene, tmp_path):
    sat, map_ = scene
    small = _scene(1000, 1500)
    _one_line_error(tmp_path, tmp_path / "missing.tif", map_, "no such file")
    (tmp_path / "notes.tif").write_text("not a raster")
    _one_line_error(tmp_path, sat, tmp_path / "notes.tif", "not a raster")
    _one_line_error(tmp_path, sat, _write_tif(tmp_path / "small.tif", small), "one pixel grid")
    shifted = _write_tif(
        tmp_path / "shifted.tif", _scene(), Affine(0.5, 0.0, 500_100.0, 0.0, -0.5, 3e6)
    )
    _one_line_error(tmp_path, sat, shifted, "different extents")
    other_crs = _write_tif(tmp_path / "crs.tif", _scene(), crs="EPSG:32651")
    _one_line_error(tmp_path, sat, other_crs, "EPSG:32651")
    u16 = {"driver": "GTiff", "width": 8, "height": 8, "count": 3, "dtype": "uint16"}
    with rasterio.open(tmp_path / "u16.tif", "w", **u16, crs=CRS, transform=TRANSFORM) as dst:
        dst.write(np.zeros((3, 8, 8), dtype=np.uint16))
    _one_line_error(tmp_path, tmp_path / "u16.tif", map_, "expected 8-bit RGB")
    _one_line_error(tmp_path, sat, map_, "--overlap", overlap=768)
    _one_line_error(tmp_path, sat, map_, "query is empty", query=" ")


@pytest.mark.slow
def test_tiny_models_end_to_end(tiny_models, tmp_path):
    from socioseg.models.vlm import SamplingSettings
    from socioseg.socioreasoner import InferenceConfig, SocioReasoner

    small = InferenceConfig(
        min_pixels=56 * 56, max_pixels=224 * 224, sampling=SamplingSettings(max_new_tokens=48)
    )
    reasoner = SocioReasoner.from_pretrained(*map(str, tiny_models), "cpu", config=small)
    rgb = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    sat = _write_tif(tmp_path / "sat.tif", rgb)
    map_ = _write_tif(tmp_path / "map.tif", rgb[::-1].copy())
    summary = segment_area(
        reasoner, sat, map_, "the school", tmp_path / "out", tile=256, overlap=32, batch_size=2,
        progress=False,
    )  # fmt: skip
    assert (summary.tiles_total, summary.tiles_run) == (4, 4)
    with rasterio.open(summary.mask_path) as ds:
        assert ds.crs.to_string() == CRS and ds.shape == (300, 400)
    rows = [json.loads(line) for line in Path(summary.tiles_jsonl).read_text().splitlines()]
    assert [r["tile"] for r in rows] == ["r0_c0", "r0_c1", "r1_c0", "r1_c1"]
    assert all(isinstance(r["stage1"]["response"], str) for r in rows)
    assert all(r["stage2"] is not None for r in rows)
    assert json.loads(Path(summary.geojson_path).read_text())["type"] == "FeatureCollection"
