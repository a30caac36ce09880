"""Region outputs never replace or reuse the user's files; run folders record their sources."""

from __future__ import annotations

import json

import numpy as np
import pytest

from socioseg.cli import main
from socioseg.region.area import AreaError, segment_area
from tests.test_area_region import ColourReasoner, _scene, _write

rasterio = pytest.importorskip("rasterio", reason="region output tests need socioseg[gis]")
osmium = pytest.importorskip("osmium", reason="OSM tests need socioseg[gis]")

from tests.region_fixtures import HEIGHT, WIDTH, write_osm, write_raster  # noqa: E402


@pytest.fixture
def sat(tmp_path):
    return write_raster(tmp_path / "sat.tif", np.full((HEIGHT, WIDTH, 3), 7, dtype=np.uint8))


def _errors(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_map_never_replaces_an_input_or_a_file_it_did_not_write(sat, tmp_path, capsys):
    osm = write_osm(tmp_path / "city.osm")
    before = sat.read_bytes()
    base = ["map", "--like", str(sat), "--osm", str(osm)]
    for extra in ([], ["--overwrite"]):  # the satellite raster itself as --out
        assert main([*base, "--out", str(sat), *extra]) == 2
        assert "is the input --like" in _errors(capsys)[0]
    assert sat.read_bytes() == before
    theirs = write_raster(tmp_path / "theirs.tif", np.zeros((10, 10, 3), dtype=np.uint8))
    kept = theirs.read_bytes()
    for extra in ([], ["--overwrite"]):
        assert main([*base, "--out", str(theirs), *extra]) == 2
        err = _errors(capsys)
        assert len(err) == 1 and "not a map socioseg wrote" in err[0]
    assert theirs.read_bytes() == kept
    out = tmp_path / "map.tif"
    assert main([*base, "--out", str(out)]) == 0
    assert main([*base, "--out", str(out)]) == 2  # a map of ours: replaced on request only
    assert "pass --overwrite" in _errors(capsys)[0]
    assert main([*base, "--out", str(out), "--overwrite"]) == 0


def _area(sat, map_, out, reasoner=None, **kwargs):
    options = dict(tile=256, overlap=32, progress=False, gsd=0.5)
    return segment_area(reasoner or ColourReasoner(), sat, map_, "red", out, **options, **kwargs)


def test_segment_area_refuses_a_folder_of_the_users_files(tmp_path):
    from socioseg.region.mapping import MapSource

    sat = write_raster(tmp_path / "sat.tif", np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8))
    osm = write_osm(tmp_path / "city.osm")
    out = tmp_path / "out"
    out.mkdir()
    # The user's own map and mask on the same grid: never used as the map, never overwritten.
    write_raster(out / "map.tif", np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8))
    (out / "mask.tif").write_bytes(b"the user's mask")
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(AreaError, match=r"did not write .*no run\.json") as info:
        _area(sat, MapSource(osm=osm), out)
    assert "\n" not in str(info.value)
    (out / "mask.tif").unlink()  # only the user's map.tif is left: still not ours to use
    with pytest.raises(AreaError, match=r"did not write \(map.tif; no run.json\)"):
        _area(sat, MapSource(osm=osm), out)
    (out / "run.json").write_text("{}")  # even beside a run, a map we did not render
    with pytest.raises(AreaError, match="not a map socioseg rendered"):
        _area(sat, MapSource(osm=osm), out)
    (out / "run.json").unlink()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"map.tif": kept["map.tif"]}
    with pytest.raises(AreaError, match=r"its entities\.geojson would replace the input --sat"):
        _area(out / "entities.geojson", sat, out)  # an output would replace the input


def test_run_folder_records_its_sources_and_refuses_others(tmp_path):
    from socioseg.region.mapping import MapSource

    sat = write_raster(tmp_path / "sat.tif", np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8))
    osm = write_osm(tmp_path / "city.osm")
    out = tmp_path / "out"
    _area(sat, MapSource(osm=osm), out)
    recorded = json.loads((out / "run.json").read_text())
    assert recorded["map_source"]["osm"] == str(osm.resolve())
    assert recorded["inputs"]["sat"] == {"path": str(sat.resolve()), "bytes": sat.stat().st_size}
    # The same sources resume (nothing runs again); other sources are refused, not mixed in.
    assert _area(sat, MapSource(osm=osm), out).tiles_run == 0
    other_osm = write_osm(tmp_path / "other.osm")
    with pytest.raises(AreaError, match="another map source"):
        _area(sat, MapSource(osm=other_osm), out)
    other_sat = write_raster(tmp_path / "sat2.tif", np.ones((HEIGHT, WIDTH, 3), dtype=np.uint8))
    with pytest.raises(AreaError, match=r"other settings or sources \(inputs\)"):
        _area(other_sat, MapSource(osm=osm), out)


def test_run_json_keeps_no_tile_url_secret():
    from socioseg.region.mapping import MapSource

    source = MapSource(tiles="https://u:pw@host.example/t/{z}/{x}/{y}.png?key=SECRET&s=1")
    assert source.describe()["tiles"] == "https://host.example/t/{z}/{x}/{y}.png"


def test_gsd_typo_is_refused_before_a_model_loads(tmp_path):
    sat = _write(tmp_path / "sat.tif", _scene())

    def never():
        raise AssertionError("the model must not load for bad settings")

    with pytest.raises(AreaError, match=r"--gsd 0.0001: .* resampled by 5e\+03x") as info:
        segment_area(never, sat, sat, "red", tmp_path / "out", gsd=0.0001, progress=False)
    assert "\n" not in str(info.value)
