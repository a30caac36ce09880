"""make-dataset: masks equal the polygons per tile, spatially blocked splits, loader reads it."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from socioseg.cli import main

pyogrio = pytest.importorskip("pyogrio", reason="make-dataset needs socioseg[gis]")
shapely = pytest.importorskip("shapely")

from tests.region_fixtures import GSD, X0, Y0, lonlat_of_pixel, write_raster  # noqa: E402

TILE = 128
WIDTH, HEIGHT = 4 * TILE + 20, 3 * TILE + 7  # a remainder strip on two sides
CLASSES = ("School", "Park", "Hospital")
FUNCTIONS = {"School": "Educational", "Park": "Park and greenspace", "Hospital": "Medical"}


def _polygons():
    """(name, class, polygon in pixel coordinates): random rotated rectangles, one name twice."""
    rng = np.random.default_rng(3)
    out = []
    for k in range(14):
        cx, cy = rng.uniform(20, WIDTH - 20), rng.uniform(20, HEIGHT - 20)
        w, h, angle = rng.uniform(15, 70), rng.uniform(15, 50), rng.uniform(0, np.pi)
        corners = np.array([(-w, -h), (w, -h), (w, h), (-w, h)]) / 2
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        poly = shapely.Polygon(corners @ rot.T + (cx, cy))
        name = "Chain Store" if k in (2, 11) else f"Place {k}"
        out.append((name, CLASSES[k % 3], poly))
    return out


def _write_labels(path, polygons, driver):
    """Labels in EPSG:4326 (GeoJSON) or in UTM metres (GeoPackage, Shapefile)."""
    if driver == "GeoJSON":
        to = lambda c, r: lonlat_of_pixel(c, r)  # noqa: E731
        crs = "EPSG:4326"
    else:
        to = lambda c, r: (X0 + c * GSD, Y0 - r * GSD)  # noqa: E731
        crs = "EPSG:32650"
    geoms = [shapely.Polygon([to(c, r) for c, r in p.exterior.coords]) for _, _, p in polygons]
    fields = {
        "name": np.array([n for n, _, _ in polygons], dtype=object),
        "kind": np.array([c for _, c, _ in polygons], dtype=object),
        "fn": np.array([FUNCTIONS[c] for _, c, _ in polygons], dtype=object),
    }
    pyogrio.raw.write(
        path, shapely.to_wkb(geoms), list(fields.values()), list(fields),
        geometry_type="Polygon", crs=crs, driver=driver,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    sat = write_raster(tmp / "sat.tif", rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    map_ = write_raster(tmp / "map.tif", rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    return tmp, sat, map_, _polygons()


def _run(tmp, sat, map_, labels, name, *extra):
    out = tmp / name
    args = ["make-dataset", "--sat", str(sat), "--map", str(map_), "--labels", str(labels)]
    args += ["--query-field", "name", "--class-field", "kind", "--function-field", "fn"]
    assert main([*args, "--out", str(out), "--tile", str(TILE), "--block", "1", *extra]) == 0
    return out


def test_masks_are_the_polygons_and_no_entity_spans_two_splits(scene):
    tmp, sat, map_, polygons = scene
    labels = _write_labels(tmp / "labels.geojson", polygons, "GeoJSON")
    out = _run(tmp, sat, map_, labels, "ds")
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert {r["level"] for r in rows} == {"socio-name", "socio-class", "socio-function"}
    field = {"socio-name": 0, "socio-class": 1, "socio-function": 2}
    cols, rws = np.meshgrid(np.arange(TILE) + 0.5, np.arange(TILE) + 0.5)
    for row in rows:
        x, y, w, h = row["window"]
        assert w == h == TILE and x + w <= 4 * TILE and y + h <= 3 * TILE
        key = field[row["level"]]
        members = [
            p for p in polygons
            if (p[0], p[1], FUNCTIONS[p[1]])[key] == row["query"]
        ]  # fmt: skip
        expected = np.zeros((TILE, TILE), dtype=bool)
        for _, _, poly in members:
            expected |= shapely.contains_xy(poly, cols + x, rws + y)
        folder = out / row["split"] / row["id"]
        mask = np.asarray(Image.open(folder / "mask.png")) > 0
        assert np.array_equal(mask, expected), row["id"]
        assert json.loads((folder / "question.json").read_text()) == {"problem": row["query"]}
        sat_tile = np.asarray(Image.open(folder / "sat.png"))
        with __import__("rasterio").open(sat) as ds:
            assert np.array_equal(
                sat_tile, ds.read(window=((y, y + h), (x, x + w))).transpose(1, 2, 0)
            )
    # Every polygon's tiles, through any sample, lie in one split; so does each name.
    split_of_tile = {tuple(r["window"][:2]): r["split"] for r in rows}
    for name, _, poly in polygons:
        splits = {
            split for (x, y), split in split_of_tile.items()
            if poly.intersection(shapely.box(x, y, x + TILE, y + TILE)).area > 0
        }  # fmt: skip
        assert len(splits) <= 1, name
    names = defaultdict(set)
    for r in rows:
        if r["level"] == "socio-name":
            names[r["query"]].add(r["split"])
    assert all(len(s) == 1 for s in names.values())
    assert len({r["split"] for r in rows}) >= 2
    levels = json.loads((out / "levels.json").read_text())
    assert levels[rows[0]["id"]]["level"] == rows[0]["level"]


def test_training_loader_reads_the_result_and_formats_agree(scene):
    from socioseg.data import LevelMap, load_socioseg

    tmp, sat, map_, polygons = scene
    outs = [
        _run(tmp, sat, map_, _write_labels(tmp / f"l.{ext}", polygons, driver), f"ds-{ext}")
        for ext, driver in (("gpkg", "GPKG"), ("shp", "ESRI Shapefile"))
    ]
    index = [(o / "index.jsonl").read_text() for o in outs]
    assert index[0] == index[1]
    levels = LevelMap.from_file(outs[0] / "levels.json")
    rows = [json.loads(line) for line in index[0].splitlines()]
    for split in {r["split"] for r in rows}:
        data = load_socioseg(str(outs[0]), split, levels=levels)
        expected = {r["id"]: r for r in rows if r["split"] == split}
        assert len(data) == len(expected)
        sample = data[0]
        assert sample.query == expected[sample.id]["query"]
        assert sample.level == expected[sample.id]["level"]
        assert sample.sat.size == (TILE, TILE) and sample.mask.any()


def test_bad_labels_are_one_line_errors(scene, capsys):
    tmp, sat, map_, polygons = scene
    labels = _write_labels(tmp / "bad.geojson", polygons, "GeoJSON")
    base = ["make-dataset", "--sat", str(sat), "--map", str(map_), "--labels", str(labels)]
    assert main([*base, "--query-field", "title", "--out", str(tmp / "e1")]) == 2
    assert (
        main([*base, "--query-field", "name", "--levels", "class", "--out", str(tmp / "e2")]) == 2
    )
    assert main([*base[:-1], str(sat), "--query-field", "name", "--out", str(tmp / "e3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "no field 'title'" in err[0] and "--class-field" in err[1]


def test_a_failed_run_leaves_nothing_that_blocks_the_rerun(scene, monkeypatch, capsys):
    import socioseg.region.dataset_files as files

    tmp, sat, map_, polygons = scene
    labels = _write_labels(tmp / "fail.geojson", polygons, "GeoJSON")
    calls = {"n": 0}
    put = files.TileImages.put

    def full_disk(self, folder, name, data):  # the disk fills up half-way
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return put(self, folder, name, data)

    monkeypatch.setattr(files.TileImages, "put", full_disk)
    out = tmp / "ds-fail"
    args = ["make-dataset", "--sat", str(sat), "--map", str(map_), "--labels", str(labels)]
    args += ["--query-field", "name", "--out", str(out), "--tile", str(TILE), "--no-progress"]
    with pytest.raises(OSError, match="No space"):
        main(args)
    assert [p.name for p in out.iterdir()] == [".socioseg-partial"]  # no index.jsonl up here
    monkeypatch.setattr(files.TileImages, "put", put)
    assert main(args) == 0  # the rerun just works
    assert sorted(p.name for p in out.iterdir()) == ["index.jsonl", "levels.json", "test", "train"]


def test_samples_of_one_tile_share_its_images(scene, capsys):
    tmp, sat, map_, polygons = scene
    labels = _write_labels(tmp / "share.geojson", polygons, "GeoJSON")
    out = _run(tmp, sat, map_, labels, "ds-share", "--no-progress")
    rows = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    by_tile = defaultdict(list)
    for r in rows:
        by_tile[tuple(r["window"])].append(out / r["split"] / r["id"])
    inodes = {name: set() for name in ("sat.png", "map.png", "mask.png")}
    for folders in by_tile.values():
        for name in inodes:
            inodes[name].add(frozenset((f / name).stat().st_ino for f in folders))
    # One sat.png and one map.png per tile on disk, however many samples it has.
    assert all(len(group) == 1 for group in inodes["sat.png"] | inodes["map.png"])
    assert any(len(folders) > 1 for folders in by_tile.values())
    linked = sum(len(f) - 1 for f in by_tile.values()) * 2
    assert f"{linked} hard links" in capsys.readouterr().out


def test_too_many_samples_need_allow_large(scene, capsys, monkeypatch):
    import socioseg.region.dataset_files as files

    tmp, sat, map_, polygons = scene
    labels = _write_labels(tmp / "large.geojson", polygons, "GeoJSON")
    monkeypatch.setattr(files, "LARGE_SAMPLES", 3)
    args = ["make-dataset", "--sat", str(sat), "--map", str(map_), "--labels", str(labels)]
    args += ["--query-field", "name", "--tile", str(TILE), "--no-progress"]
    assert main([*args, "--out", str(tmp / "big")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-large" in err[0] and not (tmp / "big").exists()
    assert main([*args, "--out", str(tmp / "big"), "--allow-large"]) == 0


def _labels_at(path, coords, crs="EPSG:4326", driver="GeoJSON"):
    geoms = [shapely.Polygon(c) for c in coords]
    names = np.array([f"p{i}" for i in range(len(geoms))], dtype=object)
    pyogrio.raw.write(
        path, shapely.to_wkb(geoms), [names], ["name"], geometry_type="Polygon", crs=crs,
        driver=driver,
    )  # fmt: skip
    return path


def test_labels_in_the_wrong_place_are_one_line(scene, capsys):
    tmp, sat, map_, _ = scene
    square = [(10, 10), (60, 10), (60, 60), (10, 60)]
    right = [lonlat_of_pixel(c, r) for c, r in square]
    cases = {
        "metres": ([[(X0 + c * GSD, Y0 - r * GSD) for c, r in square]], "check the CRS of"),
        "swapped": ([[(lat, lon) for lon, lat in right]], "check the CRS of"),
        "nan": ([right, [(116.0, 39.0), (float("nan"), 39.1), (116.1, 39.0)]], "NaN"),
    }
    for name, (coords, message) in cases.items():
        labels = _labels_at(tmp / f"{name}.gpkg", coords, driver="GPKG")  # GPKG keeps NaN
        args = ["make-dataset", "--sat", str(sat), "--map", str(map_), "--labels", str(labels)]
        assert main([*args, "--query-field", "name", "--out", str(tmp / f"o-{name}")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        if message.startswith("check"):
            assert "(EPSG:4326) against the raster (EPSG:32650)" in err[0]


def test_a_raster_without_crs_names_make_dataset(tmp_path, capsys):
    import rasterio

    plain = tmp_path / "plain.tif"
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 3, "dtype": "uint8"}
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(np.zeros((3, 64, 64), dtype=np.uint8))
    args = ["make-dataset", "--sat", str(plain), "--map", str(plain), "--labels", str(plain)]
    assert main([*args, "--query-field", "name", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no CRS, and make-dataset places the labels on it" in err and "map" not in err.split(
        "and"
    )[0].replace(str(plain), "")
