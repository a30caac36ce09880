"""OSM map labels: fonts for every script, and web-map selection and placement (no overlaps)."""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from socioseg.region import fonts as fonts_module
from socioseg.region.fonts import DEFAULT_FACES, NOTO_SANS, NOTO_SANS_CJK, FontChain

rasterio = pytest.importorskip("rasterio", reason="map tests need socioseg[gis]")
osmium = pytest.importorskip("osmium", reason="OSM tests need socioseg[gis]")

from affine import Affine  # noqa: E402
from pyproj import Transformer  # noqa: E402
from rasterio.crs import CRS  # noqa: E402

from socioseg.region.grid import Grid  # noqa: E402
from socioseg.region.map_labels import OTHERS_PER_TILE  # noqa: E402
from socioseg.region.osm import render_osm  # noqa: E402

HELSINKI = Path(__file__).parent / "data" / "helsinki-centre.osm.pbf"
NAMES = {  # one real place name per script
    "Latin, Finnish": "Helsingin päärautatieasema",
    "Latin, Polish": "Łódź Fabryczna",
    "Latin, Hungarian": "Kőbánya-Kispest",
    "Greek": "Αθήνα Σταθμός Λαρίσης",
    "Cyrillic": "Москва Київ-Пасажирський",
    "Chinese": "北京西站",
    "Japanese": "東京駅",
    "Korean": "서울역",
}
noto = pytest.mark.skipif(
    not (NOTO_SANS.is_file() and NOTO_SANS_CJK.is_file()),
    reason="needs the Noto label fonts: apt-get install fonts-noto-core fonts-noto-cjk",
)


def _drawn_like_notdef(font, char: str) -> bool:
    """Whether Pillow draws ``char`` exactly as the font's .notdef glyph (box and bitmap)."""

    def glyph(c):
        mask = font.getmask(c, mode="L")
        return font.getbbox(c), mask.size, bytes(mask)

    return glyph(char) == glyph("\U0010fffe")  # another noncharacter: .notdef in every font


@noto
@pytest.mark.parametrize("script", NAMES)
def test_every_script_has_a_font_with_every_glyph(script):
    text = NAMES[script]
    (path, index), font = FontChain.default().font_for(text, 13)
    assert not [c for c in text if not c.isspace() and _drawn_like_notdef(font, c)]
    cjk = script in ("Chinese", "Japanese", "Korean")
    assert Path(path) == (NOTO_SANS_CJK if cjk else NOTO_SANS) and index == (2 if cjk else 0)
    bundled = ImageFont.load_default(size=13)  # the old default boxed all of these
    assert any(_drawn_like_notdef(bundled, c) for c in text if not c.isascii())


def _grid(lon, lat, size, gsd=0.5, crs=32635):
    x, y = Transformer.from_crs("EPSG:4326", f"EPSG:{crs}", always_xy=True).transform(lon, lat)
    half = size * gsd / 2
    return Grid(CRS.from_epsg(crs), Affine(gsd, 0, x - half, 0, -gsd, y + half), size, size)


def _check_layout(report, size):
    """Every placed label lies inside the image and overlaps no other text or pin; the text
    boxes are measured again here with Pillow from the fonts the report names."""
    draw = ImageDraw.Draw(Image.new("RGB", (8, 8)))
    boxes = []
    for label in report.placed:
        path, index, px = label.font
        font = ImageFont.truetype(path, px, index=index) if path else ImageFont.load_default(px)
        halo = max(1, round(2 * 1.0))
        box = draw.textbbox(label.xy, label.text, font=font, anchor="lm", stroke_width=halo)
        assert np.allclose(box, label.box, atol=1e-6), label.text
        assert not [c for c in label.text if not c.isspace() and _drawn_like_notdef(font, c)]
        boxes += [box, label.pin]
    b = np.array(boxes, dtype=float)
    assert (b[:, :2] >= 0).all() and (b[:, 2] <= size[0]).all() and (b[:, 3] <= size[1]).all()
    overlap = (
        (b[:, None, 0] < b[None, :, 2])
        & (b[None, :, 0] < b[:, None, 2])
        & (b[:, None, 1] < b[None, :, 3])
        & (b[None, :, 1] < b[:, None, 3])
    )
    np.fill_diagonal(overlap, False)
    assert not overlap.any()
    assert report.on_map == len(report.placed) + sum(report.left_out.values())


