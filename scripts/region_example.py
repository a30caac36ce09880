"""A synthetic district to try "your own region" offline: a GeoTIFF, an OSM file and labels.

Four synthetic city tiles (the generator's streets, blocks and land uses) are laid out 2 x 2
on a UTM 50N grid at 0.5 m per pixel. Writes into OUT:

- ``sat.tif``: the satellite-like image, georeferenced (EPSG:32650), 1536 x 1536 px;
- ``city.osm``: the same streets, land uses, buildings and named places as OpenStreetMap XML
  (what a real user would cut from an OSM extract with ``osmium extract -b``);
- ``labels.geojson``: the named places as polygons with ``name``, ``class`` and ``function``.

    python scripts/region_example.py examples/region [--picture docs/region-map.png]

``--picture`` also renders the map from the OSM file (as ``socioseg map`` does) and saves it
beside the satellite image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import shapely
from PIL import Image

from socioseg.data.synth.generate import _layout, _names, _plan
from socioseg.data.synth.paint import render_satellite

TILE, GRID, GSD = 768, 2, 0.5
CRS = "EPSG:32650"
X0, Y0 = 440_000.0, 4_420_000.0
# Synthetic land-use styles as OSM tags.
STYLE_TAGS = {
    "green": {"landuse": "grass"},
    "water": {"natural": "water"},
    "residential": {"landuse": "residential"},
    "office": {"landuse": "commercial", "office": "company"},
    "hotel": {"tourism": "hotel"},
    "hospital": {"amenity": "hospital"},
    "government": {"amenity": "townhall"},
    "campus": {"amenity": "school"},
    "park": {"leisure": "park"},
    "plaza": {"leisure": "park"},
    "stadium": {"leisure": "stadium"},
    "pitch": {"leisure": "pitch"},
    "museum": {"tourism": "museum"},
    "mall": {"landuse": "retail", "shop": "mall"},
    "station": {"landuse": "railway", "railway": "station"},
    "depot": {"landuse": "industrial", "amenity": "bus_station"},
    "factory": {"landuse": "industrial"},
}


class OsmWriter:
    """Collects nodes and ways in raster pixels and writes them as OSM XML in WGS-84."""

    def __init__(self):
        from pyproj import Transformer

        self.to_wgs = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
        self.nodes: list[str] = []
        self.ways: list[str] = []

    def _node(self, x: float, y: float, tags: dict | None = None) -> int:
        lon, lat = self.to_wgs.transform(X0 + x * GSD, Y0 - y * GSD)
        nid = len(self.nodes) + 1
        body = _tags(tags or {})
        self.nodes.append(
            f'<node id="{nid}" version="1" lat="{lat:.8f}" lon="{lon:.8f}">{body}</node>'
        )
        return nid

    def way(self, points, tags: dict, closed: bool) -> None:
        ids = [self._node(x, y) for x, y in points]
        refs = "".join(f'<nd ref="{i}"/>' for i in ([*ids, ids[0]] if closed else ids))
        self.ways.append(f'<way id="{len(self.ways) + 1}" version="1">{refs}{_tags(tags)}</way>')

    def write(self, path: Path) -> None:
        head = '<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="socioseg">'
        body = "\n".join([head, *self.nodes, *self.ways, "</osm>"])
        path.write_text(body + "\n", encoding="utf-8")


def _tags(tags: dict) -> str:
    return "".join(f"<tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags.items())


def _tile(seed: int, index: int, offset: tuple[int, int], osm: OsmWriter, features: list):
    """One synthetic tile: its satellite image; its geometry goes into ``osm`` and ``features``."""
    rng = np.random.default_rng([seed, index])
    plan = _plan(rng)
    names = _names(rng, plan.kinds)
    roads, regions, _minor = _layout(rng, plan, TILE)
    sat = render_satellite(rng, TILE, regions, roads)
    ox, oy = offset
    frame = shapely.box(0, 0, TILE, TILE)  # synthetic streets and blocks run past the tile

    def clipped(points, closed: bool) -> list[list[tuple[float, float]]]:
        shape = shapely.Polygon(points) if closed else shapely.LineString(points)
        parts = shapely.get_parts(shape.intersection(frame))
        rings = [p.exterior.coords[:-1] if closed else p.coords for p in parts if not p.is_empty]
        return [[(x + ox, y + oy) for x, y in ring] for ring in rings if len(ring) >= 2]

    for region in regions:
        tags = dict(STYLE_TAGS.get(region.style, {}))
        outlines = clipped(region.poly, closed=True)
        if region.entity is not None:
            kind = plan.kinds[region.entity]
            tags["name"] = names[region.entity]
            features += [(outline, names[region.entity], kind) for outline in outlines]
        for outline in outlines if tags else ():
            osm.way(outline, tags, closed=True)
        for part in region.parts:
            if part.kind == "building":
                for outline in clipped(part.poly, closed=True):
                    osm.way(outline, {"building": "yes"}, closed=True)
    for road in roads:
        for line in clipped([road.p0, road.p1], closed=False):
            osm.way(line, {"highway": "primary" if road.major else "residential"}, closed=False)
    return sat


def _geojson(path: Path, features: list) -> None:
    from pyproj import Transformer

    to_wgs = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    out = []
    for points, name, kind in features:
        ring = [list(to_wgs.transform(X0 + x * GSD, Y0 - y * GSD)) for x, y in points]
        geometry = {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}
        properties = {"name": name, "class": kind.socio_class, "function": kind.function}
        out.append({"type": "Feature", "properties": properties, "geometry": geometry})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": out}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--picture", type=Path, default=None, help="satellite | map PNG")
    args = parser.parse_args()
    import rasterio
    from rasterio.transform import Affine

    args.out.mkdir(parents=True, exist_ok=True)
    osm, features = OsmWriter(), []
    size = TILE * GRID
    sat = np.zeros((size, size, 3), dtype=np.uint8)
    for k in range(GRID * GRID):
        r, c = divmod(k, GRID)
        tile = _tile(args.seed, k, (c * TILE, r * TILE), osm, features)
        sat[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE] = np.asarray(tile)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8"}
    profile |= {"crs": CRS, "transform": Affine(GSD, 0, X0, 0, -GSD, Y0), "compress": "deflate"}
    with rasterio.open(args.out / "sat.tif", "w", **profile) as dst:
        dst.write(sat.transpose(2, 0, 1))
    osm.write(args.out / "city.osm")
    _geojson(args.out / "labels.geojson", features)
    print(f"wrote {args.out}/sat.tif, city.osm and labels.geojson ({len(features)} places)")
    if args.picture is not None:
        from socioseg.region.grid import Grid
        from socioseg.region.osm import render_osm

        rendered = render_osm(args.out / "city.osm", Grid.of_raster(args.out / "sat.tif")).rgb
        pair = np.concatenate([sat, np.full((size, 16, 3), 255, np.uint8), rendered], axis=1)
        half = Image.fromarray(pair).resize(
            (pair.shape[1] // 2, size // 2), Image.Resampling.LANCZOS
        )
        # A 256-colour palette keeps the picture small enough to live in the repository.
        half.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(
            args.picture, optimize=True
        )
        print(f"wrote {args.picture}")


if __name__ == "__main__":
    main()