@noto
def test_real_helsinki_extract_reads_like_a_web_map():
    grid = _grid(24.9440, 60.1696, 1024)
    by_tag = {tag: render_osm(HELSINKI, grid, tag) for tag in ("name", "name:zh", "name:ru")}
    report = by_tag["name"].labels
    _check_layout(report, (1024, 1024))
    assert report.on_map > 350  # a dense centre: every named shop and cafe is a candidate
    assert report.targets >= 8 and report.targets_placed == report.targets
    placed = {label.text for label in report.placed}
    assert {"Helsingin päärautatieasema", "Esplanadinpuisto", "Ateneum", "Stockmann"} <= placed
    others = len(placed) - report.targets
    cells = math.ceil(1024 / 768) ** 2  # partial cells round their share up
    assert 0 < others <= cells * OTHERS_PER_TILE
    for tag, expected in (("name:zh", "赫爾辛基中央車站"), ("name:ru", "Центральный вокзал")):
        labels = by_tag[tag].labels
        _check_layout(labels, (1024, 1024))
        assert any(label.text.startswith(expected) for label in labels.placed), tag
    station = next(x for x in by_tag["name:zh"].labels.placed if x.text == "赫爾辛基中央車站")
    assert station.font[:2] == (str(NOTO_SANS_CJK), 2)


def _dense_osm(path: Path, grid: Grid, names: dict[str, str]) -> Path:
    """A city block as dense as a real centre: 400 named shops on a 20 x 20 lattice over the
    whole grid, and four named school/park areas (query targets), one touching the edge."""
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    nodes, ways = [], []

    def node(col, row, tags=()):
        x, y = grid.transform @ (col, row)
        lon, lat = to_lonlat.transform(x, y)
        body = "".join(f"<tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags)
        nodes.append(f'<node id="{len(nodes) + 1}" version="1" lat="{lat:.9f}" lon="{lon:.9f}">')
        nodes[-1] += body + "</node>"
        return len(nodes)

    for k in range(400):
        r, c = divmod(k, 20)
        node(20 + c * 38.0, 20 + r * 38.0, [("shop", "bakery"), ("name", f"Bakery number {k}")])
    areas = [
        ((300, 300, 380, 360), [("amenity", "school"), ("name", names["school"])]),
        ((390, 300, 470, 360), [("leisure", "park"), ("name", names["park"])]),
        ((300, 370, 380, 430), [("amenity", "hospital"), ("name", names["hospital"])]),
        ((0, 700, 60, 768), [("leisure", "park"), ("name", "Edge Park")]),
    ]
    for (x0, y0, x1, y1), tags in areas:
        ids = [node(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        refs = "".join(f'<nd ref="{i}"/>' for i in [*ids, ids[0]])
        body = "".join(f"<tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags)
        ways.append(f'<way id="{len(ways) + 1}" version="1">{refs}{body}</way>')
    xml = '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="test">\n'
    path.write_text(xml + "\n".join(nodes + ways) + "\n</osm>\n", encoding="utf-8")
    return path


LATIN = {"school": "Qinghe No. 2 Middle School", "park": "Riverside Park",
         "hospital": "Hillside People's Hospital"}  # fmt: skip
SCRIPTS = {"school": "北京市第二中学", "park": "Πάρκο Ελευθερίας",
           "hospital": "Szpital im. Żeromskiego, Łódź"}  # fmt: skip


@pytest.mark.parametrize("names", [LATIN, pytest.param(SCRIPTS, marks=noto)])
def test_dense_extract_keeps_targets_and_thins_the_rest(tmp_path, names):
    grid = _grid(116.39, 39.9, 768, crs=32650)
    osm = _dense_osm(tmp_path / "dense.osm", grid, names)
    report = render_osm(osm, grid).labels
    _check_layout(report, (768, 768))
    placed = [label.text for label in report.placed if label.target]
    assert sorted(placed) == sorted([*names.values(), "Edge Park"])
    assert report.on_map == 404 and len(report.placed) == 4 + OTHERS_PER_TILE
    assert report.left_out["density"] + report.left_out["no room"] == 400 - OTHERS_PER_TILE
    assert report.left_out["density"] > 350


def test_without_fonts_labels_that_would_be_boxes_are_left_out(tmp_path, monkeypatch):
    monkeypatch.setattr(fonts_module, "DEFAULT_FACES", ((tmp_path / "none.ttf", 0),))
    grid = _grid(116.39, 39.9, 768, crs=32650)
    names = {"school": "北京第二中学", "park": "Łazienki Park", "hospital": "Plain Hospital"}
    report = render_osm(_dense_osm(tmp_path / "dense.osm", grid, names), grid)
    assert "fonts-noto-core fonts-noto-cjk" in report.notes[0]
    targets = {label.text for label in report.labels.placed if label.target}
    assert targets == {"Plain Hospital", "Edge Park"}
    assert report.labels.left_out["no font"] == 2
    assert all(label.font[0] is None for label in report.labels.placed)
    assert "2 no font" in report.labels.line()


def test_default_chain_is_the_installed_noto_then_dejavu():
    chain = FontChain.default("/my/font.ttf")
    assert chain.faces[0] == ("/my/font.ttf", 0)
    assert chain.faces[1:] == tuple((str(p), i) for p, i in DEFAULT_FACES if p.is_file())
